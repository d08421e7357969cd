"""safetensors files and Hugging Face folders (single or sharded), read and written without torch.

A safetensors file is 8 bytes of header length, a JSON header, then the tensor bytes the header indexes.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from ..outputs import output_file, write_safetensors_to
from ._checks import encodable, integer, parse_json, regular_file, shape_of
from .model import SourceModel, SourceTensor

MAX_HEADER_SIZE = 100 * 1024 * 1024  # as safetensors itself
MAX_INDEX_SIZE = 100 * 1024 * 1024
HEADER_DEPTH = 3  # {name: {"shape": [...]}}
INDEX_DEPTH = 8
INDEX_NAME = "model.safetensors.index.json"


def read_safetensors(path: Path) -> tuple[dict[str, SourceTensor], dict[str, str]]:
    """Tensors (memory-mapped, zero-copy) and `__metadata__` of one safetensors file.

    The header must index the byte buffer completely: offsets in range, no overlaps, no holes, nothing after.
    """
    data = _map(path)
    if len(data) < 8:
        raise SourceError(f"{path}: {len(data)} bytes is too short for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_SIZE, len(data) - 8):
        raise SourceError(f"{path}: header length {length} exceeds the file or {MAX_HEADER_SIZE} bytes")
    header = parse_json(data[8:8 + length], f"{path}: header", HEADER_DEPTH)
    if not isinstance(header, dict):
        raise SourceError(f"{path}: header is not a JSON object")
    metadata = _metadata(path, header.pop("__metadata__", None))
    base = 8 + length
    tensors, spans = {}, []
    for name, info in header.items():
        tensors[name], start, end = _tensor(path, name, info, data, base)
        spans.append((start, end, name))
    _check_coverage(path, spans, len(data) - base)
    return tensors, metadata


def _map(path: Path) -> mmap.mmap | bytes:
    if regular_file(path) == 0:
        raise SourceError(f"{path}: empty file")
    try:
        with open(path, "rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot map the file ({exc})") from exc


def _metadata(path: Path, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SourceError(f"{path}: __metadata__ is not an object of strings to strings")
    for key, value in metadata.items():
        encodable(key, "metadata key", str(path))
        encodable(value, f"metadata {key!r:.40}", str(path))
    return metadata


def _tensor(path: Path, name: str, info: object, data: mmap.mmap | bytes, base: int) -> tuple[SourceTensor, int, int]:
    where = f"{path}: tensor {encodable(name, 'name', str(path))[:200]!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise SourceError(f"{where} entry is malformed (an object with dtype, shape and data_offsets)")
    dtype = info["dtype"]
    if not isinstance(dtype, str):
        raise SourceError(f"{where} has dtype {dtype!r}, which is not a string")
    if dtype not in STORAGE:
        raise UnsupportedDtypeError(f"{where} has dtype {dtype[:40]!r}, not one of {sorted(STORAGE)}")
    shape, count = shape_of(info["shape"], where)
    offsets = info["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise SourceError(f"{where} data_offsets {offsets!r:.80} is not a [start, end] pair")
    size = len(data) - base
    start, end = (integer(x, "data offset", where, high=size) for x in offsets)
    if start > end or end - start != count * STORAGE[dtype].itemsize:
        raise SourceError(f"{where} offsets {start}..{end} do not fit its shape {list(shape)} of {dtype}")
    array = np.frombuffer(data, dtype=STORAGE[dtype], count=count, offset=base + start)
    return SourceTensor(name, dtype, shape, array), start, end


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], size: int) -> None:
    """The tensors' byte ranges must tile the buffer: no overlap, no hole, nothing after the last."""
    at, previous = 0, ""
    for start, end, name in sorted(spans):
        if start < at:
            raise SourceError(f"{path}: tensor {name[:200]!r} offsets {start}..{end} overlap tensor {previous[:200]!r}")
        if start > at:
            raise SourceError(f"{path}: bytes {at}..{start} of the buffer belong to no tensor (a hole before "
                              f"{name[:200]!r}'s offsets)")
        at, previous = end, name
    if at != size:
        raise SourceError(f"{path}: the tensors' offsets end at byte {at} of a {size}-byte buffer")


def _shards(path: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The shard files of a folder, and the index's tensor -> shard map (None without an index)."""
    index = path / INDEX_NAME
    if not index.exists():
        return sorted(p for p in path.glob("*.safetensors")), None
    if regular_file(index, "index") > MAX_INDEX_SIZE:
        raise SourceError(f"{index}: over {MAX_INDEX_SIZE} bytes")
    try:
        raw = index.read_bytes()
    except OSError as exc:
        raise SourceError(f"{index}: cannot read the index ({exc.strerror or exc})") from exc
    parsed = parse_json(raw, str(index), INDEX_DEPTH)
    weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SourceError(f"{index}: no weight_map object of tensor names to shard file names")
    folder = path.resolve()
    located = {}
    for name, shard in weight_map.items():
        if not shard or "\x00" in shard or os.path.isabs(shard) or (path / shard).resolve().parent != folder:
            raise SourceError(f"{index}: tensor {name[:200]!r} names shard {shard[:200]!r}, not a file in {path}")
        located[name] = path / shard
    return list(dict.fromkeys(located.values())), located


def load_safetensors_source(path: Path) -> SourceModel:
    """A `.safetensors` file, or a folder holding one or a sharded set with its index."""
    files: list[Path]
    located: dict[str, Path] | None = None
    if path.is_dir():
        files, located = _shards(path)
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
        for name in part if located is not None else ():
            if located.get(name) != file:  # type: ignore[union-attr]
                raise SourceError(f"{file}: holds tensor {name[:200]!r}, which the index does not map to this shard")
        tensors.update(part)
        metadata.update(meta)
    missing = [name for name in located or () if name not in tensors]
    if missing:
        raise SourceError(f"{path / INDEX_NAME}: tensor {missing[0][:200]!r} is in no shard it names")
    return SourceModel(tensors=tensors, metadata=metadata, format="safetensors", files=tuple(files))


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, NDArray[np.generic]]],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `name -> (dtype, array)` (values or storage bits) as a safetensors file, in the given order, atomically."""
    with output_file(path) as out:
        write_safetensors_to(out, tensors, metadata)
