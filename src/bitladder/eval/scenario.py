"""The delivery scenario, run for real: encode, serve on 127.0.0.1, fetch over an emulated link, answer a
continuous input stream while the model refines, and the same for the fp32 baselines in the same run.

    run_eval                 encode, pack baselines, start the server, run every scheme, measure rungs
    ├── run_package          bitladder: HTTP stream -> ProgressiveModel, answering from the first rung on
    └── run_baseline         fp32 / +zstd / +ZipNN / NNCodec: fetch the whole file, decode, load, answer

Times are seconds since the request was sent (`time.monotonic()`); every scheme gets its own link of the
same profile, one after the other, so that they do not share the two CPU cores.

>>> result = run_eval(minilm_task(), ScenarioConfig(link="100mbit"), Path("report"))   # doctest: +SKIP
>>> result.runs[0].ttfi                                                                 # doctest: +SKIP
2.3
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .. import api
from ..delivery.link import PROFILES, Link, RealClock, ShapedTransport, load_trace
from ..errors import BitladderError
from ..format.reader import Package
from ..runtime.stream import InputRecord, StreamRunner
from . import schemes
from .server import LocalServer
from .tasks import Task, load_into

log = logging.getLogger(__name__)

LINKS = {"1100mbit": "ts22261-model-download", "100mbit": "cell-100m", "20mbit": "cell-20m", "5mbit": "cell-5m"}
PACKAGE = "bitladder"
PACKAGE_RD = "bitladder-rd"
Progress = Callable[[str, dict[str, Any]], None]
"""Called as progress(event, fields): events 'stage', 'rung', 'answer', 'scheme'."""


class ScenarioError(BitladderError):
    """A scheme of the scenario did not finish (timeout, stream error)."""


@dataclass(frozen=True)
class ScenarioConfig:
    """What `bitladder eval` runs. `order="rd"` adds a second package in rate-distortion order."""

    ladder: str = "int8,exact"
    link: str = "100mbit"
    apply: str = "incremental"
    order: str = "rung"
    baselines: tuple[str, ...] = ("fp32", "fp32+zstd", "fp32+zipnn")
    interval: float = 0.25
    buffer: bool = False
    tail: float = 0.5
    timeout: float = 600.0
    nncodec_qp: int = schemes.NNCODEC_QP
    cache: Path | None = None

    def __post_init__(self) -> None:
        if self.apply not in ("incremental", "atomic"):
            raise ValueError(f"apply must be 'incremental' or 'atomic', got {self.apply!r}")
        if self.order not in ("rung", "rd"):
            raise ValueError(f"order must be 'rung' or 'rd', got {self.order!r}")
        unknown = [b for b in self.baselines if b not in schemes.SCHEMES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {', '.join(schemes.SCHEMES)}")
        if self.interval <= 0 or self.tail < 0 or self.timeout <= 0:
            raise ValueError(f"interval {self.interval} and timeout {self.timeout} must be > 0, tail >= 0")
        resolve_link(self.link)


def resolve_link(text: str) -> Link:
    """`1100mbit`, `100mbit`, `20mbit`, `5mbit`, a `PROFILES` name, or a CSV trace (`time_s,bit_per_s`)."""
    if text in LINKS:
        return PROFILES[LINKS[text]]
    if text in PROFILES:
        return PROFILES[text]
    if text.endswith(".csv"):
        return Link(trace=load_trace(text), rtt=0.03)
    raise ValueError(f"unknown link {text!r}; known: {', '.join(LINKS)} or a trace .csv")


@dataclass
class SchemeRun:
    """One scheme's delivery: sizes, when each rung (or the load) happened, and every input's answer."""

    scheme: str
    total_bytes: int  # the whole file: for a package its header and manifest too
    rung_bytes: list[tuple[str, int]]  # a package's first rung counts its header and manifest
    ttfi: float | None = None
    t_exact: float | None = None
    milestones: list[tuple[str, float]] = field(default_factory=list)
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # (time, quality, rung)
    swaps: list[tuple[float, str | None, int]] = field(default_factory=list)  # (time, tensor or None, rung)
    held: list[tuple[float, float, int]] = field(default_factory=list)  # (time, quality of held model, rung)
    inputs: int = 0
    dropped: int = 0
    waited: int = 0       # inputs that arrived before the first answer (dropped, or buffered when buffering)
    latency_p99: float = 0.0
    exact: bool = False
    header_bytes: int = 0  # a package's header and manifest (in `total_bytes` and the first rung's bytes)


@dataclass
class EvalResult:
    task: str
    config: dict[str, Any]
    source_bytes: int
    quality_name: str
    runs: list[SchemeRun]
    rung_quality: dict[str, dict[str, dict[str, float]]]  # scheme -> rung name -> metrics
    encode_s: dict[str, float]
    environment: dict[str, Any] = field(default_factory=dict)  # date, machine, link: see `environment`
    weights_only: bool = False  # quality measured on the weights: the "answers" are samples, not inferences


class _Driver:
    """Continuous input from t0: one probe every `interval` s into a StreamRunner that waits for a model."""

    def __init__(self, interval: float, buffer: bool, on_answer: Callable[[int, Any, int], None] | None) -> None:
        self._ready = threading.Event()
        self._call: Callable[[], tuple[Any, int]] = lambda: (None, -1)
        self._stop = threading.Event()
        self._interval = interval
        self.runner = StreamRunner(self._predict, buffer=buffer, keep_outputs=True, on_answer=on_answer)
        self._pump = threading.Thread(target=self._submit, daemon=True, name="bitladder-eval-inputs")
        self._pump.start()

    def _predict(self, _: Any) -> tuple[Any, int]:
        self._ready.wait()
        return self._call()

    def _submit(self) -> None:
        while not self._stop.is_set():
            self.runner.submit(None)
            self._stop.wait(self._interval)

    def serve(self, call: Callable[[], tuple[Any, int]]) -> None:
        self._call = call
        self._ready.set()

    def finish(self) -> list[InputRecord]:
        self._stop.set()
        self._pump.join()
        self._ready.set()  # a scheme that failed before serving: let the worker drain with empty answers
        return self.runner.close(timeout=60)


def _device_client(link: Link) -> httpx.Client:
    """The device's HTTP client behind an emulated link, made before the clock starts (as an app's is)."""
    return httpx.Client(transport=ShapedTransport(httpx.HTTPTransport(), link, RealClock()), timeout=30.0)


def _http_pieces(client: httpx.Client, url: str, received: list[int]) -> Iterator[bytes]:
    """The body of GET `url`, piece by piece; `received[0]` counts bytes."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            received[0] += len(piece)
            yield piece


