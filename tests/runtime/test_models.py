"""Real models served while their packages stream in: quality rises rung by rung, the end is bit-exact."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitladder.eval.metrics import sqnr_db  # noqa: E402
from bitladder.runtime.torch import ProgressiveModel  # noqa: E402

from .conftest import RungFeed, encode  # noqa: E402

pytestmark = pytest.mark.slow
LADDER = "int4,int8,exact"


def as_numpy(output: Any) -> np.ndarray:
    if isinstance(output, (tuple, list)):
        return np.concatenate([as_numpy(o).reshape(-1) for o in output])
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state.numpy()
    return output.numpy()


def climb(module: torch.nn.Module, package: Path, run: Callable[[Any], Any], reference: np.ndarray,
          apply: str) -> list[float]:
    """SQNR of the served model's output at each rung (stream paused at each rung's end)."""
    feed = RungFeed(package)
    model = ProgressiveModel(module, feed, apply=apply)
    quality = []
    rungs = len(model.runtime.manifest.ladder.rungs)
    for rung in range(rungs):
        if rung:
            feed.advance(rung)
        assert model.wait(rung, timeout=120)
        with torch.no_grad():
            output = as_numpy(run(model))
        if rung == rungs - 1:
            assert np.array_equal(output, reference), "final output is not bit-exact"
        quality.append(sqnr_db(reference, output))
    assert model.error is None
    return quality


def assert_rising(quality: list[float]) -> None:
    assert all(a < b for a, b in zip(quality, quality[1:], strict=False)), quality
    assert math.isinf(quality[-1])


@pytest.fixture(scope="module")
def mobilenet_package(tmp_path_factory: pytest.TempPathFactory, mobilenet_path: Path) -> Path:
    return encode(tmp_path_factory.mktemp("mnv2"), mobilenet_path, LADDER, name="mobilenet")


@pytest.mark.parametrize("apply", ["atomic", "incremental"])
def test_mobilenet_v2(mobilenet_package: Path, apply: str) -> None:
    from bitladder.eval.data import imagenet_photos
    from bitladder.eval.models import MobileNetV2, load_mobilenet_state, mobilenet_classifier

    images = torch.from_numpy(np.ascontiguousarray(imagenet_photos()[:4], dtype=np.float32))
    reference = mobilenet_classifier(load_mobilenet_state())(images.numpy())
    quality = climb(MobileNetV2().eval(), mobilenet_package, lambda m: m(images), reference, apply)
    assert_rising(quality)


def test_minilm(tmp_path: Path, minilm_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bitladder.eval.data import lee_sentences
    from bitladder.eval.models import load_minilm_state, minilm_dir

    config = BertConfig.from_json_file(str(minilm_dir() / "config.json"))
    tokens = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)(
        list(lee_sentences()[:8]), padding=True, truncation=True, max_length=128, return_tensors="pt")
    original = BertModel(config).eval()
    state = {k: torch.from_numpy(v.copy()) for k, v in load_minilm_state().items()}
    original.load_state_dict({k: v for k, v in state.items() if k in original.state_dict()})
    with torch.no_grad():
        reference = original(**tokens).last_hidden_state.numpy()
    package = encode(tmp_path, minilm_path, LADDER, name="minilm")
    quality = climb(BertModel(config).eval(), package, lambda m: m(**tokens), reference, "incremental")
    assert_rising(quality)


@pytest.mark.parametrize("kind", ["pnet", "rnet", "onet"])
def test_mtcnn(tmp_path: Path, kind: str) -> None:
    from bitladder.eval.data import imagenet_photos

    from ._mtcnn import mtcnn_net, weights_path

    side = {"pnet": 96, "rnet": 24, "onet": 48}[kind]
    photos = torch.from_numpy(np.ascontiguousarray(imagenet_photos()[:4], dtype=np.float32))
    faces = torch.nn.functional.interpolate(photos, size=(side, side), mode="bilinear", align_corners=False)
    with torch.no_grad():
        reference = as_numpy(mtcnn_net(kind, pretrained=True)(faces))
    package = encode(tmp_path, weights_path(kind), LADDER, name=kind, min_size=16)
    quality = climb(mtcnn_net(kind, pretrained=False), package, lambda m: m(faces), reference, "atomic")
    assert_rising(quality)
