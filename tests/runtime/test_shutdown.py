"""A script that builds several progressive models and exits at once must exit cleanly.

Before the runtime closed its refining threads at exit, such a script aborted about three runs in four here
with "terminate called without an active exception" (exit status 134): the interpreter shut down while a
daemon thread was inside a torch call.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

import bitladder  # noqa: E402
from bitladder.runtime import shutdown  # noqa: E402

RUNS = 3

# float64 modules: each refinement is a real conversion inside torch, so a thread is often in one at exit.
SCRIPT = textwrap.dedent("""
    import sys
    from bitladder.eval.models import MobileNetV2
    from bitladder.runtime.torch import ProgressiveModel

    models = [ProgressiveModel(MobileNetV2().double().eval(), sys.argv[1], apply=apply, piece_size=4096)
              for apply in ("incremental", "atomic") * 3]
""")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, mobilenet_path: Path) -> Path:
    out = tmp_path_factory.mktemp("shutdown") / "mobilenet.blad"
    bitladder.encode(mobilenet_path, out, ladder="int4,int8,exact")
    return out


@pytest.mark.slow
def test_a_script_with_several_models_exits_cleanly(package: Path, tmp_path: Path) -> None:
    script = tmp_path / "several.py"
    script.write_text(SCRIPT)
    for run in range(RUNS):
        result = subprocess.run([sys.executable, str(script), str(package)], capture_output=True, text=True,
                                timeout=300, check=False)
        assert (result.returncode, result.stderr) == (0, ""), f"run {run + 1} of {RUNS}"


class Blocking:
    """A worker whose thread only ends when told to stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.stop.wait, daemon=True)
        self.thread.start()
        self.closed_with: list[float | None] = []

    def close(self, timeout: float | None = None) -> None:
        self.closed_with.append(timeout)
        self.stop.set()
        self.thread.join(timeout)


def test_close_all_stops_every_worker_before_waiting_within_one_budget() -> None:
    workers = [Blocking() for _ in range(3)]
    for worker in workers:
        shutdown.register(worker)
    start = time.monotonic()
    shutdown.close_all(timeout=2.0)
    assert time.monotonic() - start < 2.0
    for worker in workers:
        assert not worker.thread.is_alive()
        assert worker.closed_with[0] == 0.0 and len(worker.closed_with) == 2  # told to stop, then waited for
        shutdown.unregister(worker)
