"""Metrics on small arrays whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bitladder.eval.metrics import kl_divergence, mean_cosine, sqnr_db, topk_agreement


def test_sqnr_is_infinite_for_identical_arrays() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert sqnr_db(x, x.copy()) == math.inf


def test_sqnr_matches_hand_computation() -> None:
    # signal 3^2 + 4^2 = 25, noise 0.1^2 = 0.01 -> 10*log10(2500)
    assert sqnr_db([3.0, 4.0], [3.0, 3.9]) == pytest.approx(10 * math.log10(2500))


def test_sqnr_of_zero_reference_with_error_is_minus_infinity() -> None:
    assert sqnr_db([0.0, 0.0], [0.0, 1.0]) == -math.inf


def test_sqnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        sqnr_db(np.zeros(3), np.zeros(4))


def test_sqnr_drops_6db_per_doubling_of_error() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    noise = rng.standard_normal(1000) * 1e-2
    assert sqnr_db(ref, ref + noise) - sqnr_db(ref, ref + 2 * noise) == pytest.approx(20 * math.log10(2))


def test_mean_cosine_rows() -> None:
    a = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    b = [[2.0, 0.0], [1.0, 1.0], [-1.0, -1.0]]
    assert mean_cosine(a, b) == pytest.approx((1.0 + math.sqrt(0.5) - 1.0) / 3)


def test_mean_cosine_of_1d_and_zero_rows() -> None:
    assert mean_cosine([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert mean_cosine([[0.0, 0.0]], [[0.0, 0.0]]) == 1.0
    assert mean_cosine([[0.0, 0.0]], [[1.0, 0.0]]) == 0.0


def test_mean_cosine_flattens_trailing_axes() -> None:
    a = np.ones((2, 3, 4))
    b = a.copy()
    b[1] *= -1
    assert mean_cosine(a, b) == pytest.approx(0.0)


def test_topk_agreement() -> None:
    ref = np.array([[0.0, 5.0, 1.0, 2.0], [9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    test = np.array([[0.0, 5.0, 1.0, 2.0], [1.0, 3.0, 2.0, 0.0], [4.0, 1.0, 2.0, 3.0]])
    # row 0 agrees at top-1; row 1's class 0 is third for test; row 2's class 3 is second
    assert topk_agreement(ref, test, k=1) == pytest.approx(1 / 3)
    assert topk_agreement(ref, test, k=2) == pytest.approx(2 / 3)
    assert topk_agreement(ref, test, k=3) == 1.0


def test_topk_agreement_breaks_ties_towards_lower_index() -> None:
    assert topk_agreement([[1.0, 0.0]], [[2.0, 2.0]], k=1) == 1.0
    assert topk_agreement([[0.0, 1.0]], [[2.0, 2.0]], k=1) == 0.0


def test_topk_agreement_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        topk_agreement(np.zeros((2, 3)), np.zeros((2, 3)), k=4)


def test_kl_divergence_known_value() -> None:
    # KL([1/2, 1/2] || [1/4, 3/4]) = 0.5*ln(2) + 0.5*ln(2/3)
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert kl_divergence([[0.0, 0.0]], [[0.0, math.log(3.0)]]) == pytest.approx(expected)


def test_kl_divergence_is_shift_invariant_and_zero_for_equal() -> None:
    logits = np.random.default_rng(1).standard_normal((5, 10)) * 10
    assert kl_divergence(logits, logits + 7.0) == pytest.approx(0.0, abs=1e-12)


def test_kl_divergence_is_stable_for_huge_logits() -> None:
    value = kl_divergence([[1000.0, 0.0]], [[0.0, 1000.0]])
    assert math.isfinite(value) and value == pytest.approx(1000.0)
