"""What a decoder holds for one tensor after each rung, and how that becomes a tensor.

Encoder and decoder build the very same state from the same bytes with the same numpy operations
(IEEE arithmetic is exactly rounded), so the encoder can code each refinement against exactly what the
decoder will hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .floatbits import FLOAT_BITS, from_f32, to_f32

# numpy storage dtypes of the source dtypes bitladder accepts (names as in safetensors).
STORAGE: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<u4"),
    "F16": np.dtype("<u2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}


def is_float(dtype: str) -> bool:
    """Whether the codec ladder applies to `dtype` (other dtypes are always sent exact)."""
    return dtype in FLOAT_BITS


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor, as the manifest lists it."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def storage(self) -> np.dtype[np.generic]:
        return STORAGE[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage.itemsize


class TensorState:
    """Base of the per-tensor decoder states."""

    def bits(self, spec: TensorSpec) -> NDArray[np.generic]:
        """The tensor at this state, flat, in the source storage dtype (for floats: the bit view)."""
        raise NotImplementedError

    def values(self, spec: TensorSpec) -> NDArray[np.float32]:
        """The tensor at this state as float32 values, flat (floats only)."""
        return to_f32(self.bits(spec), spec.dtype)


@dataclass(frozen=True)
class ExactState(TensorState):
    """The source bits themselves."""

    data: NDArray[np.generic]

    def bits(self, spec: TensorSpec) -> NDArray[np.generic]:
        return self.data


@dataclass(frozen=True)
class IntState(TensorState):
    """Integer codes (rows x columns) and one float32 scale per row (a row is a channel or a group)."""

    codes: NDArray[np.int8]
    scales: NDArray[np.float32]

    def dequantized(self) -> NDArray[np.float32]:
        """codes * scale in float32, flat; the one formula both sides use."""
        with np.errstate(over="ignore"):  # codes * scale may exceed float32; the exact rung repairs it
            out = np.multiply(self.codes, self.scales[:, None], dtype=np.float32)
        return out.reshape(-1)

    def values(self, spec: TensorSpec) -> NDArray[np.float32]:
        return self.dequantized()

    def bits(self, spec: TensorSpec) -> NDArray[np.generic]:
        return from_f32(self.dequantized(), spec.dtype)


@dataclass(frozen=True)
class HalfState(TensorState):
    """A 16-bit float rendition (bf16 or fp16 bit patterns)."""

    half_bits: NDArray[np.uint16]
    half_dtype: str

    def values(self, spec: TensorSpec) -> NDArray[np.float32]:
        return to_f32(self.half_bits, self.half_dtype)

    def bits(self, spec: TensorSpec) -> NDArray[np.generic]:
        if spec.dtype == self.half_dtype:
            return self.half_bits
        return from_f32(self.values(spec), spec.dtype)
