"""PyTorch state dicts (`.pt`, `.pth`, `.bin`), loaded with `weights_only=True` and nothing else."""

from __future__ import annotations

import pickletools
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from ._checks import encodable, regular_file
from ._pickled import declared
from .model import SourceModel, SourceTensor

_DTYPES = {
    "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
    "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
    "torch.uint8": "U8", "torch.bool": "BOOL",
}


MAX_WRAPPERS = 8  # {"state_dict": {"state_dict": ...}} levels unwrapped before giving up
AMPLIFICATION = 4  # dense tensor bytes per file byte (storages shared by tied weights count once in the file)


def _state_dict(loaded: Any, path: Path) -> Mapping[str, Any]:
    import torch

    for _ in range(MAX_WRAPPERS):
        if not isinstance(loaded, Mapping):
            break
        if all(isinstance(v, torch.Tensor) for v in loaded.values()):
            names = [k for k in loaded if not isinstance(k, str)]
            if names:
                raise SourceError(f"{path}: state dict key {names[0]!r:.80} is not a string")
            for name in loaded:
                encodable(name, "state dict key", str(path))
            return loaded
        if not isinstance(loaded.get("state_dict"), Mapping):
            break
        loaded = loaded["state_dict"]
    raise SourceError(f"{path}: not a state dict (a mapping of names to tensors)")


def _check_layout(name: str, tensor: Any, where: str) -> None:
    """A dense CPU tensor (not sparse, meta, nested or quantized) that numpy can view."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise SourceError(f"{where}tensor {name!r} is a {type(tensor).__name__}, not a tensor")
    if tensor.layout != torch.strided or tensor.is_nested or tensor.device.type != "cpu":
        raise SourceError(f"{where}tensor {name!r} is {tensor.layout} on {tensor.device}, not a dense CPU tensor")


def tensor_to_numpy(name: str, tensor: Any, where: str = "") -> SourceTensor:
    """A torch tensor as a flat numpy array in its storage dtype (bf16 as its bit view)."""
    import torch

    _check_layout(name, tensor, where)
    dtype = _DTYPES.get(str(tensor.dtype))
    if dtype is None:
        raise UnsupportedDtypeError(f"{where}tensor {name!r} has dtype {tensor.dtype}, which bitladder does not encode")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    array = flat.view(torch.int16).numpy().view(np.uint16) if dtype == "BF16" else flat.numpy().view(STORAGE[dtype])
    return SourceTensor(name, dtype, tuple(tensor.shape), array)


def _check_sizes(state: Mapping[str, Any], path: Path, size: int) -> None:
    """Refuse tensors whose dense copies would outgrow the file (a one-element storage expanded to 2**40)."""
    total = 0
    for name, tensor in state.items():
        _check_layout(name, tensor, f"{path}: ")
        dense = tensor.numel() * tensor.element_size()
        total += dense
        if dense > size or total > AMPLIFICATION * size:
            raise SourceError(f"{path}: tensor {name!r} of shape {list(tensor.shape)} needs {dense} bytes dense, "
                              f"more than the {size}-byte file holds")


class _Capped:
    """A file that never reads past its end at once: a pickle declaring a 2 GiB string in a small file makes
    `read(2**31)` allocate 2 GiB before it finds the bytes missing."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle, self._size = handle, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._handle.tell())
        return self._handle.read(left if n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self._handle.readline(limit)

    def tell(self) -> int:
        return self._handle.tell()


def _main_pickle(path: Path, handle: IO[bytes], size: int) -> IO[bytes] | None:
    """The pickle holding the state dict: a zip's `data.pkl`, or a legacy file's fourth pickle (after the magic
    number, protocol version and system info); None for what only torch reads (a tar, a zip without data.pkl)."""
    if zipfile.is_zipfile(handle):
        try:
            archive = zipfile.ZipFile(handle)
            entries = archive.infolist()
            large = [e for e in entries if e.file_size > size]
            if large:
                raise SourceError(f"{path}: zip entry {large[0].filename!r} declares {large[0].file_size} bytes, "
                                  f"more than the {size}-byte file")
            pickles = [e for e in entries if e.filename.endswith("/data.pkl") or e.filename == "data.pkl"]
            return archive.open(pickles[0]) if len(pickles) == 1 else None
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
            return None  # torch.load reports what is wrong with it
    handle.seek(0)
    if tarfile.is_tarfile(handle):
        return None
    handle.seek(0)
    capped = cast(IO[bytes], _Capped(handle, size))
    for _ in range(3):
        for _ in pickletools.genops(capped):
            pass
    return capped


def _check_declared(path: Path, size: int) -> None:
    """Refuse storages and tensor views that declare more bytes than the file has, before torch allocates them,
    and a legacy file whose pickles do not parse (torch's unpickler reads the same opcodes)."""
    with open(path, "rb") as handle:
        try:
            pickle = _main_pickle(path, handle, size)
            if pickle is None:
                return
            storages, views = declared(pickle)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            raise SourceError(f"{path}: not a PyTorch pickle ({type(exc).__name__}: {str(exc)[:200]})") from exc
    total = sum(storages.values())
    if total > size:
        raise SourceError(f"{path}: the pickle declares {total} bytes of storage, more than the {size}-byte file")
    for key, nbytes, reach in views:
        if reach > nbytes:
            raise SourceError(f"{path}: a tensor view reaches byte {reach} of storage {key!r:.40}, which declares "
                              f"{nbytes} bytes")


def load_torch_source(path: Path) -> SourceModel:
    """A PyTorch state dict file; never unpickles anything but tensors and containers."""
    try:
        import torch
    except ImportError as exc:
        raise SourceError(f"{path}: reading PyTorch files needs torch (pip install 'bitladder[torch]')") from exc
    size = regular_file(path)
    _check_declared(path, size)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a bad file
        raise SourceError(f"{path}: cannot load as a weights-only state dict ({type(exc).__name__}: {exc})") from exc
    state = _state_dict(loaded, path)
    _check_sizes(state, path, size)
    tensors = {name: tensor_to_numpy(name, t, f"{path}: ") for name, t in state.items()}
    return SourceModel(tensors=tensors, format="torch", files=(path,))
