"""The tensors a package describes: name, dtype, shape, and the storage dtype each source dtype is held in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._memo import cached
from .floatbits import FLOAT_BITS

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
    delta: bool = False
    """In a delta package: coded against the parent's tensor of the same name, dtype and shape."""
    factor: int = 0
    """Under a target first rung (`12%,int8,exact`): this tensor's first-rung cell width in codes of the int rung
    after it, odd, as the encoder allocated it; 0 otherwise."""

    @cached
    def numel(self) -> int:
        numel = 1
        for side in self.shape:
            numel *= side
        return numel

    @property
    def storage(self) -> np.dtype[Any]:
        return STORAGE[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage.itemsize


