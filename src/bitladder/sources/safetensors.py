"""safetensors files and Hugging Face folders (single or sharded), read and written without torch.

A safetensors file is 8 bytes of header length, a JSON header, then the tensor bytes the header indexes.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from .model import SourceModel, SourceTensor

MAX_HEADER_SIZE = 100 * 1024 * 1024
INDEX_NAME = "model.safetensors.index.json"


def read_safetensors(path: Path) -> tuple[dict[str, SourceTensor], dict[str, str]]:
    """Tensors (memory-mapped, zero-copy) and `__metadata__` of one safetensors file."""
    with open(path, "rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:
            raise SourceError(f"{path}: empty file") from exc
    if len(data) < 8:
        raise SourceError(f"{path}: {len(data)} bytes is too short for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_SIZE, len(data) - 8):
        raise SourceError(f"{path}: header length {length} exceeds the file or {MAX_HEADER_SIZE} bytes")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SourceError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        tensors[name] = _tensor(path, name, info, data, base)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _tensor(path: Path, name: str, info: object, data: mmap.mmap, base: int) -> SourceTensor:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise SourceError(f"{path}: tensor {name!r} entry is malformed")
    dtype = info["dtype"]
    if dtype not in STORAGE:
        raise UnsupportedDtypeError(f"{path}: tensor {name!r} has dtype {dtype!r}, not one of {sorted(STORAGE)}")
    shape = tuple(int(d) for d in info["shape"])
    start, end = (int(x) for x in info["data_offsets"])
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 <= start <= end <= len(data) - base or end - start != count * STORAGE[dtype].itemsize:
        raise SourceError(f"{path}: tensor {name!r} offsets {start}..{end} do not fit its shape or the file")
    array = np.frombuffer(data, dtype=STORAGE[dtype], count=count, offset=base + start)
    return SourceTensor(name, dtype, shape, array)


def load_safetensors_source(path: Path) -> SourceModel:
    """A `.safetensors` file, or a folder holding one or a sharded set with its index."""
    files: list[Path]
    if path.is_dir():
        index = path / INDEX_NAME
        if index.exists():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = [path / name for name in dict.fromkeys(weight_map.values())]
        else:
            files = sorted(path.glob("*.safetensors"))
        if not files:
            raise SourceError(f"{path}: no .safetensors file in this folder")
    else:
        files = [path]
    tensors: dict[str, SourceTensor] = {}
    metadata: dict[str, str] = {}
    for file in files:
        part, meta = read_safetensors(file)
        duplicated = part.keys() & tensors.keys()
        if duplicated:
            raise SourceError(f"{file}: tensor {sorted(duplicated)[0]!r} also appears in another shard")
        tensors.update(part)
        metadata.update(meta)
    return SourceModel(tensors=tensors, metadata=metadata, format="safetensors", files=tuple(files))


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, NDArray[np.generic]]],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `name -> (dtype, array)` as a safetensors file, in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, array) in tensors.items():
        size = array.size * STORAGE[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for dtype, array in tensors.values():
            out.write(np.ascontiguousarray(array, dtype=STORAGE[dtype]).tobytes())
    tmp.replace(path)
