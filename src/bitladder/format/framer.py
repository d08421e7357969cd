"""The one state machine that turns package bytes, fed in pieces of any size, into verified chunks.

    header (HEADER_SIZE bytes) → manifest (M bytes, BLAKE3-checked) → chunk 0 → chunk 1 → … → end

`StreamDecoder` decodes what the framer hands over; `PackageVerifier` only counts it. Memory is bounded: the
head (header and manifest, at most HEADER_SIZE + MAX_MANIFEST_SIZE bytes), then at most the declared length
of the chunk in flight, hashed in one pass once complete. In verify-only mode (`keep_payload=False`) chunks are
hashed as they pass and never buffered. A chunk that arrives whole inside one piece is handed over as a view of
that piece, not copied.

A failure is returned, not raised: `feed` gives back a `Fed` holding the chunks that verified before it and
the error. The framer then refuses bytes until `rewind()`, which drops what did not verify and says where to
resume: the start of the failed chunk, or byte 0 when the header or manifest failed (nothing in them is
trusted until the manifest digest matches, so both are fetched again).

With a `Trust`, the header's signature is checked as soon as its HEADER_SIZE bytes arrive, before the manifest
is parsed: a refusal is a `TrustError`, raised (no refetch can cure it), and every later `feed` raises it again.

>>> framer = Framer()
>>> fed = framer.feed(package_bytes, lambda chunk: chunk.index)     # doctest: +SKIP
>>> fed.updates, fed.error                                          # doctest: +SKIP
((0, 1, 2), None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ChunkIntegrityError, DecoderStateError, FormatError, TruncatedError, TrustError
from .signing import Trust, check_signature
from .spec import HEADER_SIZE, ChunkEntry, ChunkHasher, Header, Manifest, digest

T = TypeVar("T")


@dataclass(frozen=True)
class Fed(Generic[T]):
    """What one `feed` call produced: the results of the chunks that verified, in stream order, then the error
    that stopped the call (None when every byte given was accepted or waits for the rest of its chunk).

    >>> fed = decoder.feed(piece)                  # doctest: +SKIP
    >>> for update in fed.raise_for_error(): ...   # doctest: +SKIP
    """

    updates: tuple[T, ...] = ()
    error: FormatError | None = None

    def raise_for_error(self) -> tuple[T, ...]:
        """The updates, or the error raised if the call failed (for callers that stop at the first one)."""
        if self.error is not None:
            raise self.error
        return self.updates


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk whose bytes matched their digest.

    `payload` is valid only during the `accept` call that receives it (it views the framer's buffer or the
    caller's piece): copy what must outlive it. It is None in verify-only mode.
    """

    index: int
    entry: ChunkEntry
    payload: memoryview | None


