"""The MTCNN task: facenet-pytorch's detection pipeline on mosaics of real faces, and its quality per rung."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import bitladder
from bitladder.eval.data import astronaut, face_mosaic
from bitladder.eval.mtcnn import (
    MAX_BOXES,
    box_iou,
    box_set_score,
    detect,
    detection_metrics,
    mtcnn_nets,
    nms,
    padded,
    pairwise_iou,
    pyramid_scales,
    wheel_dir,
)
from bitladder.eval.rd import rung_state
from bitladder.eval.tasks import Task, get_task
from bitladder.format.reader import Package


@pytest.fixture(scope="module")
def nets() -> torch.nn.Module:
    return mtcnn_nets(pretrained=True)


def test_box_iou() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 5.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 0.0, 5.0]])
    assert box_iou(a, b) == pytest.approx([1.0, 1 / 3, 0.0])
    assert pairwise_iou(a[:2], b[:2]) == pytest.approx(np.array([[1.0, 1 / 3], [1.0, 1 / 3]]))
    assert pairwise_iou(a, np.zeros((0, 4))).shape == (3, 0)


def test_nms_union_keeps_the_best_of_each_overlapping_group() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 20, 31, 30], [0, 5, 10, 15]], float)
    scores = np.array([0.6, 0.9, 0.5, 0.7, 0.8])
    # IoU([1,1,11,11], [0,5,10,15]) = 54 / 146 < 0.5, so both stay; box 3 beats its neighbour 2
    assert nms(boxes, scores, 0.5).tolist() == [1, 4, 3]
    assert nms(boxes, scores, 0.3).tolist() == [1, 3]
    assert nms(boxes, scores, 1.0).tolist() == [1, 4, 3, 0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_min_drops_a_box_inside_a_better_one() -> None:
    boxes = np.array([[0, 0, 99, 99], [10, 10, 39, 39]], float)
    # IoU is 0.09 (kept under "union"), but the small box lies wholly inside the big one
    assert nms(boxes, np.array([0.9, 0.8]), 0.7).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.7, method="min").tolist() == [0]
    with pytest.raises(ValueError, match="method"):
        nms(boxes, np.array([0.9, 0.8]), 0.7, method="max")


def test_pyramid_scales_follow_facenet_defaults() -> None:
    scales = pyramid_scales(100, 300)
    assert scales[0] == pytest.approx(0.6) and np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 100 * scales[-1] >= 12 > 100 * scales[-1] * 0.709
    assert pyramid_scales(19, 500) == []


def test_face_mosaic_layout() -> None:
    image, boxes = face_mosaic([3, 5, 7], columns=4, side=30)
    assert image.shape == (60, 120, 3) and image.dtype == np.uint8
    assert boxes.tolist() == [[0, 0, 30, 30], [60, 0, 90, 30], [30, 30, 60, 60]]
    assert np.array_equal(image[..., 0], image[..., 2])
    with pytest.raises(ValueError, match="faces"):
        face_mosaic([100], columns=4, side=30)


def test_box_set_score() -> None:
    ref = np.array([[0.0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8]])
    assert box_set_score(padded(ref), padded(ref)) == 1.0
    shifted = ref + [1, 0, 1, 0, 0]
    assert box_set_score(ref, shifted) == pytest.approx(90 / 110)
    assert box_set_score(ref, ref[:1]) == pytest.approx(0.5)
    assert box_set_score(ref, np.vstack([ref, [[50, 50, 60, 60, 0.9]]])) == pytest.approx(2 / 3)
    assert box_set_score(ref, np.zeros((0, 5))) == 0.0
    assert box_set_score(np.zeros((0, 5)), np.zeros((0, 5))) == 1.0


def test_padded_keeps_the_best_rows() -> None:
    boxes = np.arange(5 * 200, dtype=float).reshape(200, 5) + 1
    out = padded(boxes)
    assert out.shape == (MAX_BOXES, 5) and out.dtype == np.float32 and np.array_equal(out, boxes[:MAX_BOXES])
    assert np.array_equal(padded(boxes[:2], rows=4)[2:], np.zeros((2, 5)))


def test_detection_metrics() -> None:
    truth = np.array([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    fp32 = np.array([[0.0, 0, 10, 10, 0.9], [20, 0, 30, 10, 0.9]])
    answer = np.array([[1.0, 0, 11, 10, 0.9], [60, 0, 70, 10, 0.8]])
    out = detection_metrics([answer], [fp32], [truth])
    assert out["recall"] == pytest.approx(1 / 3) and out["false_positives"] == 1.0 and out["boxes"] == 2.0
    assert out["fp32_agreement"] == pytest.approx(2 / 4) and out["box_iou_fp32"] == pytest.approx(90 / 110)
    assert out["score_fp32"] == pytest.approx(box_set_score(fp32, answer))


def test_fp32_detects_most_mosaic_faces_and_few_backgrounds(nets: torch.nn.Module) -> None:
    image, truth = face_mosaic(range(40, 80), columns=10, side=64)
    found = detect(nets, image)
    assert found.shape[1] == 5 and np.all(found[:, 4] > 0.7) and np.all(np.diff(found[:, 4]) <= 0)
    out = detection_metrics([found], [found], [truth])
    assert out["recall"] >= 0.95 and out["false_positives"] <= 1
    sides = found[:, 2:4] - found[:, 0:2]
    assert np.all(sides > 0.5 * 64) and np.all(sides < 1.5 * 64)


def test_fp32_detects_the_astronaut(nets: torch.nn.Module) -> None:
    found = detect(nets, astronaut())
    assert len(found) == 1
    x1, y1, x2, y2, _ = found[0]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # her face, not the flag or the suit


def test_detect_matches_facenet_pytorch(nets: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """facenet-pytorch's own `detect_face`, given a torchvision stand-in whose batched_nms is ours."""

    def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, images: torch.Tensor, threshold: float) -> torch.Tensor:
        assert not images.any()  # one image at a time
        return torch.from_numpy(nms(boxes.numpy().astype(np.float64), scores.numpy(), threshold))

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
                 "torchvision.ops.boxes"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules["torchvision.transforms"], "functional", sys.modules["torchvision.transforms.functional"],
                        raising=False)
    monkeypatch.setattr(sys.modules["torchvision.ops.boxes"], "batched_nms", batched_nms, raising=False)
    spec = importlib.util.spec_from_file_location("_facenet_detect_face", wheel_dir() / "models/utils/detect_face.py")
    assert spec is not None and spec.loader is not None
    facenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(facenet)
    image, _ = face_mosaic(range(20), columns=8, side=72)
    with torch.no_grad():
        theirs, _ = facenet.detect_face(image, 20, nets.get_submodule("pnet"), nets.get_submodule("rnet"),
                                        nets.get_submodule("onet"), [0.6, 0.7, 0.7], 0.709, "cpu")
    ours = detect(nets, image)
    assert ours.shape == theirs[0].shape == (20, 5)
    assert np.abs(ours - theirs[0]).max() < 1e-3


