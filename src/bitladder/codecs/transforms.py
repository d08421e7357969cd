"""Chunk codecs: how one tensor moves from the state the decoder holds to the next rung.

Each codec registers under the name the manifest records (`class IntBase(ChunkCodec, name="int")`).
`encode` returns the byte sections of the chunk, its parameters and the state the decoder will reach;
`decode` rebuilds that state from the previous one and the sections. Both are pure: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import ChunkIntegrityError
from .entropy import DEFAULT_LEVEL, compress, decompress, pack_planes, pack_small, unpack_planes, unpack_small
from .floatbits import from_f32, from_order_key, order_key, to_f32, unzigzag, zigzag
from .ladder import HalfRung, IntRung, Rung
from .states import ExactState, HalfState, IntState, TensorSpec, TensorState

Sections = list[bytes]


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
    def encode(
        cls, spec: TensorSpec, source: NDArray[np.generic], prev: TensorState | None, rung: Rung, level: int
    ) -> Encoded:
        raise NotImplementedError

    @classmethod
    def decode(
        cls, spec: TensorSpec, prev: TensorState | None, sections: list[memoryview], params: dict[str, Any]
    ) -> TensorState:
        raise NotImplementedError

    @classmethod
    def section_count(cls, spec: TensorSpec, params: dict[str, Any]) -> int:
        """How many sections a valid chunk of this codec has (checked before decoding)."""
        raise NotImplementedError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ChunkIntegrityError(message)


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
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.float32(0))
    peak = np.abs(x).max(axis=1) if x.size else np.zeros(rows, np.float32)
    scales = (peak / np.float32(max_code)).astype(np.float32)
    scales[(scales == 0) | ~np.isfinite(scales)] = 1
    codes = np.clip(np.rint(x / scales[:, None]), -max_code, max_code).astype(np.int8)
    return IntState(codes=codes, scales=scales)


def _scales_section(scales: NDArray[np.float32]) -> bytes:
    return compress(np.ascontiguousarray(scales, dtype="<f4"))


def _read_scales(section: memoryview, rows: int) -> NDArray[np.float32]:
    return np.frombuffer(decompress(section, rows * 4), dtype="<f4").astype(np.float32)


class ExactPlanes(ChunkCodec, name="planes"):
    """The source bytes, split into byte planes: small tensors, non-float tensors, exact-only ladders."""

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        return Encoded(cls.name, pack_planes(source, level), {}, ExactState(source))

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        return ExactState(unpack_planes(list(sections), spec.storage, spec.numel))

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return spec.storage.itemsize


class IntBase(ChunkCodec, name="int"):
    """First integer rung: scales, then the codes as one zstd-coded int8 plane."""

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        assert isinstance(rung, IntRung)
        rows = _rows(spec, rung.group_size)
        state = quantize(to_f32(source, spec.dtype), rows, rung.max_code)
        sections = [_scales_section(state.scales), compress(state.codes, level)]
        return Encoded(cls.name, sections, {"bits": rung.bits, "rows": rows}, state)

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        bits = _int_param(params, "bits", 2, 8)
        rows = _check_rows(spec, params)
        scales = _read_scales(sections[0], rows)
        codes = np.frombuffer(decompress(sections[1], spec.numel), dtype=np.int8)
        max_code = (1 << (bits - 1)) - 1
        _require(bool(np.all(np.abs(codes.astype(np.int16)) <= max_code)), f"int{bits} codes out of range")
        return IntState(codes=codes.reshape(rows, -1) if rows else codes.reshape(0, 0), scales=scales)

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return 2


def _refine_prediction(prev: IntState, scales: NDArray[np.float32]) -> NDArray[np.int16]:
    """Where the finer codes are expected to lie, given the coarser codes and both scales."""
    ratio = (prev.scales / scales).astype(np.float32)
    guess = np.rint(prev.codes * ratio[:, None], dtype=np.float32)
    return np.clip(guess, -32767, 32767).astype(np.int16)


class IntRefine(ChunkCodec, name="int-refine"):
    """A finer integer rung: new scales, and the new codes as a small offset from the coarser ones."""

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        assert isinstance(rung, IntRung) and isinstance(prev, IntState)
        rows = prev.scales.shape[0]
        state = quantize(to_f32(source, spec.dtype), rows, rung.max_code)
        offset = state.codes.astype(np.int16) - _refine_prediction(prev, state.scales)
        sections = [_scales_section(state.scales), *pack_small(zigzag(offset.reshape(-1)), level)]
        return Encoded(cls.name, sections, {"bits": rung.bits, "rows": rows}, state)

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        _require(isinstance(prev, IntState), "int-refine chunk arrived before its integer base")
        bits = _int_param(params, "bits", 2, 8)
        rows = _check_rows(spec, params)
        _require(rows == prev.scales.shape[0], f"int-refine has {rows} scale rows, its base {prev.scales.shape[0]}")
        scales = _read_scales(sections[0], rows)
        offset = unzigzag(unpack_small(list(sections[1:]), np.dtype(np.uint16), spec.numel))
        codes = _refine_prediction(prev, scales) + offset.reshape(prev.codes.shape)
        max_code = (1 << (bits - 1)) - 1
        _require(bool(np.all(np.abs(codes) <= max_code)), f"int{bits} codes out of range")
        return IntState(codes=codes.astype(np.int8), scales=scales)

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return 3


def _half_format(params: dict[str, Any]) -> str:
    fmt = params.get("format")
    _require(fmt in ("bf16", "fp16"), f"half format {fmt!r} is not bf16 or fp16")
    return "BF16" if fmt == "bf16" else "F16"


class HalfBase(ChunkCodec, name="half"):
    """A first 16-bit rung: the rounded values' bytes as two planes."""

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        assert isinstance(rung, HalfRung)
        half = from_f32(to_f32(source, spec.dtype), rung.dtype)
        return Encoded(cls.name, pack_planes(half, level), {"format": rung.format}, HalfState(half, rung.dtype))

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        half_dtype = _half_format(params)
        half = unpack_planes(list(sections), np.dtype(np.uint16), spec.numel)
        return HalfState(half, half_dtype)  # type: ignore[arg-type]

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return 2


