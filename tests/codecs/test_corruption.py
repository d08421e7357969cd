"""A corrupt chunk payload (bit flips, truncation, extension, a splice, another block's payload) never crashes or
hangs the decoder: it raises ChunkIntegrityError and leaves the tensor as it was, or it decodes."""

import faulthandler

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitladder.codecs.blocks import TensorState, encode_tensor
from bitladder.codecs.floatbits import from_f32
from bitladder.codecs.ladder import Ladder
from bitladder.codecs.plan import plan_tensor
from bitladder.codecs.states import STORAGE, TensorSpec
from bitladder.errors import ChunkIntegrityError, DecoderStateError

SHAPE = (6, 50)
CASES = [("F32", "int2,int4,int8,bf16,exact"), ("F32", "int3,fp16,exact"), ("F32", "int8,exact"),
         ("F32", "fp16,exact"), ("F16", "int4,int8,exact"), ("BF16", "int8,exact"), ("F32", "exact"), ("I32", "int8")]


def _source(dtype):
    rng = np.random.default_rng(1)
    if dtype == "I32":
        return rng.integers(-1000, 1000, int(np.prod(SHAPE))).astype(STORAGE[dtype])
    values = (rng.standard_normal(SHAPE) * np.array([[1e-3], [0.1], [1], [0], [30], [1]])).astype(np.float32)
    values[5, 7] = 200.0                                  # an outlier
    values[2, :4] = [np.nan, np.inf, -np.inf, 1e-40]      # escapes and a subnormal
    return from_f32(values.reshape(-1), dtype)


ENCODED = {}
for _dtype, _ladder in CASES:
    _plan = plan_tensor(TensorSpec("t", _dtype, SHAPE), Ladder.parse(_ladder, min_size=0, block_size=128))
    ENCODED[_dtype, _ladder] = (_plan, {(s, b): p for s, b, p in encode_tensor(_plan, _source(_dtype))})


@pytest.fixture(scope="module", autouse=True)
def no_hang():
    """A decoder that loops forever ends the run (with every thread's traceback) instead of stalling it."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@st.composite
def mutations(draw, payload, others):
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "swap"]))
    data = bytearray(payload)
    if kind == "flip" and data:
        for bit in draw(st.lists(st.integers(0, 8 * len(data) - 1), min_size=1, max_size=8)):
            data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "splice" and data:
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=12))
        data[at:at + len(junk)] = junk
    elif kind == "swap" and others:
        data = bytearray(draw(st.sampled_from(others)))
    else:
        data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _snapshot(state):
    return state.data.copy(), state.scales.copy(), state.block_steps.copy()


def _apply_or_refuse(state, step, block, payload):
    """Apply one chunk; on ChunkIntegrityError check that nothing changed. True if it decoded."""
    before = _snapshot(state)
    try:
        state.apply(step, block, memoryview(payload))
    except ChunkIntegrityError:
        for name, old, new in zip(("values", "scales", "block steps"), before, _snapshot(state), strict=True):
            assert np.array_equal(old, new), f"a refused chunk changed the {name} at {np.flatnonzero(old != new)[:8]}"
        return False
    return True


@pytest.mark.parametrize("dtype, ladder_text", CASES, ids=[f"{d}-{t}" for d, t in CASES])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_corrupt_payload_is_refused_or_decodes(dtype, ladder_text, data):
    plan, chunks = ENCODED[dtype, ladder_text]
    target = data.draw(st.sampled_from(sorted(chunks)), label="chunk")
    others = [p for (s, b), p in chunks.items() if s == target[0] and b != target[1] and p != chunks[target]]
    bad = data.draw(mutations(chunks[target], others), label="payload")
    state = TensorState(plan)
    failed: set[int] = set()
    for step in range(len(plan.steps)):  # step by step, block by block; the target gets the corrupt bytes
        for block in range(plan.blocks):
            if block in failed:
                continue
            payload = bad if (step, block) == target else chunks[step, block]
            if not _apply_or_refuse(state, step, block, payload):
                failed.add(block)
    if bad == chunks[target]:
        assert not failed


def test_a_block_refuses_steps_out_of_order_or_out_of_range():
    plan, chunks = ENCODED["F32", "int2,int4,int8,bf16,exact"]
    state = TensorState(plan)
    with pytest.raises(DecoderStateError):
        state.apply(1, 0, memoryview(chunks[1, 0]))
    state.apply(0, 0, memoryview(chunks[0, 0]))
    with pytest.raises(DecoderStateError):
        state.apply(0, 0, memoryview(chunks[0, 0]))
    with pytest.raises(ChunkIntegrityError):
        state.apply(0, plan.blocks, memoryview(chunks[0, 0]))
    with pytest.raises(ChunkIntegrityError):
        state.apply(len(plan.steps), 0, memoryview(chunks[0, 0]))

