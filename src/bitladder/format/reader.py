"""Reading packages: an incremental decoder fed bytes in pieces of any size, and random access to files.

The decoder keeps, per tensor, the state of the last chunk that verified. A chunk that fails its digest
or does not decode raises `ChunkIntegrityError` and changes nothing: the tensors stay usable at the rung
they had reached, and the decoder refuses further bytes (the stream position is no longer trustworthy).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import TensorSpec, TensorState
from ..codecs.transforms import ChunkCodec
from ..errors import ChunkIntegrityError, DecoderStateError, FormatError, TruncatedError
from .spec import HEADER_SIZE, ChunkEntry, Header, Manifest, digest


@dataclass(frozen=True)
class TensorUpdate:
    """A tensor moved up the ladder: `reaches` is the rung it now holds."""

    name: str
    tensor: int
    chunk: int
    rung: int
    reaches: int


def _apply_chunk(manifest: Manifest, states: list[TensorState | None], index: int, payload: memoryview) -> TensorState:
    """Verify and decode chunk `index`; returns the tensor's new state without storing it."""
    entry = manifest.chunks[index]
    spec = manifest.tensors[entry.tensor]
    where = f"chunk {index} (tensor {spec.name!r}, rung {manifest.ladder.rungs[entry.rung].name})"
    if len(payload) != entry.length:
        raise TruncatedError(f"{where}: got {len(payload)} of {entry.length} bytes")
    if digest(payload) != entry.digest:
        raise ChunkIntegrityError(f"{where}: digest mismatch at data offset {entry.offset}")
    sections, start = [], 0
    for length in entry.sections:
        sections.append(payload[start:start + length])
        start += length
    try:
        return ChunkCodec.lookup(entry.codec).decode(spec, states[entry.tensor], sections, entry.params)
    except ChunkIntegrityError as exc:
        raise ChunkIntegrityError(f"{where}: {exc}") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise ChunkIntegrityError(f"{where}: does not decode ({exc})") from exc


