"""Every ladder on every bit pattern: each step decodes to what the spec says (tests/codecs/reference.py), blocks
move up in any order, lossless ladders end bit-exact, and the error never grows rung over rung."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitladder.codecs.blocks import TensorState, encode_tensor
from bitladder.codecs.floatbits import from_f32, to_f32
from bitladder.codecs.ladder import Ladder
from bitladder.codecs.plan import plan_tensor
from bitladder.codecs.states import STORAGE, TensorSpec

from .reference import predict, scales

LADDERS = ["int8,exact", "int4,int8,exact", "int2,int4,int8,bf16,exact", "int3,fp16,exact", "int8,fp16,exact",
           "bf16,exact", "fp16,exact", "int8", "exact"]
DTYPES = ["F32", "F16", "BF16"]
GROUP_SIZES = [0, 2, 3, 64]
BLOCK_SIZES = [1, 7, 13, 64, 1 << 18]

NAN_F32 = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA5A5A5, 0xFFFFFFFF, 0x7FBFFFFF]
SPECIAL_F32 = NAN_F32 + [
    0x7F800000, 0xFF800000,              # infinities
    0x00000001, 0x807FFFFF, 0x00400000,  # subnormals
    0x80000000, 0x00000000,              # -0.0, +0.0
    0x7F7FFFFF, 0xFF7FFFFF, 0x00800000,  # max finite (rounds to infinity in bf16), min normal
    0x7F7F8000, 0x7F7F7FFF, 0x7F7F0000,  # a tie to the bf16 infinity, just below it, the largest bf16
    0x477FF000, 0xC77FEFFF, 0x477FE000,  # 65520 (fp16 infinity), just below, 65504 (the largest fp16)
    0x33000000, 0x33000001, 0xB3800000,  # half the smallest fp16 subnormal (ties to 0), above it, the smallest
    0x3F800000, 0xBF800001, 0x3EAAAAAB,
]
SPECIAL_F16 = [0x7E00, 0xFE00, 0x7C01, 0xFC01, 0x7FFF, 0x7D55, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x0200,
               0x8000, 0x0000, 0x7BFF, 0xFBFF, 0x0400, 0x3C00, 0xBC01, 0x3555]
SPECIAL_BF16 = [0x7FC0, 0xFFC0, 0x7F81, 0xFF81, 0x7FFF, 0x7FA5, 0x7F80, 0xFF80, 0x0001, 0x807F, 0x0040,
                0x8000, 0x0000, 0x7F7F, 0xFF7F, 0x0080, 0x3F80, 0xBF81, 0x3EAB]
SPECIALS = {"F32": SPECIAL_F32, "F16": SPECIAL_F16, "BF16": SPECIAL_BF16}


def _patterns(dtype):
    """Bit patterns of every class: specials, arbitrary bits, ordinary weights."""
    width = 32 if dtype == "F32" else 16
    ordinary = st.floats(-4, 4, width=32).map(lambda f: int(from_f32(np.array([f], np.float32), dtype)[0]))
    huge = st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda f: int(from_f32(np.array([f], np.float32), dtype)[0]))
    return st.one_of(st.sampled_from(SPECIALS[dtype]), st.integers(0, 2**width - 1), ordinary, huge)


@st.composite
def tensors(draw, dtype):
    """A tensor's shape and bit patterns, with some rows all zeros and some holding one huge outlier."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8))
    size = int(np.prod(shape))
    bits = draw(hnp.arrays(STORAGE[dtype], size, elements=_patterns(dtype)))
    if size == 0:
        return tuple(shape), bits
    rows = bits.reshape(shape[0], -1) if len(shape) >= 2 else bits.reshape(1, -1)
    for row in draw(st.lists(st.integers(0, rows.shape[0] - 1), max_size=3)):
        if draw(st.booleans()):
            rows[row] = 0
        else:
            small = draw(hnp.arrays(np.float32, rows.shape[1], elements=st.floats(-2.0**-10, 2.0**-10, width=32)))
            rows[row] = from_f32(small, dtype)
            outlier = np.float32(draw(st.sampled_from([-300.0, 6e4, 1e30, -3.4e38])))
            rows[row, draw(st.integers(0, rows.shape[1] - 1))] = from_f32(np.array([outlier]), dtype)[0]
    return tuple(shape), bits


def _apply_in_order(plan, source, order):
    """Decode the chunks block by block in `order` (each block's steps in turn); check each block as it moves."""
    expected = predict(plan, source)
    chunks = {(step, block): payload for step, block, payload in encode_tensor(plan, source)}
    assert set(chunks) == {(s, b) for s in range(len(plan.steps)) for b in range(plan.blocks)}
    state = TensorState(plan)
    taken = [0] * plan.blocks
    for block in order:
        step = taken[block]
        state.apply(step, block, memoryview(chunks[step, block]))
        taken[block] += 1
        view = plan.block(block)
        part = slice(view.begin, view.begin + view.count)
        assert state.bits()[part].tobytes() == expected[step][part].tobytes(), (step, block, plan.steps[step])
    assert state.rung == plan.steps[-1].reaches
    if plan.scaled and plan.spec.numel:
        assert np.array_equal(state.scales, scales(plan, source))
    return state


@pytest.mark.parametrize("ladder_text", LADDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_step_decodes_to_its_cells(ladder_text, dtype, data):
    shape, source = data.draw(tensors(dtype))
    ladder = Ladder.parse(ladder_text, group_size=data.draw(st.sampled_from(GROUP_SIZES)), min_size=0,
                          block_size=data.draw(st.sampled_from(BLOCK_SIZES)))
    plan = plan_tensor(TensorSpec("t", dtype, shape), ladder)
    order = [b for b in range(plan.blocks) for _ in plan.steps]
    data.draw(st.randoms(use_true_random=False)).shuffle(order)
    state = _apply_in_order(plan, source, order)
    assert state.rung == len(ladder.rungs) - 1
    if ladder.is_lossless:
        assert state.bits().tobytes() == source.tobytes()


def _weights(seed, dtype, shape):
    """Finite weight-like values: rows of varying spread, some all zeros, some with one outlier."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32) * np.exp(rng.uniform(-6, 2, (shape[0], 1))).astype(np.float32)
    values[rng.random(shape[0]) < 0.1] = 0
    outliers = rng.random(shape[0]) < 0.2
    values[outliers, rng.integers(0, shape[1], outliers.sum())] *= 1000
    return from_f32(np.clip(values, -6e4, 6e4).reshape(-1), dtype)


@pytest.mark.parametrize("ladder_text", LADDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 40), st.integers(1, 100)),
       group_size=st.sampled_from(GROUP_SIZES), block_size=st.sampled_from([37, 500, 1 << 18]))
def test_error_never_grows_rung_over_rung(ladder_text, dtype, seed, shape, group_size, block_size):
    source = _weights(seed, dtype, shape)
    plan = plan_tensor(TensorSpec("w", dtype, shape), Ladder.parse(ladder_text, group_size, 0, block_size))
    exact = to_f32(source, dtype).astype(np.float64)
    state = TensorState(plan)
    errors = []
    chunks = list(encode_tensor(plan, source))
    for step_index in range(len(plan.steps)):
        for step, block, payload in chunks:
            if step == step_index:
                state.apply(step, block, memoryview(payload))
        errors.append(float(np.sqrt(np.mean((state.values().astype(np.float64) - exact) ** 2))))
    assert all(after <= before for before, after in zip(errors, errors[1:], strict=False)), errors
    if Ladder.parse(ladder_text).is_lossless:
        assert errors[-1] == 0.0
