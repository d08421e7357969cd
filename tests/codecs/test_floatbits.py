import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitladder.codecs.floatbits import bf16_to_f32, f32_to_bf16, from_f32, to_f32


def test_bf16_rounds_to_nearest_even_and_keeps_specials():
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -0.0, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    rounded = bf16_to_f32(f32_to_bf16(values))
    assert rounded[0] == 1.0 and rounded[1] == 1.0  # tie goes to even
    assert rounded[2] == 1.0 + 4 * 2**-8
    assert np.signbit(rounded[3]) and rounded[3] == 0
    assert rounded[4] == np.inf and rounded[5] == -np.inf and np.isnan(rounded[6])
    assert rounded[7] == np.inf  # above the largest bf16 rounds to infinity


@given(hnp.arrays(np.uint16, st.integers(0, 64), elements=st.integers(0, 2**16 - 1)))
def test_half_bits_widen_exactly(bits):
    for dtype in ("F16", "BF16"):
        widened = to_f32(bits, dtype)
        back = from_f32(widened, dtype)
        finite = ~np.isnan(widened)
        assert np.array_equal(back[finite], bits[finite])
        assert np.isnan(to_f32(back[~finite], dtype)).all()
