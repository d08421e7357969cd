"""Which chunks carry a tensor up the ladder: a pure function of dtype, shape and ladder.

Every float tensor of at least `min_size` elements goes up the ladder block by block; each rung's cells nest in
the previous rung's (docs/FORMAT.md, "Cells"), so one chunk per (block, rung) sends the sub-cell indices. Other
tensors travel exact, as byte planes, in the first rung.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .._memo import cached
from .ladder import DeltaRung, ExactRung, HalfRung, IntRung, Ladder, Rung, TargetRung, int_factors
from .native import Block, NativeDtype, Refine
from .states import TensorSpec, is_float


class Codec(Enum):
    """How one chunk codes a block's step: what the decoder holds before it, what it holds after."""

    PLANES = "planes"          # nothing -> the source bytes (zstd, one frame per byte plane)
    INT = "int"                # nothing -> int codes (with the block's scales)
    INT_INT = "int-int"        # int codes -> finer int codes
    INT_HALF = "int-half"      # int codes -> a 16-bit rounding of a float32 source
    INT_EXACT = "int-exact"    # int codes -> the source patterns
    HALF = "half"              # nothing -> a 16-bit rounding of a float32 source
    HALF_EXACT = "half-exact"  # a 16-bit rounding -> the float32 source patterns
    DELTA = "delta"            # the parent's values (or an approximation) -> closer to, or exactly, the new ones
    XOR_PLANES = "xor-planes"  # the parent's values -> the new bytes (their XOR with the old, as byte planes)

    @property
    def refine(self) -> Refine | None:
        return {Codec.INT_HALF: Refine.INT_TO_HALF, Codec.INT_EXACT: Refine.INT_TO_EXACT,
                Codec.HALF_EXACT: Refine.HALF_TO_EXACT}.get(self)


@dataclass(frozen=True)
class Step:
    """One chunk per block: delivered in rung `rung`, it leaves the block at rung `reaches`.

    `factor` is the int rung's cell width in codes of the finest int rung (1 for the finest); an INT_INT step goes
    from `coarse` to `factor`; a DELTA step keeps about `factor` bits of each change (0: exact)."""

    rung: int
    reaches: int
    codec: Codec
    factor: int = 1
    coarse: int = 0


def _is_exact_for(rung: Rung, spec: TensorSpec) -> bool:
    """A rung at a 16-bit source's precision (either 16-bit format) is that tensor's exact rung."""
    return isinstance(rung, ExactRung) or (isinstance(rung, HalfRung) and spec.dtype != "F32")


