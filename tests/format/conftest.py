from __future__ import annotations

import numpy as np
import pytest

import bitladder


def tiny_arrays() -> dict[str, np.ndarray]:
    """Deterministic tensors small enough for golden bytes, big enough to go through every rung."""
    grid = np.linspace(-1, 1, 96, dtype=np.float32).reshape(8, 12)
    return {
        "layer.weight": (grid * np.float32(0.5) + np.float32(0.01) * np.sin(grid * 7)).astype(np.float32),
        "layer.bias": np.arange(8, dtype=np.float32) / 8,
        "steps": np.array([3], dtype=np.int64),
    }


@pytest.fixture
def tiny_package(tmp_path) -> bytes:
    out = tmp_path / "tiny.blad"
    bitladder.encode(tiny_arrays(), out, ladder="int4,int8,exact", min_size=64, model_id="tiny")
    return out.read_bytes()
