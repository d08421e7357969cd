"""Deltas end to end on real weights: diff, patch bit-exact, lineage refused when the weights are not the parent."""

import numpy as np
import pytest

import bitladder
from bitladder import api
from bitladder.errors import BitladderError, LineageError, UsageError


def _finetuned(old, seed, scale=2e-4, every=3):
    """Every `every`-th float tensor moved by a small real-sized change; the rest bit-identical."""
    rng = np.random.default_rng(seed)
    new = dict(old)
    for name in sorted(old)[::every]:
        if old[name].dtype == np.float32:
            new[name] = (old[name] + rng.laplace(0, scale, old[name].shape)).astype(np.float32)
    return new


def _sqnr(reference, value):
    error = ((value.astype(np.float64) - reference) ** 2).sum()
    return np.inf if error == 0 else 10 * np.log10((reference.astype(np.float64) ** 2).sum() / error)


def _same(a, b):
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]).view(np.uint8), np.asarray(b[k]).view(np.uint8))
                                    for k in a)


def test_diff_patch_bit_exact_and_cheap_when_unchanged(tmp_path, minilm_layer0):
    old, new = minilm_layer0, _finetuned(minilm_layer0, 0)
    full = api.encode(old, tmp_path / "v1.blad", model_id="m")
    manifest = api.diff(tmp_path / "v1.blad", new, tmp_path / "d.blad", version="2")
    assert (manifest.parent.model_id, manifest.parent.version, manifest.parent.weights) == ("m", "1", full.weights)
    patched, tensors = api.patch(tmp_path / "v1.blad", tmp_path / "d.blad")
    assert _same(tensors, new) and patched.model_version == "2"
    fine = api.diff(tmp_path / "v1.blad", new, tmp_path / "fine.blad", version="2", approximate_bits=16)
    for package, bits in ((tmp_path / "d.blad", 8), (tmp_path / "fine.blad", 16)):
        approximate = bitladder.open(package).decode(0, parent=old)
        for name in new:
            if new[name].dtype == np.float32 and not np.array_equal(new[name], old[name]) and new[name].size > 1000:
                # the first rung is at least as close as the old version, and about `bits` bits of the new one's scale
                sqnr = _sqnr(new[name], approximate[name])
                assert sqnr >= _sqnr(new[name], old[name]) - 0.01 and sqnr > 6 * bits - 12, (name, bits)
    assert fine.rung_bytes()[0] > manifest.rung_bytes()[0]
    unchanged = {c.tensor for c in manifest.chunks if c.length == 0}
    assert len(unchanged) >= len(old) // 2  # unchanged tensors cost no chunk bytes
    same = api.diff(old, old, tmp_path / "none.blad", version="2", parent_version="1", model_id="m")
    assert same.data_length < 100


def test_wrong_parent_and_chains_out_of_order(tmp_path, minilm_layer0):
    v1, v2 = minilm_layer0, _finetuned(minilm_layer0, 1)
    v3 = _finetuned(v2, 2)
    api.diff(v1, v2, tmp_path / "12.blad", version="2", parent_version="1", model_id="m")
    api.diff(v2, v3, tmp_path / "23.blad", version="3", parent_version="2", model_id="m")
    assert _same(api.patch(api.patch(v1, tmp_path / "12.blad")[1], tmp_path / "23.blad")[1], v3)
    with pytest.raises(LineageError, match="version '3' updates 'm' version '2'"):
        api.patch(v1, tmp_path / "23.blad")
    with pytest.raises(LineageError, match="give the weights"):
        bitladder.open(tmp_path / "12.blad").decode()
    api.encode(v1, tmp_path / "full.blad")
    with pytest.raises(UsageError, match="full package"):
        bitladder.open(tmp_path / "full.blad").decode(parent=v1)
    with pytest.raises(UsageError, match="equals its parent"):
        api.diff(v1, v2, tmp_path / "x.blad", version="1", parent_version="1")


def test_corrupt_or_truncated_deltas_are_typed(tmp_path, minilm_layer0):
    v1, v2 = minilm_layer0, _finetuned(minilm_layer0, 3)
    api.diff(v1, v2, tmp_path / "d.blad", version="2", parent_version="1", model_id="m")
    data = (tmp_path / "d.blad").read_bytes()
    rng = np.random.default_rng(0)
    for case in range(40):
        broken = bytearray(data)
        if case % 2:
            broken = broken[:int(rng.integers(0, len(data)))]
        else:
            broken[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        held = {k: v.copy() for k, v in v1.items()}
        with pytest.raises(BitladderError):
            api.patch(held, bytes(broken))
        assert _same(held, v1)  # the weights given are never written to