@pytest.fixture(scope="module")
def task_and_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, Package]:
    folder = tmp_path_factory.mktemp("mtcnn")
    task = get_task("mtcnn", folder)
    bitladder.encode(task.source, folder / "mtcnn.blad", ladder="int4,int8,exact")
    return task, Package.open(folder / "mtcnn.blad")


def test_mtcnn_task_quality_rises_with_each_rung(task_and_package: tuple[Task, Package]) -> None:
    task, package = task_and_package
    probe, calibration = task.reference(), task.calibration_reference()
    assert probe.shape == calibration.shape == (MAX_BOXES, 5)
    assert int((probe[:, 4] > 0).sum()) == 8 and int((calibration[:, 4] > 0).sum()) == 17  # every face found
    scores = []
    for rung in range(3):
        module = task.module(rung_state(package, rung))
        scores.append((task.score(probe, task.infer(module)), task.score(calibration, task.calibration(module))))
        if rung == 2:
            assert np.array_equal(task.infer(module), probe) and np.array_equal(task.calibration(module), calibration)
    assert 0.8 < scores[0][0] < scores[1][0] < scores[2][0] == 1.0
    assert 0.8 < scores[0][1] < scores[1][1] < scores[2][1] == 1.0


def test_mtcnn_task_metrics_of_the_exact_rung(task_and_package: tuple[Task, Package], nets: torch.nn.Module) -> None:
    task, package = task_and_package
    exact = task.module(rung_state(package, 2))
    photo, truth = face_mosaic(range(8), columns=4, side=56)  # the probe, whose fp32 answer is cached
    out = detection_metrics([task.infer(exact)], [task.reference()], [truth])
    assert out == {"recall": 1.0, "false_positives": 0.0, "boxes": 8.0, "fp32_agreement": 1.0, "box_iou_fp32": 1.0,
                   "score_fp32": 1.0}
    assert np.array_equal(padded(detect(nets, photo)), task.reference())
