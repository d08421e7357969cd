"""A numpy model of what the decoder holds at each step, written from the rules in bl.h and codecs.c's comments.

It shares no code with the C core, so a test that compares the two checks the core against the spec: int codes
count the thresholds (j - 1/2) * s (binary32 products) below |u|, coarser rungs take (|k| + (f - 1) / 2) // f capped
at M // f, reconstruction points are code * f * s rounded to the source dtype, escapes (non-finite or past the top
cell) hold the source patterns from the first rung on, a 16-bit rung holds the source rounded to it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bitladder.codecs.floatbits import from_f32, to_f32
from bitladder.codecs.native import NativeDtype
from bitladder.codecs.plan import Codec, TensorPlan

ESC = np.iinfo(np.int64).min
# Scales a row may have: [lo, hi] as bf16 patterns, by the dtype the codes are taken in (codecs.c, scale_range).
SCALE_RANGE = {"F16": (0x3580, 0x4400), "F32": (0x0D80, 0x7180), "BF16": (0x0D80, 0x7180)}


def _code_space(dtype: str, inner: NativeDtype, source: NDArray[Any]) -> NDArray[np.float32]:
    """The values int codes are taken from: the source, or its rounding to the 16-bit inner format."""
    values = to_f32(source, dtype)
    if inner is NativeDtype.NONE:
        return values
    return to_f32(from_f32(values, inner.name), inner.name)


def codes(values: NDArray[np.float32], scale: np.float32, max_code: int) -> NDArray[np.int64]:
    """Finest-grid codes: sign(u) * #{j >= 1 : fl((j - 1/2) * s) <= |u|}; ESC when not finite or past the top."""
    magnitude = np.abs(values)
    with np.errstate(over="ignore", invalid="ignore"):
        thresholds = (np.arange(1, max_code + 2, dtype=np.float32) - np.float32(0.5)) * scale
    count = np.searchsorted(thresholds, magnitude, side="right").astype(np.int64)
    signed = np.where(np.signbit(values), -count, count)
    return np.where(np.isfinite(values) & (count <= max_code), signed, ESC)


def coarse(k: NDArray[np.int64], factor: int, max_code: int) -> NDArray[np.int64]:
    j = np.minimum((np.abs(k) + (factor - 1) // 2) // factor, max_code // factor)
    return np.where(k < 0, -j, j)


def scales(plan: TensorPlan, source: NDArray[Any]) -> NDArray[np.uint16]:
    """The smallest bf16 scale per row that keeps its largest finite value in the top cell and every reconstruction
    point in its own cell, clamped to the valid range (bl.h, bl_scales)."""
    values = _code_space(plan.spec.dtype, plan.inner, source)
    code_dtype = plan.inner.name if plan.inner is not NativeDtype.NONE else plan.spec.dtype
    lo, hi = SCALE_RANGE[code_dtype]
    out = np.zeros(plan.rows, np.uint16)
    for row in range(plan.rows):
        part = values[row * plan.columns:(row + 1) * plan.columns]
        finite = np.abs(part[np.isfinite(part)])
        peak = np.float32(finite.max()) if finite.size else np.float32(0)
        quotient = np.array([peak / np.float32(plan.max_code)], np.float32).view(np.uint32)[0]
        s16 = min(max((int(quotient) + 0xFFFF) >> 16, lo), hi)
        while not _points_in_cells(plan.spec.dtype, plan.inner, plan.max_code, s16):
            assert s16 < hi, f"row {row}: no valid scale"
            s16 += 0x80
        out[row] = s16
    return out


def _scale(s16: int) -> np.float32:
    return np.array([s16 << 16], np.uint32).view(np.float32)[0]


@functools.cache
def _points_in_cells(dtype: str, inner: NativeDtype, max_code: int, s16: int) -> bool:
    k = np.arange(max_code + 1, dtype=np.int64)
    points = reconstruct(k, 1, _scale(s16), dtype)
    back = codes(_code_space(dtype, inner, points), _scale(s16), max_code)
    return bool(np.array_equal(back, k))


def reconstruct(j: NDArray[np.int64], factor: int, scale: np.float32, dtype: str) -> NDArray[Any]:
    """Bit patterns of code * factor * s in binary32, rounded to `dtype`."""
    with np.errstate(over="ignore"):
        values = (j * factor).astype(np.float32) * scale
    return from_f32(values, dtype)


def predict(plan: TensorPlan, source: NDArray[Any]) -> list[NDArray[Any]]:
    """The whole tensor's bit patterns once every block has taken steps 0..i, for each step i."""
    dtype = plan.spec.dtype
    out = []
    if not plan.laddered:
        return [source.copy()]
    row_scales = scales(plan, source) if plan.scaled else None
    finest = np.zeros(source.size, np.int64)
    if row_scales is not None:
        values = _code_space(plan.spec.dtype, plan.inner, source)
        for row in range(plan.rows):
            part = slice(row * plan.columns, (row + 1) * plan.columns)
            finest[part] = codes(values[part], _scale(int(row_scales[row])), plan.max_code)
    escaped = finest == ESC
    for step in plan.steps:
        if step.codec in (Codec.INT, Codec.INT_INT):
            held = source.copy()
            for row in range(plan.rows):
                part = slice(row * plan.columns, (row + 1) * plan.columns)
                k = finest[part]
                inside = k != ESC
                points = reconstruct(coarse(k[inside], step.factor, plan.max_code), step.factor,
                                     _scale(int(row_scales[row])), dtype)
                held[part][inside] = points
        elif step.codec in (Codec.INT_HALF, Codec.HALF):
            inner = plan.inner.name
            rounded = from_f32(to_f32(source, dtype), inner)
            widened = from_f32(to_f32(rounded, inner), dtype)
            keep = escaped if step.codec is Codec.INT_HALF else ~np.isfinite(to_f32(rounded, inner))
            held = np.where(keep, source, widened).astype(source.dtype)
        else:
            held = source.copy()
        out.append(held)
    return out
