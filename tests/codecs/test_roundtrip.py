"""Every ladder ends bit-exact on any bit pattern: NaN payloads, infinities, subnormals, -0.0, odd shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitladder.codecs.ladder import Ladder
from bitladder.codecs.plan import encode_tensor, plan_tensor
from bitladder.codecs.states import STORAGE, TensorSpec

LADDERS = ["int8,exact", "int2,int4,int8,bf16,exact", "int3,fp16,exact", "bf16,exact", "fp16,exact", "exact"]
SPECIAL_F32 = [0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF,
               0x80000000, 0x00000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000]
SPECIAL_16 = [0x7E00, 0x7C01, 0xFFFF, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x8000, 0x0000, 0x7BFF, 0x7F80, 0xFF81]

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9)


def _bits(dtype):
    if dtype == "F32":
        return st.one_of(st.sampled_from(SPECIAL_F32), st.integers(0, 2**32 - 1),
                         st.floats(-4, 4, width=32).map(lambda f: int(np.float32(f).view(np.uint32))))
    return st.one_of(st.sampled_from(SPECIAL_16), st.integers(0, 2**16 - 1))


def _roundtrip(spec, data, ladder):
    state = None
    for step, encoded in encode_tensor(spec, data, ladder):
        sections = [memoryview(s) for s in encoded.sections]
        state = step.codec.decode(spec, state, sections, encoded.params)
        # The decoder reaches exactly the state the encoder predicted.
        assert np.array_equal(state.bits(spec), encoded.state.bits(spec))
    return state


@pytest.mark.parametrize("ladder_text", LADDERS)
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_bit_pattern_comes_back(ladder_text, dtype, data):
    shape = data.draw(shapes)
    size = int(np.prod(shape))
    values = data.draw(hnp.arrays(STORAGE[dtype], size, elements=_bits(dtype)))
    ladder = Ladder.parse(ladder_text, group_size=data.draw(st.sampled_from([0, 2, 3])), min_size=0)
    spec = TensorSpec("t", dtype, tuple(shape))
    state = _roundtrip(spec, values, ladder)
    if ladder.is_lossless:
        assert state.bits(spec).tobytes() == values.tobytes()


@pytest.mark.parametrize("dtype", ["I64", "I8", "U8", "BOOL", "F64", "I32"])
def test_non_float_tensors_go_exact_in_the_first_rung(dtype):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, 10_000).astype(STORAGE[dtype])
    spec = TensorSpec("t", dtype, (100, 100))
    steps = plan_tensor(spec, Ladder.parse("int8,exact", min_size=0))
    assert [(s.codec.name, s.rung, s.reaches) for s in steps] == [("planes", 0, 1)]
    assert _roundtrip(spec, values, Ladder.parse("int8,exact")).bits(spec).tobytes() == values.tobytes()


def test_small_tensors_go_exact_in_the_first_rung():
    spec = TensorSpec("bias", "F32", (384,))
    assert [s.codec.name for s in plan_tensor(spec, Ladder.parse("int8,exact"))] == ["planes"]
    assert [s.codec.name for s in plan_tensor(spec, Ladder.parse("int8,exact", min_size=100))] == ["int", "exact-delta"]


def test_a_rung_at_source_precision_is_the_exact_rung():
    spec = TensorSpec("w", "F16", (128, 128))
    steps = plan_tensor(spec, Ladder.parse("int8,fp16,exact"))
    assert [(s.codec.name, s.rung, s.reaches) for s in steps] == [("int", 0, 0), ("exact-delta", 1, 2)]
