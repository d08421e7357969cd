"""Where package bytes come from: a file, an HTTP stream, a decoder, or any iterable of byte pieces.

`PieceQueue` is an iterator the caller controls (tests and benchmarks step the stream with it, no sleeps).
`BudgetedPieces` ends a stream after the rung a `Budget` chooses.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..delivery.choice import Budget, Choice, choose
from ..format.reader import StreamDecoder
from ..format.signing import Trust, check_signature
from ..format.spec import HEADER_SIZE
from .errors import SourceUnavailableError

DEFAULT_PIECE = 64 * 1024
Source = str | os.PathLike[str] | StreamDecoder | Iterable[bytes]


def file_pieces(path: str | os.PathLike[str], piece_size: int = DEFAULT_PIECE) -> Iterator[bytes]:
    """The bytes of a file in pieces of `piece_size`.

    >>> next(file_pieces("model.blad", 4))       # doctest: +SKIP
    b'BLAD'
    """
    if piece_size <= 0:
        raise ValueError(f"piece_size must be positive, got {piece_size}")
    with open(path, "rb") as handle:
        while piece := handle.read(piece_size):
            yield piece


def open_source(source: Source, piece_size: int = DEFAULT_PIECE, trust: Trust | None = None,
                budget: Budget | None = None) -> tuple[StreamDecoder, Iterator[bytes]]:
    """A fresh decoder (or the given one) and the pieces still to feed it; with `trust`, a decoder that refuses
    a package not signed by a trusted key (`TrustError`) as soon as its header arrives.

    A `StreamDecoder` passed in is used as it stands (its tensors are applied, nothing more is fed; with
    `trust`, its header is checked first); a URL goes through `bitladder.delivery.client.open_url`, which may
    return pieces or a decoder (with `budget`, it downloads only up to the rung the budget chooses).
    """
    if isinstance(source, StreamDecoder):
        if trust is not None and source.header is not None:
            check_signature(source.header, trust, "the StreamDecoder given as source")
        return source, iter(())
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return _open_url(source, trust, budget)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SourceUnavailableError(f"{path}: no such package file")
        return StreamDecoder(trust=trust), file_pieces(path, piece_size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise TypeError("pass package bytes as an iterable of pieces, e.g. [data]")
    if isinstance(source, Iterable):
        return StreamDecoder(trust=trust), iter(source)
    raise TypeError(f"source must be a path, URL, StreamDecoder or iterable of bytes, not {type(source).__name__}")


def _open_url(url: str, trust: Trust | None, budget: Budget | None) -> tuple[StreamDecoder, Iterator[bytes]]:
    try:
        from ..delivery.client import open_url  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise SourceUnavailableError(f"{url}: HTTP sources need bitladder.delivery.client.open_url ({exc})") from exc
    opened = open_url(url, trust=trust, budget=budget)
    if isinstance(opened, StreamDecoder):
        return opened, iter(())
    return StreamDecoder(trust=trust), iter(opened)


class BudgetedPieces:
    """`pieces` of a package cut so that `decoder` is fed nothing past the rung `budget` chooses (`choose`, once
    the manifest is in: until then the pieces are cut at the header's end and then at the manifest's, so the choice
    comes before any chunk byte). Each piece must be fed before the next is asked for.

    >>> decoder = StreamDecoder()                                               # doctest: +SKIP
    >>> pieces = BudgetedPieces(file_pieces("m.blad"), decoder, Budget(max_bytes=10**6))   # doctest: +SKIP
    >>> for piece in pieces: decoder.feed(piece).raise_for_error()              # doctest: +SKIP
    >>> pieces.choice.name, pieces.partial                                      # doctest: +SKIP
    ('int8', True)
    """

    def __init__(self, pieces: Iterator[bytes], decoder: StreamDecoder, budget: Budget) -> None:
        self._pieces, self._decoder, self._budget = pieces, decoder, budget
        self._held = memoryview(b"")
        self.fed = 0
        self.choice: Choice | None = None

    @property
    def partial(self) -> bool:
        """Whether the stream stopped, as chosen, before the package's last rung."""
        manifest = self._decoder.manifest
        return (self.choice is not None and manifest is not None and self.fed >= self.choice.bytes
                and self.choice.rung < len(manifest.ladder.rungs) - 1)

    def _end(self) -> int | None:
        if self.choice is None:
            manifest, start = self._decoder.manifest, self._decoder.data_start
            if manifest is None or start is None:
                boundary = HEADER_SIZE if start is None else start
                return boundary if self.fed < boundary else None
            self.choice = choose(manifest, self._budget, start)
        return self.choice.bytes

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        end = self._end()
        if end is not None and self.fed >= end:
            raise StopIteration
        if not self._held:
            self._held = memoryview(next(self._pieces))
        take = len(self._held) if end is None else min(len(self._held), end - self.fed)
        piece, self._held = bytes(self._held[:take]), self._held[take:]
        self.fed += take
        return piece


class PieceQueue:
    """An iterator of byte pieces released by the caller: `put` pieces, then `close` to end the stream.

    >>> feed = PieceQueue()
    >>> feed.put(b"BLAD"); feed.close()
    >>> list(feed)
    [b'BLAD']
    """

    _END = object()

    def __init__(self, pieces: Iterable[bytes] = ()) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._pending = iter(pieces)
        self._lock = threading.Lock()

    def put(self, piece: bytes) -> None:
        self._queue.put(piece)

    def release(self, count: int | None = None) -> int:
        """Move up to `count` (default: all) pieces from the backlog given at construction; returns how many."""
        moved = 0
        with self._lock:
            while count is None or moved < count:
                piece = next(self._pending, None)
                if piece is None:
                    break
                self._queue.put(piece)
                moved += 1
        return moved

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # stay exhausted
            raise StopIteration
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise TypeError(f"pieces must be bytes, got {type(item).__name__}")
        return bytes(item)
