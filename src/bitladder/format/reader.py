"""Reading packages: an incremental decoder fed bytes in pieces of any size, and random access to files.

The decoder keeps, per tensor, the state of the last chunk that verified. A chunk that fails its digest or
does not decode changes nothing: `feed` returns the error (with the chunks of that call that verified before
it), the tensors stay usable at the rung they had reached, and the decoder refuses further bytes until
`rewind()` (the stream position is no longer trustworthy).

Tensors come back in their source dtype: float32, float16, bfloat16 (an `ml_dtypes.bfloat16` array), bool,
and the integer dtypes. `raw=True` gives the storage the codec works on instead: floats as their unsigned bit
patterns (uint32 for float32, uint16 for float16 and bfloat16), bool as uint8; both are views of the same
memory, so `array.view(np.uint32)` on a float32 tensor is free either way.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from ..codecs.blocks import TensorState
from ..codecs.states import TensorSpec
from ..errors import (
    ChunkIntegrityError,
    DecoderStateError,
    FormatError,
    TruncatedError,
    UnknownTensorError,
    UsageError,
    file_access_error,
)
from .framer import Chunk, Fed, Framed, Framer
from .lineage import Held, parent_values
from .rungs import RungTally
from .signing import Trust, check_signature
from .spec import HEADER_SIZE, ChunkEntry, Header, Manifest, digest

# The numpy dtype of each source dtype whose storage is another dtype's bits (the rest are stored as they are).
SOURCE_VIEWS: Final[dict[str, np.dtype[Any]]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorUpdate:
    """A tensor moved up the ladder: `reaches` is the rung it now holds."""

    name: str
    tensor: int
    chunk: int
    rung: int
    reaches: int


def _check_chunk(manifest: Manifest, index: int, payload: memoryview) -> None:
    """The digest check of random access (a stream's chunks are checked by its `Framer`)."""
    entry = manifest.chunks[index]
    if len(payload) != entry.length:
        raise TruncatedError(f"{manifest.describe_chunk(index)}: got {len(payload)} of {entry.length} bytes")
    if digest(payload) != entry.digest:
        raise ChunkIntegrityError(f"{manifest.describe_chunk(index)}: digest mismatch at data offset {entry.offset}")


def _decode_chunk(manifest: Manifest, states: list[TensorState | None], index: int, payload: memoryview,
                  parents: Mapping[int, NDArray[Any]], placement: Placement | None = None) -> TensorState:
    """Decode verified chunk `index` into its tensor's state (created at the tensor's first chunk, from the
    parent's values for a delta tensor, in the memory `placement` gives for it if any)."""
    entry = manifest.chunks[index]
    state = states[entry.tensor]
    if state is None:
        plan = manifest.plans[entry.tensor]
        storage = None if placement is None else placement.storage(plan.spec)
        state = TensorState(plan, parents.get(entry.tensor), storage=storage,
                            guard=None if storage is None or placement is None else placement.guard)
    try:
        state.apply(entry.step, entry.block, payload)
    except ChunkIntegrityError as exc:
        raise ChunkIntegrityError(f"{manifest.describe_chunk(index)}: {exc}") from exc
    return state


@dataclass(frozen=True)
class Placement:
    """Where a decoder keeps tensors: `storage(spec)` gives the memory (flat, in the storage dtype) that holds
    that tensor's values, or None for memory of the decoder's own; `guard()` is held while a block is written
    there (a write lock, so that no reader sees a half-written block)."""

    storage: Callable[[TensorSpec], NDArray[Any] | None]
    guard: Callable[[], AbstractContextManager[Any]]


class StreamDecoder(Framed):
    """Decode a package from a byte stream, chunk by chunk.

    >>> decoder = StreamDecoder()
    >>> for piece in pieces:                       # doctest: +SKIP
    ...     fed = decoder.feed(piece)
    ...     for update in fed.updates:
    ...         print(update.name, decoder.manifest.ladder.rungs[update.reaches].name)
    ...     if fed.error is not None:
    ...         resume_at = decoder.rewind()       # fetch again from there
    """

    def __init__(self, *, max_bytes: int | None = None, trust: Trust | None = None, parent: Held | None = None) -> None:
        """`max_bytes` refuses (`ManifestError`) a package whose tensors would take more memory than that;
        `trust` refuses (`TrustError`, raised by `feed`) one not signed by a trusted key, before its manifest;
        `parent` are the weights a delta package applies to (checked against its lineage: `LineageError`)."""
        self._framer = Framer(max_bytes=max_bytes, trust=trust)
        self._parent = parent
        self._parents: dict[int, NDArray[Any]] = {}
        self._states: list[TensorState | None] = []
        self._released: set[int] = set()
        self._reached: RungTally[int] = RungTally((), 0)
        self._names: dict[str, int] = {}
        self._last_chunk: list[int] = []
        self._placement: Placement | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> Fed[TensorUpdate]:
        """Accept more bytes; returns the tensors that moved up, in delivery order, and the error that stopped
        the call, if any (the updates listed before it stand). After an error, `feed` raises
        `DecoderStateError` until `rewind()`.

        >>> StreamDecoder().feed(package_bytes).raise_for_error()   # doctest: +SKIP
        """
        fed = self._framer.feed(data, self._accept)
        self._bind()
        return fed

    def _bind(self) -> None:
        """Size the per-tensor state once the manifest has arrived."""
        manifest = self._framer.manifest
        if manifest is not None and len(self._reached) != len(manifest.tensors):
            self._parents = parent_values(manifest, self._parent)
            self._parent = None
            self._states = [None] * len(manifest.tensors)
            self._reached = RungTally(range(len(manifest.tensors)), len(manifest.ladder.rungs))
            self._names = manifest.positions
            self._last_chunk = [-1] * len(manifest.tensors)
            for index, entry in enumerate(manifest.chunks):
                self._last_chunk[entry.tensor] = index

    def _accept(self, chunk: Chunk) -> TensorUpdate | None:
        manifest = self._manifest()
        self._bind()
        assert chunk.payload is not None  # the framer keeps payloads unless built verify-only
        entry = chunk.entry
        if entry.tensor in self._released:
            raise DecoderStateError(f"{manifest.describe_chunk(chunk.index)}: its tensor was released")
        state = _decode_chunk(manifest, self._states, chunk.index, chunk.payload, self._parents, self._placement)
        self._states[entry.tensor] = state
        reached = state.rung
        if reached == self._reached[entry.tensor]:
            return None  # other blocks of the tensor are still below this rung
        self._reached.set(entry.tensor, reached)
        return TensorUpdate(manifest.tensors[entry.tensor].name, entry.tensor, chunk.index, entry.rung, reached)

    def place(self, placement: Placement) -> None:
        """Decode tensors into the memory `placement` gives (those whose first chunk is still to come), e.g. a live
        model's parameters: a block is written there once it decoded whole, under `placement.guard`."""
        self._placement = placement

    def release(self, name: str) -> None:
        """Forget a tensor whose last chunk has been decoded, once the caller holds it (its memory is freed
        when the caller lets go). `rungs()` still reports its rung; `tensor(name)` raises `DecoderStateError`.

        >>> decoder.release("fc.weight")         # doctest: +SKIP
        """
        index = self._index(name)
        last = self._last_chunk[index]
        if last >= self._framer.next_chunk:
            raise DecoderStateError(f"tensor {name!r} has chunks still to come (chunk {last}); it cannot be released")
        self._states[index] = None
        self._released.add(index)

    def _index(self, name: str) -> int:
        manifest = self._manifest()
        try:
            return self._names[name]
        except KeyError:
            raise UnknownTensorError(f"package {manifest.model_id!r} has no tensor {name!r} "
                                     f"(it has {len(self._names)}, e.g. {list(self._names)[:3]})") from None

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
        return self._reached.lowest if len(self._reached) else -1

    def rungs(self) -> dict[str, int]:
        """Rung reached by each tensor (-1: nothing yet)."""
        return {spec.name: self._reached[index] for index, spec in enumerate(self._manifest().tensors)}

    def rung_of(self, name: str) -> int:
        """Rung reached by one tensor (-1: nothing yet)."""
        return self._reached[self._index(name)]

    def tensor(self, name: str, *, raw: bool = False) -> NDArray[np.generic]:
        """The tensor as it stands at its current rung, shaped, in its source dtype (bfloat16 as an
        `ml_dtypes.bfloat16` array); `raw=True`: its storage bits instead (see the module docstring).

        >>> decoder.tensor("embeddings.LayerNorm.weight").dtype              # doctest: +SKIP
        dtype('float32')
        >>> decoder.tensor("embeddings.LayerNorm.weight", raw=True).dtype    # doctest: +SKIP
        dtype('uint32')
        """
        index = self._index(name)
        return _materialize(self._manifest().tensors[index], self._state(index), raw)

    def tensors(self, *, raw: bool = False) -> dict[str, NDArray[np.generic]]:
        """Every tensor that has reached at least its first rung (and was not released), as `tensor()`."""
        manifest = self._manifest()
        return {spec.name: _materialize(spec, state, raw)
                for spec, state in zip(manifest.tensors, self._states, strict=False) if state is not None}

    def values(self, name: str) -> NDArray[np.float32]:
        """A float tensor as float32 values at its current rung (dequantized), shaped."""
        index = self._index(name)
        spec = self._manifest().tensors[index]
        return self._state(index).values().reshape(spec.shape)


def _runs(indices: list[int], chunks: tuple[ChunkEntry, ...], count: int) -> list[list[int]]:
    """`indices` cut into about `count` consecutive runs of about equal payload bytes."""
    total = max(1, sum(chunks[index].length for index in indices))
    runs: list[list[int]] = [[]]
    filled = 0
    for index in indices:
        runs[-1].append(index)
        filled += chunks[index].length
        if filled * count >= total * len(runs):
            runs.append([])
    return [run for run in runs if run]


def _materialize(spec: TensorSpec, state: TensorState | None, raw: bool) -> NDArray[np.generic]:
    if state is None:
        raise DecoderStateError(f"tensor {spec.name!r} has not arrived yet")
    bits = state.bits().reshape(spec.shape)
    view = None if raw else SOURCE_VIEWS.get(spec.dtype)
    return bits if view is None else bits.view(view)


class Package:
    """Random access to a package in a file or in memory.

    >>> package = Package.open("model.blad")        # doctest: +SKIP
    >>> package.manifest.ladder.names                # doctest: +SKIP
    ['int8', 'exact']
    """

    def __init__(self, data: bytes | memoryview | mmap.mmap, name: str = "<bytes>", max_bytes: int | None = None,
                 trust: Trust | None = None) -> None:
        self._data = data
        self.name = name
        view = memoryview(data)
        header = Header.unpack(view[:HEADER_SIZE])
        if trust is not None:
            check_signature(header, trust, name)
        self.header = header
        end = HEADER_SIZE + header.manifest_length
        if len(view) < end:
            raise TruncatedError(f"{name}: {len(view)} bytes end inside the manifest (needs {end})")
        self.manifest = Manifest.decode(header, view[HEADER_SIZE:end], max_bytes)
        self.data_start = end
        expected = end + self.manifest.data_length
        if len(view) != expected:
            kind = TruncatedError if len(view) < expected else FormatError
            raise kind(f"{name}: {len(view)} bytes, but header and manifest describe {expected}")

    @classmethod
    def open(cls, source: str | os.PathLike[str] | bytes | bytearray | memoryview,
             max_bytes: int | None = None, *, trust: Trust | None = None) -> Package:
        """Open a package from a path (memory-mapped) or from bytes; `max_bytes` and `trust` as for
        `StreamDecoder` (a refused package raises its `TrustError` here, before its manifest is parsed)."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls(memoryview(source), max_bytes=max_bytes, trust=trust)
        path = Path(source)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below; mmap keeps its own reference
        except OSError as exc:
            raise file_access_error(exc, "package") from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise TruncatedError(f"{path}: empty file")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mapped, str(path), max_bytes, trust)

    def chunk_bytes(self, index: int) -> memoryview:
        entry = self.manifest.chunks[index]
        start = self.data_start + entry.offset
        return memoryview(self._data)[start:start + entry.length]

    def decode(self, rung: int | str | None = None, threads: int = 1, *, raw: bool = False,
               parent: Held | None = None) -> dict[str, NDArray[np.generic]]:
        """Every tensor at `rung` (a name such as `"int8"` or a position; default: the last), in source order,
        shaped, in its source dtype (bfloat16 as `ml_dtypes.bfloat16`); `raw=True`: the storage bits instead.

        With `threads` > 1, the chunks of one rung (each a different block) are checked and decoded in parallel:
        the core releases the interpreter lock, and a block's rungs still go in order.

        A delta package decodes from `parent`, the weights it updates (`LineageError` unless they are its parent's).

        >>> package.decode("int8")["embeddings.LayerNorm.weight"].dtype       # doctest: +SKIP
        dtype('float32')
        """
        rung = self.manifest.rung_index(rung)
        parents = parent_values(self.manifest, parent)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise UsageError(f"threads must be a positive integer, got {threads!r}")
        states: list[TensorState | None] = [TensorState(plan, parents.get(index))
                                            for index, plan in enumerate(self.manifest.plans)]

        def one(index: int) -> None:
            payload = self.chunk_bytes(index)
            _check_chunk(self.manifest, index, payload)
            _decode_chunk(self.manifest, states, index, payload, parents)

        def run_of(indices: list[int]) -> None:
            for index in indices:
                one(index)

        by_rung: dict[int, list[int]] = {}
        for index, entry in enumerate(self.manifest.chunks):
            if entry.rung <= rung:
                by_rung.setdefault(entry.rung, []).append(index)
        with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
            for indices in by_rung.values():
                if pool is None:
                    run_of(indices)
                else:  # a few runs of chunks per thread, not a task per chunk: small tensors cost hand-offs
                    list(pool.map(run_of, _runs(indices, self.manifest.chunks, 4 * threads)))
        return {spec.name: _materialize(spec, state, raw)
                for spec, state in zip(self.manifest.tensors, states, strict=False)}

    def stream(self, piece_size: int = 1 << 20) -> StreamDecoder:
        """A decoder fed with this package's bytes (handy for tests and for measuring the stream path)."""
        decoder = StreamDecoder()
        view = memoryview(self._data)
        for start in range(0, len(view), piece_size):
            decoder.feed(view[start:start + piece_size]).raise_for_error()
        decoder.close()
        return decoder
