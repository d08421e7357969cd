import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitladder.codecs.floatbits import (
    bf16_to_f32, f32_to_bf16, from_order_key, order_key, unzigzag, zigzag,
)

u32 = hnp.arrays(np.uint32, st.integers(0, 64), elements=st.integers(0, 2**32 - 1))
u16 = hnp.arrays(np.uint16, st.integers(0, 64), elements=st.integers(0, 2**16 - 1))


@given(u32)
def test_order_key_is_a_bijection_32(bits):
    assert np.array_equal(from_order_key(order_key(bits)), bits)


@given(u16)
def test_order_key_is_a_bijection_16(bits):
    assert np.array_equal(from_order_key(order_key(bits)), bits)


@given(hnp.arrays(np.float32, st.integers(2, 64), elements=st.floats(width=32, allow_nan=False)))
def test_order_key_sorts_like_the_floats(values):
    keys = order_key(values.view(np.uint32))
    order = np.argsort(values, kind="stable")
    # -0.0 and 0.0 compare equal as floats but have distinct keys: compare on non-decreasing keys.
    sorted_keys = keys[order]
    assert np.all(np.diff(sorted_keys.astype(np.int64)) >= -1)
    finite = values[order]
    strictly = finite[1:] > finite[:-1]
    assert np.all(np.diff(sorted_keys.astype(np.int64))[strictly] > 0)


@given(hnp.arrays(np.int32, st.integers(0, 64), elements=st.integers(-(2**31), 2**31 - 1)))
def test_zigzag_round_trip(values):
    assert np.array_equal(unzigzag(zigzag(values)), values)
    assert zigzag(np.array([0, -1, 1, -2], np.int32)).tolist() == [0, 1, 2, 3]


def test_bf16_rounds_to_nearest_even_and_keeps_specials():
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -0.0, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    rounded = bf16_to_f32(f32_to_bf16(values))
    assert rounded[0] == 1.0 and rounded[1] == 1.0  # tie goes to even
    assert rounded[2] == 1.0 + 4 * 2**-8
    assert np.signbit(rounded[3]) and rounded[3] == 0
    assert rounded[4] == np.inf and rounded[5] == -np.inf and np.isnan(rounded[6])
    assert rounded[7] == np.inf  # above the largest bf16 rounds to infinity
