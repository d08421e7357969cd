"""The SQNR per rung that `encode` measures and records: against numpy on the same blocks, and on the whole model."""

import math

import ml_dtypes
import numpy as np
import pytest

import bitladder
from bitladder.codecs.blocks import TensorState, encode_tensor
from bitladder.codecs.floatbits import to_f32
from bitladder.codecs.ladder import Ladder
from bitladder.codecs.plan import plan_tensor
from bitladder.codecs.quality import DEFAULT_EVERY, QualityMeter
from bitladder.errors import UsageError
from bitladder.sources import from_arrays, load_source

LADDER = "int4,int8,bf16,exact"


def _sqnr(reference, test):
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return 10 * math.log10(np.sum(reference**2) / np.sum((reference - test) ** 2))


def _measure(model, ladder, every):
    """The meter fed every payload of `model` (a SourceModel), and the blocks it picked per tensor."""
    meter, picked = QualityMeter(ladder, every), {}
    for tensor in model.tensors.values():
        plan = plan_tensor(tensor.spec, ladder)
        probe = meter.tensor(plan, tensor.data)
        picked[tensor.name] = (plan, probe.picked)
        for step, block, payload in encode_tensor(plan, tensor.data):
            probe.add(step, block, payload)
    return meter, picked


def test_matches_numpy_on_the_blocks_it_decodes(minilm_layer0, tmp_path):
    """A small block size gives many blocks per tensor; the recorded figure equals numpy's SQNR over the
    decoded package, restricted to the blocks the meter picked."""
    ladder = Ladder.parse(LADDER, block_size=1 << 14)
    model = from_arrays(minilm_layer0)
    meter, picked = _measure(model, ladder, every=3)
    bitladder.encode(model, tmp_path / "m.blad", ladder=ladder)
    package = bitladder.open(tmp_path / "m.blad")
    assert package.manifest.quality == meter.quality()
    for rung in range(3):
        decoded = package.decode(rung)
        reference, test = [], []
        for name, (plan, blocks) in picked.items():
            for index in sorted(blocks):
                block = plan.block(index)
                reference.append(minilm_layer0[name].reshape(-1)[block.begin:block.begin + block.count])
                test.append(decoded[name].reshape(-1)[block.begin:block.begin + block.count])
        assert package.manifest.quality[rung] == pytest.approx(_sqnr(np.concatenate(reference), np.concatenate(test)),
                                                               abs=0.006)
    assert package.manifest.quality[3] is None  # exact


def test_sample_is_a_quarter_and_close_to_the_whole_model(minilm_path, tmp_path):
    """On all of MiniLM (int8,exact) the default sample decodes about 1/4 of the laddered elements and lands
    within 0.5 dB of the SQNR of every laddered tensor."""
    source = load_source(minilm_path)
    manifest = bitladder.encode(source, tmp_path / "m.blad", ladder="int8,exact")
    meter, picked = _measure(source, manifest.ladder, DEFAULT_EVERY)
    assert meter.quality() == manifest.quality
    assert meter.sampled_elements <= meter.laddered_elements / DEFAULT_EVERY + manifest.ladder.block_size
    assert meter.sampled_elements >= meter.laddered_elements / DEFAULT_EVERY / 2
    decoded = bitladder.open(tmp_path / "m.blad").decode("int8", raw=True)
    laddered = [name for name, (plan, _) in picked.items() if plan.laddered]
    reference = np.concatenate([to_f32(source.tensors[n].data, "F32") for n in laddered])
    test = np.concatenate([to_f32(decoded[n].reshape(-1), "F32") for n in laddered])
    whole = _sqnr(reference, test)
    assert 35 < whole < 45
    assert manifest.quality[0] == pytest.approx(whole, abs=0.5)
    assert manifest.quality[1] is None


def test_every_rung_is_better_and_figures_are_deterministic(minilm_layer0, tmp_path):
    first = bitladder.encode(minilm_layer0, tmp_path / "a.blad", ladder=LADDER)
    second = bitladder.encode(minilm_layer0, tmp_path / "b.blad", ladder=LADDER)
    assert first.quality == second.quality
    assert (tmp_path / "a.blad").read_bytes() == (tmp_path / "b.blad").read_bytes()
    int4, int8, bf16, exact = first.quality
    assert 10 < int4 < int8 < bf16 and exact is None


def test_a_rung_lossless_for_the_source_is_none(minilm_layer0, tmp_path):
    """For a bf16 model the bf16 rung is its exact one: no error, so no figure."""
    arrays = {name: a.astype(ml_dtypes.bfloat16) for name, a in minilm_layer0.items()}
    manifest = bitladder.encode(arrays, tmp_path / "m.blad", ladder="int8,bf16,exact")
    int8, bf16, exact = manifest.quality
    assert int8 > 30 and bf16 is None and exact is None


def test_tensors_sent_exact_are_not_measured():
    meter, _ = _measure(from_arrays({"bias": np.ones(100, np.float32)}), Ladder.parse("int8,exact"), 1)
    assert meter.quality() == (None, None) and meter.laddered_elements == 0


def test_non_finite_values_are_left_out(minilm_layer0):
    """Infinities and NaNs travel exact (escapes); the figure is numpy's over the finite values."""
    values = minilm_layer0["encoder.layer.0.attention.self.query.weight"].copy()
    values[3, 5], values[7, 9] = np.inf, np.nan
    ladder = Ladder.parse("int8,exact")
    meter, picked = _measure(from_arrays({"w": values}), ladder, 1)
    plan, blocks = picked["w"]
    assert blocks == {0} and plan.blocks == 1
    state = TensorState(plan)
    step, block, payload = next(encode_tensor(plan, values.reshape(-1).view(np.uint32)))
    state.apply(step, block, memoryview(payload))
    finite = np.isfinite(values.reshape(-1))
    assert meter.quality()[0] == pytest.approx(_sqnr(values.reshape(-1)[finite], state.values()[finite]), abs=0.006)


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_every_must_be_a_positive_integer(every):
    with pytest.raises(UsageError, match="every"):
        QualityMeter(Ladder.parse("int8,exact"), every)