def _key_delta(target: NDArray[np.uint16], prediction: NDArray[np.uint16]) -> NDArray[np.uint16]:
    return zigzag(order_key(target) - order_key(prediction))


def _apply_key_delta(prediction: NDArray[np.uint16], delta: NDArray[np.uint16]) -> NDArray[np.uint16]:
    return from_order_key(order_key(prediction) + unzigzag(delta))


class HalfDelta(ChunkCodec, name="half-delta"):
    """A 16-bit rung after an integer one: order-key offsets from the rounded integer prediction."""

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        assert isinstance(rung, HalfRung) and isinstance(prev, IntState)
        half = from_f32(to_f32(source, spec.dtype), rung.dtype)
        prediction = from_f32(prev.dequantized(), rung.dtype)
        sections = pack_small(_key_delta(half, prediction), level)
        return Encoded(cls.name, sections, {"format": rung.format}, HalfState(half, rung.dtype))

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        _require(isinstance(prev, IntState), "half-delta chunk arrived before its integer base")
        half_dtype = _half_format(params)
        prediction = from_f32(prev.dequantized(), half_dtype)
        delta = unpack_small(list(sections), np.dtype(np.uint16), spec.numel)
        return HalfState(_apply_key_delta(prediction, delta), half_dtype)  # type: ignore[arg-type]

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return 2


class ExactDelta(ChunkCodec, name="exact-delta"):
    """The source bits after a lossy rung.

    16-bit sources: order-key offsets from the prediction. float32 sources: the low 16 bits verbatim
    (two planes, so any structure they have still compresses) and the high 16 bits as offsets from the
    prediction's high half, which the decoder's rung already pins down to a few values.
    """

    @classmethod
    def encode(cls, spec, source, prev, rung, level):  # type: ignore[no-untyped-def]
        assert prev is not None
        prediction = prev.bits(spec)
        if spec.dtype == "F32":
            low = (source & 0xFFFF).astype(np.uint16)
            high, predicted_high = (source >> 16).astype(np.uint16), (prediction >> 16).astype(np.uint16)
            # Plain wrapping difference: a nonzero integer code fixes the sign, so it equals the key offset.
            delta = zigzag((high - predicted_high).view(np.int16))
            sections = [*pack_planes(low, level), *pack_small(delta, level)]
        else:
            sections = pack_small(_key_delta(source, prediction), level)
        return Encoded(cls.name, sections, {}, ExactState(source))

    @classmethod
    def decode(cls, spec, prev, sections, params):  # type: ignore[no-untyped-def]
        _require(isinstance(prev, (IntState, HalfState)), "exact-delta chunk arrived before a lossy rung")
        prediction = prev.bits(spec)
        u16 = np.dtype(np.uint16)
        if spec.dtype == "F32":
            low = unpack_planes(list(sections[:2]), u16, spec.numel)
            delta = unpack_small(list(sections[2:]), u16, spec.numel)
            high = (prediction >> 16).astype(np.uint16)
            high += unzigzag(delta).view(np.uint16)
            data = np.empty(spec.numel, dtype="<u4")
            halves = data.view("<u2").reshape(-1, 2)  # low half first
            halves[:, 0] = low
            halves[:, 1] = high
        else:
            data = _apply_key_delta(prediction, unpack_small(list(sections), u16, spec.numel))  # type: ignore[arg-type]
        return ExactState(data)

    @classmethod
    def section_count(cls, spec, params):  # type: ignore[no-untyped-def]
        return 4 if spec.dtype == "F32" else 2