class StreamDecoder:
    """Decode a package from a byte stream, chunk by chunk.

    >>> decoder = StreamDecoder()
    >>> for piece in pieces:                       # doctest: +SKIP
    ...     for update in decoder.feed(piece):
    ...         print(update.name, decoder.manifest.ladder.rungs[update.reaches].name)
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._consumed = 0
        self._header: Header | None = None
        self.manifest: Manifest | None = None
        self._states: list[TensorState | None] = []
        self._released: set[int] = set()
        self._reached: list[int] = []
        self._next_chunk = 0
        self._failed: BaseException | None = None

    @property
    def position(self) -> int:
        """Bytes of the package accepted so far (header, manifest and verified chunks)."""
        return self._consumed

    @property
    def data_start(self) -> int | None:
        """File offset of the first chunk (header plus manifest), once the header has arrived."""
        return None if self._header is None else HEADER_SIZE + self._header.manifest_length

    @property
    def pending(self) -> int:
        """Bytes received but not yet verified (the part of the chunk in flight that has arrived)."""
        return len(self._buffer)

    def rewind(self) -> int:
        """Drop unverified bytes and clear a chunk failure; returns the offset to resume the stream from.

        A client calls this after a dropped connection or a bad chunk, then feeds bytes again from the
        returned offset (an HTTP Range request). Tensors keep the rung they reached.
        """
        self._buffer.clear()
        self._failed = None
        return self._consumed

    @property
    def finished(self) -> bool:
        return self.manifest is not None and self._next_chunk == len(self.manifest.chunks)

    def _take(self, size: int) -> memoryview | None:
        if len(self._buffer) < size:
            return None
        return memoryview(self._buffer)[:size]

    def _drop(self, size: int) -> None:
        del self._buffer[:size]
        self._consumed += size

    def feed(self, data: bytes | bytearray | memoryview) -> list[TensorUpdate]:
        """Accept more bytes; returns the tensors that moved up, in delivery order.

        On a bad chunk the `FormatError` raised carries `.updates`: the chunks of this call that verified first.
        """
        if self._failed is not None:
            raise DecoderStateError(f"decoder stopped after an error at byte {self._consumed}: {self._failed}")
        self._buffer += data
        updates: list[TensorUpdate] = []
        try:
            while self._step(updates):
                pass
        except FormatError as exc:
            self._failed = exc
            exc.updates = updates
            raise
        return updates

    def _step(self, updates: list[TensorUpdate]) -> bool:
        if self._header is None:
            view = self._take(HEADER_SIZE)
            if view is None:
                return False
            with view:  # released even when parsing fails, so that rewind() can resize the buffer
                self._header = Header.unpack(view)
            self._drop(HEADER_SIZE)
            return True
        if self.manifest is None:
            view = self._take(self._header.manifest_length)
            if view is None:
                return False
            with view:
                self.manifest = Manifest.decode(self._header, view)
            self._states = [None] * len(self.manifest.tensors)
            self._reached = [-1] * len(self.manifest.tensors)
            self._drop(self._header.manifest_length)
            return True
        if self._next_chunk >= len(self.manifest.chunks):
            if self._buffer:
                raise FormatError(f"{len(self._buffer)} bytes after the last chunk at offset {self._consumed}")
            return False
        entry = self.manifest.chunks[self._next_chunk]
        view = self._take(entry.length)
        if view is None:
            return False
        with view:
            state = _apply_chunk(self.manifest, self._states, self._next_chunk, view)
        self._drop(entry.length)
        updates.append(self._commit(entry, state))
        return True

    def _commit(self, entry: ChunkEntry, state: TensorState) -> TensorUpdate:
        assert self.manifest is not None
        self._states[entry.tensor] = state
        self._reached[entry.tensor] = entry.reaches
        index = self._next_chunk
        self._next_chunk += 1
        return TensorUpdate(self.manifest.tensors[entry.tensor].name, entry.tensor, index, entry.rung, entry.reaches)

    def close(self) -> None:
        """Declare the end of the stream; raises `TruncatedError` if the package is incomplete."""
        if self.manifest is None or not self.finished:
            expected = "the manifest" if self.manifest is None else f"chunk {self._next_chunk}"
            raise TruncatedError(f"stream ended at byte {self._consumed + len(self._buffer)} inside {expected}")

    def release(self, name: str) -> None:
        """Forget a tensor whose last chunk has been decoded, once the caller holds it (its memory is freed
        when the caller lets go). `rungs()` still reports its rung; `tensor(name)` raises `DecoderStateError`.

        >>> decoder.release("fc.weight")         # doctest: +SKIP
        """
        manifest = self._manifest()
        index = self._index(name)
        last = max((i for i, entry in enumerate(manifest.chunks) if entry.tensor == index), default=-1)
        if last >= self._next_chunk:
            raise DecoderStateError(f"tensor {name!r} has chunks still to come (chunk {last}); it cannot be released")
        self._states[index] = None
        self._released.add(index)

    def _index(self, name: str) -> int:
        for index, spec in enumerate(self._manifest().tensors):
            if spec.name == name:
                return index
        raise KeyError(name)

    def _state(self, index: int) -> TensorState:
        state = self._states[index]
        if state is None:
            name = self._manifest().tensors[index].name
            what = "was released" if index in self._released else "has not arrived yet"
            raise DecoderStateError(f"tensor {name!r} {what}")
        return state

    def _manifest(self) -> Manifest:
        if self.manifest is None:
            raise DecoderStateError("the manifest has not arrived yet")
        return self.manifest

    @property
    def rung(self) -> int:
        """The lowest rung over all tensors (-1 until every tensor has its first rung)."""
        return min(self._reached, default=-1)

    def rungs(self) -> dict[str, int]:
        """Rung reached by each tensor (-1: nothing yet)."""
        return {spec.name: r for spec, r in zip(self._manifest().tensors, self._reached, strict=False)}

    def tensor(self, name: str) -> NDArray[np.generic]:
        """The tensor as it stands, in its source dtype (bf16 as uint16 bits), shaped."""
        index = self._index(name)
        return _materialize(self._manifest().tensors[index], self._state(index))

    def tensors(self) -> dict[str, NDArray[np.generic]]:
        """Every tensor that has reached at least its first rung (and was not released)."""
        manifest = self._manifest()
        return {spec.name: _materialize(spec, state)
                for spec, state in zip(manifest.tensors, self._states, strict=False) if state is not None}

    def values(self, name: str) -> NDArray[np.float32]:
        """A float tensor as float32 values at its current rung (dequantized), shaped."""
        index = self._index(name)
        spec = self._manifest().tensors[index]
        return self._state(index).values(spec).reshape(spec.shape)


def _materialize(spec: TensorSpec, state: TensorState | None) -> NDArray[np.generic]:
    if state is None:
        raise DecoderStateError(f"tensor {spec.name!r} has not arrived yet")
    return state.bits(spec).reshape(spec.shape)


class Package:
    """Random access to a package in a file or in memory.

    >>> package = Package.open("model.blad")        # doctest: +SKIP
    >>> package.manifest.ladder.names                # doctest: +SKIP
    ['int8', 'exact']
    """

    def __init__(self, data: bytes | memoryview | mmap.mmap, name: str = "<bytes>") -> None:
        self._data = data
        self.name = name
        view = memoryview(data)
        header = Header.unpack(view[:HEADER_SIZE])
        end = HEADER_SIZE + header.manifest_length
        if len(view) < end:
            raise TruncatedError(f"{name}: {len(view)} bytes end inside the manifest (needs {end})")
        self.manifest = Manifest.decode(header, view[HEADER_SIZE:end])
        self.data_start = end
        expected = end + self.manifest.data_length
        if len(view) != expected:
            kind = TruncatedError if len(view) < expected else FormatError
            raise kind(f"{name}: {len(view)} bytes, but header and manifest describe {expected}")

    @classmethod
    def open(cls, source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> Package:
        """Open a package from a path (memory-mapped) or from bytes."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls(memoryview(source))
        path = Path(source)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise TruncatedError(f"{path}: empty file")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mapped, str(path))

    def chunk_bytes(self, index: int) -> memoryview:
        entry = self.manifest.chunks[index]
        start = self.data_start + entry.offset
        return memoryview(self._data)[start:start + entry.length]

    def decode(self, rung: int | None = None) -> dict[str, NDArray[np.generic]]:
        """Every tensor at `rung` (default: the last), in source dtype and shape, in source order."""
        top = len(self.manifest.ladder.rungs) - 1
        rung = top if rung is None else rung
        if not 0 <= rung <= top:
            raise ValueError(f"rung {rung} out of range 0..{top}")
        states: list[TensorState | None] = [None] * len(self.manifest.tensors)
        for index, entry in enumerate(self.manifest.chunks):
            if entry.rung <= rung:
                states[entry.tensor] = _apply_chunk(self.manifest, states, index, self.chunk_bytes(index))
        return {spec.name: _materialize(spec, state) for spec, state in zip(self.manifest.tensors, states, strict=False)}

    def stream(self, piece_size: int = 1 << 20) -> StreamDecoder:
        """A decoder fed with this package's bytes (handy for tests and for measuring the stream path)."""
        decoder = StreamDecoder()
        view = memoryview(self._data)
        for start in range(0, len(view), piece_size):
            decoder.feed(view[start:start + piece_size])
        decoder.close()
        return decoder