class Framer:
    """Header, manifest, then each chunk checked against its digest; see the module docstring.

    >>> framer = Framer(keep_payload=False)
    >>> framer.feed(b"BLAD", lambda chunk: chunk.index).updates
    ()
    >>> framer.pending
    4
    """

    def __init__(self, *, keep_payload: bool = True, max_bytes: int | None = None, trust: Trust | None = None) -> None:
        self._keep = keep_payload
        self._max_bytes = max_bytes
        self._trust = trust
        self._refused: TrustError | None = None
        self._head = bytearray()          # header and manifest bytes, until the manifest verifies
        self._header: Header | None = None
        self.manifest: Manifest | None = None
        self._position = 0
        self._next = 0                    # index of the chunk in flight
        self._got = 0                     # its bytes received so far
        self._buffer = bytearray()        # those bytes when kept (a chunk whole in one piece is not copied)
        self._hasher = ChunkHasher()      # or hashed as they pass, in verify-only mode
        self._failed: FormatError | None = None

    @property
    def position(self) -> int:
        """Bytes of the package accepted and verified: 0 until the manifest verifies, then whole chunks."""
        return self._position

    @property
    def pending(self) -> int:
        """Bytes received but not verified yet (of the head, or of the chunk in flight)."""
        return len(self._head) if self.manifest is None else self._got

    @property
    def header(self) -> Header | None:
        """The package header, once it has arrived (and, with a trust set, passed its signature check)."""
        return self._header

    @property
    def data_start(self) -> int | None:
        """File offset of the first chunk, once a header has arrived (it is trusted once the manifest is)."""
        return None if self._header is None else HEADER_SIZE + self._header.manifest_length

    @property
    def next_chunk(self) -> int:
        """Index of the chunk in flight: how many chunks have verified."""
        return self._next

    @property
    def finished(self) -> bool:
        return self.manifest is not None and self._next == len(self.manifest.chunks)

    @property
    def error(self) -> FormatError | None:
        """The failure that stopped the stream, until `rewind()`."""
        return self._failed

    def rewind(self) -> int:
        """Drop unverified bytes and clear a failure; returns the offset to resume the stream from.

        Before the manifest verifies that is 0: a header that arrived alone is forgotten with it.
        """
        self._failed = None
        self._got = 0
        self._hasher.reset()
        self._buffer = bytearray()  # a new one: views handed out (or held by a traceback) may still exist
        if self.manifest is None:
            self._header = None
            self._head = bytearray()
        return self._position

    def close(self) -> None:
        """Declare the end of the stream: raises the failure that stopped it, or `TruncatedError` if the
        package is incomplete."""
        if self._refused is not None:
            raise self._refused
        if self._failed is not None:
            raise self._failed
        if not self.finished:
            where = "the manifest" if self.manifest is None else f"chunk {self._next}"
            raise TruncatedError(f"stream ended at byte {self._position + self.pending} inside {where}")

    def feed(self, data: bytes | bytearray | memoryview, accept: Callable[[Chunk], T | None]) -> Fed[T]:
        """Take more bytes; calls `accept` with each chunk that verifies, in order, and returns its results.

        A chunk counts as accepted once `accept` returns; if it raises a `FormatError` (the chunk does not
        decode), the stream stops before that chunk, as on a digest mismatch.
        """
        if self._refused is not None:
            raise self._refused
        if self._failed is not None:
            raise DecoderStateError(f"stream stopped at byte {self._position} after an error "
                                    f"(call rewind() first): {self._failed}")
        results: list[T] = []
        try:
            view = memoryview(data).cast("B")
            if self.manifest is None:
                view = self._feed_head(view)
            if self.manifest is not None:
                self._feed_chunks(view, accept, results)
        except FormatError as exc:
            self._failed = exc
            return Fed(tuple(results), exc)
        return Fed(tuple(results))

    def _fill_head(self, view: memoryview, size: int) -> memoryview:
        take = min(size - len(self._head), len(view))
        self._head += view[:take]
        return view[take:]

    def _feed_head(self, view: memoryview) -> memoryview:
        if self._header is None:
            view = self._fill_head(view, HEADER_SIZE)
            if len(self._head) < HEADER_SIZE:
                return view
            header = Header.unpack(self._head)
            if self._trust is not None:
                try:
                    check_signature(header, self._trust, f"package header (bytes 0-{HEADER_SIZE - 1})")
                except TrustError as exc:
                    self._refused = exc
                    self._head = bytearray()
                    raise
            self._header = header
        end = HEADER_SIZE + self._header.manifest_length
        view = self._fill_head(view, end)
        if len(self._head) < end:
            return view
        with memoryview(self._head) as head:
            self.manifest = Manifest.decode(self._header, head[HEADER_SIZE:], self._max_bytes)
        self._head = bytearray()
        self._position = end
        return view

    def _feed_chunks(self, view: memoryview, accept: Callable[[Chunk], T | None], results: list[T]) -> None:
        manifest = self.manifest
        assert manifest is not None
        # A chunk of length 0 completes without bytes, so the loop runs on an empty view too.
        while not self.finished:
            entry = manifest.chunks[self._next]
            length = entry.length
            if not view and self._got < length:
                return
            take = min(length - self._got, len(view))
            piece, view = view[:take], view[take:]
            self._got += take
            if not self._keep:
                self._hasher.update(piece)
            elif self._buffer or self._got < length:
                self._buffer += piece
            if self._got == length:
                payload = None if not self._keep else memoryview(self._buffer) if self._buffer else piece
                result = self._complete(entry, payload, accept)
                if result is not None:  # a chunk may complete without a result of its own (a block, not a tensor)
                    results.append(result)
        if view:
            raise FormatError(f"{len(view)} bytes after the last chunk at offset {self._position}")

    def _complete(self, entry: ChunkEntry, payload: memoryview | None, accept: Callable[[Chunk], T | None]) -> T | None:
        """Check the chunk in flight (`payload` is its bytes, or None in verify-only mode) and hand it over."""
        manifest = self.manifest
        assert manifest is not None
        index = self._next
        got = self._hasher.digest() if payload is None else digest(payload)  # one pass over a kept chunk
        if got != entry.digest:
            raise ChunkIntegrityError(f"{manifest.describe_chunk(index)}: digest mismatch at data offset "
                                      f"{entry.offset} (file offset {self._position})")
        if payload is None:
            result = accept(Chunk(index, entry, None))
        else:
            with payload:
                result = accept(Chunk(index, entry, payload))
        self._position += entry.length
        self._next += 1
        self._got = 0
        self._hasher.reset()
        self._buffer = bytearray()
        return result


class Framed:
    """The stream surface the decoder and the verifier share, delegated to their `Framer`: everything but
    `feed` (what each hands back from a chunk is its own)."""

    _framer: Framer

    @property
    def manifest(self) -> Manifest | None:
        return self._framer.manifest

    @property
    def position(self) -> int:
        """Bytes of the package accepted and verified (0 until the manifest verifies, then whole chunks)."""
        return self._framer.position

    @property
    def pending(self) -> int:
        """Bytes received but not verified yet."""
        return self._framer.pending

    @property
    def header(self) -> Header | None:
        """The package header once it has arrived (signed or not: `header.signed`, `signing.signer(header)`)."""
        return self._framer.header

    @property
    def data_start(self) -> int | None:
        """File offset of the first chunk (header plus manifest), once the header has arrived."""
        return self._framer.data_start

    @property
    def finished(self) -> bool:
        return self._framer.finished

    def rewind(self) -> int:
        """Drop unverified bytes and clear a failure; returns the offset to resume the stream from.

        A client calls this after a dropped connection or a bad chunk, then feeds bytes again from the
        returned offset (an HTTP Range request): the failed chunk's start, or 0 if the header or manifest
        failed. Tensors keep the rung they reached.
        """
        return self._framer.rewind()

    def close(self) -> None:
        """Declare the end of the stream; raises the error that stopped it, or `TruncatedError` if the
        package is incomplete."""
        self._framer.close()
