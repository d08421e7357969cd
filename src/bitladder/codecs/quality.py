"""The quality of each rung, measured while encoding: the SQNR of the laddered tensors, 10·log10(Σx² / Σ(x−y)²),
x the source values and y what a device holds at that rung (tensors that travel exact carry no error and are left
out, as in the README's figures; so are non-finite values, which travel exact).

The signal Σx² is summed over every laddered block. The error is measured on a deterministic sample: the encoder's
own payloads of about one laddered block in `every` are decoded (`TensorState`, as a device decodes them). Error
energy is heavy-tailed (a few rows with large scales hold much of it), so the sample is not simply scaled up: every
block also gets a predictor of its error, computed from the source alone, and the sampled error is scaled by the
predicted error of all blocks over that of the sampled ones (a ratio estimator). Each predictor follows what sets
its step's error: an int step rounds to cells whose width follows its row's scale, so Σ min(x², w²/12) with w from
the row's max |x|; a half step's rounding is relative, so Σx²; a delta step's follows the change, so Σ(x−parent)².
On MiniLM the figures land within 0.5 dB of decoding every block (int8; 0.05 dB at int4 and bf16), for 5 % of the
encode time; one block in ten scaled up plainly was 2 dB off at int8.

A block is sampled when it holds a laddered element at a multiple of `every · block_size`, counting laddered
elements in encode order: at most 1/`every` of the data plus one block is decoded, and the first laddered block
always is (`every=1` decodes every block, and the figures are then exact). Steps that reach a tensor's exact
values are never decoded: their error is zero by construction. Nothing is random.

>>> from bitladder.codecs.blocks import encode_tensor
>>> from bitladder.codecs.plan import plan_tensor
>>> from bitladder.codecs.states import TensorSpec
>>> ladder = Ladder.parse("int8,exact")
>>> plan = plan_tensor(TensorSpec("w", "F32", (64, 64)), ladder)
>>> source = np.random.default_rng(0).standard_normal(4096).astype(np.float32).view(np.uint32)
>>> meter = QualityMeter(ladder)
>>> probe = meter.tensor(plan, source)
>>> for step, block, payload in encode_tensor(plan, source):
...     probe.add(step, block, payload)
>>> [round(q) if q is not None else q for q in meter.quality()]
[45, None]
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..errors import UsageError
from .blocks import TensorState, tensor_scales
from .floatbits import MAGNITUDE, bf16_to_f32, to_f32
from .ladder import ExactRung, Ladder
from .plan import Codec, Step, TensorPlan

DEFAULT_EVERY: Final = 10
"""Decode about one laddered block in ten."""
DECIMALS: Final = 2
"""dB figures are recorded to 0.01 dB."""

_COLUMN_STRIDE: Final = 4
_GROUP: Final = 1 << 16  # elements per group of rows in `_int_rows`
_RELATIVE: Final = (Codec.HALF, Codec.INT_HALF)


def _energy(values: NDArray[Any], dtype: type[np.floating[Any]] = np.float64) -> float:
    """Σv², by einsum's own loop (`np.dot` would wake BLAS threads, which then spin on the encoder's cores)."""
    return float(np.einsum("i,i->", values, values, dtype=dtype))


def _finite_energy(values: NDArray[np.float32]) -> float:
    """Σv² over the finite values: summed in float32 (a block's worth loses ~1e-5 of it), in float64 when that
    overflows or a value is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        energy = _energy(values, np.float32)
    return energy if math.isfinite(energy) else _energy(values[np.isfinite(values)].astype(np.float64))


def _lossless(step: Step) -> bool:
    """Whether the step leaves the block at the source's exact values."""
    return step.codec in (Codec.PLANES, Codec.XOR_PLANES, Codec.INT_EXACT, Codec.HALF_EXACT) or \
        (step.codec is Codec.DELTA and step.factor == 0)


def _int_rows(plan: TensorPlan, source: NDArray[Any], values: NDArray[np.float32]) -> dict[int, NDArray[np.float64]]:
    """Per factor of the plan's int steps, per scale row: Σ over the row of min(x², w²/12), w the cell width
    (`factor` codes of the finest int rung, whose step is max|x| / max_code on the row, or the tensor's one scale;
    a value in the zero cell is rounded to 0). The max comes from the patterns with their sign cleared (their order
    is that of the magnitudes); the sum is taken on every `_COLUMN_STRIDE`-th column, which predicts it as well. Rows go in
    cache-sized groups, so no temporary is the tensor's size."""
    sign_off, non_finite = (source.dtype.type(v) for v in MAGNITUDE[plan.spec.dtype])
    columns, count = plan.columns, plan.rows
    factors = sorted({step.factor for step in plan.steps if step.codec in (Codec.INT, Codec.INT_INT)})
    bits, floats = source.reshape(count, columns), values.reshape(count, columns)
    rows = {factor: np.empty(count) for factor in factors}
    one_peak = None  # under one scale for the tensor, the top cell's reach stands for every row's peak
    if plan.one_scale and count:
        one_peak = bf16_to_f32(tensor_scales(plan, source)[:1])[0] * np.float32(plan.max_code)
    group = max(1, _GROUP // columns)
    for first in range(0, count, group):
        last = min(count, first + group)
        if one_peak is not None:
            peaks = np.full(last - first, one_peak, np.float32)
        else:
            patterns = (bits[first:last] & sign_off).max(axis=1)
            peaks = to_f32(patterns, plan.spec.dtype).astype(np.float32)
            for row in np.flatnonzero(patterns >= non_finite):  # a row with an infinity or NaN: its finite values
                finite = np.abs(floats[first + row][np.isfinite(floats[first + row])])
                peaks[row] = finite.max() if finite.size else 0
        with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaNs are meant to fall out below
            squares = np.square(floats[first:last, ::_COLUMN_STRIDE])
            for factor in factors:
                width = np.square(peaks * np.float32(factor / plan.max_code)) / np.float32(12)
                # fmin: an infinity or NaN (sent exact) counts as one cell
                rows[factor][first:last] = np.fmin(squares, width[:, None]).sum(axis=1, dtype=np.float64)
    scale = columns / len(range(0, columns, _COLUMN_STRIDE))
    return {factor: per_row * scale for factor, per_row in rows.items()}


def _per_block(rows: NDArray[np.float64], columns: int, bounds: list[tuple[int, int]]) -> NDArray[np.float64]:
    """Per block, the sum of per-row figures over its elements (a partial row pro rata)."""
    before = np.concatenate(([0.0], np.cumsum(rows)))

    def upto(element: int) -> float:
        row = element // columns
        return float(before[row] + ((element - row * columns) / columns * rows[row] if row < len(rows) else 0.0))

    return np.array([upto(end) - upto(begin) for begin, end in bounds])


class QualityMeter:
    """Per rung signal, sampled error and predicted error of the laddered tensors of one package.

    Call `tensor` for each tensor in encode order, give the returned probe every payload of that tensor, then read
    `quality()`: per rung the SQNR in dB, or None where the rung is exact or lossless (no error at all) or its
    error could not be measured.
    """

    def __init__(self, ladder: Ladder, every: int = DEFAULT_EVERY) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise UsageError(f"every must be a positive integer (decode one block in `every`), got {every!r}")
        self.ladder = ladder
        self.every = every
        self._stride = every * ladder.block_size
        self._counted = 0  # laddered elements seen so far, in encode order
        rungs = len(ladder.rungs)
        self.signal = 0.0
        self.error: NDArray[np.float64] = np.zeros(rungs)  # measured on the sampled blocks
        self.predicted: NDArray[np.float64] = np.zeros(rungs)  # over every block
        self.predicted_sampled: NDArray[np.float64] = np.zeros(rungs)
        self.sampled_elements = 0
        self.laddered_elements = 0

    def tensor(self, plan: TensorPlan, source: NDArray[Any], parent: NDArray[Any] | None = None) -> TensorProbe:
        """The probe for one tensor's payloads: `source` flat in its storage dtype, `parent` as for
        `encode_tensor` (a delta tensor's old values)."""
        picked: frozenset[int] = frozenset()
        if plan.laddered:
            picked = frozenset(index for index in range(plan.blocks) if self._picks(plan.block(index).count))
            self.laddered_elements += plan.spec.numel
        return TensorProbe(self, plan, source, parent, picked)

    def _picks(self, count: int) -> bool:
        start, self._counted = self._counted, self._counted + count
        return count > 0 and (self.every == 1 or (start + count - 1) // self._stride != (start - 1) // self._stride)

    def quality(self) -> tuple[float | None, ...]:
        """Per rung, SQNR in dB rounded to `DECIMALS` (None: exact or lossless rung, or not measurable)."""
        figures: list[float | None] = []
        for index, rung in enumerate(self.ladder.rungs):
            sampled = self.predicted_sampled[index]
            if isinstance(rung, ExactRung) or self.predicted[index] == 0 or sampled == 0 or self.signal == 0:
                figures.append(None)
                continue
            error = self.error[index] * (self.predicted[index] / sampled)
            figure = 10 * math.log10(self.signal / error) if error > 0 else math.inf
            figures.append(round(figure, DECIMALS) if math.isfinite(figure) else None)
        return tuple(figures)


class TensorProbe:
    """One tensor's part of the measurement: its signal and predictors on creation, then the error of its sampled
    blocks as their payloads arrive."""

    def __init__(self, meter: QualityMeter, plan: TensorPlan, source: NDArray[Any], parent: NDArray[Any] | None,
                 picked: frozenset[int]) -> None:
        self._meter, self._plan, self._source, self._parent = meter, plan, source, parent
        self.picked = picked
        self._state: TensorState | None = None
        self._int_rows: dict[int, NDArray[np.float64]] | None = None
        if plan.laddered:
            self._predict()

    def _held_steps(self) -> list[tuple[range, Step]]:
        """Each step with the rungs at which a device holds what it decoded."""
        steps, top = self._plan.steps, len(self._meter.ladder.rungs)
        return [(range(step.rung, steps[i + 1].rung if i + 1 < len(steps) else top), step)
                for i, step in enumerate(steps)]

    def _predict(self) -> None:
        plan, meter, dtype = self._plan, self._meter, self._plan.spec.dtype
        values = to_f32(self._source, dtype)
        bounds = [(block.begin, block.begin + block.count) for block in map(plan.block, range(plan.blocks))]
        signal = np.array([_finite_energy(values[begin:end]) for begin, end in bounds])
        meter.signal += float(signal.sum())
        predictors: dict[tuple[Codec, int], NDArray[np.float64]] = {}
        for held, step in self._held_steps():
            if _lossless(step) or not held:
                continue
            key = (step.codec, step.factor)
            if key not in predictors:
                predictors[key] = self._predictor(step, bounds, signal, values)
            total, sampled = float(predictors[key].sum()), sum(float(predictors[key][i]) for i in self.picked)
            for rung in held:
                meter.predicted[rung] += total
                meter.predicted_sampled[rung] += sampled

    def _predictor(self, step: Step, bounds: list[tuple[int, int]], signal: NDArray[np.float64],
                   values: NDArray[np.float32]) -> NDArray[np.float64]:
        """Per block, a number proportional to the error `step` leaves in it (see the module doc)."""
        if step.codec in _RELATIVE:
            return signal
        if step.codec is Codec.DELTA:
            assert self._parent is not None  # a delta step decodes against its parent
            old = to_f32(self._parent, self._plan.spec.dtype)
            with np.errstate(over="ignore", invalid="ignore"):  # _finite_energy drops the non-finite differences
                return np.array([_finite_energy(values[begin:end] - old[begin:end]) for begin, end in bounds])
        if self._int_rows is None:
            self._int_rows = _int_rows(self._plan, self._source, values)
        return _per_block(self._int_rows[step.factor], self._plan.columns, bounds)

    def add(self, step_index: int, block_index: int, payload: bytes) -> None:
        """One payload, as `encode_tensor` yields it (a block's steps in order); every payload must come."""
        if block_index not in self.picked:
            return
        held, step = self._held_steps()[step_index]
        if _lossless(step):
            return
        plan = self._plan
        if self._state is None:
            self._state = TensorState(plan, self._parent)
        self._state.apply(step_index, block_index, memoryview(payload))
        block = plan.block(block_index)
        source = to_f32(self._source[block.begin:block.begin + block.count], plan.spec.dtype)
        decoded = to_f32(self._state.data[block.begin:block.begin + block.count], plan.spec.dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # an infinity, sent exact, minus itself
            difference = decoded.astype(np.float64) - source
            error = _energy(difference)
        if not math.isfinite(error):
            error = _energy(difference[np.isfinite(source)])
        if step_index == 0:
            self._meter.sampled_elements += block.count
        for rung in held:
            self._meter.error[rung] += error
