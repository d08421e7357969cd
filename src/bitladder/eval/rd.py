"""Rate-distortion order: send first the refinement chunks that buy the most quality per byte.

For each refinement rung r, start from the model with every tensor at rung r-1, refine one tensor at a
time to rung r, and measure on the task's small calibration probe how much of the distance to the fp32
answer that removes; the priority of (tensor, r) is that gain divided by the chunk's bytes. Gains are
measured one tensor at a time (interactions ignored: a greedy, first-order order). The writer lays out
each rung's chunks by these priorities (`schedule="rd"`), so the format stays rung-major.

>>> priorities = rd_priorities(task, Package.open("model.blad"))          # doctest: +SKIP
>>> bitladder.encode(src, "rd.blad", schedule="rd", priorities=priorities)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch

from ..codecs.states import is_float
from ..format.reader import Package, StreamDecoder
from .tasks import Task


def rung_state(package: Package, rung: int) -> dict[str, np.ndarray]:
    """Every tensor as the device holds it at `rung`: float tensors as float32 values, others as stored.

    >>> rung_state(Package.open("model.blad"), 0)["a.weight"].dtype      # doctest: +SKIP
    dtype('float32')
    """
    manifest = package.manifest
    decoder = StreamDecoder()
    whole = memoryview(package.chunk_bytes(0).obj)  # the mapped file behind the package
    decoder.feed(whole[:package.data_start + manifest.rung_end(rung)])
    return {spec.name: decoder.values(spec.name) if is_float(spec.dtype) else decoder.tensor(spec.name)
            for spec in manifest.tensors}


def rd_priorities(task: Task, package: Package) -> dict[tuple[str, int], float]:
    """(tensor name, rung) -> measured quality gain per byte of its chunk in that rung."""
    manifest = package.manifest
    reference = task.reference()
    priorities: dict[tuple[str, int], float] = {}
    for rung in range(1, len(manifest.ladder.rungs)):
        chunks = [c for c in manifest.chunks if c.rung == rung]
        if not chunks:
            continue
        before, after = rung_state(package, rung - 1), rung_state(package, rung)
        module = task.module(before)
        params = module.state_dict()
        base = 1.0 - task.score(reference, task.infer(module))
        for chunk in chunks:
            name = manifest.tensors[chunk.tensor].name
            if name not in params:
                continue
            gain = base - _distortion_with(task, module, params[name], after[name], reference)
            priorities[(name, rung)] = gain / max(chunk.length, 1)
    return priorities


def _distortion_with(task: Task, module: torch.nn.Module, target: torch.Tensor, value: np.ndarray,
                     reference: np.ndarray) -> float:
    """Distance to the fp32 answer with `target` set to `value` (restored afterwards)."""
    saved = target.detach().clone()
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.array(value, copy=True)).to(target.dtype))
    try:
        return 1.0 - task.score(reference, task.infer(module))
    finally:
        with torch.no_grad():
            target.copy_(saved)