def _finish_run(run: SchemeRun, driver: _Driver, task: Task, t0: float) -> SchemeRun:
    records = driver.finish()
    reference = task.reference()
    outputs = driver.runner.outputs
    answered = [r for r in records if r.answered is not None and r.index in outputs and outputs[r.index] is not None]
    run.answers = [(r.answered - t0, task.score(reference, outputs[r.index]), r.rung)  # type: ignore[operator]
                   for r in answered]
    run.inputs, run.dropped = len(records), sum(r.dropped for r in records)
    if run.answers:
        run.ttfi = run.answers[0][0]
        first = t0 + run.ttfi
        run.waited = sum(1 for r in records if r.arrival < first) - 1
        steady = [r.latency for r in answered if r.arrival >= first and r.latency is not None]
        run.latency_p99 = float(np.percentile(steady, 99)) if steady else 0.0
    return run


def run_package(url: str, scheme: str, task: Task, link: Link, config: ScenarioConfig, manifest_rungs:
                list[tuple[str, int]], progress: Progress | None = None) -> SchemeRun:
    """Stream the package into a ProgressiveModel and answer inputs from the first rung on."""
    from ..runtime.torch import ProgressiveModel

    run = SchemeRun(scheme, sum(b for _, b in manifest_rungs), manifest_rungs)
    names = [name for name, _ in manifest_rungs]
    received = [0]
    module = task.new_module()  # the device knows the architecture before any weight arrives
    emit = progress or (lambda event, fields: None)

    def on_update(update: Any) -> None:
        run.swaps.append((update.at - t0, update.tensor, update.rung))
        if update.tensor is None:
            run.milestones.append((names[update.rung], update.at - t0))
            emit("rung", {"scheme": scheme, "rung": names[update.rung], "t": update.at - t0, "bytes": received[0]})

    def on_answer(index: int, output: Any, rung: int) -> None:
        if output is not None:
            emit("answer", {"scheme": scheme, "t": time.monotonic() - t0, "bytes": received[0],
                            "quality": task.score(task.reference(), output), "rung": names[rung]})

    driver = _Driver(config.interval, config.buffer, on_answer)
    client = _device_client(link)
    t0 = time.monotonic()
    try:
        model = ProgressiveModel(module, _http_pieces(client, url, received), apply=config.apply,
                                 on_update=on_update)
        driver.serve(lambda: _answer(model, task))
        if not model.wait(timeout=config.timeout):
            raise ScenarioError(f"{scheme}: not exact after {config.timeout} s")
        run.t_exact = run.milestones[-1][1] if run.milestones else None
        run.exact = True
        time.sleep(config.tail)
        model.close()
    finally:
        client.close()
        _finish_run(run, driver, task, t0)
    return run


