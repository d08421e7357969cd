"""Chunk codecs: how one tensor moves from the state the decoder holds to the next rung.

Each codec registers under the name the manifest records (`class IntBase(ChunkCodec, name="int")`).
`encode` returns the byte sections of the chunk, its parameters and the state the decoder will reach;
`decode` rebuilds that state from the previous one and the sections. Both are pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import ChunkIntegrityError
from .entropy import (
    ESCAPE,
    FrameReader,
    add_offsets,
    apply_offsets,
    compress,
    decompress,
    pack_offsets,
    pack_planes,
    unpack_planes,
)
from .floatbits import from_f32, to_f32
from .ladder import HalfRung, IntRung, Rung
from .states import ExactState, HalfState, IntState, TensorSpec, TensorState

Sections = list[bytes]
Params = dict[str, Any]
Array = NDArray[Any]


@dataclass(frozen=True)
class Encoded:
    """One chunk's payload before it is placed in a package."""

    codec: str
    sections: Sections
    params: dict[str, Any]
    state: TensorState


class ChunkCodec:
    """A way to code one tensor's step up the ladder. Subclasses register by name."""

    registry: ClassVar[dict[str, type[ChunkCodec]]] = {}
    name: ClassVar[str]

    def __init_subclass__(cls, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        ChunkCodec.registry[name] = cls

    @classmethod
    def lookup(cls, name: str) -> type[ChunkCodec]:
        try:
            return cls.registry[name]
        except KeyError:
            raise ChunkIntegrityError(f"unknown chunk codec {name!r}") from None

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        """Code `source` (flat, storage dtype) up to `rung` from `prev`, the state the decoder holds."""
        raise NotImplementedError

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        """The state after this chunk; raises ChunkIntegrityError on anything inconsistent."""
        raise NotImplementedError

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        """How many sections a valid chunk of this codec has (checked before decoding)."""
        raise NotImplementedError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ChunkIntegrityError(message)


def _misplanned(codec: str) -> TypeError:
    """Encoders are called by the planner only; a mismatch is a bug in the caller, not bad data."""
    return TypeError(f"codec {codec!r} called with a rung or state it does not code from")


def _int_param(params: dict[str, Any], key: str, low: int, high: int) -> int:
    value = params.get(key)
    _require(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
             f"chunk parameter {key}={value!r} is not an integer in [{low}, {high}]")
    return int(value)  # type: ignore[arg-type]


def _rows(spec: TensorSpec, group_size: int) -> int:
    """Scale rows: one per output channel, or one per group of `group_size` inputs when it divides evenly."""
    if spec.numel == 0:
        return 0
    channels = spec.shape[0] if len(spec.shape) >= 2 else 1
    columns = spec.numel // channels
    if group_size and columns % group_size == 0:
        return spec.numel // group_size
    return channels


def _check_rows(spec: TensorSpec, params: dict[str, Any]) -> int:
    rows = _int_param(params, "rows", 0, max(spec.numel, 0))
    _require((rows == 0) == (spec.numel == 0) and (rows == 0 or spec.numel % rows == 0),
             f"{rows} scale rows do not divide {spec.numel} elements")
    return rows


def quantize(values: NDArray[np.float32], rows: int, max_code: int) -> IntState:
    """Symmetric round-to-nearest codes in [-max_code, max_code], one scale per row; non-finite -> 0."""
    x = values.reshape(rows, -1) if rows else values.reshape(0, 0)
    peak = np.abs(x).max(axis=1) if x.size else np.zeros(rows, np.float32)
    if not np.isfinite(peak).all():  # NaN and infinities propagate into the row peaks
        x = np.where(np.isfinite(x), x, np.float32(0))
        peak = np.abs(x).max(axis=1)
    scales = (peak / np.float32(max_code)).astype(np.float32)
    scales[(scales == 0) | ~np.isfinite(scales)] = 1
    scaled = x / scales[:, None]  # not x * (1 / scale): the reciprocal of a subnormal scale overflows
    np.rint(scaled, out=scaled)
    np.clip(scaled, -max_code, max_code, out=scaled)
    return IntState(codes=scaled.astype(np.int8), scales=scales)


def _check_codes(codes: NDArray[np.integer], bits: int) -> None:
    max_code = (1 << (bits - 1)) - 1
    _require(not codes.size or (int(codes.min()) >= -max_code and int(codes.max()) <= max_code),
             f"int{bits} codes out of range")


def _scales_section(scales: NDArray[np.float32]) -> bytes:
    return compress(np.ascontiguousarray(scales, dtype="<f4"))


def _read_scales(section: memoryview, rows: int) -> NDArray[np.float32]:
    return np.frombuffer(decompress(section, rows * 4), dtype="<f4").astype(np.float32)


class ExactPlanes(ChunkCodec, name="planes"):
    """The source bytes, split into byte planes: small tensors, non-float tensors, exact-only ladders."""

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        return Encoded(cls.name, pack_planes(source, level), {}, ExactState(source))

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        return ExactState(unpack_planes(list(sections), spec.storage, spec.numel))

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return spec.storage.itemsize


class IntBase(ChunkCodec, name="int"):
    """First integer rung: scales, then the codes as one zstd-coded int8 plane."""

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        if not isinstance(rung, IntRung):
            raise _misplanned(cls.name)
        rows = _rows(spec, rung.group_size)
        state = quantize(to_f32(source, spec.dtype), rows, rung.max_code)
        sections = [_scales_section(state.scales), compress(state.codes, level)]
        return Encoded(cls.name, sections, {"bits": rung.bits, "rows": rows}, state)

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        bits = _int_param(params, "bits", 2, 8)
        rows = _check_rows(spec, params)
        scales = _read_scales(sections[0], rows)
        codes = np.frombuffer(decompress(sections[1], spec.numel), dtype=np.int8)
        _check_codes(codes, bits)
        return IntState(codes=codes.reshape(rows, -1) if rows else codes.reshape(0, 0), scales=scales)

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return 2


def _refine_prediction(prev: IntState, scales: NDArray[np.float32]) -> NDArray[np.int16]:
    """Where the finer codes are expected to lie, given the coarser codes and both scales."""
    ratio = (prev.scales / scales).astype(np.float32)
    guess = np.rint(prev.codes * ratio[:, None], dtype=np.float32)
    clipped: NDArray[np.int16] = np.clip(guess, -32767, 32767).astype(np.int16)
    return clipped


class IntRefine(ChunkCodec, name="int-refine"):
    """A finer integer rung: new scales, and the new codes as a small offset from the coarser ones."""

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        if not (isinstance(rung, IntRung) and isinstance(prev, IntState)):
            raise _misplanned(cls.name)
        rows = prev.scales.shape[0]
        state = quantize(to_f32(source, spec.dtype), rows, rung.max_code)
        codes = state.codes.astype(np.int16).reshape(-1).view(np.uint16)
        guess = _refine_prediction(prev, state.scales).reshape(-1).view(np.uint16)
        sections = [_scales_section(state.scales), *pack_offsets(codes, guess, level)]
        return Encoded(cls.name, sections, {"bits": rung.bits, "rows": rows}, state)

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        if not isinstance(prev, IntState):
            raise ChunkIntegrityError("int-refine chunk arrived before its integer base")
        bits = _int_param(params, "bits", 2, 8)
        rows = _check_rows(spec, params)
        _require(rows == prev.scales.shape[0], f"int-refine has {rows} scale rows, its base {prev.scales.shape[0]}")
        scales = _read_scales(sections[0], rows)
        guess = _refine_prediction(prev, scales).reshape(-1).view(np.uint16)
        codes = apply_offsets(list(sections[1:]), guess).view(np.int16).reshape(prev.codes.shape)
        _check_codes(codes, bits)
        return IntState(codes=codes.astype(np.int8), scales=scales)

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return 3


def _half_format(params: dict[str, Any]) -> str:
    fmt = params.get("format")
    _require(fmt in ("bf16", "fp16"), f"half format {fmt!r} is not bf16 or fp16")
    return "BF16" if fmt == "bf16" else "F16"


class HalfBase(ChunkCodec, name="half"):
    """A first 16-bit rung: the rounded values' bytes as two planes."""

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        if not isinstance(rung, HalfRung):
            raise _misplanned(cls.name)
        half = from_f32(to_f32(source, spec.dtype), rung.dtype)
        return Encoded(cls.name, pack_planes(half, level), {"format": rung.format}, HalfState(half, rung.dtype))

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        half_dtype = _half_format(params)
        half = unpack_planes(list(sections), np.dtype(np.uint16), spec.numel)
        return HalfState(half, half_dtype)  # type: ignore[arg-type]

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return 2


class HalfDelta(ChunkCodec, name="half-delta"):
    """A 16-bit rung after an integer one: offsets from the integer prediction rounded to 16 bits."""

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        if not (isinstance(rung, HalfRung) and isinstance(prev, IntState)):
            raise _misplanned(cls.name)
        half = from_f32(to_f32(source, spec.dtype), rung.dtype)
        prediction = from_f32(prev.dequantized(), rung.dtype)
        sections = pack_offsets(half, prediction, level)
        return Encoded(cls.name, sections, {"format": rung.format}, HalfState(half, rung.dtype))

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        if not isinstance(prev, IntState):
            raise ChunkIntegrityError("half-delta chunk arrived before its integer base")
        half_dtype = _half_format(params)
        prediction = from_f32(prev.dequantized(), half_dtype)
        return HalfState(apply_offsets(list(sections), prediction), half_dtype)

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return 2


BLOCK = 1 << 16


def _prediction_blocks(prev: TensorState, spec: TensorSpec) -> Iterator[tuple[int, int, NDArray[np.uint32]]]:
    """The prediction in the source dtype, in consecutive blocks of about `BLOCK` elements."""
    if isinstance(prev, IntState) and prev.codes.size:
        rows, columns = prev.codes.shape
        step = max(1, BLOCK // columns)
        for row in range(0, rows, step):
            block = IntState(prev.codes[row:row + step], prev.scales[row:row + step])
            yield row * columns, min(row + step, rows) * columns, block.bits(spec)  # type: ignore[misc]
        return
    full = prev.bits(spec)
    for begin in range(0, spec.numel, BLOCK):
        yield begin, min(begin + BLOCK, spec.numel), full[begin:begin + BLOCK]  # type: ignore[misc]


class ExactDelta(ChunkCodec, name="exact-delta"):
    """The source bits after a lossy rung.

    16-bit sources: offsets from the prediction. float32 sources: the low 16 bits verbatim (two planes,
    so any structure they have still compresses) and the high 16 bits as offsets from the prediction's
    high half, which the decoder's rung already pins down to a few values.
    """

    @classmethod
    def encode(cls, spec: TensorSpec, source: Array, prev: TensorState | None, rung: Rung, level: int) -> Encoded:
        if prev is None:
            raise _misplanned(cls.name)
        prediction = prev.bits(spec)
        if spec.dtype == "F32":
            source_bytes = source.view(np.uint8).reshape(-1, 4)
            low_planes = [compress(np.ascontiguousarray(source_bytes[:, i]), level) for i in (0, 1)]
            high = np.ascontiguousarray(source.view("<u2")[1::2])
            sections = [*low_planes, *pack_offsets(high, np.ascontiguousarray(prediction.view("<u2")[1::2]), level)]
        else:
            sections = pack_offsets(source.view(np.uint16), prediction.view(np.uint16), level)
        return Encoded(cls.name, sections, {}, ExactState(source))

    @classmethod
    def decode(cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: Params) -> TensorState:
        if not isinstance(prev, (IntState, HalfState)):
            raise ChunkIntegrityError("exact-delta chunk arrived before a lossy rung")
        if spec.dtype != "F32":
            return ExactState(apply_offsets(list(sections), prev.bits(spec)))  # type: ignore[arg-type]
        _require(len(sections) == 4, f"exact-delta for F32 has 4 sections, got {len(sections)}")
        count = spec.numel
        readers = [FrameReader(section, count) for section in sections[:3]]  # low, next byte, offset codes
        data = np.empty(count, dtype="<u4")
        data_bytes, data_halves = data.view(np.uint8).reshape(-1, 4), data.view("<u2").reshape(-1, 2)
        escapes = []
        # Block by block: the passes run in cache, and no section is ever decoded whole (a tensor's worth of
        # temporaries would sit next to the tensor being built and the one the model still serves).
        for begin, end, predicted in _prediction_blocks(prev, spec):
            low, next_low, codes = (np.frombuffer(reader.read(end - begin), dtype=np.uint8) for reader in readers)
            data_bytes[begin:end, 0] = low
            data_bytes[begin:end, 1] = next_low
            data_halves[begin:end, 1] = add_offsets(codes, predicted.view("<u2")[1::2])
            escapes.append(np.flatnonzero(codes == ESCAPE) + begin)
        for reader in readers:
            reader.finish()
        where = np.concatenate(escapes) if escapes else np.zeros(0, np.intp)
        data_halves[where, 1] = np.frombuffer(decompress(sections[3], where.size * 2), dtype="<u2")
        return ExactState(data)

    @classmethod
    def section_count(cls, spec: TensorSpec, params: Params) -> int:
        return 4 if spec.dtype == "F32" else 2
