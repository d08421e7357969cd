"""A process pool for the fuzzers (benchmarks/fuzz.py, fuzz_sources.py) that survives its workers: one task (an
index) at a time per worker, and a worker that crashes or stays silent past a deadline is replaced, its task reported
lost instead of its result. Also where an exception was raised, which both fuzzers report."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

Worker = Callable[[Connection], None]
"""Runs in the child: receives indexes from the connection until None, sends one result for each."""
Lost = Callable[[int, str, bool], Any]
"""Makes the result of a task whose worker died (False) or was killed past the deadline (True), with why."""


def raise_site(exc: BaseException) -> str:
    """file:line function of the raise; for an error re-raised with context (`from exc`), of the first raise."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} {last.name}"


@dataclass
class Pool:
    worker: Worker
    lost: Lost
    kill: float
    size: int
    busy: dict[Connection, tuple[Any, int, float]] = field(default_factory=dict)

    def run(self, indexes: Iterator[int]) -> Iterator[Any]:
        """Every index's result, in the order they finish."""
        for index in indexes:
            if len(self.busy) < self.size:
                self._start(index)
                continue
            yield self._collect(index)
        while self.busy:
            yield self._collect(None)

    def _start(self, index: int) -> None:
        context = multiprocessing.get_context("fork")  # the worker inherits the seeds instead of unpickling them
        parent, child = context.Pipe()
        process = context.Process(target=self.worker, args=(child,), daemon=True)
        process.start()
        child.close()
        self._send(parent, process, index)

    def _send(self, conn: Connection, process: Any, index: int) -> None:
        conn.send(index)
        self.busy[conn] = (process, index, time.monotonic())

    def _collect(self, index: int | None) -> Any:
        """Wait for a worker to finish (or be killed), hand it `index` (None: stop it), return the result."""
        while True:
            ready = wait(list(self.busy), timeout=0.5)
            for conn, (process, running, since) in list(self.busy.items()):
                if conn in ready:
                    try:
                        result = conn.recv()
                    except EOFError:
                        process.join(1)
                        result = self.lost(running, f"worker died, exit code {process.exitcode}", False)
                elif time.monotonic() - since > self.kill:
                    process.kill()
                    process.join(1)
                    result = self.lost(running, f"no answer in {self.kill:.0f} s (killed)", True)
                else:
                    continue
                del self.busy[conn]
                if index is not None and process.is_alive():
                    self._send(conn, process, index)
                elif index is not None:
                    self._start(index)
                elif process.is_alive():
                    conn.send(None)
                return result
