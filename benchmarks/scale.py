"""Tensor count: does the per-byte cost stay flat when a model is cut into many small tensors?

Run: .venv/bin/python benchmarks/scale.py [--counts 2500,20000]   (writes benchmarks/results/scale.md)

Each model holds N tensors of 128 x 128 float32 values cut from all-MiniLM-L6-v2's real weights (its values in
file order, taken again from the start when they run out), next to a *dense* model of the same values and bytes:
the same 128-column rows stacked 256 tensors at a time (so both have the same rows, scales and cells, and the same
compressed size). Per model, in this process and on one machine: `bitladder.encode` of the safetensors file,
`bitladder decode` to a safetensors file, `bitladder fetch` to a file from a `bitladder serve` process on
loopback, and a `ProgressiveModel` (incremental) fed from the package file until it holds the exact rung. Each
figure is the best of `--repeat` runs; the ratio is many-tensor time over dense time (same bytes: the per-byte
time ratio). Target (issue "one device path", numbers item 3): <= 1.3 at 20,000 tensors, for each path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import bitladder
from bitladder.cli import main as cli

sys.path.insert(0, str(Path(__file__).parent))
from _baselines import _minilm_path  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "scale.md"
SIDE = 128  # each small tensor is SIDE x SIDE
STACK = 256  # small tensors per dense tensor
LADDER = "int8,exact"
TARGET = 1.3
PATHS = ("encode", "decode", "fetch", "runtime")


def real_values(count: int) -> np.ndarray:
    """`count` float32 values of MiniLM's weights in file order, cycled."""
    weights = [a.reshape(-1) for a in load_file(str(_minilm_path())).values() if a.dtype == np.float32]
    flat = np.concatenate(weights)
    return np.resize(flat, count)


def write_models(tensors: int, folder: Path) -> tuple[Path, Path]:
    """(many-tensor file, dense file) of the same values."""
    values = real_values(tensors * SIDE * SIDE).reshape(tensors, SIDE, SIDE)
    many = folder / f"many-{tensors}.safetensors"
    dense = folder / f"dense-{tensors}.safetensors"
    save_file({f"layers.{i}.weight": values[i] for i in range(tensors)}, str(many))
    groups = range(0, tensors, STACK)
    save_file({f"layers.{g // STACK}.weight": values[g:g + STACK].reshape(-1, SIDE) for g in groups}, str(dense))
    return many, dense


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """`bitladder serve folder` in its own process (so the server does not share this one's interpreter)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bitladder", "serve", str(folder), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("bitladder serve did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/models"
    finally:
        server.terminate()
        server.wait(10)


def module_for(source: Path) -> object:
    """A torch module whose parameters are the file's tensors (`layers.i.weight`), zeroed (its memory touched, as
    a module built the usual way has it: the timed part then does not pay for the first touch of fresh pages)."""
    import torch

    arrays = load_file(str(source))
    shapes = [arrays[f"layers.{i}.weight"].shape for i in range(len(arrays))]
    with torch.device("meta"):
        layers = torch.nn.ModuleList(torch.nn.Linear(s[1], s[0], bias=False) for s in shapes)
        module = torch.nn.Module()
        module.layers = layers
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
    return module


def runtime_to_exact(package: Path, source: Path) -> float:
    """Seconds from handing the package to a ProgressiveModel until it holds the exact rung (module built before)."""
    module = module_for(source)
    start = time.perf_counter()
    from bitladder.torch import ProgressiveModel

    model = ProgressiveModel(module, str(package))
    try:
        if not model.wait("exact", timeout=3600):
            raise RuntimeError("the runtime did not reach the exact rung")
        return time.perf_counter() - start
    finally:
        model.close()


@dataclass(frozen=True)
class Measured:
    tensors: int
    source_bytes: int
    package_bytes: int
    seconds: dict[str, float]


def measure(source: Path, folder: Path, url: str, repeat: int) -> Measured:
    package = folder / "packages" / (source.stem + ".blad")
    seconds = {"encode": best(repeat, lambda: bitladder.encode(source, package, ladder=LADDER))}
    decoded = folder / "decoded.safetensors"
    seconds["decode"] = best(repeat, lambda: _cli(["decode", str(package), "-o", str(decoded)], decoded))
    seconds["fetch"] = best(repeat, lambda: _cli(["fetch", f"{url}/{package.name}", "-o", str(decoded)], decoded))
    if load_file(str(decoded)).keys() != load_file(str(source)).keys():
        raise RuntimeError(f"{decoded} does not hold the tensors of {source}")
    if decoded.read_bytes()[-4096:] != source.read_bytes()[-4096:]:
        raise RuntimeError(f"{decoded} does not end as {source} does")
    seconds["runtime"] = min(runtime_to_exact(package, source) for _ in range(repeat))
    count = len(load_file(str(source)))
    return Measured(count, source.stat().st_size, package.stat().st_size, seconds)


def _cli(argv: list[str], output: Path) -> None:
    output.unlink(missing_ok=True)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = cli(argv)
    if code:
        raise RuntimeError(f"bitladder {' '.join(argv)} exited {code}")


def render(pairs: list[tuple[Measured, Measured]], total_s: float) -> str:
    lines = ["# Tensor-count benchmark", "",
             f"`benchmarks/scale.py`, bitladder at commit {_commit()}, {os.cpu_count()} cores, {total_s:.0f} s in all. "
             f"N tensors of {SIDE}x{SIDE} float32 cut from MiniLM's real weights vs a dense model of the same values "
             f"({STACK} of them stacked per tensor); ladder `{LADDER}`; best of the runs. Ratio = many / dense "
             f"seconds for the same bytes (target <= {TARGET} at 20,000 tensors).", "",
             "| tensors (many / dense) | source bytes | package bytes (many / dense) | "
             + " | ".join(f"{p} s (many / dense, ratio)" for p in PATHS) + " |",
             "|---|---|---|" + "---|" * len(PATHS)]
    for many, dense in pairs:
        cells = [f"{many.seconds[p]:.2f} / {dense.seconds[p]:.2f}, {many.seconds[p] / dense.seconds[p]:.2f}"
                 for p in PATHS]
        lines.append(f"| {many.tensors:,} / {dense.tensors:,} | {many.source_bytes:,} | "
                     f"{many.package_bytes:,} / {dense.package_bytes:,} | " + " | ".join(cells) + " |")
    lines.append("")
    for many, dense in pairs:
        if many.tensors >= 20_000:
            for p in PATHS:
                ratio = many.seconds[p] / dense.seconds[p]
                lines.append(f"- {p}, {many.tensors:,} tensors: {ratio:.2f} (target <= {TARGET}: "
                             f"{'met' if ratio <= TARGET else 'MISSED'})")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="2500,20000", help="comma-separated tensor counts")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        folder = Path(tmp)
        (folder / "packages").mkdir()
        with serving(folder / "packages") as url:
            for count in (int(c) for c in args.counts.split(",")):
                many, dense = write_models(count, folder)
                pair = (measure(many, folder, url, args.repeat), measure(dense, folder, url, args.repeat))
                print(count, pair[0].seconds, pair[1].seconds, file=sys.stderr, flush=True)
                pairs.append(pair)
                for leftover in folder.glob("**/*-*.*"):
                    leftover.unlink()
    report = render(pairs, time.perf_counter() - started)
    print(report)
    if args.write:
        RESULTS.write_text(report)


if __name__ == "__main__":
    main()
