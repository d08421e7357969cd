"""StreamRunner: buffered inputs are all answered in order; unbuffered ones arriving while busy are dropped."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from bitladder.runtime import StreamRunner


class Gate:
    """A predict function that blocks until released, so 'busy' is under the test's control."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self, item: Any) -> tuple[Any, int]:
        self.entered.set()
        self.open.wait(10)
        return item * 2, 3


def test_buffered_answers_every_input_in_order() -> None:
    gate = Gate()
    heard: list[tuple[int, Any, int]] = []
    runner = StreamRunner(gate, buffer=True, keep_outputs=True, on_answer=lambda *answer: heard.append(answer))
    runner.submit(0)
    gate.entered.wait(10)
    for item in range(1, 6):
        runner.submit(item)
    gate.open.set()
    records = runner.close(timeout=10)
    assert [r.index for r in records] == list(range(6)) and not any(r.dropped for r in records)
    assert [runner.outputs[i] for i in range(6)] == [0, 2, 4, 6, 8, 10]
    assert heard == [(i, 2 * i, 3) for i in range(6)]
    assert all(r.rung == 3 and r.latency is not None and r.latency >= 0 for r in records)
    answered = [r.answered for r in records]
    assert answered == sorted(answered)


def test_unbuffered_drops_inputs_that_arrive_while_busy() -> None:
    gate = Gate()
    runner = StreamRunner(gate, buffer=False)
    runner.submit(0)
    gate.entered.wait(10)
    for item in range(1, 4):
        runner.submit(item)
    gate.open.set()
    records = runner.close(timeout=10)
    assert [r.dropped for r in records] == [False, True, True, True]
    assert records[1].answered is None and records[1].latency is None and records[1].rung == -1


def test_runtime_imports_without_torch() -> None:
    code = "import sys, bitladder, bitladder.runtime, bitladder.sources.onnx; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
