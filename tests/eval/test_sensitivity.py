"""Task sensitivities for allocation: measured per tensor, deterministic, and usable from the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bitladder.cli import main
from bitladder.eval.rd import SENSITIVITY_FLOOR, calibration_name, sensitivities
from bitladder.eval.tasks import tiny_task


def test_every_float_tensor_gets_a_positive_deterministic_weight(tmp_path: Path) -> None:
    task = tiny_task(tmp_path)
    state = task.load_state()
    weights = sensitivities(task, state)
    assert set(weights) == set(state)
    assert all(math.isfinite(w) and w > 0 for w in weights.values())
    assert sensitivities(task, state) == weights
    mean = sum(weights.values()) / len(weights)
    assert min(weights.values()) >= SENSITIVITY_FLOOR * mean * 0.5  # the floor holds (of the unfloored mean)
    # The last layer's weights feed the answer directly: its error costs more per unit than the first layer's bias.
    assert weights["c.weight"] > weights["a.bias"]


def test_cli_calibrate_records_and_shows_the_allocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = tiny_task(tmp_path)
    package = tmp_path / "tiny.blad"
    assert main(["encode", str(task.source), "-o", str(package), "--ladder", "30%,int8,exact", "--min-size", "1000",
                 "--calibrate", "tiny"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(package), "--tensors"]) == 0
    shown = capsys.readouterr().out
    assert f"allocation task: {calibration_name(task)}" in " ".join(shown.split())
    assert "cell width" in shown
    assert main(["inspect", str(package), "--json", "--tensors"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["allocation"] == f"task: {calibration_name(task)}"
    assert {row["name"] for row in report["tensors"] if row["cell_width"]} == {"a.weight", "b.weight", "c.weight"}
    assert main(["encode", str(task.source), "-o", str(tmp_path / "x.blad"), "--calibrate", "tiny"]) == 2
    assert "has none" in capsys.readouterr().err
