"""PyTorch state dicts (`.pt`, `.pth`, `.bin`), loaded with `weights_only=True` and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from .model import SourceModel, SourceTensor

_DTYPES = {
    "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
    "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
    "torch.uint8": "U8", "torch.bool": "BOOL",
}


def _state_dict(loaded: Any, path: Path) -> Mapping[str, Any]:
    import torch

    if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        return _state_dict(loaded["state_dict"], path)
    raise SourceError(f"{path}: not a state dict (a mapping of names to tensors)")


def tensor_to_numpy(name: str, tensor: Any, where: str = "") -> SourceTensor:
    """A torch tensor as a flat numpy array in its storage dtype (bf16 as its bit view)."""
    import torch

    dtype = _DTYPES.get(str(tensor.dtype))
    if dtype is None:
        raise UnsupportedDtypeError(f"{where}tensor {name!r} has dtype {tensor.dtype}, which bitladder does not encode")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    array = flat.view(torch.int16).numpy().view(np.uint16) if dtype == "BF16" else flat.numpy().view(STORAGE[dtype])
    return SourceTensor(name, dtype, tuple(tensor.shape), array)


def load_torch_source(path: Path) -> SourceModel:
    """A PyTorch state dict file; never unpickles anything but tensors and containers."""
    try:
        import torch
    except ImportError as exc:
        raise SourceError(f"{path}: reading PyTorch files needs torch (pip install 'bitladder[torch]')") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a bad file
        raise SourceError(f"{path}: cannot load as a weights-only state dict ({type(exc).__name__}: {exc})") from exc
    tensors = {name: tensor_to_numpy(name, t, f"{path}: ") for name, t in _state_dict(loaded, path).items()}
    return SourceModel(tensors=tensors, format="torch", files=(path,))
