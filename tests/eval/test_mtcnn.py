"""The MTCNN task: the one-window cascade on LFW crops, and its metrics per rung of a real package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bitladder
from bitladder.eval.data import lfw_faces
from bitladder.eval.mtcnn import box_iou, cascade, detected, mtcnn_nets
from bitladder.eval.rd import rung_state
from bitladder.eval.tasks import get_task
from bitladder.format.reader import Package


def test_box_iou() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 5.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 0.0, 5.0]])
    assert box_iou(a, b) == pytest.approx([1.0, 1 / 3, 0.0])


def test_fp32_cascade_finds_faces_and_not_backgrounds() -> None:
    images, faces = lfw_faces()
    answer = cascade(mtcnn_nets(pretrained=True), torch.from_numpy(images)).numpy()
    assert answer.shape == (200, 7)
    found = detected(answer)
    assert found[faces].mean() > 0.9 and found[~faces].mean() < 0.05
    boxes = answer[faces & found, 3:]
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])


def test_mtcnn_task_quality_rises_with_each_rung(tmp_path: Path) -> None:
    task = get_task("mtcnn", tmp_path)
    assert task.score(task.reference(), task.reference()) == pytest.approx(1.0)
    package_path = tmp_path / "mtcnn.blad"
    bitladder.encode(task.source, package_path, ladder="int4,int8,exact")
    package = Package.open(package_path)
    rungs = [task.evaluate(rung_state(package, i)) for i in range(3)]
    ious = [r["box_iou_fp32"] for r in rungs]
    assert 0.9 < ious[0] < ious[1] < ious[2] == pytest.approx(1.0)
    assert [r["decision_agreement_fp32"] for r in rungs][1:] == [1.0, 1.0]
    assert rungs[2]["onet_prob_mae_fp32"] == 0.0 and rungs[2]["detection_rate"] > 0.9
