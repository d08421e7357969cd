"""The SQNR per rung that `encode` measures and records (`codecs.quality`), against numpy on real MiniLM tensors.

(`test_quality.py` is about task quality per rung; this is about the figures in the manifest.)
"""

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


def _measure(model, ladder, every=DEFAULT_EVERY):
    """A meter fed every payload of `model` (a SourceModel), as `encode` feeds it; and the laddered names."""
    meter, laddered = QualityMeter(ladder, every), []
    for tensor in model.tensors.values():
        plan = plan_tensor(tensor.spec, ladder)
        probe = meter.tensor(plan, tensor.data)
        if plan.laddered:
            laddered.append(tensor.name)
        for step, block, payload in encode_tensor(plan, tensor.data):
            probe.add(step, block, payload)
    return meter, laddered


def _numpy_sqnr(path, arrays, laddered):
    """numpy's SQNR of the laddered tensors at every rung but the last, decoded from the package at `path`."""
    package = bitladder.open(path)
    figures = []
    for rung in range(len(package.manifest.ladder.rungs) - 1):
        decoded = package.decode(rung)
        figures.append(_sqnr(np.concatenate([arrays[n].astype(np.float32).reshape(-1) for n in laddered]),
                             np.concatenate([decoded[n].astype(np.float32).reshape(-1) for n in laddered])))
    return figures


def test_every_block_decoded_gives_numpy_figures(minilm_layer0, tmp_path):
    model = from_arrays(minilm_layer0)
    ladder = Ladder.parse(LADDER)
    meter, laddered = _measure(model, ladder, every=1)
    assert meter.sampled_elements == meter.laddered_elements
    bitladder.encode(model, tmp_path / "m.blad", ladder=ladder)
    *lossy, exact = meter.quality()
    assert lossy == pytest.approx(_numpy_sqnr(tmp_path / "m.blad", minilm_layer0, laddered), abs=0.006)
    assert exact is None


def test_recorded_sample_is_close_to_numpy(minilm_layer0, tmp_path):
    """The default sample (one block in ten, small blocks so that each tensor has several) against numpy."""
    ladder = Ladder.parse(LADDER, block_size=1 << 14)
    manifest = bitladder.encode(minilm_layer0, tmp_path / "m.blad", ladder=ladder)
    meter, laddered = _measure(from_arrays(minilm_layer0), ladder)
    assert manifest.quality == meter.quality() == bitladder.open(tmp_path / "m.blad").manifest.quality
    assert meter.sampled_elements <= meter.laddered_elements / DEFAULT_EVERY + ladder.block_size
    truth = _numpy_sqnr(tmp_path / "m.blad", minilm_layer0, laddered)
    int4, int8, bf16, exact = manifest.quality
    assert int4 == pytest.approx(truth[0], abs=0.5) and int8 == pytest.approx(truth[1], abs=0.75)
    assert bf16 == pytest.approx(truth[2], abs=0.1) and exact is None
    assert 10 < int4 < int8 < bf16


def test_whole_minilm_default_sample(minilm_path, tmp_path):
    """All of MiniLM at the default block size: about a tenth decoded, the int8 figure within 0.75 dB."""
    source = load_source(minilm_path)
    manifest = bitladder.encode(source, tmp_path / "m.blad", ladder="int8,exact")
    meter, laddered = _measure(source, manifest.ladder)
    assert meter.quality() == manifest.quality
    assert meter.laddered_elements / 20 < meter.sampled_elements <= meter.laddered_elements / 10 + (1 << 18)
    decoded = bitladder.open(tmp_path / "m.blad").decode("int8", raw=True)
    reference = np.concatenate([to_f32(source.tensors[n].data, "F32") for n in laddered])
    whole = _sqnr(reference, np.concatenate([to_f32(decoded[n].reshape(-1), "F32") for n in laddered]))
    assert 38 < whole < 44
    assert manifest.quality[0] == pytest.approx(whole, abs=0.75) and manifest.quality[1] is None


def test_figures_are_deterministic(minilm_layer0, tmp_path):
    first = bitladder.encode(minilm_layer0, tmp_path / "a.blad", ladder=LADDER, model_id="m")
    second = bitladder.encode(minilm_layer0, tmp_path / "b.blad", ladder=LADDER, model_id="m")
    assert first.quality == second.quality
    assert (tmp_path / "a.blad").read_bytes() == (tmp_path / "b.blad").read_bytes()


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
    meter, _ = _measure(from_arrays({"w": values}), ladder, 1)
    plan = plan_tensor(bitladder.sources.from_arrays({"w": values}).tensors["w"].spec, ladder)
    state = TensorState(plan)
    step, block, payload = next(encode_tensor(plan, values.reshape(-1).view(np.uint32)))
    state.apply(step, block, memoryview(payload))
    finite = np.isfinite(values.reshape(-1))
    assert meter.quality()[0] == pytest.approx(_sqnr(values.reshape(-1)[finite], state.values()[finite]), abs=0.006)


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_every_must_be_a_positive_integer(every):
    with pytest.raises(UsageError, match="every"):
        QualityMeter(Ladder.parse("int8,exact"), every)
