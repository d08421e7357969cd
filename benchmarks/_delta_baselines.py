"""Delta baselines for benchmarks/updates.py: peers' ways to bring a device that holds OLD to NEW, in one process.

* **ZipNN delta** (``zipnn`` 0.5.4's XOR mode): ``ZipNN(delta_compressed_type="byte")`` then
  ``compress(new, delta_second_data=old)``: NEW's bytes XOR OLD's, then ZipNN's byte grouping and entropy coding;
  ``decompress(packed, delta_second_data=old)`` undoes it. One call per tensor, as ``_baselines.zipnn_roundtrip``.
* **zstd --patch-from**: what the zstd CLI does for ``--patch-from=OLD``, in process with the libzstd that the
  ``zstandard`` package bundles: OLD's file bytes referenced as a prefix (``ZSTD_CCtx_refPrefix``), a window that
  spans OLD and NEW, long-distance matching, compressing NEW's file bytes. (The package's ``ZstdCompressionDict``
  with ``DICT_TYPE_RAWCONTENT`` loads OLD as a dictionary instead, which the long-distance matcher never searches:
  on the 90 MB MiniLM pairs it found almost none of OLD. ``_prefix_compress`` says by how much.)
* **NNCodec differential** (``nncodec`` 2.1.x, ``compress(..., compress_differences=True)``, as its federated-learning
  client calls it): NEW − OLD of every float32 tensor, quantized at ``qp`` (1-D tensors at ``nonweight_qp``) and
  DeepCABAC-coded; the device adds the decoded difference to OLD. Parent signalling needs the per-side state dict its
  client keeps (``approx_param_base``); a fresh one means no temporal context. All-zero differences are left out of
  the stream. Lossy (never bit-exact): the result carries the rebuilt NEW for SQNR.

Each returns a ``_baselines.BaselineResult`` whose ``source_bytes`` is NEW's size.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zstandard
from _baselines import ZIPNN_DTYPES, BaselineResult, Tensors

from bitladder.eval.schemes import nncodec_module, nncodec_sandbox


def _raw(tensors: Tensors) -> dict[str, bytes]:
    return {name: np.ascontiguousarray(a).tobytes() for name, a in tensors.items()}


def _check_pair(old: Tensors, new: Tensors) -> None:
    mismatched = [n for n in new if n not in old or old[n].shape != new[n].shape or old[n].dtype != new[n].dtype]
    if mismatched or len(old) != len(new):
        raise ValueError(f"OLD and NEW differ in names, shapes or dtypes (first: {(mismatched or sorted(set(old) - set(new)))[0]})")


def zipnn_delta_roundtrip(old: Tensors, new: Tensors, threads: int = 1, dtype: str = "float32") -> BaselineResult:
    """ZipNN's delta (XOR) mode, tensor by tensor: NEW coded against OLD, decoded against OLD, checked bit-exact.

    ``dtype`` is ZipNN's ``bytearray_dtype`` (pass 16-bit tensors as their uint16 view), ``threads`` its thread count.

    >>> w = np.ones((64, 64), np.float32)
    >>> r = zipnn_delta_roundtrip({"w": w}, {"w": w + np.float32(1e-3)})
    >>> r.exact, r.compressed_bytes < r.source_bytes
    (True, True)
    """
    from zipnn import ZipNN

    if dtype not in ZIPNN_DTYPES:
        raise ValueError(f"dtype must be one of {ZIPNN_DTYPES}, got {dtype!r}")
    _check_pair(old, new)
    before, after = _raw(old), _raw(new)
    encoder = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=threads, delta_compressed_type="byte")
    decoder = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=threads, delta_compressed_type="byte")
    scratch = {name: bytearray(b) for name, b in after.items()}  # compress may rewrite its input
    start = time.perf_counter()
    packed = {name: bytes(encoder.compress(buf, delta_second_data=before[name])) for name, buf in scratch.items()}
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    unpacked = {name: bytes(decoder.decompress(p, delta_second_data=before[name])) for name, p in packed.items()}
    decode_s = time.perf_counter() - start
    return BaselineResult(
        name=f"zipnn delta (threads={threads})",
        compressed_bytes=sum(len(p) for p in packed.values()),
        source_bytes=sum(len(b) for b in after.values()),
        encode_s=encode_s,
        decode_s=decode_s,
        exact=all(unpacked[n] == b for n, b in after.items()),
    )


def zstd_patch_roundtrip(old: bytes, new: bytes, level: int = 12) -> BaselineResult:
    """``zstd --patch-from=OLD NEW`` in process: OLD referenced as a prefix, a window over OLD and NEW, long mode.

    >>> old = bytes(range(256)) * 4096
    >>> r = zstd_patch_roundtrip(old, old[:1000] + b"x" + old[1001:], level=3)
    >>> r.exact, r.compressed_bytes < 200
    (True, True)
    """
    window_log = min(max(10, math.ceil(math.log2(len(old) + len(new) + 1))), zstandard.WINDOWLOG_MAX)
    start = time.perf_counter()
    packed = _prefix_compress(old, new, level, window_log)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    unpacked = _prefix_decompress(old, packed, window_log)
    decode_s = time.perf_counter() - start
    return BaselineResult(f"zstd-{level} --patch-from", len(packed), len(new), encode_s, decode_s, unpacked == new)


def _libzstd() -> tuple[Any, Any]:
    """(ffi, lib) of the libzstd that the zstandard package bundles, through its cffi backend."""
    backend = importlib.import_module("zstandard.backend_cffi")
    return backend.ffi, backend.lib


def _zstd_checked(code: int) -> int:
    ffi, lib = _libzstd()

    if lib.ZSTD_isError(code):
        raise zstandard.ZstdError(ffi.string(lib.ZSTD_getErrorName(code)).decode())
    return code


def _prefix_compress(old: bytes, new: bytes, level: int, window_log: int) -> bytes:
    # The zstandard package's own API only loads dictionaries, which zstd's long-distance matcher never searches: on
    # minilm-last2 (90 MB, 16 % of the weights changed) a raw-content dictionary sends 82.6 MB at level 12, OLD
    # referenced as a prefix 13.2 MB. So this calls the package's bundled libzstd the CLI's way, one worker thread
    # as the CLI's default: single-threaded, the optimal parsers (levels >= 16) lose the long matches too (82.9 MB).
    ffi, lib = _libzstd()

    cctx = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
    for parameter, value in ((lib.ZSTD_c_compressionLevel, level), (lib.ZSTD_c_windowLog, window_log),
                             (lib.ZSTD_c_enableLongDistanceMatching, 1), (lib.ZSTD_c_nbWorkers, 1)):
        _zstd_checked(lib.ZSTD_CCtx_setParameter(cctx, parameter, value))
    prefix = ffi.from_buffer(old)
    _zstd_checked(lib.ZSTD_CCtx_refPrefix(cctx, prefix, len(old)))
    bound = lib.ZSTD_compressBound(len(new))
    out = ffi.new("char[]", bound)
    size = _zstd_checked(lib.ZSTD_compress2(cctx, out, bound, ffi.from_buffer(new), len(new)))
    return bytes(ffi.buffer(out, size))


def _prefix_decompress(old: bytes, packed: bytes, window_log: int) -> bytes:
    ffi, lib = _libzstd()

    size = lib.ZSTD_getFrameContentSize(packed, len(packed))
    if size >= lib.ZSTD_CONTENTSIZE_ERROR:  # ERROR and UNKNOWN are the two largest values
        raise zstandard.ZstdError("zstd frame without a content size")
    dctx = ffi.gc(lib.ZSTD_createDCtx(), lib.ZSTD_freeDCtx)
    _zstd_checked(lib.ZSTD_DCtx_setParameter(dctx, lib.ZSTD_d_windowLogMax, window_log))
    prefix = ffi.from_buffer(old)
    _zstd_checked(lib.ZSTD_DCtx_refPrefix(dctx, prefix, len(old)))
    out = ffi.new("char[]", max(size, 1))
    written = _zstd_checked(lib.ZSTD_decompressDCtx(dctx, out, size, ffi.from_buffer(packed), len(packed)))
    return bytes(ffi.buffer(out, written))


def _parent_state() -> dict[str, Any]:
    # What NNCodec's federated client keeps per side between rounds; a differential stream (parent signalling on)
    # needs one, and a fresh one (no earlier rounds, no temporal context) codes NEW - OLD on its own.
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


def nncodec_differential(old: Tensors, new: Tensors, qp: int, nonweight_qp: int = -75) -> BaselineResult:
    """NNCodec's differential update: NEW − OLD of the float32 tensors coded at ``qp``; ``decoded`` = OLD + decoded.

    Other tensors travel raw when they changed and cost nothing when they did not (the device holds OLD).

    >>> w = np.random.default_rng(0).normal(0, 0.02, (256, 256)).astype(np.float32)
    >>> r = nncodec_differential({"w": w}, {"w": w + np.float32(1e-3)}, qp=-50)
    >>> r.exact, r.decoded["w"].shape
    (False, (256, 256))
    """
    compression = nncodec_module()
    _check_pair(old, new)
    floats = [n for n, a in new.items() if a.dtype == np.float32]
    if not floats:
        raise ValueError("nncodec_differential needs at least one float32 tensor")
    # ascontiguousarray also lifts 0-d scalars to shape (1,): NNCodec's encoder indexes shape[0].
    difference = {n: np.ascontiguousarray(new[n] - old[n]) for n in floats}
    changed_raw = {n: a for n, a in new.items() if n not in difference and not np.array_equal(a, old[n])}
    with nncodec_sandbox():
        start = time.perf_counter()
        stream = compression.compress(difference, bitstream_path=None, qp=qp, nonweight_qp=nonweight_qp,
                                      return_bitstream=True, verbose=False, compress_differences=True,
                                      approx_param_base=_parent_state())
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        params = compression.decompress(bytearray(stream), verbose=False, approx_param_base=_parent_state())
        # An all-zero difference (an unchanged tensor) is not in the stream: the device keeps OLD's values.
        decoded = {n: old[n] + np.asarray(params[n], np.float32).reshape(old[n].shape) if n in params else old[n]
                   for n in floats}
        decode_s = time.perf_counter() - start
    restored: dict[str, np.ndarray] = {n: decoded.get(n, new[n] if n in changed_raw else old[n]) for n in new}
    return BaselineResult(
        name=f"nncodec differential (qp={qp})",
        compressed_bytes=len(stream) + sum(int(a.nbytes) for a in changed_raw.values()),
        source_bytes=sum(int(a.nbytes) for a in new.values()),
        encode_s=encode_s,
        decode_s=decode_s,
        exact=all(np.array_equal(restored[n], a) for n, a in new.items()),
        decoded=restored,
    )


def changed_fraction(old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]) -> float:
    """Fraction of elements whose bits differ (arrays given as their storage views)."""
    changed = sum(int(np.count_nonzero(np.asarray(old[n]) != np.asarray(a))) for n, a in new.items())
    return changed / sum(int(np.asarray(a).size) for a in new.values())
