"""Which chunks carry a tensor: non-float and small tensors as planes in the first rung, a 16-bit rung at a
16-bit source's precision as its exact rung, int rungs whose cells nest."""

import numpy as np
import pytest

from bitladder.codecs.blocks import TensorState, encode_tensor
from bitladder.codecs.ladder import Ladder
from bitladder.codecs.native import NativeDtype
from bitladder.codecs.plan import Codec, plan_tensor
from bitladder.codecs.states import STORAGE, TensorSpec


def _steps(dtype, shape, text, **kwargs):
    plan = plan_tensor(TensorSpec("t", dtype, shape), Ladder.parse(text, **kwargs))
    return [(s.codec.value, s.rung, s.reaches) for s in plan.steps]


def _roundtrip(plan, source):
    state = TensorState(plan)
    for step, block, payload in encode_tensor(plan, source):
        state.apply(step, block, memoryview(payload))
    return state


@pytest.mark.parametrize("dtype", ["I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F64"])
def test_non_float_tensors_go_as_planes_in_the_first_rung(dtype):
    spec = TensorSpec("t", dtype, (100, 100))
    plan = plan_tensor(spec, Ladder.parse("int4,int8,bf16,exact", min_size=0, block_size=3000))
    assert [(s.codec, s.rung, s.reaches) for s in plan.steps] == [(Codec.PLANES, 0, 3)]
    assert not plan.laddered and not plan.scaled
    rng = np.random.default_rng(0)
    source = rng.integers(0, 2 if dtype == "BOOL" else 120, spec.numel).astype(STORAGE[dtype])
    if dtype == "F64":
        source = rng.standard_normal(spec.numel)
    state = _roundtrip(plan, source)
    assert state.rung == 3
    assert state.bits().tobytes() == source.tobytes()


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_small_tensors_go_as_planes_in_the_first_rung(dtype):
    assert _steps(dtype, (384,), "int8,exact") == [("planes", 0, 1)]  # under the default min_size of 4096
    assert _steps(dtype, (99,), "int8,exact", min_size=100) == [("planes", 0, 1)]
    assert _steps(dtype, (100,), "int8,exact", min_size=100) == [("int", 0, 0), ("int-exact", 1, 1)]
    assert _steps(dtype, (0, 5), "int8,exact", min_size=0) == [("planes", 0, 1)]  # empty: nothing to ladder
    assert _steps(dtype, (), "int8,exact", min_size=0) == [("int", 0, 0), ("int-exact", 1, 1)]  # 0-d: one value
    assert _steps(dtype, (2, 2), "int4,int8", min_size=5) == [("planes", 0, 1)]  # exact, even on a lossy ladder


def test_small_tensors_come_back_exact():
    source = np.array([0x7FC00001, 0x80000000, 1, 0x3F800000], np.uint32)
    plan = plan_tensor(TensorSpec("b", "F32", (4,)), Ladder.parse("int8", min_size=100))
    assert _roundtrip(plan, source).bits().tobytes() == source.tobytes()


@pytest.mark.parametrize("dtype, text, steps", [
    ("F16", "int8,fp16,exact", [("int", 0, 0), ("int-exact", 1, 2)]),
    ("BF16", "int8,bf16,exact", [("int", 0, 0), ("int-exact", 1, 2)]),
    ("BF16", "int3,fp16,exact", [("int", 0, 0), ("int-exact", 1, 2)]),  # either 16-bit format
    ("F16", "int2,int4,bf16", [("int", 0, 0), ("int-int", 1, 1), ("int-exact", 2, 2)]),
    ("F16", "bf16,exact", [("planes", 0, 1)]),
    ("BF16", "fp16", [("planes", 0, 0)]),
    ("F32", "int8,fp16,exact", [("int", 0, 0), ("int-half", 1, 1), ("half-exact", 2, 2)]),
    ("F32", "bf16,exact", [("half", 0, 0), ("half-exact", 1, 1)]),
    ("F32", "int4,int8", [("int", 0, 0), ("int-int", 1, 1)]),
    ("F32", "int2,int4,int8,bf16", [("int", 0, 0), ("int-int", 1, 1), ("int-int", 2, 2), ("int-half", 3, 3)]),
])
def test_a_half_rung_on_a_16_bit_source_is_its_exact_rung(dtype, text, steps):
    assert _steps(dtype, (128, 128), text) == steps


def test_a_half_rung_on_a_16_bit_source_ends_exact():
    rng = np.random.default_rng(2)
    source = rng.integers(0, 2**16, 4096).astype(np.uint16)
    plan = plan_tensor(TensorSpec("w", "F16", (64, 64)), Ladder.parse("int4,fp16", min_size=0, block_size=1000))
    assert plan.inner is NativeDtype.NONE
    assert _roundtrip(plan, source).bits().tobytes() == source.tobytes()


def test_the_inner_format_is_the_half_rung_of_a_float32_source():
    for text, inner in [("int8,bf16,exact", NativeDtype.BF16), ("int3,fp16,exact", NativeDtype.F16),
                        ("fp16,exact", NativeDtype.F16), ("int8,exact", NativeDtype.NONE)]:
        assert plan_tensor(TensorSpec("w", "F32", (64, 64)), Ladder.parse(text)).inner is inner


@pytest.mark.parametrize("text", ["int2,int4,int8", "int3,int8", "int3,int5,int8", "int4,int5", "int2,int3"])
def test_int_cells_nest_and_span_the_finest_range(text):
    plan = plan_tensor(TensorSpec("w", "F32", (64, 64)), Ladder.parse(text, min_size=0))
    ladder = Ladder.parse(text)
    factors = [s.factor for s in plan.steps]
    assert factors[-1] == 1 and plan.max_code == ladder.rungs[-1].max_code
    for finer, (coarser, rung) in zip(factors[1:], zip(factors, ladder.rungs, strict=False), strict=False):
        ratio, left = divmod(coarser, finer)
        assert left == 0 and ratio % 2 == 1, factors            # each coarse cell is a union of finer cells
        assert coarser * (2 * rung.max_code + 1) >= 2 * plan.max_code + 1, factors
        assert (coarser - 2 * finer) * (2 * rung.max_code + 1) < 2 * plan.max_code + 1, factors  # and no wider
    assert [s.coarse for s in plan.steps[1:]] == factors[:-1]


@pytest.mark.parametrize("shape, group_size, columns", [
    ((64, 96), 0, 96), ((64, 96), 32, 32), ((64, 96), 64, 96), ((8, 3, 5), 0, 15), ((8, 3, 5), 5, 5),
    ((100,), 0, 100), ((100,), 10, 10), ((), 0, 1), ((0, 4), 0, 1),
])
def test_scale_rows_are_channels_or_groups(shape, group_size, columns):
    plan = plan_tensor(TensorSpec("w", "F32", shape), Ladder.parse("int8,exact", group_size, 0))
    assert plan.columns == columns


def test_blocks_cover_the_tensor():
    plan = plan_tensor(TensorSpec("w", "F32", (10, 10)), Ladder.parse("int8,exact", min_size=0, block_size=7))
    blocks = [plan.block(i) for i in range(plan.blocks)]
    assert plan.blocks == 15 and sum(b.count for b in blocks) == 100
    assert all(b.begin == 7 * i for i, b in enumerate(blocks))
    assert plan.step_at(1) == 1 and plan.step_at(2) is None
    assert plan_tensor(TensorSpec("w", "F32", (10, 10)), Ladder.parse("int8,exact", min_size=0, block_size=7)) == plan
