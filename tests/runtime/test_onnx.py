"""ONNX: initializers and Constant weights in and out (byte-identical file), and the ONNX Runtime adapter.

(`sources/onnx.py` tests live here until `tests/sources/` takes them.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import bitladder  # noqa: E402
from bitladder.errors import SourceError  # noqa: E402
from bitladder.eval.metrics import sqnr_db  # noqa: E402
from bitladder.runtime.onnx import ProgressiveSession  # noqa: E402
from bitladder.sources.onnx import load_onnx_source, write_onnx  # noqa: E402

from .conftest import RungFeed, encode  # noqa: E402

_SPEC = importlib.util.find_spec("rapidocr_onnxruntime")  # its __init__ needs cv2; only the files are used
if _SPEC is None or not _SPEC.submodule_search_locations:
    pytest.skip("rapidocr-onnxruntime is not installed", allow_module_level=True)
MODELS = Path(next(iter(_SPEC.submodule_search_locations))) / "models"
CLS = MODELS / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
DET = MODELS / "ch_PP-OCRv4_det_infer.onnx"
LADDER = "int4,int8,exact"


@pytest.mark.parametrize("model", [CLS, pytest.param(DET, marks=pytest.mark.slow),
                                   pytest.param(MODELS / "ch_PP-OCRv4_rec_infer.onnx", marks=pytest.mark.slow)],
                         ids=lambda p: p.name.split("_infer")[0])
def test_decode_writes_the_identical_onnx(tmp_path: Path, model: Path) -> None:
    manifest = bitladder.encode(load_onnx_source(model), tmp_path / "m.blad", ladder=LADDER)
    assert manifest.source["format"] == "onnx"
    out = tmp_path / "out.onnx"
    write_onnx(out, bitladder.open(tmp_path / "m.blad").decode(raw=True), manifest.source["metadata"])  # storage bits
    assert "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest() == manifest.source["digest"]
    assert out.read_bytes() == model.read_bytes()


def test_not_onnx_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00 not a protobuf")
    with pytest.raises(SourceError, match="bad.onnx"):
        load_onnx_source(bad)


@pytest.fixture(scope="module")
def det_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("det"), load_onnx_source(DET), LADDER, name="det")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from bitladder.eval.data import imagenet_photos

    return np.ascontiguousarray(imagenet_photos()[:1], dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "apply", "graph"), [("rebuild", "atomic", None), ("inputs", "atomic", DET),
                                                      ("inputs", "incremental", None)])
def test_det_session_climbs_to_exact(det_package: Path, photo: np.ndarray, mode: str, apply: str,
                                     graph: Path | None) -> None:
    reference = ort.InferenceSession(str(DET), providers=["CPUExecutionProvider"]).run(None, {"x": photo})[0]
    feed = RungFeed(det_package)
    session = ProgressiveSession(feed, model=graph, mode=mode, apply=apply)  # type: ignore[arg-type]
    quality = []
    for rung in range(3):
        if rung:
            feed.advance(rung)
        assert session.wait(rung, timeout=120)
        output, served = session.run_with_rung(None, {"x": photo})
        assert served == rung or apply == "incremental"
        quality.append(sqnr_db(reference, output[0]))
    assert np.array_equal(output[0], reference)
    assert all(a < b for a, b in zip(quality, quality[1:], strict=False)) and math.isinf(quality[-1]), quality


def test_rebuild_needs_atomic(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="atomic"):
        ProgressiveSession(tmp_path / "x.blad", mode="rebuild", apply="incremental")
