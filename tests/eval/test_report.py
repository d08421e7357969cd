"""report.md, metrics.json, the plots and the demo's summary, checked on real small runs of the scenario.

Two runs per module: the tiny MLP (a task with real answers) in both orders over the 5 Mbit/s profile, and
the same weights as an unknown model file, measured on its weights only."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle
from rich.console import Console

from bitladder import demo
from bitladder.eval.plots import bytes_figure, quality_figure, timeline_figure
from bitladder.eval.report import TTFI_DEFINITION, metrics_json, target_lines, write_report
from bitladder.eval.scenario import PACKAGE, PACKAGE_RD, EvalResult, ScenarioConfig, run_eval
from bitladder.eval.tasks import get_task, tiny_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalResult, Path, str]:
    folder = tmp_path_factory.mktemp("tiny")
    config = ScenarioConfig(link="5mbit", order="rd", interval=0.03, tail=0.1,
                            baselines=("fp32", "fp32+zstd", "fp32+zipnn"))
    result = run_eval(tiny_task(folder), config, folder / "work")
    return result, folder / "work" / "files", write_report(result, folder / "report").read_text()


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalResult, str]:
    folder = tmp_path_factory.mktemp("weights")
    tiny_task(folder)  # writes tiny.safetensors: a file of weights, as an unknown model would be
    task = get_task(str(folder / "tiny.safetensors"), folder)
    config = ScenarioConfig(link="1100mbit", order="rd", interval=0.02, tail=0.1, baselines=("fp32+zstd",))
    result = run_eval(task, config, folder / "work")
    return result, write_report(result, folder / "report").read_text()


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n\n", 1)[1].split("\n## ", 1)[0]


def _rows(text: str) -> dict[str, list[str]]:
    """The Schemes table: scheme -> its cells."""
    lines = [line for line in _section(text, "Schemes").splitlines() if line.startswith("| ")][1:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_report_defines_its_terms_and_states_link_machine_and_date(tiny) -> None:
    result, _, text = tiny
    for term in ("**TTFI** (time to first inference)", "**exact s**", "load time", "**inputs/dropped/waited**",
                 "**AUC**", "**latency p99**", "**bytes**"):
        assert term in text, term
    assert re.search(r"^- Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$", text, re.M)
    machine = re.search(r"^- Machine: (.+), (\d+) cores", text, re.M)
    assert machine and int(machine.group(2)) >= 1 and machine.group(1) == result.environment["cpu"]
    assert re.search(r"^- Link `5mbit`: emulated \(.*127\.0\.0\.1.*\), 5 Mbit/s, RTT 80 ms, no loss", text, re.M)
    assert json.loads(json.dumps(metrics_json(result)))["environment"]["link"]["rtt_s"] == 0.08


def test_package_bytes_are_the_file_size_header_and_manifest_included(tiny) -> None:
    result, files, text = tiny
    rows = _rows(text)
    for scheme, name in ((PACKAGE, "model.blad"), (PACKAGE_RD, "model-rd.blad")):
        run = next(r for r in result.runs if r.scheme == scheme)
        size = (files / name).stat().st_size
        assert run.total_bytes == sum(b for _, b in run.rung_bytes) == size
        assert run.header_bytes > 0  # the header and manifest, counted in the first rung
        assert rows[scheme][1] == f"{size:,}"
    for run in result.runs[2:]:
        assert run.total_bytes == (files / (run.scheme.replace("+", "-") + ".bin")).stat().st_size
    assert f"header and manifest {result.runs[0].header_bytes:,} B included" in text


def test_a_task_with_answers_reports_auc_and_verdicts(tiny) -> None:
    result, _, text = tiny
    assert all(re.fullmatch(r"0\.\d{4}|1\.0000", row[5]) for row in _rows(text).values())
    lines = target_lines(result)
    verdicts = [line for line in lines if "target" in line]
    assert len(verdicts) == 5  # size vs zstd and ZipNN, TTFI, exact, RD order
    assert all(re.search(r"\(.*target .+: (met|NOT met)\)\.$", line) for line in verdicts), verdicts
    claim = _section(text, "The claim, measured")
    assert all(f"- {line}" in claim for line in lines)  # the demo and the report say the same


def test_weights_only_model_has_no_auc_and_no_order_comparison(weights_only) -> None:
    result, text = weights_only
    assert result.weights_only
    assert all(row[5] == "—" for row in _rows(text).values())
    assert "measured on its weights only" in text and "**Weights only**" in text
    assert "RD order vs rung-major: not compared" in text
    assert not re.search(r"RD \d\.\d+, rung-major", text)
    assert all(run["auc"] is None for run in metrics_json(result)["runs"])
    assert "auc_rd" not in metrics_json(result)["claims"]


def test_quality_plot_reads_without_offset_and_marks_every_rung(tiny) -> None:
    result, _, _ = tiny
    fig = quality_figure(result)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    assert ax.get_yscale() in ("log", "symlog") and ax.get_ylim()[0] <= 0.0
    rungs = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert len(rungs) == sum(1 for run in result.runs for name, _ in run.milestones if name != "fetched")
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "first answer (TTFI)" in labels and "rung applied / file loaded" in labels
    assert all(any(label.startswith(f"{run.scheme}: ") for label in labels) for run in result.runs)
    assert any("held" in label and "rescored" in label for label in labels)
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert min(ys) == 0.0 and max(ys) < 1e-3  # distances to fp32, not qualities near 1


def _overlapping(fig: Any, texts: list[Any]) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_timeline_has_one_colour_per_meaning_and_no_overlapping_labels(tiny) -> None:
    result, _, _ = tiny
    fig = timeline_figure(result)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    colours = {label: to_hex(h.get_facecolor()) for label, h in entries.items() if isinstance(h, Rectangle)}
    assert len(set(colours.values())) == len(colours)  # one colour per meaning
    bars = {to_hex(p.get_facecolor()) for p in ax.patches}
    assert bars <= set(colours.values())  # every colour drawn is in the legend
    assert "first answer (TTFI)" in entries
    assert not _overlapping(fig, ax.texts)
    fig = bytes_figure(result)
    fig.canvas.draw()
    assert fig.axes[0].get_legend() is not None and not _overlapping(fig, fig.axes[0].texts)


def test_demo_summary_says_met_or_not_met_and_defines_ttfi_once(tiny, monkeypatch, tmp_path: Path) -> None:
    import torch

    import bitladder.eval.tasks

    result, _, _ = tiny
    screen = io.StringIO()
    monkeypatch.setattr(demo, "console", Console(file=screen, width=300, soft_wrap=True))
    monkeypatch.setattr(demo, "run_eval", lambda *args, **kwargs: result)
    monkeypatch.setattr(bitladder.eval.tasks, "minilm_task", lambda: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert demo.main(["-o", str(tmp_path / "demo")]) == 0
    shown = screen.getvalue()
    assert shown.count(TTFI_DEFINITION) == 1 and shown.count("time to first inference") == 1
    for line in target_lines(result):
        assert line in shown
    assert shown.count(": met)") + shown.count(": NOT met)") == 5
