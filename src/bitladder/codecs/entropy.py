"""Entropy coding: byte planes, each a zstd frame.

Splitting an array of k-byte integers into k planes (all low bytes, then all next bytes, ...) lets
zstd's order-0 Huffman stage see one homogeneous byte distribution per plane: the near-constant high
bytes of small residuals shrink to almost nothing while the noisy low bytes pass through as raw blocks.
"""

from __future__ import annotations

import threading

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


class FrameReader:
    """One zstd frame decoded piece by piece, so that its whole output never sits in memory at once.

    >>> reader = FrameReader(compress(b"abcdef"), 6)
    >>> reader.read(2), reader.read(4)
    (b'ab', b'cdef')
    >>> reader.finish()                          # raises ChunkIntegrityError if bytes are left over
    """

    def __init__(self, frame: bytes | memoryview, expected_size: int) -> None:
        _check_declared(frame, expected_size)
        self._expected = expected_size
        self._got = 0
        # A decompressor of its own: several readers of one chunk are open at once.
        self._reader = zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=False)

    def read(self, size: int) -> bytes:
        """Exactly `size` more bytes of the output."""
        if self._got + size > self._expected:
            raise ChunkIntegrityError(f"section read past its {self._expected} bytes")
        pieces, missing = [], size
        try:
            while missing:
                piece = self._reader.read(missing)
                if not piece:
                    raise ChunkIntegrityError(f"section decoded to {self._got + size - missing} bytes, "
                                              f"expected {self._expected}")
                pieces.append(piece)
                missing -= len(piece)
        except zstandard.ZstdError as exc:
            raise ChunkIntegrityError(f"section does not decode: {exc}") from exc
        self._got += size
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def finish(self) -> None:
        """Check that the whole output was read and the frame ends there."""
        try:
            extra = self._reader.read(1)
        except zstandard.ZstdError as exc:
            raise ChunkIntegrityError(f"section does not decode: {exc}") from exc
        if self._got != self._expected or extra:
            raise ChunkIntegrityError(f"section decoded to more or fewer than {self._expected} bytes")


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


def unpack_planes(frames: list[bytes | memoryview], dtype: np.dtype[np.generic], count: int) -> NDArray[np.generic]:
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


ESCAPE = 255
OFFSET = 128


def pack_offsets(target: NDArray[np.uint16], prediction: NDArray[np.uint16], level: int = DEFAULT_LEVEL) -> list[bytes]:
    """16-bit values close to a prediction the decoder holds, as two frames.

    First one byte per value: `target - prediction + 128` (wrapping) when that lies in 0..254, else 255;
    then the targets of the 255s, verbatim. A separate high-byte plane would cost zstd's Huffman stage at
    least one bit per value even when nearly all zeros; escapes cost only where they occur.

    >>> target, prediction = np.array([3, 300, 7], np.uint16), np.array([4, 4, 4], np.uint16)
    >>> apply_offsets(pack_offsets(target, prediction), prediction).tolist()
    [3, 300, 7]
    """
    offset = target - prediction  # all in wrapping uint16 arithmetic
    offset += np.uint16(OFFSET)
    np.minimum(offset, np.uint16(ESCAPE), out=offset)
    codes = offset.astype(np.uint8)
    escaped = np.ascontiguousarray(target[codes == ESCAPE], dtype="<u2")
    return [compress(codes, level), compress(escaped, level)]


def read_offsets(frames: list[bytes | memoryview], count: int) -> tuple[NDArray[np.uint8], NDArray[np.intp], NDArray[np.uint16]]:
    """The parts of `pack_offsets` output: the bytes, the escaped positions, the escaped values."""
    if len(frames) != 2:
        raise ChunkIntegrityError(f"expected 2 frames for offset bytes, got {len(frames)}")
    codes = np.frombuffer(decompress(frames[0], count), dtype=np.uint8)
    where = np.flatnonzero(codes == ESCAPE)
    escaped = np.frombuffer(decompress(frames[1], where.size * 2), dtype="<u2").astype(np.uint16)
    return codes, where, escaped


def add_offsets(codes: NDArray[np.uint8], prediction: NDArray[np.uint16]) -> NDArray[np.uint16]:
    """`prediction + codes - 128`, wrapping; escapes are not patched."""
    values = np.add(codes, prediction, dtype=np.uint16)
    values -= np.uint16(OFFSET)
    return values


def apply_offsets(frames: list[bytes | memoryview], prediction: NDArray[np.uint16]) -> NDArray[np.uint16]:
    """Inverse of `pack_offsets`."""
    codes, where, escaped = read_offsets(frames, prediction.size)
    values = add_offsets(codes, prediction)
    values[where] = escaped
    return values
