"""The quality of each rung, measured while encoding: SQNR of the laddered tensors, from a sample of blocks.

For each sampled block the encoder's own payloads are decoded (`TensorState`, as a device decodes them), and per
rung the block's signal energy Σx² and error energy Σ(x−y)² are added up, x the source values and y the values
a device holds at that rung; a rung's figure is 10·log10(Σx² / Σ(x−y)²) over every sampled block of every
laddered tensor (tensors that travel exact carry no error and are left out, as in the README's figures).

The sample is deterministic: the laddered elements are counted in encode order, and a block is decoded when it
holds an element at a multiple of `every · block_size`, so about 1/`every` of the data is decoded (`DEFAULT_EVERY`) (never more
than that plus one block) and the first laddered block always is. Steps that reach a tensor's exact values are
not decoded: their error is zero by construction. Non-finite source values travel exact and are left out.

>>> import numpy as np
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
[39, None]
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..errors import UsageError
from .blocks import TensorState
from .floatbits import to_f32
from .ladder import ExactRung, Ladder
from .plan import Codec, Step, TensorPlan

DEFAULT_EVERY: Final = 4
"""Decode about a quarter of the laddered data: on MiniLM that costs 3 % (int8,exact) to 8 % (int4,int8,bf16,exact)
of the encode time and lands within 0.4 dB of the SQNR of every block (one block in ten: 2 dB off at int8)."""
DECIMALS: Final = 2
"""dB figures are recorded to 0.01 dB."""


def _energy(values: NDArray[np.float64]) -> float:
    """Σv², by einsum's own loop: `np.dot` would wake BLAS threads, which then spin on the encoder's cores."""
    return float(np.einsum("i,i->", values, values))


def _lossless(step: Step) -> bool:
    """Whether the step leaves the block at the source's exact values."""
    return step.codec in (Codec.PLANES, Codec.XOR_PLANES, Codec.INT_EXACT, Codec.HALF_EXACT) or \
        (step.codec is Codec.DELTA and step.factor == 0)


class QualityMeter:
    """Per rung signal and error energy of the laddered tensors of one package, from a sample of its blocks.

    Call `tensor` for each tensor in encode order, feed the returned probe every payload of that tensor, then
    read `quality()`: per rung the SQNR in dB, or None where the rung is exact or lossless (no error at all)
    or nothing was measured.
    """

    def __init__(self, ladder: Ladder, every: int = DEFAULT_EVERY) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise UsageError(f"every must be a positive integer (decode one block in `every`), got {every!r}")
        self.ladder = ladder
        self.every = every
        self._stride = every * ladder.block_size
        self._counted = 0  # laddered elements seen so far, in encode order
        rungs = len(ladder.rungs)
        self.signal: NDArray[np.float64] = np.zeros(rungs)
        self.error: NDArray[np.float64] = np.zeros(rungs)
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
        return count > 0 and (start + count - 1) // self._stride != (start - 1) // self._stride

    def quality(self) -> tuple[float | None, ...]:
        """Per rung, SQNR in dB rounded to `DECIMALS` (None: exact rung, no error measured, or no signal)."""
        figures: list[float | None] = []
        for rung, signal, error in zip(self.ladder.rungs, self.signal, self.error, strict=True):
            if isinstance(rung, ExactRung) or error == 0 or signal == 0:
                figures.append(None)
                continue
            figure = 10 * math.log10(signal / error)
            figures.append(round(figure, DECIMALS) if math.isfinite(figure) else None)
        return tuple(figures)


class TensorProbe:
    """Decodes the sampled blocks of one tensor from its payloads and adds their energies to the meter."""

    def __init__(self, meter: QualityMeter, plan: TensorPlan, source: NDArray[Any], parent: NDArray[Any] | None,
                 picked: frozenset[int]) -> None:
        self._meter, self._plan, self._source, self._parent = meter, plan, source, parent
        self.picked = picked
        self._state: TensorState | None = None
        self._signal: dict[int, tuple[float, NDArray[np.bool_] | None]] = {}  # block -> (Σx², finite mask)

    def add(self, step_index: int, block_index: int, payload: bytes) -> None:
        """One payload, as `encode_tensor` yields it (a block's steps in order)."""
        if block_index not in self.picked:
            return
        plan, meter = self._plan, self._meter
        step = plan.steps[step_index]
        following = plan.steps[step_index + 1].rung if step_index + 1 < len(plan.steps) else len(meter.ladder.rungs)
        held = range(step.rung, following)  # the rungs at which a device holds this step's values
        block = plan.block(block_index)
        source = to_f32(self._source[block.begin:block.begin + block.count], plan.spec.dtype)
        if block_index not in self._signal:
            finite = np.isfinite(source)
            mask = None if finite.all() else finite  # no copies for the common, all-finite block
            kept = source if mask is None else source[mask]
            self._signal[block_index] = (_energy(kept.astype(np.float64)), mask)
            meter.sampled_elements += block.count
        signal, mask = self._signal[block_index]
        error = 0.0
        if not _lossless(step):
            if self._state is None:
                self._state = TensorState(plan, self._parent)
            self._state.apply(step_index, block_index, memoryview(payload))
            decoded = to_f32(self._state.data[block.begin:block.begin + block.count], plan.spec.dtype)
            difference = decoded.astype(np.float64) - source
            if mask is not None:
                difference = difference[mask]
            error = _energy(difference)
        for rung in held:
            meter.signal[rung] += signal
            meter.error[rung] += error
