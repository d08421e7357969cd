"""Target first rungs: parsing, per-tensor allocation meeting its target, nesting kept to the exact bits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bitladder
from bitladder.codecs.allocation import Curve, allocate
from bitladder.codecs.ladder import Ladder, TargetRung
from bitladder.codecs.plan import Codec, plan_tensor
from bitladder.codecs.states import TensorSpec
from bitladder.errors import ManifestError, UsageError
from bitladder.eval import metrics, models
from bitladder.format.reader import Package
from bitladder.format.spec import _parse_manifest as parse_manifest_json
from bitladder.sources import load_source


def test_parse_and_json_round_trip() -> None:
    ladder = Ladder.parse("12%,int8,exact")
    assert ladder.target == TargetRung(percent=12.0)
    assert ladder.names == ["12%", "int8", "exact"]
    assert Ladder.from_json(ladder.to_json()) == ladder
    assert Ladder.parse("30dB,int8").target == TargetRung(sqnr=30.0)


@pytest.mark.parametrize("text", ["int8,12%,exact", "12%,exact", "12%,int4,int8,exact", "12%,20%,int8", "nan%,int8",
                                  "0%,int8", "100%,int8", "x%,int8"])
def test_bad_target_ladders_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Ladder.parse(text)
    with pytest.raises(ValueError):
        Ladder.parse("12%,int8,exact", group_size=64)


def test_plan_follows_the_allocated_width() -> None:
    ladder = Ladder.parse("12%,int8,exact")
    coarse = plan_tensor(TensorSpec("w", "F32", (64, 64), factor=9), ladder)
    assert [(s.codec, s.factor, s.coarse) for s in coarse.steps] == [
        (Codec.INT, 9, 0), (Codec.INT_INT, 1, 9), (Codec.INT_EXACT, 1, 0)]
    assert coarse.one_scale
    full = plan_tensor(TensorSpec("w", "F32", (64, 64), factor=1), ladder)  # skips the int8 rung
    assert [(s.rung, s.reaches, s.codec) for s in full.steps] == [(0, 1, Codec.INT), (2, 2, Codec.INT_EXACT)]
    for spec in (TensorSpec("w", "F32", (64, 64)), TensorSpec("w", "F32", (64, 64), factor=4),
                 TensorSpec("b", "F32", (8,), factor=3)):
        with pytest.raises(ValueError):
            plan_tensor(spec, ladder)
    with pytest.raises(ValueError):
        plan_tensor(TensorSpec("w", "F32", (64, 64), factor=3), Ladder.parse("int8,exact"))


def _curve(name: str, scale: float, weight: float = 1.0) -> Curve:
    widths = (1, 3, 9, 27)
    return Curve(name, widths, tuple(1000.0 / w for w in widths), tuple(scale * w * w for w in widths), 1e6, weight)


def test_allocation_meets_targets_and_follows_weights() -> None:
    curves = [_curve("a", 1.0), _curve("b", 1.0, weight=100.0)]
    size = allocate(curves, TargetRung(percent=20), source_bytes=10_000, fixed_bytes=100)
    assert size.nbytes + 100 <= 2000
    assert size.widths["b"] < size.widths["a"]  # the weighted tensor gets the finer step
    sqnr = allocate(curves, TargetRung(sqnr=40), source_bytes=10_000, fixed_bytes=0)
    assert sqnr.sqnr >= 40
    with pytest.raises(ValueError, match="out of reach"):
        allocate(curves, TargetRung(percent=0.5), source_bytes=10_000, fixed_bytes=0)
    with pytest.raises(ValueError, match="out of reach"):
        allocate(curves, TargetRung(sqnr=150), source_bytes=10_000, fixed_bytes=0)


@pytest.fixture(scope="module")
def minilm() -> Path:
    return models.minilm_dir() / "model.safetensors"


def _sqnr(source_path: Path, decoded: dict[str, np.ndarray]) -> float:
    source = load_source(source_path)
    names = [n for n, t in source.tensors.items() if t.dtype == "F32"]
    reference = np.concatenate([np.asarray(source.tensors[n].data).view(np.float32).ravel() for n in names])
    return metrics.sqnr_db(reference, np.concatenate([np.asarray(decoded[n], np.float32).ravel() for n in names]))


@pytest.mark.slow
def test_targets_on_minilm_are_met_and_the_ladder_stays_exact(minilm: Path, tmp_path: Path) -> None:
    source_bytes = load_source(minilm).nbytes
    sized = bitladder.encode(minilm, tmp_path / "sized.blad", ladder="12%,int8,exact")
    assert sized.rung_bytes()[0] <= 0.12 * source_bytes
    widths = {t.factor for t in sized.tensors if t.factor}
    assert len(widths) > 1  # mixed precision: tensors got different steps
    package = Package.open(tmp_path / "sized.blad")
    exact = package.decode()
    for name, tensor in load_source(minilm).tensors.items():
        assert np.asarray(exact[name]).tobytes() == np.asarray(tensor.data).tobytes()
    bitladder.encode(minilm, tmp_path / "aimed.blad", ladder="30dB,int8")
    assert _sqnr(minilm, Package.open(tmp_path / "aimed.blad").decode(rung=0)) >= 30


def test_manifest_refuses_bad_widths(tmp_path: Path) -> None:
    weights = {"w": np.linspace(-1, 1, 64 * 128, dtype=np.float32).reshape(64, 128)}
    manifest = bitladder.encode(weights, tmp_path / "t.blad", ladder="20%,int8,exact")
    data = manifest.to_json()
    assert data["tensors"][0]["factor"] == manifest.tensors[0].factor
    for bad in (4, 0, 200, "3"):
        broken = json.loads(json.dumps(data))
        broken["tensors"][0]["factor"] = bad
        with pytest.raises(ManifestError):
            parse_manifest_json(broken)
    missing = json.loads(json.dumps(data))
    del missing["tensors"][0]["factor"]
    with pytest.raises(ManifestError):
        parse_manifest_json(missing)


def test_unreachable_target_is_a_usage_error(tmp_path: Path) -> None:
    weights = {"w": np.linspace(-1, 1, 64 * 128, dtype=np.float32).reshape(64, 128)}
    with pytest.raises(UsageError, match="out of reach"):
        bitladder.encode(weights, tmp_path / "t.blad", ladder="0.1%,int8,exact")
    assert not (tmp_path / "t.blad").exists()


def _two_tensors(minilm: Path) -> dict[str, np.ndarray]:
    """Two real MiniLM weight matrices of equal size."""
    tensors = load_source(minilm).tensors
    return {name: np.asarray(tensors[name].data).view(np.float32).reshape(tensors[name].shape)
            for name in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight")}


def test_sensitivity_moves_bits_to_the_tensor_that_needs_them(minilm: Path, tmp_path: Path) -> None:
    weights = _two_tensors(minilm)
    query, key = weights
    plain = bitladder.encode(weights, tmp_path / "plain.blad", ladder="15%,int8")
    assert plain.allocation == "sqnr"
    for heavy, light in ((query, key), (key, query)):
        manifest = bitladder.encode(weights, tmp_path / "w.blad", ladder="15%,int8",
                                    sensitivity={heavy: 100.0, light: 1.0}, calibration="a test")
        widths = {t.name: t.factor for t in manifest.tensors}
        assert widths[heavy] < widths[light]  # a narrower cell: finer steps where the error costs more
        assert manifest.allocation == "task: a test"
        assert Package.open(tmp_path / "w.blad").manifest == manifest  # recorded, and read back


def test_bad_sensitivity_is_refused_before_writing(minilm: Path, tmp_path: Path) -> None:
    weights = _two_tensors(minilm)
    query, key = weights
    good = {query: 1.0, key: 2.0}
    cases = [("int8,exact", good, "x", "has none"), ("15%,int8", good, "", "go together"),
             ("15%,int8", None, "x", "go together"), ("15%,int8", {query: 1.0}, "x", "lacks 1 of the 2"),
             ("15%,int8", {query: 1.0, key: -1.0}, "x", "not a finite number"),
             ("15%,int8", {query: 1.0, key: float("nan")}, "x", "not a finite number"),
             ("15%,int8", good, "x" * 2000, "at most")]
    for ladder, sensitivity, calibration, message in cases:
        with pytest.raises(UsageError, match=message):
            bitladder.encode(weights, tmp_path / "t.blad", ladder=ladder, sensitivity=sensitivity,
                             calibration=calibration)
        assert not (tmp_path / "t.blad").exists()


def test_manifest_records_the_allocation_exactly_with_a_target(tmp_path: Path) -> None:
    weights = {"w": np.linspace(-1, 1, 64 * 128, dtype=np.float32).reshape(64, 128)}
    targeted = bitladder.encode(weights, tmp_path / "t.blad", ladder="20%,int8,exact").to_json()
    plain = bitladder.encode(weights, tmp_path / "p.blad", ladder="int8,exact").to_json()
    assert targeted["allocation"] == "sqnr" and "allocation" not in plain
    for data, allocation in ((targeted, None), (targeted, ""), (targeted, 7), (targeted, "x" * 1025),
                             (plain, "sqnr")):
        broken = json.loads(json.dumps(data))
        if allocation is None:
            del broken["allocation"]
        else:
            broken["allocation"] = allocation
        with pytest.raises(ManifestError):
            parse_manifest_json(broken)
