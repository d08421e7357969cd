"""The same-run baselines of `bitladder eval`: the fp32 model as one file, raw or compressed.

Each scheme packs a state dict into bytes that a plain HTTP server can serve, and unpacks those bytes
back into arrays (the device's decode, timed by the scenario):

* `fp32`        safetensors bytes of the source tensors
* `fp32+zstd`   the same bytes, one zstd frame (level 3)
* `fp32+zipnn`  ZipNN per tensor (byte grouping + Huffman), in a small bundle
* `nncodec`     NNCodec (MPEG NNC reference) bitstream of the float32 tensors at a fixed qp; other tensors raw.
  Lossy; its encode takes ~40 s on MiniLM, so the scenario caches it by source digest and qp.

>>> data = pack("fp32+zstd", {"w": np.ones((4, 4), np.float32)})
>>> unpack("fp32+zstd", data)["w"].shape
(4, 4)
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
import sys
import tempfile
import types
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zstandard

from ..errors import BitladderError

Tensors = Mapping[str, np.ndarray]
SCHEMES = ("fp32", "fp32+zstd", "fp32+zipnn", "nncodec")
LOSSLESS = frozenset({"fp32", "fp32+zstd", "fp32+zipnn"})
NNCODEC_QP = -44  # transparent for MiniLM and MobileNetV2 (benchmarks/results: SQNR > 45 dB)
_NNC_FRAMEWORK = ("nncodec.framework", "nncodec.framework.tensorflow_model", "nncodec.framework.pytorch_model",
                  "nncodec.framework.use_case_init")


class SchemeError(BitladderError):
    """A baseline scheme is unknown, not installed, or its bytes do not unpack."""


def pack(scheme: str, tensors: Tensors, qp: int = NNCODEC_QP) -> bytes:
    """The bytes a server holds for `scheme`."""
    if scheme == "fp32":
        return _safetensors(tensors)
    if scheme == "fp32+zstd":
        return zstandard.ZstdCompressor(level=3).compress(_safetensors(tensors))
    if scheme == "fp32+zipnn":
        codec = _zipnn()
        return _bundle({n: bytes(codec.compress(bytearray(np.ascontiguousarray(a).tobytes())))
                        for n, a in tensors.items()}, tensors)
    if scheme == "nncodec":
        return _nncodec_pack(tensors, qp)
    raise SchemeError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def unpack(scheme: str, data: bytes) -> dict[str, np.ndarray]:
    """Arrays back from `pack`'s bytes (the device-side decode)."""
    if scheme == "fp32":
        return _load_safetensors(data)
    if scheme == "fp32+zstd":
        return _load_safetensors(zstandard.ZstdDecompressor().decompress(data))
    if scheme == "fp32+zipnn":
        codec = _zipnn()
        return {n: np.frombuffer(bytes(codec.decompress(blob)), dtype).reshape(shape)
                for n, (dtype, shape, blob) in _unbundle(data).items()}
    if scheme == "nncodec":
        return _nncodec_unpack(data)
    raise SchemeError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def _safetensors(tensors: Tensors) -> bytes:
    from safetensors.numpy import save

    return bytes(save({n: np.ascontiguousarray(a) for n, a in tensors.items()}))


def _load_safetensors(data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return dict(load(data))


def _bundle(blobs: Mapping[str, bytes], tensors: Tensors) -> bytes:
    """u64 header length, JSON header [[name, dtype, shape, length]...], then the blobs in order."""
    header = json.dumps([[n, tensors[n].dtype.str, list(tensors[n].shape), len(b)] for n, b in blobs.items()])
    encoded = header.encode()
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs.values())


def _unbundle(data: bytes) -> dict[str, tuple[np.dtype, tuple[int, ...], bytes]]:
    if len(data) < 8:
        raise SchemeError("bundle shorter than its header")
    (size,) = struct.unpack_from("<Q", data)
    try:
        header = json.loads(data[8:8 + size])
    except ValueError as exc:
        raise SchemeError(f"bad bundle header: {exc}") from exc
    out, offset = {}, 8 + size
    for name, dtype, shape, length in header:
        out[name] = (np.dtype(dtype), tuple(shape), data[offset:offset + length])
        offset += length
    if offset != len(data):
        raise SchemeError(f"bundle has {len(data) - offset} bytes its header does not describe")
    return out


def _zipnn() -> Any:
    try:
        from zipnn import ZipNN
    except ImportError as exc:
        raise SchemeError("the fp32+zipnn baseline needs zipnn (pip install zipnn==0.5.4)") from exc
    return ZipNN(input_format="byte", bytearray_dtype="float32", threads=1)


@functools.cache
def nncodec_module() -> types.ModuleType:
    """`nncodec.nnc.compression` without its framework adapters (they need torchvision; see benchmarks)."""
    stubs = {name: types.ModuleType(name) for name in _NNC_FRAMEWORK if name not in sys.modules}
    package = sys.modules.get(_NNC_FRAMEWORK[0]) or stubs[_NNC_FRAMEWORK[0]]
    for name in _NNC_FRAMEWORK[1:]:
        if name in stubs:
            setattr(package, name.rsplit(".", 1)[1], stubs[name])
    sys.modules.update(stubs)
    try:
        from nncodec.nnc import compression
    except ImportError as exc:
        raise SchemeError("the nncodec baseline needs nncodec (pip install --no-deps nncodec==2.1.3)") from exc
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]
    module: types.ModuleType = compression
    return module


@contextlib.contextmanager
def nncodec_sandbox() -> Iterator[None]:
    """NNCodec writes files into the working directory and prints: give it an empty one, swallow the prints."""
    with tempfile.TemporaryDirectory(prefix="nncodec-") as tmp, contextlib.chdir(tmp), \
            contextlib.redirect_stdout(io.StringIO()):
        yield


def _nncodec_pack(tensors: Tensors, qp: int) -> bytes:
    compression = nncodec_module()
    coded = {n: np.ascontiguousarray(a) for n, a in tensors.items() if a.dtype == np.float32}
    raw = {n: a for n, a in tensors.items() if n not in coded}
    with nncodec_sandbox():
        stream = bytes(compression.compress(coded, bitstream_path=None, qp=qp, nonweight_qp=-75,
                                            return_bitstream=True, verbose=False))
    shapes = {n: list(a.shape) for n, a in coded.items()}
    head = json.dumps(shapes).encode()
    return struct.pack("<QQ", len(head), len(stream)) + head + stream + _safetensors(raw)


def _nncodec_unpack(data: bytes) -> dict[str, np.ndarray]:
    compression = nncodec_module()
    head_size, stream_size = struct.unpack_from("<QQ", data)
    shapes = json.loads(data[16:16 + head_size])
    stream = data[16 + head_size:16 + head_size + stream_size]
    with nncodec_sandbox():
        params = compression.decompress(bytearray(stream), verbose=False)
    out = {n: np.asarray(params[n], np.float32).reshape(shape) for n, shape in shapes.items()}
    out.update(_load_safetensors(data[16 + head_size + stream_size:]))
    return out
