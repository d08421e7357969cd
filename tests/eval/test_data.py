"""Evaluation inputs shipped in wheels: sizes, determinism, and that nothing is fetched."""

from __future__ import annotations

import sys

import numpy as np

from bitladder.eval.data import PHOTOS, imagenet_photos, lee_document_pairs, lee_sentences, lfw_faces, word_pairs


def test_lee_sentences_are_many_long_unique_and_stable() -> None:
    sentences = lee_sentences()
    assert len(sentences) == 2683
    assert len(set(sentences)) == len(sentences)
    assert min(len(s.split()) for s in sentences) >= 5
    assert lee_sentences(limit=10) == sentences[:10]


def test_lee_document_pairs_has_symmetric_human_matrix() -> None:
    documents, human = lee_document_pairs()
    assert len(documents) == 50
    assert human.shape == (50, 50)
    np.testing.assert_array_equal(human, human.T)
    np.testing.assert_array_equal(np.diag(human), np.ones(50))
    assert human.min() >= 0.0 and human.max() <= 1.0


def test_imagenet_photos_shape_normalisation_and_determinism() -> None:
    photos = imagenet_photos()
    assert photos.shape == (10 * len(PHOTOS), 3, 224, 224)
    assert photos.dtype == np.float32
    # ImageNet normalisation puts natural photos around zero with unit-ish spread
    assert abs(float(photos.mean())) < 0.5 and 0.5 < float(photos.std()) < 1.5
    np.testing.assert_array_equal(imagenet_photos(augment=False), photos[: len(PHOTOS)])


def test_imagenet_photos_never_reach_for_a_downloader() -> None:
    imagenet_photos(augment=False)
    assert "pooch" not in sys.modules


def test_word_pairs_have_human_scores() -> None:
    for name, count in (("wordsim353", 353), ("simlex999", 999)):
        pairs, human = word_pairs(name)
        assert len(pairs) == len(human) == count
        assert all(a and b and " " not in a + b for a, b in pairs)
        assert human.min() >= 0.0 and human.max() <= 10.0


def test_lfw_faces_are_100_faces_then_100_backgrounds() -> None:
    images, faces = lfw_faces()
    assert images.shape == (200, 25, 25) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert faces[:100].all() and not faces[100:].any()
