"""Continuous input (frames, utterances) answered by a model that may be swapping tensors.

With `buffer=True` every input is queued and answered in order, swaps only delay them; with `buffer=False`
an input that arrives while the worker is still busy (with an earlier input or waiting out a swap) is
dropped, as video analytics does to stay current. Each input gets an `InputRecord`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import shutdown

Predict = Callable[[Any], tuple[Any, int]]


@dataclass(frozen=True)
class InputRecord:
    """One input: when it arrived and was answered (`time.monotonic()`), by which rung, or that it was dropped."""

    index: int
    arrival: float
    answered: float | None
    dropped: bool
    rung: int

    @property
    def latency(self) -> float | None:
        return None if self.answered is None else self.answered - self.arrival


class StreamRunner:
    """Answer inputs one at a time on a worker thread.

    >>> runner = StreamRunner(model.call_with_rung, buffer=True)    # doctest: +SKIP
    >>> for frame in frames: runner.submit(frame)                   # doctest: +SKIP
    >>> records = runner.close()                                    # doctest: +SKIP

    `on_answer(index, output, rung)` is called on the worker after each answer.
    """

    def __init__(self, predict: Predict, buffer: bool = True, keep_outputs: bool = False,
                 on_answer: Callable[[int, Any, int], None] | None = None) -> None:
        self._predict = predict
        self.buffer = buffer
        self._keep = keep_outputs
        self._on_answer = on_answer
        self._queue: queue.Queue[tuple[int, float, Any] | None] = queue.Queue()
        self._records: dict[int, InputRecord] = {}
        self.outputs: dict[int, Any] = {}
        self._busy = False
        self._count = 0
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, daemon=True, name="bitladder-stream")
        shutdown.register(self)
        self._worker.start()

    def submit(self, item: Any) -> int:
        """Hand in one input; returns its index (answered later, or dropped at once)."""
        now = time.monotonic()
        with self._lock:
            index = self._count
            self._count += 1
            if not self.buffer and (self._busy or not self._queue.empty()):
                self._records[index] = InputRecord(index, now, None, True, -1)
                return index
            self._busy = True
        self._queue.put((index, now, item))
        return index

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            index, arrival, item = job
            try:
                output, rung = self._predict(item)
            except Exception as exc:  # noqa: BLE001 - recorded for the caller, the stream goes on
                self.error, output, rung = exc, None, -1
            answered = time.monotonic()
            with self._lock:
                self._records[index] = InputRecord(index, arrival, answered, False, rung)
                if self._keep:
                    self.outputs[index] = output
                self._busy = not self._queue.empty()
            if self._on_answer is not None:
                self._on_answer(index, output, rung)

    def close(self, timeout: float | None = None) -> list[InputRecord]:
        """Answer what is queued, stop the worker, and return every input's record in order."""
        self._queue.put(None)
        self._worker.join(timeout)
        if not self._worker.is_alive():
            shutdown.unregister(self)
        return self.records()

    def records(self) -> list[InputRecord]:
        with self._lock:
            return [self._records[i] for i in sorted(self._records)]