def _answer(model: Any, task: Task) -> tuple[Any, int]:
    with model.runtime.reading() as rung:
        return task.infer(model.module), rung


def run_baseline(url: str, scheme: str, task: Task, link: Link, config: ScenarioConfig, size: int,
                 progress: Progress | None = None) -> SchemeRun:
    """Fetch the whole file, decode it, load it, then answer (the fp32 way)."""
    run = SchemeRun(scheme, size, [(scheme, size)])
    module = task.new_module()
    emit = progress or (lambda event, fields: None)
    driver = _Driver(config.interval, config.buffer, None)
    client = _device_client(link)
    t0 = time.monotonic()
    try:
        data = b"".join(_http_pieces(client, url, [0]))
        run.milestones.append(("fetched", time.monotonic() - t0))
        load_into(module, schemes.unpack(scheme, data))
        loaded = time.monotonic() - t0
        run.milestones.append(("loaded", loaded))
        run.exact = scheme in schemes.LOSSLESS
        run.t_exact = loaded if run.exact else None
        emit("rung", {"scheme": scheme, "rung": "loaded", "t": loaded, "bytes": size})
        driver.serve(lambda: (task.infer(module), 0))
        time.sleep(config.tail)
    finally:
        client.close()
        _finish_run(run, driver, task, t0)
    return run


def _nncodec_bytes(task: Task, state: dict[str, np.ndarray], qp: int, cache: Path | None) -> bytes:
    """NNCodec's bitstream, cached by source bytes and qp (its encode takes ~40 s on MiniLM)."""
    if cache is None:
        return schemes.pack("nncodec", state, qp)
    digest = hashlib.sha256(task.source.read_bytes()).hexdigest()[:16]
    path = cache / f"nncodec-{task.name}-{digest}-qp{qp}.bin"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(schemes.pack("nncodec", state, qp))
    return path.read_bytes()


def encode_packages(task: Task, config: ScenarioConfig, folder: Path,
                    emit: Progress) -> tuple[dict[str, Path], dict[str, float]]:
    """The package(s) under test: rung-major, and with `order='rd'` also rate-distortion order."""
    paths, seconds = {PACKAGE: folder / "model.blad"}, {}
    start = time.perf_counter()
    api.encode(task.source, paths[PACKAGE], ladder=config.ladder, model_id=task.name)
    seconds[PACKAGE] = time.perf_counter() - start
    if config.order == "rd":
        from .rd import rd_priorities

        emit("stage", {"text": "calibrating rate-distortion order"})
        start = time.perf_counter()
        priorities = rd_priorities(task, Package.open(paths[PACKAGE]))
        paths[PACKAGE_RD] = folder / "model-rd.blad"
        api.encode(task.source, paths[PACKAGE_RD], ladder=config.ladder, model_id=task.name, schedule="rd",
                   priorities=priorities)
        seconds[PACKAGE_RD] = time.perf_counter() - start
    return paths, seconds


