"""A model as the encoder sees it: named tensors in source order, with metadata and a digest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import TensorSpec


@dataclass(frozen=True)
class SourceTensor:
    """One tensor: `data` is flat, in the storage dtype (float tensors as their unsigned bit view)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: NDArray[np.generic]

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, self.shape)


@dataclass(frozen=True)
class SourceModel:
    """Tensors in source order, the file's metadata, and where they came from."""

    tensors: dict[str, SourceTensor]
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "arrays"
    files: tuple[Path, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(t.spec.nbytes for t in self.tensors.values())

    def digest(self) -> str:
        """sha256 of the source files' bytes in order (of the tensor bytes when there is no file)."""
        hasher = hashlib.sha256()
        if self.files:
            for path in self.files:
                with open(path, "rb") as handle:
                    while block := handle.read(1 << 22):
                        hasher.update(block)
        else:
            for tensor in self.tensors.values():
                hasher.update(tensor.name.encode())
                hasher.update(np.ascontiguousarray(tensor.data).tobytes())
        return "sha256:" + hasher.hexdigest()
