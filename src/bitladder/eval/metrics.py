"""Pure-numpy measures of how far a reconstructed model's outputs are from the original's.

Every function takes the reference first and the test (reconstructed) second, and
returns a plain ``float`` so results drop straight into benchmark tables and asserts.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["kl_divergence", "mean_cosine", "sqnr_db", "topk_agreement"]

ArrayLike = npt.ArrayLike


def _pair(reference: ArrayLike, test: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    # float64 so that sums over millions of weights do not lose the small errors we measure
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if ref.shape != tst.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs test {tst.shape}")
    return ref, tst


def _rows(reference: ArrayLike, test: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref, tst = _pair(reference, test)
    if ref.ndim == 0:
        raise ValueError("expected at least one dimension, got a scalar")
    if ref.ndim == 1:
        return ref[np.newaxis, :], tst[np.newaxis, :]
    return ref.reshape(ref.shape[0], -1), tst.reshape(tst.shape[0], -1)


def sqnr_db(reference: ArrayLike, test: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10*log10(sum(ref**2) / sum((ref-test)**2))``.

    Returns ``inf`` when the arrays are equal (bit-exact reconstruction) and ``-inf``
    when the reference is all zeros but the test is not.

    >>> sqnr_db([1.0, 2.0], [1.0, 2.0])
    inf
    >>> round(sqnr_db([3.0, 4.0], [3.0, 3.9]), 2)  # 25 / 0.01
    33.98
    """
    ref, tst = _pair(reference, test)
    noise = float(np.sum((ref - tst) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def mean_cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Mean over rows of the cosine similarity between ``a[i]`` and ``b[i]``.

    A 1-D input is one row; higher-dimensional inputs are flattened after the first
    axis. A row pair where either side is all zeros counts as cosine 0, unless both
    are all zeros, which counts as 1 (identical).

    >>> round(mean_cosine([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [1.0, 1.0]]), 4)  # (1 + 0.7071) / 2
    0.8536
    """
    x, y = _rows(a, b)
    dots = np.sum(x * y, axis=1)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    both_zero = (np.linalg.norm(x, axis=1) == 0) & (np.linalg.norm(y, axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    cos = np.where(both_zero, 1.0, cos)
    return float(np.mean(cos))


def topk_agreement(ref_logits: ArrayLike, test_logits: ArrayLike, k: int = 1) -> float:
    """Fraction of rows whose reference top-1 class is among the test model's top-``k``.

    ``k=1`` is plain top-1 agreement (the argmaxes are equal); ``k=5`` asks whether the
    test model still ranks the reference's answer in its top five. Ties are broken
    towards the lower class index, like ``np.argmax``.

    >>> ref = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]
    >>> test = [[0.5, 0.4, 0.1], [0.9, 0.0, 0.1]]
    >>> topk_agreement(ref, test, k=1), topk_agreement(ref, test, k=2)
    (0.5, 1.0)
    """
    ref, tst = _pair(ref_logits, test_logits)
    if ref.ndim != 2:
        raise ValueError(f"logits must be 2-D (rows, classes), got shape {ref.shape}")
    if not 1 <= k <= ref.shape[1]:
        raise ValueError(f"k must be in [1, {ref.shape[1]}], got {k}")
    ref_top1 = np.argmax(ref, axis=1)
    # stable sort of negated logits keeps the lower index first among equal logits
    test_topk = np.argsort(-tst, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(test_topk == ref_top1[:, np.newaxis], axis=1)))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = logits - np.max(logits, axis=1, keepdims=True)
    log_norm: np.ndarray = np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    result: np.ndarray = shifted - log_norm
    return result


def kl_divergence(ref_logits: ArrayLike, test_logits: ArrayLike) -> float:
    """Mean over rows of ``KL(softmax(ref) || softmax(test))`` in nats.

    Zero for identical logits (or logits that differ by a per-row constant).

    >>> kl_divergence([[1.0, 2.0, 3.0]], [[11.0, 12.0, 13.0]])
    0.0
    >>> round(kl_divergence([[0.0, 0.0]], [[0.0, math.log(3.0)]]), 4)  # KL([.5,.5] || [.25,.75])
    0.1438
    """
    ref, tst = _pair(ref_logits, test_logits)
    if ref.ndim != 2:
        raise ValueError(f"logits must be 2-D (rows, classes), got shape {ref.shape}")
    log_p = _log_softmax(ref)
    log_q = _log_softmax(tst)
    per_row = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    # rounding can push an exact-zero divergence a hair below zero
    return float(np.mean(np.maximum(per_row, 0.0)))