def rung_quality(task: Task, packages: dict[str, Path], decoded: dict[str, dict[str, np.ndarray]],
                 emit: Progress) -> dict[str, dict[str, dict[str, float]]]:
    """Task metrics at each rung of the first package, of the fp32 source and of each lossy baseline."""
    emit("stage", {"text": "measuring task quality per rung"})
    reference = task.evaluate(task.load_state())
    out: dict[str, dict[str, dict[str, float]]] = {"fp32": {"fp32": reference}}
    package = Package.open(packages[PACKAGE])
    names = package.manifest.ladder.names
    from .rd import rung_state

    out[PACKAGE] = {name: task.evaluate(rung_state(package, i)) if i < len(names) - 1 else reference
                    for i, name in enumerate(names)}
    for scheme, state in decoded.items():
        out[scheme] = {scheme: task.evaluate(state)}
    return out


def run_eval(task: Task, config: ScenarioConfig, folder: Path, progress: Progress | None = None) -> EvalResult:
    """The whole scenario into `folder` (packages and baseline files under folder/files)."""
    emit = progress or (lambda event, fields: None)
    started = environment(config)
    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    link = resolve_link(config.link)
    emit("stage", {"text": f"encoding {task.name} ({config.ladder})"})
    packages, encode_s = encode_packages(task, config, files, emit)
    state = task.load_state()
    sizes, lossy = {}, {}
    for scheme in config.baselines:
        emit("stage", {"text": f"packing baseline {scheme}"})
        start = time.perf_counter()
        data = _nncodec_bytes(task, state, config.nncodec_qp, config.cache) if scheme == "nncodec" \
            else schemes.pack(scheme, state)
        encode_s[scheme] = time.perf_counter() - start
        (files / f"{_file(scheme)}").write_bytes(data)
        sizes[scheme] = len(data)
        if scheme not in schemes.LOSSLESS:
            lossy[scheme] = schemes.unpack(scheme, data)
    task.reference()
    runs = []
    with LocalServer(files) as server:
        for scheme, path in packages.items():
            manifest = Package.open(path).manifest
            emit("scheme", {"scheme": scheme, "link": config.link})
            rungs = list(zip(manifest.ladder.names, manifest.rung_bytes(), strict=True))
            header = path.stat().st_size - sum(size for _, size in rungs)  # fetched before the first rung
            rungs[0] = (rungs[0][0], rungs[0][1] + header)
            runs.append(run_package(f"{server.url}/models/{path.name}", scheme, task, link, config, rungs, emit))
            runs[-1].header_bytes = header
        for scheme in config.baselines:
            emit("scheme", {"scheme": scheme, "link": config.link})
            runs.append(run_baseline(f"{server.url}/files/{_file(scheme)}", scheme, task, link, config,
                                     sizes[scheme], emit))
    quality = rung_quality(task, packages, lossy, emit)
    from .rd import held_quality

    emit("stage", {"text": "replaying the swaps: quality of the held model"})
    for run in runs:
        if run.scheme in packages:
            run.held = held_quality(task, Package.open(packages[run.scheme]), run.swaps)
    source_bytes = sum(int(a.nbytes) for a in state.values())
    from .tasks import TensorHolder

    weights_only = isinstance(task.reference_module(), TensorHolder)
    return EvalResult(task.name, _config_json(config), source_bytes, task.quality_name, runs, quality, encode_s,
                      started, weights_only)


def environment(config: ScenarioConfig) -> dict[str, Any]:
    """When and where a run happens: UTC date, CPU model and cores, and the emulated link's parameters."""
    link = resolve_link(config.link)
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu_model(), "cores": cores, "usable_cores": usable,
            "os": platform.platform(terse=True), "python": platform.python_version(),
            "link": {"name": config.link, "rate_bit_s": link.rate, "trace_steps": len(link.trace),
                     "rtt_s": link.rtt, "loss": link.loss, "stall_s": link.stall,
                     "emulated": "HTTP over 127.0.0.1, paced by bitladder's ShapedTransport"}}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _file(scheme: str) -> str:
    return scheme.replace("+", "-") + ".bin"


def _config_json(config: ScenarioConfig) -> dict[str, Any]:
    return {"ladder": config.ladder, "link": config.link, "apply": config.apply, "order": config.order,
            "baselines": list(config.baselines), "interval": config.interval, "buffer": config.buffer,
            "nncodec_qp": config.nncodec_qp}
