"""Bit-level views of floating-point numbers, shared by every codec.

The residual codecs work on *order keys*: a bijection from a float's bit pattern to a signed integer
that increases with the float's value. Two nearby floats have nearby keys, so the difference of keys
is a small integer whatever the exponent, and because the map is a bijection on bit patterns it
round-trips NaN payloads, infinities, subnormals and -0.0 exactly.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

# Storage dtype (the unsigned view) and float view for each float source dtype.
FLOAT_BITS: Final = {"F32": np.dtype(np.uint32), "F16": np.dtype(np.uint16), "BF16": np.dtype(np.uint16)}


def order_key(bits: NDArray[np.unsignedinteger]) -> NDArray[np.signedinteger]:
    """Signed integer that sorts like the float whose bit pattern is `bits` (a bijection).

    >>> order_key(np.array([0x3F800000, 0xBF800000], np.uint32)).tolist()
    [1065353216, -1065353217]
    """
    signed = bits.view(np.int32 if bits.dtype.itemsize == 4 else np.int16)
    shift = bits.dtype.itemsize * 8 - 1
    magnitude_mask = (1 << shift) - 1
    return signed ^ ((signed >> shift) & magnitude_mask)


def from_order_key(keys: NDArray[np.signedinteger]) -> NDArray[np.unsignedinteger]:
    """Inverse of `order_key`."""
    shift = keys.dtype.itemsize * 8 - 1
    magnitude_mask = (1 << shift) - 1
    signed = keys ^ ((keys >> shift) & magnitude_mask)
    return signed.view(np.uint32 if keys.dtype.itemsize == 4 else np.uint16)


def zigzag(values: NDArray[np.signedinteger]) -> NDArray[np.unsignedinteger]:
    """Map small signed integers to small unsigned ones (0, -1, 1, -2 -> 0, 1, 2, 3); wraps."""
    shift = values.dtype.itemsize * 8 - 1
    unsigned = np.uint32 if values.dtype.itemsize == 4 else np.uint16
    return ((values << 1) ^ (values >> shift)).view(unsigned)


def unzigzag(values: NDArray[np.unsignedinteger]) -> NDArray[np.signedinteger]:
    """Inverse of `zigzag`."""
    signed = np.int32 if values.dtype.itemsize == 4 else np.int16
    sign = values & 1
    np.negative(sign, out=sign)  # 0 or all ones, by unsigned wrap-around
    magnitude = values >> 1
    magnitude ^= sign
    return magnitude.view(signed)


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


def to_f32(bits: NDArray[np.unsignedinteger], dtype: str) -> NDArray[np.float32]:
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
