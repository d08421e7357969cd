"""Hypothesis strategies for float tensors: every bit-pattern class, odd shapes, zero rows, rows with one outlier."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitladder.codecs.floatbits import from_f32
from bitladder.codecs.states import STORAGE

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

    def rounded(value):
        return int(from_f32(np.array([value], np.float32), dtype)[0])

    ordinary = st.floats(-4, 4, width=32).map(rounded)
    huge = st.floats(width=32, allow_nan=False, allow_infinity=False).map(rounded)
    return st.one_of(st.sampled_from(SPECIALS[dtype]), st.integers(0, 2**width - 1), ordinary, huge)


@st.composite
def tensors(draw, dtype, max_side=8):
    """A tensor's shape and bit patterns, with some rows all zeros and some holding one huge outlier."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
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
