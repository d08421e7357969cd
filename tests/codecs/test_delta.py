"""The delta codec: any old and new patterns round-trip bit-exactly, approximations stay near, chunks undo."""

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


def _apply(block, payload, held, undo=False):
    out = np.empty_like(held)
    native.delta_decode(block, payload, held, out, undo=undo)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), bits=st.sampled_from([0, 1, 4, 8, 24]))
def test_round_trip_and_undo(dtype, data, bits):
    _, old = data.draw(tensors(dtype))
    _, new = data.draw(tensors(dtype))
    n = min(old.size, new.size)
    old, new = old[:n].copy(), new[:n].copy()
    new[::2] = old[::2]  # unchanged elements among changed ones
    block = _block(dtype, n)
    first = native.delta_encode(block, new, old, bits)
    approximation = _apply(block, first, old)
    exact = native.delta_encode(block, new, approximation, 0)
    result = _apply(block, exact, approximation)
    assert result.tobytes() == new.tobytes()
    assert _apply(block, first, _apply(block, exact, result, undo=True), undo=True).tobytes() == old.tobytes()
    if bits == 0:
        assert approximation.tobytes() == new.tobytes() and exact == b""


def test_unchanged_block_is_empty():
    old = np.arange(1000, dtype=np.uint32) * 77777
    block = _block("F32", old.size)
    assert native.delta_encode(block, old, old, 8) == b""
    assert _apply(block, b"", old).tobytes() == old.tobytes()


def test_approximation_keeps_the_bits_asked_for(minilm_layer0):
    old = minilm_layer0["encoder.layer.0.attention.self.query.weight"].reshape(-1)
    rng = np.random.default_rng(0)
    new = (old + rng.laplace(0, 2e-4, old.shape).astype(np.float32)).astype(np.float32)
    block = _block("F32", old.size)
    errors = []
    for bits in (4, 8):
        approximation = _apply(block, native.delta_encode(block, new.view(np.uint32), old.view(np.uint32), bits),
                               old.view(np.uint32)).view(np.float32)
        change, error = new - old, approximation - new
        errors.append(10 * np.log10((change ** 2).sum() / (error ** 2).sum()))
    assert errors[0] > 25 and errors[1] > errors[0] + 18  # about 6 dB per bit


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
