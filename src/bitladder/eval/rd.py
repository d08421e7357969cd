"""Rate-distortion order: send first the refinement chunks that buy the most quality per byte.

The priority of (tensor t, rung r) is the quality its chunk buys divided by the chunk's bytes. The quality is
measured on the task's calibration set (inputs disjoint from the live probe), on the fp32 model with only t
changed: its distortion (1 - score against the fp32 answers) with t at rung r-1, minus that with t at rung r.
Measuring each tensor alone keeps the other tensors' quantization noise out of the difference (with every
other tensor at rung r-1 as well, that noise is larger than most single-tensor gains and the order was worse
than source order); the greedy order assumes the gains add up, as output errors from independent weight
errors do to first order. The writer lays out each rung's chunks by these priorities (`schedule="rd"`), so
the format stays rung-major.

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
    decoder.feed(whole[:package.data_start + manifest.rung_end(rung)]).raise_for_error()
    return {spec.name: decoder.values(spec.name) if is_float(spec.dtype) else decoder.tensor(spec.name)
            for spec in manifest.tensors}


def rd_priorities(task: Task, package: Package) -> dict[tuple[str, int], float]:
    """(tensor name, rung) -> measured quality gain per byte of its chunk in that rung."""
    manifest = package.manifest
    last = len(manifest.ladder.rungs) - 1
    reference = task.calibration_reference()
    module = task.module(task.load_state())  # changed in place below: not the task's reference module
    params = module.state_dict()
    priorities: dict[tuple[str, int], float] = {}
    for rung in range(1, last + 1):
        chunks = [c for c in manifest.chunks if c.rung == rung]
        if not chunks:
            continue
        before = rung_state(package, rung - 1)
        after = rung_state(package, rung) if rung < last else None  # the last rung is the fp32 value itself
        for chunk in chunks:
            name = manifest.tensors[chunk.tensor].name
            if name not in params:
                continue
            gain = _distortion_with(task, module, params[name], before[name], reference)
            if after is not None:
                gain -= _distortion_with(task, module, params[name], after[name], reference)
            priorities[(name, rung)] = gain / max(chunk.length, 1)
    return priorities


SENSITIVITY_SQNR = 25.0
"""The SQNR (dB) of the noise each tensor is probed with: that of a 4-bit-class first rung, where the allocation
matters most, and small enough for the task's distortion to grow with the squared error, as the allocator assumes."""
SENSITIVITY_FLOOR = 0.01
"""The least weight a tensor gets, as a share of the model's mean: a tensor the calibration set barely exercises
(embedding rows of words it lacks) still matters to other inputs."""


def sensitivities(task: Task, state: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Per float tensor of the task's module, the calibration distortion (1 - score) its noise costs per unit of
    squared error, measured one tensor at a time with Gaussian noise at `SENSITIVITY_SQNR` on the fp32 model:
    the weights `bitladder.encode(..., sensitivity=)` allocates a target first rung by.

    >>> task = minilm_task()                                                                      # doctest: +SKIP
    >>> encode(source, "m.blad", ladder="12%,int8,exact", sensitivity=sensitivities(task, task.load_state()),
    ...        calibration=calibration_name(task))                                                 # doctest: +SKIP
    """
    reference = task.calibration_reference()
    module = task.module(state)
    params = module.state_dict()
    random = np.random.default_rng(seed)
    unperturbed = 1.0 - task.score(reference, task.calibration(module))
    raw: dict[str, float] = {}
    for name, target in params.items():
        if not target.is_floating_point() or name not in state or target.numel() == 0:
            continue
        values = np.asarray(state[name], np.float64)
        power = float(np.mean(np.square(values))) * 10 ** (-SENSITIVITY_SQNR / 10)
        if power <= 0:
            continue
        noise = random.standard_normal(values.shape) * np.sqrt(power)
        noisy = (values + noise).astype(np.float32)
        error = float(np.square(noisy.astype(np.float64) - values).sum())
        distortion = _distortion_with(task, module, target, noisy, reference) - unperturbed
        raw[name] = max(distortion, 0.0) / error
    mean = float(np.mean(list(raw.values()))) if raw else 0.0
    return {name: max(weight, SENSITIVITY_FLOOR * mean) for name, weight in raw.items()}


def calibration_name(task: Task) -> str:
    """How a package's manifest names the calibration `sensitivities(task, ...)` measured on."""
    return f"{task.name} calibration set ({task.quality_name}), one tensor at a time at {SENSITIVITY_SQNR:g} dB noise"


def _distortion_with(task: Task, module: torch.nn.Module, target: torch.Tensor, value: np.ndarray,
                     reference: np.ndarray) -> float:
    """1 - score of the calibration answers with `target` set to `value` (restored afterwards)."""
    saved = target.detach().clone()
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.array(value, copy=True)).to(target.dtype))
    try:
        return 1.0 - task.score(reference, task.calibration(module))
    finally:
        with torch.no_grad():
            target.copy_(saved)


def held_quality(task: Task, package: Package, swaps: list[tuple[float, str | None, int]]) -> list[
        tuple[float, float, int]]:
    """The quality curve of the model the device held: (time, probe score, rung) after every swap from the
    first whole-model rung on, replayed from the swap log ((time, tensor or None for the whole model, rung),
    as `run_package` records it). Unlike live answers, which sample this curve once per input, it has a
    point at every swap, so two chunk orders compare without sampling noise.
    """
    states = [rung_state(package, rung) for rung in range(len(package.manifest.ladder.rungs))]
    module = task.module(states[0])
    params = module.state_dict()
    reference = task.reference()
    held: dict[str, int] = dict.fromkeys(params, 0)
    curve: list[tuple[float, float, int]] = []
    for at, tensor, rung in sorted(swaps, key=lambda swap: swap[0]):
        names = [tensor] if tensor is not None else list(params)
        for name in names:
            if name in params and rung > held[name]:
                held[name] = rung
                with torch.no_grad():
                    params[name].copy_(torch.from_numpy(np.array(states[rung][name], copy=True)))
        if tensor is None or curve:
            curve.append((at, task.score(reference, task.infer(module)), min(held.values())))
    return curve
