"""Conversions between float bit patterns (the storage view of F32, F16 and BF16 tensors) and float32.

Codecs work on the unsigned bit view of a float tensor, so every bit pattern (NaN payloads, infinities,
subnormals, -0.0) survives; float32 values are only used to quantize and to predict.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

# Storage dtype (the unsigned view) and float view for each float source dtype.
FLOAT_BITS: Final = {"F32": np.dtype(np.uint32), "F16": np.dtype(np.uint16), "BF16": np.dtype(np.uint16)}
MAGNITUDE: Final = {"F32": (0x7FFFFFFF, 0x7F800000), "F16": (0x7FFF, 0x7C00), "BF16": (0x7FFF, 0x7F80)}
"""Per float dtype: the mask that clears the sign bit of a pattern, and the smallest non-finite magnitude (patterns
without their sign order like the magnitudes)."""


def bf16_to_f32(bits: NDArray[np.uint16]) -> NDArray[np.float32]:
    """Widen bfloat16 bit patterns to float32 values (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: NDArray[np.float32]) -> NDArray[np.uint16]:
    """Round float32 values to bfloat16 bit patterns, to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        # Keep the sign and force a quiet NaN so that rounding never turns a NaN into an infinity.
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def to_f32(bits: NDArray[Any], dtype: str) -> NDArray[np.float32]:
    """Values of a float tensor given as its unsigned bit view, widened to float32 (exact)."""
    if dtype == "F32":
        return bits.view(np.float32)
    if dtype == "F16":
        return bits.view(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_to_f32(bits.view(np.uint16))
    raise ValueError(f"not a float dtype: {dtype}")


def from_f32(values: NDArray[np.float32], dtype: str) -> NDArray[np.unsignedinteger]:
    """Round float32 values to `dtype` (to nearest even) and return its unsigned bit view."""
    if dtype == "F32":
        return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    if dtype == "F16":
        with np.errstate(over="ignore"):  # overflow rounds to infinity, as IEEE says
            return values.astype(np.float16).view(np.uint16)
    if dtype == "BF16":
        return f32_to_bf16(values)
    raise ValueError(f"not a float dtype: {dtype}")
