"""Real models rebuilt from numpy weights give the answers the original models give."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
import torch

from bitladder.eval.data import PHOTOS, imagenet_photos, lee_document_pairs, lee_sentences
from bitladder.eval.metrics import kl_divergence, mean_cosine, topk_agreement
from bitladder.eval.models import (
    MobileNetV2,
    load_minilm_state,
    load_mobilenet_state,
    minilm_embedder,
    mobilenet_classifier,
    mobilenet_v2_weights,
)

pytestmark = pytest.mark.slow

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CHELSEA = PHOTOS.index(("skimage", "data/chelsea.png"))


def _fp16(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state.items()}


@pytest.fixture(scope="module")
def minilm_state() -> dict[str, np.ndarray]:
    return load_minilm_state()


@pytest.fixture(scope="module")
def embed(minilm_state: dict[str, np.ndarray]) -> Callable[[Sequence[str]], np.ndarray]:
    return minilm_embedder(minilm_state)


@pytest.fixture(scope="module")
def mobilenet_state() -> dict[str, np.ndarray]:
    return load_mobilenet_state()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return imagenet_photos(augment=False)


def test_mobilenet_loads_torchvision_checkpoint_strictly() -> None:
    model = MobileNetV2()
    checkpoint = torch.load(mobilenet_v2_weights(), weights_only=True)
    assert list(model.state_dict()) == list(checkpoint)
    model.load_state_dict(checkpoint, strict=True)


def test_mobilenet_sees_the_cat(mobilenet_state: dict[str, np.ndarray], photos: np.ndarray) -> None:
    logits = mobilenet_classifier(mobilenet_state)(photos)
    assert logits.shape == (len(PHOTOS), 1000) and logits.dtype == np.float32
    assert int(np.argmax(logits[CHELSEA])) in CAT_CLASSES


def test_mobilenet_fp16_weights_keep_predictions(mobilenet_state: dict[str, np.ndarray], photos: np.ndarray) -> None:
    reference = mobilenet_classifier(mobilenet_state)(photos)
    halved = mobilenet_classifier(_fp16(mobilenet_state))(photos)
    assert topk_agreement(reference, halved, k=1) == 1.0
    assert kl_divergence(reference, halved) < 1e-3


def test_mobilenet_rejects_missing_weights(mobilenet_state: dict[str, np.ndarray]) -> None:
    partial = dict(mobilenet_state)
    del partial["classifier.1.bias"]
    with pytest.raises(RuntimeError, match="classifier.1.bias"):
        mobilenet_classifier(partial)


def test_minilm_ranks_paraphrase_above_unrelated(embed: Callable[[Sequence[str]], np.ndarray]) -> None:
    vectors = embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The central bank raised interest rates by half a point.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > 0.5 > unrelated


def test_minilm_is_deterministic(embed: Callable[[Sequence[str]], np.ndarray]) -> None:
    sentences = lee_sentences(limit=8)
    np.testing.assert_array_equal(embed(sentences), embed(sentences))


def test_minilm_fp16_weights_keep_embeddings(
    minilm_state: dict[str, np.ndarray], embed: Callable[[Sequence[str]], np.ndarray]
) -> None:
    sentences = lee_sentences(limit=32)
    assert mean_cosine(embed(sentences), minilm_embedder(_fp16(minilm_state))(sentences)) > 0.999


def test_minilm_agrees_with_human_lee_similarities(embed: Callable[[Sequence[str]], np.ndarray]) -> None:
    documents, human = lee_document_pairs()
    vectors = embed(documents)
    pairs = np.triu_indices(len(documents), k=1)
    correlation = np.corrcoef((vectors @ vectors.T)[pairs], human[pairs])[0, 1]
    assert correlation > 0.6  # 0.656 measured for the original weights
