"""Model files in (safetensors, Hugging Face folders, PyTorch state dicts) and out (safetensors)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from .model import SourceModel, SourceTensor
from .safetensors import load_safetensors_source, write_safetensors
from .torchfile import load_torch_source

TORCH_SUFFIXES = (".pt", ".pth", ".bin")

_NUMPY_DTYPES = {
    "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32", "int16": "I16",
    "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
}


def load_source(path: str | os.PathLike[str]) -> SourceModel:
    """Read a model from a `.safetensors` file, a Hugging Face folder, or a PyTorch state dict."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".safetensors":
        return load_safetensors_source(path)
    if path.suffix in TORCH_SUFFIXES:
        return load_torch_source(path)
    if path.suffix == ".onnx":
        from .onnx import load_onnx_source

        return load_onnx_source(path)
    raise SourceError(f"{path}: unknown model file type (expected .safetensors, a folder, .onnx, "
                      f"or {', '.join(TORCH_SUFFIXES)})")


def from_arrays(arrays: Mapping[str, NDArray[np.generic]], metadata: Mapping[str, str] | None = None) -> SourceModel:
    """A model from numpy arrays (bfloat16 as `ml_dtypes.bfloat16` arrays)."""
    tensors = {}
    for name, array in arrays.items():
        dtype = _NUMPY_DTYPES.get(str(array.dtype))
        if dtype is None:
            raise UnsupportedDtypeError(f"array {name!r} has dtype {array.dtype}, which bitladder does not encode")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        flat = np.ascontiguousarray(little).reshape(-1).view(STORAGE[dtype])
        tensors[name] = SourceTensor(name, dtype, tuple(array.shape), flat)
    return SourceModel(tensors=tensors, metadata=dict(metadata or {}))


__all__ = ["SourceModel", "SourceTensor", "from_arrays", "load_source", "write_safetensors"]
