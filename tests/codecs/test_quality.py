"""Task quality per rung on real models: every rung better than the one before, the int8 base good enough."""

import numpy as np
import pytest

import bitladder
from bitladder.codecs.floatbits import to_f32
from bitladder.sources import load_source

pytest.importorskip("torch")
from bitladder.eval import data, metrics, models  # noqa: E402

pytestmark = pytest.mark.slow
LADDER = "int4,int8,bf16,exact"


def _rungs(path, tmp_path, ladder=LADDER):
    """Float weights of the model at each rung, plus the source's own."""
    source = load_source(path)
    bitladder.encode(source, tmp_path / "m.blad", ladder=ladder)
    package = bitladder.open(tmp_path / "m.blad")

    def as_float(tensors):
        return {name: to_f32(a.reshape(-1), source.tensors[name].dtype).reshape(a.shape)
                if source.tensors[name].dtype in ("F32", "F16", "BF16") else a for name, a in tensors.items()}

    reference = as_float({n: t.data.reshape(t.shape) for n, t in source.tensors.items()})
    return reference, [as_float(package.decode(r)) for r in range(len(package.manifest.ladder.rungs))]


def _flat(weights):
    return np.concatenate([w.reshape(-1) for w in weights.values() if w.dtype == np.float32])


def test_minilm_every_rung_is_better_and_int8_keeps_cosine(minilm_path, tmp_path):
    reference, rungs = _rungs(minilm_path, tmp_path)
    sentences = data.lee_sentences(limit=96)
    expected = models.minilm_embedder(reference)(sentences)
    sqnr = [metrics.sqnr_db(_flat(reference), _flat(w)) for w in rungs]
    cosine = [metrics.mean_cosine(expected, models.minilm_embedder(w)(sentences)) for w in rungs]
    assert sqnr[0] < sqnr[1] < sqnr[2] < sqnr[3] == float("inf"), sqnr
    assert cosine[0] < cosine[1] < cosine[2] <= cosine[3] == pytest.approx(1.0), cosine
    assert cosine[1] >= 0.999, f"int8 rung mean cosine {cosine[1]:.5f}"
    final = models.minilm_embedder(rungs[-1])(sentences)
    assert final.tobytes() == expected.tobytes()


def test_mobilenet_every_rung_is_better_and_int8_agrees_on_decisive_images(mobilenet_path, tmp_path):
    reference, rungs = _rungs(mobilenet_path, tmp_path)
    images = data.imagenet_photos()
    expected = models.mobilenet_classifier(reference)(images)
    logits = [models.mobilenet_classifier(w)(images) for w in rungs]
    kl = [metrics.kl_divergence(expected, out) for out in logits]
    assert kl[0] > kl[1] > kl[2] > kl[3] == 0.0, kl
    assert logits[-1].tobytes() == expected.tobytes()
    # Images whose two best classes are within 5 % probability are coin flips under any perturbation
    # (the benchmark reports agreement on all images); on the others int8 must agree.
    probabilities = np.exp(expected - expected.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= 0.05
    assert decisive.sum() >= 50
    assert metrics.topk_agreement(expected[decisive], logits[1][decisive], 1) >= 0.98
    assert kl[1] < 0.01
