"""`bitladder eval` on the real MiniLM over the fastest emulated link: the report exists, TTFI < time to exact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from bitladder.eval.metrics import mean_cosine
from bitladder.eval.report import write_report
from bitladder.eval.scenario import PACKAGE, ScenarioConfig, run_eval
from bitladder.eval.tasks import Task, minilm_task

pytestmark = pytest.mark.slow


def _probe_only(task: Task) -> Task:
    """The task with its per-rung metrics cut to the probe (the Lee/WordSim/SimLex ones take ~17 s a rung)."""

    def metrics(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
        return {"cosine_fp32": mean_cosine(task.infer(reference), task.infer(module))}

    return dataclasses.replace(task, metrics=metrics)


def test_minilm_over_1100mbit_answers_before_exact(tmp_path: Path) -> None:
    task = _probe_only(minilm_task())
    config = ScenarioConfig(link="1100mbit", baselines=("fp32+zstd",), interval=0.1, tail=0.2)
    result = run_eval(task, config, tmp_path / "work")
    package = result.runs[0]
    assert package.scheme == PACKAGE and package.exact
    assert package.ttfi is not None and package.t_exact is not None and package.ttfi < package.t_exact
    assert result.rung_quality[PACKAGE]["int8"]["cosine_fp32"] > 0.99
    report = write_report(result, tmp_path / "report")
    assert report.is_file() and (report.parent / "metrics.json").is_file()
    assert {p.name for p in report.parent.glob("*.png")} >= {"quality_vs_time.png", "timeline.png"}
    assert json.loads((report.parent / "metrics.json").read_text())["claims"]["package_bytes"] == package.total_bytes
