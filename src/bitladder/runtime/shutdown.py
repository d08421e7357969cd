"""Stopping background workers before the interpreter exits.

A daemon thread still inside torch or the native core when the process tears their thread pools down makes it
abort with "terminate called without an active exception". So every worker that starts threads registers here,
and at exit each is closed (its threads stopped and joined) before anything is torn down.

>>> register(runtime)      # doctest: +SKIP
>>> unregister(runtime)    # once its threads have ended
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

THREAD_PREFIX = "bitladder-"
"""Every thread the library starts is named so (the exit hook waits for those still running)."""

EXIT_TIMEOUT = 5.0
"""Seconds all workers together get at exit to finish the piece or input in hand (a source that blocks, such as
a `PieceQueue` nobody closes, would otherwise hold the exit forever)."""


class Closable(Protocol):
    def close(self, timeout: float | None = ...) -> object: ...


_workers: weakref.WeakSet[Closable] = weakref.WeakSet()


def register(worker: Closable) -> None:
    """Close `worker` at interpreter exit unless it is unregistered (or collected) first."""
    _workers.add(worker)


def unregister(worker: Closable) -> None:
    _workers.discard(worker)


@atexit.register
def close_all(timeout: float = EXIT_TIMEOUT) -> None:
    """Close every registered worker within `timeout` seconds in all (atexit runs this before the interpreter
    shuts down): first tell each to stop, then wait for each, so that they wind down in parallel."""
    deadline = time.monotonic() + timeout
    workers = list(_workers)
    for waiting in (False, True):
        for worker in workers:
            try:
                worker.close(timeout=max(0.0, deadline - time.monotonic()) if waiting else 0.0)
            except Exception:  # noqa: BLE001 - one worker's failure must not keep the others running at exit
                log.exception("closing %r at exit failed", worker)
    # A worker nobody holds any more is gone from the set while its last thread still winds down: that thread
    # frees the worker, and with it the model's tensors, inside torch. Wait for it too.
    for thread in threading.enumerate():
        if thread.name.startswith(THREAD_PREFIX) and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
