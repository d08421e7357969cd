"""The delta codec: any old and new patterns round-trip bit-exactly, approximations hold the bits asked for."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitladder.codecs import native
from bitladder.codecs.native import Block, NativeDtype
from bitladder.errors import ChunkIntegrityError

from .strategies import tensors

DTYPES = ["F32", "F16", "BF16"]


def _block(dtype, count):
    return Block(NativeDtype[dtype], NativeDtype.NONE, 1, 0, count, 1)


def _apply(block, payload, held):
    out = np.empty_like(held)
    native.delta_decode(block, payload, held, out)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), bits=st.sampled_from([0, 1, 4, 8, 24]))
def test_round_trip(dtype, data, bits):
    _, old = data.draw(tensors(dtype))
    _, new = data.draw(tensors(dtype))
    n = min(old.size, new.size)
    old, new = old[:n].copy(), new[:n].copy()
    new[::2] = old[::2]  # unchanged elements among changed ones
    block = _block(dtype, n)
    first = native.delta_encode(block, new, old, bits)
    approximation = _apply(block, first, old)
    exact = native.delta_encode(block, new, approximation, 0, first or None)
    assert _apply(block, exact, approximation).tobytes() == new.tobytes()
    alone = native.delta_encode(block, new, old, 0)  # the exact chunk without an approximate one before it
    assert _apply(block, alone, old).tobytes() == new.tobytes()
    if bits == 0:
        assert approximation.tobytes() == new.tobytes() and exact == b""


def test_unchanged_block_is_empty():
    old = np.arange(1000, dtype=np.uint32) * 77777
    block = _block("F32", old.size)
    assert native.delta_encode(block, old, old, 8) == b""
    assert _apply(block, b"", old).tobytes() == old.tobytes()


def _sqnr(reference, value):
    return 10 * np.log10((reference.astype(np.float64) ** 2).sum() / ((value - reference).astype(np.float64) ** 2).sum())


def test_approximation_holds_the_new_version_to_the_bits_asked_for(minilm_layer0):
    """deltaN approximates the new version about as well as intN would (~6 dB per bit), whatever the old one."""
    old = minilm_layer0["encoder.layer.0.attention.self.query.weight"].reshape(-1)
    rng = np.random.default_rng(0)
    new = (old + rng.laplace(0, 2e-2, old.shape).astype(np.float32)).astype(np.float32)
    block = _block("F32", old.size)
    assert _sqnr(new, old) < 15
    figures = {}
    for bits in (4, 8):
        payload = native.delta_encode(block, new.view(np.uint32), old.view(np.uint32), bits)
        figures[bits] = _sqnr(new, _apply(block, payload, old.view(np.uint32)).view(np.float32))
    assert figures[4] > 22 and figures[8] > figures[4] + 15
    close = (old + rng.laplace(0, 1e-6, old.shape).astype(np.float32)).astype(np.float32)  # already within int8's error
    assert native.delta_encode(block, close.view(np.uint32), old.view(np.uint32), 8) == b""


def test_corrupt_payloads_are_typed_errors():
    rng = np.random.default_rng(1)
    old = rng.integers(0, 2**31, 4096, dtype=np.uint32)
    new = old + rng.integers(0, 50, 4096, dtype=np.uint32)
    block = _block("F32", old.size)
    payload = bytearray(native.delta_encode(block, new, old, 0))
    for cut in (1, 10, len(payload) // 2, len(payload) - 1):
        with pytest.raises(ChunkIntegrityError):
            _apply(block, bytes(payload[:cut]), old)
    failures = 0
    for position in rng.integers(0, len(payload), 200):
        flipped = bytearray(payload)
        flipped[position] ^= 0x10
        try:
            _apply(block, bytes(flipped), old)
        except ChunkIntegrityError:
            failures += 1
    assert failures > 0  # flips in the raw low bits decode to other values: the chunk digest catches those
