"""Which chunk codec carries each tensor up each rung (a pure function of dtype, size and ladder)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .entropy import DEFAULT_LEVEL
from .ladder import ExactRung, HalfRung, IntRung, Ladder, Rung
from .states import TensorSpec, TensorState, is_float
from .transforms import ChunkCodec, Encoded, ExactDelta, ExactPlanes, HalfBase, HalfDelta, IntBase, IntRefine


@dataclass(frozen=True)
class Step:
    """One planned chunk: the rung it is delivered in, the rung the tensor reaches, the codec."""

    rung: int
    reaches: int
    codec: type[ChunkCodec]


def _is_exact_for(rung: Rung, spec: TensorSpec) -> bool:
    """A rung at or above the source's own precision is the exact rung for that tensor."""
    return isinstance(rung, ExactRung) or (isinstance(rung, HalfRung) and rung.dtype == spec.dtype)


def plan_tensor(spec: TensorSpec, ladder: Ladder) -> list[Step]:
    """The chunks that carry `spec` up `ladder`.

    >>> ladder = Ladder.parse("int8,exact")
    >>> [s.codec.name for s in plan_tensor(TensorSpec("w", "F32", (512, 512)), ladder)]
    ['int', 'exact-delta']
    >>> [s.codec.name for s in plan_tensor(TensorSpec("b", "F32", (512,)), ladder)]
    ['planes']
    """
    top = len(ladder.rungs) - 1
    if not is_float(spec.dtype) or spec.numel < max(ladder.min_size, 1):
        return [Step(0, top, ExactPlanes)]
    steps: list[Step] = []
    previous: Rung | None = None
    for index, rung in enumerate(ladder.rungs):
        if _is_exact_for(rung, spec):
            steps.append(Step(index, top, ExactDelta if steps else ExactPlanes))
            break
        if isinstance(rung, IntRung):
            codec: type[ChunkCodec] = IntRefine if isinstance(previous, IntRung) else IntBase
        else:
            codec = HalfDelta if isinstance(previous, IntRung) else HalfBase
        steps.append(Step(index, index, codec))
        previous = rung
    return steps


def encode_tensor(
    spec: TensorSpec, source: NDArray[np.generic], ladder: Ladder, level: int = DEFAULT_LEVEL
) -> Iterator[tuple[Step, Encoded]]:
    """Encode one tensor rung by rung; `source` is flat, in the spec's storage dtype."""
    state: TensorState | None = None
    for step in plan_tensor(spec, ladder):
        encoded = step.codec.encode(spec, source, state, ladder.rungs[step.rung], level)
        state = encoded.state
        yield step, encoded
