"""Rate-distortion allocation of a target first rung (`12%,int8,exact`, `30dB,int8,exact`): each tensor's cell width.

Every laddered tensor gets one uniform step for all its rows (an entropy-coded uniform quantizer, the rate-optimal
choice for squared error), an odd number `w` of cells of the int rung after it, so its cells nest in that rung's.
Per tensor the encoder measures rate and error at a set of widths on a sample of its blocks, with the core itself;
then one Lagrange multiplier picks, per tensor, the width that minimises weight x error + multiplier x bytes, and
bisection finds the multiplier that just meets the target. With every weight 1 that is reverse water-filling over
tensors (an equal step where the bits pay); a weight, e.g. a tensor's measured task sensitivity per unit of squared
error, moves bits to the tensors the task needs.

>>> curve = measure(plan, source)                                    # doctest: +SKIP
>>> allocate([curve], TargetRung(percent=12), source_bytes, fixed)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import native
from .blocks import tensor_scales
from .floatbits import to_f32
from .ladder import TargetRung
from .plan import TensorPlan

WIDTHS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 23, 27, 31, 37, 43, 51, 61, 71, 85, 101, 127)
"""Candidate cell widths, about 1.2x apart from 9 on (the step's granularity, ~0.8 dB of error)."""
SAMPLE_ELEMENTS = 1 << 20
"""About how many elements are measured per tensor: every k-th row, so that the sample spans the whole tensor
(4 whole blocks of MiniLM's word embeddings mispredicted its bytes by 10 %: its rows differ along the vocabulary)."""


@dataclass(frozen=True)
class Curve:
    """One tensor's measured rate and error per candidate width (whole-tensor figures, from the sample)."""

    name: str
    widths: tuple[int, ...]
    nbytes: tuple[float, ...]
    errors: tuple[float, ...]
    signal: float
    weight: float = 1.0


@dataclass(frozen=True)
class Allocation:
    """The widths chosen, with what the measurement predicts of the first rung they make."""

    widths: dict[str, int]
    nbytes: float
    """Predicted bytes of the laddered tensors' first-rung chunks."""
    sqnr: float
    """Predicted SQNR (dB) of the laddered tensors at the first rung."""


def measure(plan: TensorPlan, source: NDArray[Any], weight: float = 1.0) -> Curve:
    """Rate and squared error of `plan`'s tensor at each width in `WIDTHS` (up to its grid's top code), measured by
    coding and decoding a sample of its rows with the core; `source` is flat, in the storage dtype."""
    if not plan.one_scale:
        raise ValueError(f"tensor {plan.spec.name!r} is not planned under a target rung")
    scales = tensor_scales(plan, source)
    sample = _sample_rows(plan, source)
    whole = plan.whole()
    blocks = [native.Block(whole.dtype, whole.inner, whole.max_code, begin, min(plan.block_size, sample.size - begin),
                           plan.columns) for begin in range(0, sample.size, plan.block_size)]
    scale_up = plan.spec.numel / max(sample.size, 1)
    reference = to_f32(sample, plan.spec.dtype).astype(np.float64)
    finite = np.isfinite(reference)
    signal = float(np.square(reference[finite]).sum())
    widths = tuple(w for w in WIDTHS if w <= plan.max_code)
    nbytes, errors = [], []
    decoded = np.empty_like(sample)
    for width in widths:
        size = 0
        for block in blocks:
            part = sample[block.begin:block.begin + block.count]
            payload = native.encode("int", block, part, scales, width, 0)
            native.decode("int", block, payload, np.zeros(block.rows, np.uint16), None,
                          decoded[block.begin:block.begin + block.count], width, 0)
            size += len(payload)
        difference = to_f32(decoded, plan.spec.dtype).astype(np.float64)[finite] - reference[finite]
        nbytes.append(size * scale_up)
        errors.append(float(np.square(difference).sum()) * scale_up)
    return Curve(plan.spec.name, widths, tuple(nbytes), tuple(errors), signal * scale_up, weight)


def signal(source: NDArray[Any], dtype: str) -> float:
    """Σx² over the finite values of a flat tensor in its storage `dtype`: what a tensor sent exact adds to the
    model's signal (`allocate`'s `exact_signal`)."""
    values = to_f32(source, dtype).astype(np.float64)
    return float(np.square(values[np.isfinite(values)]).sum())


def _sample_rows(plan: TensorPlan, source: NDArray[Any]) -> NDArray[Any]:
    """Every k-th row of the tensor, flat and contiguous: about `SAMPLE_ELEMENTS` elements (at least one row)."""
    rows = source.reshape(plan.rows, plan.columns)
    every = max(1, plan.rows * plan.columns // SAMPLE_ELEMENTS)
    return np.ascontiguousarray(rows[::every]).reshape(-1)


def _choose(curves: Sequence[Curve], multiplier: float) -> list[int]:
    """Per curve, the index of the width minimising weight x error + multiplier x bytes."""
    return [min(range(len(c.widths)), key=lambda i, c=c: c.weight * c.errors[i] + multiplier * c.nbytes[i])  # type: ignore[misc]
            for c in curves]


def _fill(curves: Sequence[Curve], picks: list[int], budget: float) -> list[int]:
    """`picks` refined while bytes stay within `budget`: each time the finer width that removes the most weighted
    error per byte it adds. The multiplier's choice is optimal only on the convex hull of each curve, and between
    two hull points the widths jump (a few tenths of a percent of the source left unspent on MiniLM)."""
    picks = list(picks)
    spare = budget - _totals(curves, picks)[0]
    while True:
        best, move = 0.0, None
        for index, (curve, pick) in enumerate(zip(curves, picks, strict=True)):
            for finer in range(pick):
                extra = curve.nbytes[finer] - curve.nbytes[pick]
                gain = curve.weight * (curve.errors[pick] - curve.errors[finer])
                if 0 < extra <= spare and gain > 0 and gain / extra > best:
                    best, move = gain / extra, (index, finer, extra)
        if move is None:
            return picks
        index, finer, extra = move
        picks[index] = finer
        spare -= extra


def _totals(curves: Sequence[Curve], picks: list[int]) -> tuple[float, float]:
    nbytes = sum(c.nbytes[i] for c, i in zip(curves, picks, strict=True))
    error = sum(c.errors[i] for c, i in zip(curves, picks, strict=True))
    return nbytes, error


def _sqnr(signal: float, error: float) -> float:
    return math.inf if error <= 0 else 10 * math.log10(max(signal, 1e-300) / error)


def allocate(curves: Sequence[Curve], target: TargetRung, source_bytes: int, fixed_bytes: int,
             exact_signal: float = 0.0) -> Allocation:
    """Widths that meet `target`: first-rung bytes (the laddered tensors' predicted chunks plus `fixed_bytes`, what
    the rest of the first rung takes) at most `target.percent` % of `source_bytes`, with the least weighted error;
    or an SQNR of at least `target.sqnr` over the model's float tensors (`exact_signal`: the squared sum of those
    sent exact in the first rung, which add signal and no error), in the fewest bytes. ValueError when even the
    coarsest (finest) widths miss it."""
    signal = sum(c.signal for c in curves) + exact_signal
    if not curves:
        return Allocation({}, 0.0, math.inf)

    def meets(picks: list[int]) -> bool:
        nbytes, error = _totals(curves, picks)
        if target.percent:
            return nbytes + fixed_bytes <= target.percent / 100 * source_bytes
        return _sqnr(signal, error) >= target.sqnr

    scale = max(c.weight * max(c.errors) / max(min(c.nbytes), 1.0) for c in curves) or 1.0
    low, high = math.log(scale) - 60, math.log(scale) + 10  # multipliers from "every width 1" to "every width max"
    coarsest = [len(c.widths) - 1 for c in curves]
    finest = [0] * len(curves)
    # A larger multiplier buys fewer bytes and more error: a size target wants the smallest that fits, an SQNR
    # target the largest that still reaches it.
    if target.percent and not meets(coarsest):
        nbytes, _ = _totals(curves, coarsest)
        raise ValueError(f"target {target.name} is out of reach: the coarsest first rung takes "
                         f"{100 * (nbytes + fixed_bytes) / source_bytes:.2f} % of the source")
    if target.sqnr and not meets(finest):
        raise ValueError(f"target {target.name} is out of reach: the finest first rung reaches "
                         f"{_sqnr(signal, _totals(curves, finest)[1]):.1f} dB")
    for _ in range(64):
        middle = (low + high) / 2
        good = meets(_choose(curves, math.exp(middle)))
        if target.percent:
            low, high = (low, middle) if good else (middle, high)
        else:
            low, high = (middle, high) if good else (low, middle)
    picks = _choose(curves, math.exp(high if target.percent else low))
    if not meets(picks):
        picks = coarsest if target.percent else finest
    if target.percent:
        picks = _fill(curves, picks, target.percent / 100 * source_bytes - fixed_bytes)
    nbytes, error = _totals(curves, picks)
    return Allocation({c.name: c.widths[i] for c, i in zip(curves, picks, strict=True)}, nbytes, _sqnr(signal, error))