@dataclass(frozen=True)
class TensorPlan:
    """The chunks of one tensor: its steps, and what the core needs to code any of its blocks."""

    spec: TensorSpec
    steps: tuple[Step, ...]
    inner: NativeDtype
    max_code: int
    columns: int
    block_size: int
    one_scale: bool = False
    """One scale for every row (a target first rung's uniform step), not one per row's peak."""

    @cached
    def laddered(self) -> bool:
        return self.steps[0].codec not in (Codec.PLANES, Codec.XOR_PLANES)

    @property
    def needs_parent(self) -> bool:
        """Whether the first chunk applies to the parent's values of this tensor (a delta tensor)."""
        return self.spec.delta

    @cached
    def scaled(self) -> bool:
        """Whether the tensor has int rungs (and so one scale per row)."""
        return any(step.codec in (Codec.INT, Codec.INT_INT) for step in self.steps)

    @cached
    def blocks(self) -> int:
        return max(1, -(-self.spec.numel // self.block_size))

    @cached
    def rows(self) -> int:
        return self.spec.numel // self.columns if self.spec.numel else 0

    def block(self, index: int) -> Block:
        begin = index * self.block_size
        count = min(self.block_size, self.spec.numel - begin)
        return Block(self._block_dtype, self.inner, self.max_code, begin, max(count, 0), self.columns)

    @cached
    def _block_dtype(self) -> NativeDtype:
        return NativeDtype[self.spec.dtype] if self.laddered else NativeDtype.NONE

    def whole(self) -> Block:
        return Block(NativeDtype[self.spec.dtype], self.inner, self.max_code, 0, self.spec.numel, self.columns)

    def step_at(self, rung: int) -> int | None:
        """Index of the step delivered in `rung`, if any."""
        return self._step_of_rung.get(rung)

    @cached
    def _step_of_rung(self) -> dict[int, int]:
        return {step.rung: index for index, step in enumerate(self.steps)}


def _columns(spec: TensorSpec, group_size: int) -> int:
    """Elements per scale row: one row per output channel, or per `group_size` inputs when that divides a row."""
    if spec.numel == 0:
        return 1
    channels = spec.shape[0] if len(spec.shape) >= 2 else 1
    row = spec.numel // channels
    return group_size if group_size and row % group_size == 0 else row


def goes_up(spec: TensorSpec, ladder: Ladder) -> bool:
    """Whether a tensor of a full package climbs the ladder (else it travels exact, as byte planes, in rung 0)."""
    return ladder.delta is None and is_float(spec.dtype) and spec.numel >= max(ladder.min_size, 1)


def plan_tensor(spec: TensorSpec, ladder: Ladder) -> TensorPlan:
    """The chunks that carry `spec` up `ladder`.

    >>> ladder = Ladder.parse("int8,exact")
    >>> [s.codec.value for s in plan_tensor(TensorSpec("w", "F32", (512, 512)), ladder).steps]
    ['int', 'int-exact']
    >>> [s.codec.value for s in plan_tensor(TensorSpec("b", "F32", (512,)), ladder).steps]
    ['planes']
    """
    top = len(ladder.rungs) - 1
    if spec.delta:
        if not is_float(spec.dtype):
            return TensorPlan(spec, (Step(0, top, Codec.XOR_PLANES),), NativeDtype.NONE, 1, 1, ladder.block_size)
        approximate = ladder.rungs[0] if isinstance(ladder.rungs[0], DeltaRung) else None
        deltas = (Step(0, top, Codec.DELTA, 0),) if approximate is None else (
            Step(0, 0, Codec.DELTA, approximate.bits), Step(1, top, Codec.DELTA, 0))
        return TensorPlan(spec, deltas, NativeDtype.NONE, 1, 1, ladder.block_size)
    if ladder.delta is not None and is_float(spec.dtype) and spec.numel >= max(ladder.min_size, 1):
        # A tensor of a delta that its parent does not predict (new, or changed beyond recognition) climbs an int
        # ladder of the delta rung's bits (2..8) instead: first rung int, then exact.
        first = IntRung(bits=min(max(ladder.delta.bits, 2), 8))
        steps_int = (Step(0, 0, Codec.INT, 1), Step(1, top, Codec.INT_EXACT))
        return TensorPlan(spec, steps_int, NativeDtype.NONE, first.max_code, _columns(spec, 0), ladder.block_size)
    if not goes_up(spec, ladder):
        if spec.factor:
            raise ValueError(f"tensor {spec.name!r} travels exact in the first rung: it has no cell width to allocate")
        return TensorPlan(spec, (Step(0, top, Codec.PLANES),), NativeDtype.NONE, 1, 1, ladder.block_size)
    if ladder.target is not None:
        return _plan_targeted(spec, ladder)
    if spec.factor:
        raise ValueError(f"tensor {spec.name!r} has a cell width, but ladder {','.join(ladder.names)} allocates none")
    lossy: list[tuple[int, Rung]] = []
    exact_at = None
    for index, rung in enumerate(ladder.rungs):
        if _is_exact_for(rung, spec):
            exact_at = index
            break
        lossy.append((index, rung))
    int_rungs = [r for _, r in lossy if isinstance(r, IntRung)]
    half = next((r for _, r in lossy if isinstance(r, HalfRung)), None)
    inner = NativeDtype[half.dtype] if half is not None else NativeDtype.NONE
    factors = iter(int_factors(int_rungs)) if int_rungs else iter(())
    steps: list[Step] = []
    previous: Step | None = None
    for index, rung in lossy:
        if isinstance(rung, IntRung):
            factor = next(factors)
            step = (Step(index, index, Codec.INT_INT, factor, previous.factor) if previous is not None
                    else Step(index, index, Codec.INT, factor))
        else:
            step = Step(index, index, Codec.INT_HALF if previous is not None else Codec.HALF)
        steps.append(step)
        previous = step
    if exact_at is not None:
        if previous is None:
            steps.append(Step(exact_at, top, Codec.PLANES))
        else:
            steps.append(Step(exact_at, top, Codec.HALF_EXACT if previous.codec in (Codec.HALF, Codec.INT_HALF)
                              else Codec.INT_EXACT))
    elif steps:
        steps[-1] = Step(steps[-1].rung, top, steps[-1].codec, steps[-1].factor, steps[-1].coarse)
    max_code = int_rungs[-1].max_code if int_rungs else 1
    group = int_rungs[0].group_size if int_rungs else 0
    return TensorPlan(spec, tuple(steps), inner, max_code, _columns(spec, group), ladder.block_size)


def _plan_targeted(spec: TensorSpec, ladder: Ladder) -> TensorPlan:
    """`target,intN[,exact]`: the first rung groups `spec.factor` codes of intN per cell (1: intN itself, and the
    tensor skips the intN rung), on one scale for the whole tensor (`codecs/allocation.py`)."""
    grid = ladder.rungs[1]
    assert isinstance(ladder.rungs[0], TargetRung) and isinstance(grid, IntRung)  # Ladder checks this shape
    factor, top = spec.factor, len(ladder.rungs) - 1
    if not (1 <= factor <= grid.max_code and factor % 2):
        raise ValueError(f"tensor {spec.name!r}: first-rung cell width {factor} is not odd in 1..{grid.max_code}")
    steps = [Step(0, 0 if factor > 1 else min(1, top), Codec.INT, factor)]
    if factor > 1:
        steps.append(Step(1, 1, Codec.INT_INT, 1, factor))
    if top == 2:
        steps.append(Step(2, 2, Codec.INT_EXACT))
    return TensorPlan(spec, tuple(steps), NativeDtype.NONE, grid.max_code, _columns(spec, 0), ladder.block_size,
                      one_scale=True)
