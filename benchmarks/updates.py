"""Update benchmark (issue 12): the bytes that take a device from OLD to NEW on real updates, bitladder against peers.

    python benchmarks/updates.py [--pairs minilm-full,...] [--cache-dir DIR] [--zstd-level 19] [--nncodec-qp -56]
                                 [--no-nncodec] [--no-write]

The pairs are real trainings on CPU, made (once, then cached) by benchmarks/_updates_train.py. On each pair, in this
run: ZipNN of the full NEW (1 thread), ZipNN's delta (XOR) mode against OLD, zstd with OLD's file as dictionary
(``--patch-from``), NNCodec's differential coding (lossy: its bytes at the SQNR of the NEW it rebuilds), the full NEW
bitladder ladder ``int8,exact``, and bitladder's delta (``bitladder_delta`` below: "pending" until
``bitladder.api.diff`` exists). Bytes of a bitladder rung are everything a client fetches to decode it: header,
manifest and the data of the rungs up to it; the last rung's bytes are the whole package file. Every bit-exact scheme
is decoded and compared with NEW bit for bit. Prints the tables and writes them to benchmarks/results/updates.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402
import _delta_baselines  # noqa: E402
import _updates_train  # noqa: E402
from _update_links import LinkTimes, update_times  # noqa: E402
from _updates_train import Pair  # noqa: E402
from compression import revision  # noqa: E402

import bitladder  # noqa: E402
from bitladder.codecs.floatbits import to_f32  # noqa: E402
from bitladder.format.spec import Manifest  # noqa: E402
from bitladder.sources import SourceModel, from_arrays, load_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "updates.md"
LADDER = "int8,exact"
ZIPNN_DTYPE_OF = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# zstd --patch-from at 12: on minilm-last2 levels 9-13 sent the fewest bytes (13,162,103 at 12 in 1.6 s); 19 sent
# 13,235,680 in 43 s, and on minilm-full 82,692,571 in 110 s against 12's 82,624,670 (--zstd-level 19 reruns it).
ZSTD_LEVEL = 12
# NNCodec's step is 2 ** (qp / 4): -38 (its default, 2^-9.5 = 1.4e-3) is coarser than most of these updates' changes
# (AdamW at lr 2e-5 to 3e-4 for a few hundred steps), so the difference would mostly round to zero; -56 (2^-14 = 6e-5)
# keeps them. Non-weight (1-D) tensors use nonweight_qp -75 either way.
NNCODEC_QP = -56
# Pairs whose NEW differs from OLD in a part of the model: the first-rung target (<= 10 % of the full ladder) is theirs.
PARTIAL = ("minilm-last2", "minilm-lora", "mobilenetv2-head", "minilm-last2-bf16")


@dataclass(frozen=True)
class LadderBytes:
    """A bitladder package: bytes to its first rung and to its last (exact) rung, its encode time, checks."""

    first: int
    exact: int
    encode_s: float
    first_sqnr: float | None = None  # of NEW as decoded at the first rung, dB
    bit_exact: bool | None = None  # the last rung decoded to NEW bit for bit (None: not checked)


def ladder_bytes(manifest: Manifest, path: Path, encode_s: float, first_sqnr: float | None = None,
                 bit_exact: bool | None = None) -> LadderBytes:
    """Bytes to the first rung (header + manifest + its data) and to the last (the file), from a written package."""
    size = path.stat().st_size
    overhead = size - manifest.data_length
    return LadderBytes(overhead + manifest.rung_bytes()[0], size, encode_s, first_sqnr, bit_exact)


# --- bitladder -------------------------------------------------------------------------------------------------------


def bitladder_delta(pair: Pair, workdir: Path) -> LadderBytes | None:
    """HOOK for bitladder's delta codec (issue 12): the package that takes a device holding OLD to NEW, or None
    (the tables show "pending") while ``bitladder.api.diff`` does not exist.

    Uses ``diff(old, new, output, version=, parent_version=) -> Manifest`` (rung bytes counted as for a full
    package: ``rung_bytes()``, ``data_length``) and ``patch(old, update) -> (manifest, tensors)``, with which the
    exact rung is checked bit for bit against NEW; the first rung's SQNR comes from ``Package.decode(0, parent=OLD)``.
    """
    try:
        from bitladder.api import diff, patch
    except ImportError:
        return None
    old, new = load_source(pair.old), load_source(pair.new)
    output = workdir / f"{pair.name}-delta.blad"
    start = time.perf_counter()
    manifest = diff(pair.old, pair.new, output, version="2", parent_version="1", model_id=pair.name)
    encode_s = time.perf_counter() - start
    _, tensors = patch(pair.old, output)
    package = bitladder.open(output)
    assert isinstance(package, bitladder.Package)
    first = _floats(package.decode(0, raw=True, parent=old), new)
    first_sqnr = _baselines.sqnr_db(_floats(_storage(new), new), first)
    return ladder_bytes(manifest, output, encode_s, first_sqnr, _same_tensors(from_arrays(tensors), new))


def bitladder_full(pair: Pair, new: SourceModel, workdir: Path) -> LadderBytes:
    """The full NEW ladder, as a device without OLD would fetch it; first-rung SQNR and exactness checked."""
    output = workdir / f"{pair.name}-full.blad"
    start = time.perf_counter()
    manifest = bitladder.encode(pair.new, output, ladder=LADDER)
    encode_s = time.perf_counter() - start
    package = bitladder.open(output)
    assert isinstance(package, bitladder.Package)
    exact = all(package.decode(raw=True)[n].tobytes() == t.data.tobytes() for n, t in new.tensors.items())
    first = _floats(package.decode(0, raw=True), new)
    return ladder_bytes(manifest, output, encode_s, _baselines.sqnr_db(_floats(_storage(new), new), first), exact)


# --- measuring a pair ------------------------------------------------------------------------------------------------


def _storage(model: SourceModel) -> dict[str, np.ndarray]:
    return {n: t.data for n, t in model.tensors.items()}


def _floats(storage: Mapping[str, np.ndarray], model: SourceModel) -> dict[str, np.ndarray]:
    """Float tensors as float32 values (from their bit views); other tensors left out."""
    return {n: to_f32(np.asarray(storage[n]).reshape(-1), t.dtype) for n, t in model.tensors.items()
            if t.dtype in ZIPNN_DTYPE_OF}


def _values(model: SourceModel) -> dict[str, np.ndarray]:
    """Every tensor shaped: float tensors as float32 values, others in their storage dtype."""
    floats = _floats(_storage(model), model)
    return {n: floats.get(n, t.data).reshape(t.shape) for n, t in model.tensors.items()}


def _same_tensors(a: SourceModel, b: SourceModel) -> bool:
    return a.tensors.keys() == b.tensors.keys() and all(
        t.dtype == b.tensors[n].dtype and t.data.tobytes() == b.tensors[n].data.tobytes() for n, t in a.tensors.items())


@dataclass
class Measured:
    """Every figure of one pair, measured in this run."""

    pair: Pair
    old_bytes: int
    new_bytes: int
    float_dtype: str
    zipnn: _baselines.BaselineResult
    zipnn_delta: _baselines.BaselineResult
    zstd_patch: _baselines.BaselineResult
    nncodec: _baselines.BaselineResult | None
    nncodec_sqnr: float | None
    old_as_new_sqnr: float
    full: LadderBytes
    delta: LadderBytes | None
    seconds: float
    links: list[LinkTimes] = field(default_factory=list)

    def exact_baselines(self) -> dict[str, int]:
        """The bit-exact ways to reach NEW, by name: bytes (each was decoded and checked in this run)."""
        rows = {"ZipNN NEW": self.zipnn, "ZipNN delta": self.zipnn_delta, "zstd patch-from": self.zstd_patch}
        out = {name: r.compressed_bytes for name, r in rows.items() if r.exact}
        if self.full.bit_exact:
            out["bitladder full"] = self.full.exact
        return out


@dataclass(frozen=True)
class Options:
    zstd_level: int
    nncodec_qp: int | None  # None: NNCodec not run


def measure(pair: Pair, options: Options, workdir: Path, log: Callable[[str], None]) -> Measured:
    started = time.perf_counter()
    old, new = load_source(pair.old), load_source(pair.new)
    float_dtype = next(t.dtype for t in new.tensors.values() if t.dtype in ZIPNN_DTYPE_OF)
    zipnn_dtype = ZIPNN_DTYPE_OF[float_dtype]
    zipnn = _baselines.zipnn_roundtrip(_storage(new), threads=1, dtype=zipnn_dtype)
    log(f"  zipnn NEW {zipnn.compressed_bytes:,}")
    zipnn_delta = _delta_baselines.zipnn_delta_roundtrip(_storage(old), _storage(new), threads=1, dtype=zipnn_dtype)
    log(f"  zipnn delta {zipnn_delta.compressed_bytes:,}")
    zstd_patch = _delta_baselines.zstd_patch_roundtrip(pair.old.read_bytes(), pair.new.read_bytes(), options.zstd_level)
    log(f"  zstd patch-from {zstd_patch.compressed_bytes:,} in {zstd_patch.encode_s:.0f} s")
    nncodec = nncodec_sqnr = None
    if options.nncodec_qp is not None and float_dtype == "F32":
        values = _values(new)
        nncodec = _delta_baselines.nncodec_differential(_values(old), values, options.nncodec_qp)
        assert nncodec.decoded is not None
        nncodec_sqnr = _baselines.sqnr_db(values, nncodec.decoded)
        log(f"  nncodec differential {nncodec.compressed_bytes:,} at {nncodec_sqnr:.1f} dB in {nncodec.encode_s:.0f} s")
    full = bitladder_full(pair, new, workdir)
    log(f"  bitladder full {full.first:,} / {full.exact:,}")
    delta = bitladder_delta(pair, workdir)
    old_as_new = _baselines.sqnr_db(_floats(_storage(new), new), _floats(_storage(old), old))
    links = []
    if delta is not None and pair.name in LINK_PAIRS:
        links = update_times(workdir / f"{pair.name}-delta.blad", workdir / f"{pair.name}-full.blad", old, LINK_RATES)
        log("  links " + ", ".join(f"{t.rate_mbit:.0f} Mbit/s: delta {t.delta_exact_s:.2f} s, full {t.full_exact_s:.2f} s"
                                   for t in links))
    return Measured(pair, pair.old.stat().st_size, pair.new.stat().st_size, float_dtype, zipnn, zipnn_delta, zstd_patch,
                    nncodec, nncodec_sqnr, old_as_new, full, delta, time.perf_counter() - started, links)


LINK_PAIRS = ("minilm-last2", "mobilenetv2-head")
"""The pairs fetched over emulated links too (a full MiniLM at 20 Mbit/s takes 30 s)."""
LINK_RATES = (20.0, 100.0)


def link_table(results: list[Measured]) -> list[str]:
    rows = [m for m in results if m.links]
    if not rows:
        return []
    lines = ["Time to NEW over an emulated link (30 ms RTT; `bitladder serve` on 127.0.0.1, the client's shaped transport; "
             "each time includes verifying and decoding; the delta decodes onto OLD, the full package from nothing):", "",
             "| pair | link | delta: first rung | delta: exact | full NEW: first rung (int8) | full NEW: exact "
             "| exact, full / delta |",
             "|---|---|---|---|---|---|---|"]
    for m in rows:
        for t in m.links:
            lines.append(f"| {m.pair.name} | {t.rate_mbit:.0f} Mbit/s | {t.delta_first_s:.2f} s | {t.delta_exact_s:.2f} s | "
                         f"{t.full_first_s:.2f} s | {t.full_exact_s:.2f} s | {t.full_exact_s / t.delta_exact_s:.1f}x |")
    return lines + [""]


# --- report ----------------------------------------------------------------------------------------------------------


def _size(nbytes: int, of: int) -> str:
    return f"{nbytes:,} ({100 * nbytes / of:.2f}%)"


def _exact_size(result: _baselines.BaselineResult, of: int) -> str:
    return _size(result.compressed_bytes, of) + ("" if result.exact else " NOT EXACT")


def _ladder(ladder: LadderBytes | None, of: int) -> str:
    if ladder is None:
        return "pending"
    check = {True: "", False: " NOT EXACT", None: " (unchecked)"}[ladder.bit_exact]
    return f"{_size(ladder.first, of)} / {_size(ladder.exact, of)}{check}"


def _ratio(m: Measured) -> str:
    baselines = m.exact_baselines()
    best = min(baselines, key=baselines.__getitem__)
    if m.delta is None:
        return f"pending (best: {best})"
    return f"{m.delta.exact / baselines[best]:.3f} (vs {best})"


def main_table(results: list[Measured]) -> list[str]:
    header = ["pair", "changed params", "OLD / NEW bytes", "ZipNN NEW (1 thread)", "ZipNN delta", "zstd patch-from",
              "NNCodec differential", "bitladder full NEW (first / exact)", "bitladder delta (first / exact)",
              "delta exact / best bit-exact"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in results:
        new = m.new_bytes
        nncodec = ("not run" if m.nncodec is None or m.nncodec_sqnr is None
                   else f"{_size(m.nncodec.compressed_bytes, new)} @ {m.nncodec_sqnr:.1f} dB")
        cells = [m.pair.name, f"{100 * m.pair.changed:.2f}% ({m.pair.changed_tensors}/{m.pair.tensors} tensors)",
                 f"{m.old_bytes:,} / {new:,}", _exact_size(m.zipnn, new), _exact_size(m.zipnn_delta, new),
                 _exact_size(m.zstd_patch, new), nncodec, _ladder(m.full, new), _ladder(m.delta, new), _ratio(m)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def time_table(results: list[Measured]) -> list[str]:
    header = ["pair", "ZipNN NEW", "ZipNN delta", "zstd patch-from", "NNCodec differential", "bitladder full (encode)",
              "bitladder delta (encode)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def both(r: _baselines.BaselineResult | None) -> str:
        return "-" if r is None else f"{r.encode_s:.2f} / {r.decode_s:.2f}"

    for m in results:
        delta = "pending" if m.delta is None else f"{m.delta.encode_s:.2f}"
        lines.append(f"| {m.pair.name} | {both(m.zipnn)} | {both(m.zipnn_delta)} | {both(m.zstd_patch)} | {both(m.nncodec)} "
                     f"| {m.full.encode_s:.2f} | {delta} |")
    return lines


def _db(ladder: LadderBytes) -> str:
    return "unmeasured" if ladder.first_sqnr is None else f"{ladder.first_sqnr:.1f} dB"


def pair_notes(m: Measured, options: Options) -> list[str]:
    p = m.pair
    notes = [f"**{p.name}** ({p.description}): {p.note}. {p.quality}. Made in {p.train_s:.0f} s wall, "
             f"{p.train_cpu_s:.0f} s CPU ({_updates_train.THREADS} threads; read from the cache in this run)."]
    line = f"- SQNR against NEW: OLD itself {m.old_as_new_sqnr:.1f} dB; full NEW ladder `{LADDER}` first rung {_db(m.full)}"
    notes.append(line + ("." if m.delta is None else f"; delta first rung {_db(m.delta)}."))
    if m.nncodec is not None:
        notes.append(f"- NNCodec qp {options.nncodec_qp}: {m.nncodec.compressed_bytes:,} bytes, NEW rebuilt at "
                     f"{m.nncodec_sqnr:.1f} dB (not bit-exact).")
    elif m.float_dtype != "F32":
        notes.append(f"- NNCodec not run: it codes float32 only and this pair is {m.float_dtype}.")
    baselines = m.exact_baselines()
    best = min(baselines, key=baselines.__getitem__)
    target = f"best bit-exact baseline {best}, {baselines[best]:,} bytes"
    if m.delta is None:
        notes.append(f"- targets: delta exact <= {target}: pending"
                     + (f"; delta first rung <= 10% of the whole full NEW ladder ({m.full.exact // 10:,} bytes): pending"
                        if p.name in PARTIAL else ""))
    else:
        met = "met" if m.delta.exact <= baselines[best] else "MISSED"
        line = f"- targets: delta exact {m.delta.exact:,} <= {target}: {met}"
        if p.name in PARTIAL:
            share = m.delta.first / m.full.exact
            line += (f"; delta first rung {m.delta.first:,} = {100 * share:.2f}% of the whole full NEW ladder "
                     f"(<= 10%: {'met' if share <= 0.1 else 'MISSED'})")
        notes.append(line)
    notes.append(f"- measured in {m.seconds:.0f} s.")
    return notes


def render(results: list[Measured], options: Options, total_s: float) -> str:
    load = os.getloadavg()[0]
    lines = ["# Update benchmark", "",
             "Real updates made by `benchmarks/_updates_train.py` (cached under a key hashed from each run's settings); "
             f"every figure below measured in one run of `benchmarks/updates.py` ({total_s:.0f} s, {os.cpu_count()} cores, "
             f"1-minute load {load:.1f} at the end), bitladder at {revision()}.", "",
             "Bytes: what the device fetches to reach NEW, and in parentheses % of NEW's file. bitladder columns: bytes to "
             "the first rung / to exact, header and manifest included (the full ladder is what a device without OLD "
             f"fetches; the delta is `bitladder.api.diff`). ZipNN {metadata.version('zipnn')}, 1 thread, per tensor. zstd "
             f"{'.'.join(map(str, zstandard.ZSTD_VERSION))} level {options.zstd_level} as `--patch-from` does it: OLD's "
             "file referenced as a prefix, a window over both, long mode, one worker. "
             + ("NNCodec not run. " if options.nncodec_qp is None else
                f"NNCodec {metadata.version('nncodec')} differential (NEW - OLD) at qp {options.nncodec_qp}: lossy, so its bytes "
                "@ the SQNR of the NEW it rebuilds. ")
             + "Every bit-exact scheme was decoded in this run and compared with NEW bit for bit. Last column: bitladder "
             "delta's exact bytes over the fewest of the bit-exact baselines (ZipNN NEW, ZipNN delta, zstd patch-from, "
             "bitladder full).", ""]
    lines += main_table(results) + ["", "Seconds, encode / decode (one core; bitladder full: encode only):", ""]
    lines += time_table(results) + [""]
    lines += link_table(results)
    for m in results:
        lines += pair_notes(m, options) + [""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=None, help=f"comma-separated, from {', '.join(r.name for r in _updates_train.RUNS)}")
    parser.add_argument("--cache-dir", type=Path, default=_updates_train.DEFAULT_CACHE)
    parser.add_argument("--zstd-level", type=int, default=ZSTD_LEVEL)
    parser.add_argument("--nncodec-qp", type=int, default=NNCODEC_QP)
    parser.add_argument("--no-nncodec", dest="nncodec", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    options = Options(args.zstd_level, args.nncodec_qp if args.nncodec else None)
    names = None if args.pairs is None else [n.strip() for n in args.pairs.split(",") if n.strip()]
    started = time.perf_counter()
    pairs = _updates_train.make_pairs(args.cache_dir, names)
    results = []
    with tempfile.TemporaryDirectory(prefix="updates-") as tmp:
        for pair in pairs:
            print(f"{pair.name}:", file=sys.stderr, flush=True)
            results.append(measure(pair, options, Path(tmp), lambda line: print(line, file=sys.stderr, flush=True)))
    report = render(results, options, time.perf_counter() - started)
    print(report, flush=True)
    if args.write:
        RESULTS.write_text(report)


if __name__ == "__main__":
    main()
