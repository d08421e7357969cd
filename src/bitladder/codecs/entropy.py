"""Byte planes, each a zstd frame: how tensors outside the ladder (small, or not float) travel.

Splitting an array of k-byte integers into k planes (all low bytes, then all next bytes, ...) lets
zstd's order-0 Huffman stage see one homogeneous byte distribution per plane: the near-constant high
bytes of small residuals shrink to almost nothing while the noisy low bytes pass through as raw blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import zstandard
from numpy.typing import NDArray

from ..errors import ChunkIntegrityError

# Level 1: these planes are order-0 sources; longer match searches slow decoding and do not help.
DEFAULT_LEVEL = 1

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = getattr(_local, "compressors", {})
    _local.compressors = cache
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor  # type: ignore[no-any-return]


def compress(data: bytes | memoryview | NDArray[np.generic], level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame holding `data` (with its size in the frame header)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data.cast("B")
    return _compressor(level).compress(data)


def _check_declared(frame: bytes | memoryview, expected_size: int) -> None:
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise ChunkIntegrityError(f"section is not a zstd frame: {exc}") from exc
    if declared != expected_size:
        raise ChunkIntegrityError(f"section declares {declared} bytes, expected {expected_size}")


def decompress(frame: bytes | memoryview, expected_size: int) -> bytes:
    """Decode one zstd frame that must expand to exactly `expected_size` bytes."""
    _check_declared(frame, expected_size)
    try:
        data = _decompressor().decompress(frame, max_output_size=expected_size)
    except zstandard.ZstdError as exc:
        raise ChunkIntegrityError(f"section does not decode: {exc}") from exc
    if len(data) != expected_size:
        raise ChunkIntegrityError(f"section decoded to {len(data)} bytes, expected {expected_size}")
    return data


def pack_planes(values: NDArray[np.generic], level: int = DEFAULT_LEVEL) -> list[bytes]:
    """Split a 1-D array of k-byte items into k byte planes and compress each (little-endian order).

    >>> planes = pack_planes(np.arange(4, dtype=np.uint16))
    >>> unpack_planes(planes, np.dtype(np.uint16), 4).tolist()
    [0, 1, 2, 3]
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    width = flat.dtype.itemsize
    if width == 1:
        return [compress(flat, level)]
    as_bytes = flat.view(np.uint8).reshape(-1, width)
    return [compress(np.ascontiguousarray(as_bytes[:, i]), level) for i in range(width)]


def unpack_planes(frames: Sequence[bytes | memoryview], dtype: np.dtype[np.generic], count: int) -> NDArray[np.generic]:
    """Inverse of `pack_planes`: `count` items of `dtype` from its byte-plane frames."""
    width = dtype.itemsize
    if len(frames) != width:
        raise ChunkIntegrityError(f"expected {width} byte planes, got {len(frames)}")
    # Decode (and so check every size) before allocating: a hostile manifest may announce a huge count.
    planes = [decompress(frame, count) for frame in frames]
    if width == 1:
        return np.frombuffer(planes[0], dtype=dtype).copy()
    out = np.empty((count, width), dtype=np.uint8)
    for i, plane in enumerate(planes):
        out[:, i] = np.frombuffer(plane, dtype=np.uint8)
    return out.view(dtype).reshape(count)
