"""PNG plots of an eval (matplotlib, Agg backend): quality vs time, bytes per rung, the rung timeline.

>>> write_plots(result, Path("report"))      # doctest: +SKIP
['quality_vs_time.png', 'bytes_per_rung.png', 'timeline.png']
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .report import horizon  # noqa: E402
from .scenario import EvalResult  # noqa: E402


def write_plots(result: EvalResult, folder: Path) -> list[str]:
    """The three plots, written into `folder`; returns their file names."""
    return [_quality(result, folder), _bytes(result, folder), _timeline(result, folder)]


def _quality(result: EvalResult, folder: Path) -> str:
    end = horizon(result.runs) * 1.05
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in result.runs:
        times = [0.0] + [t for t, _, _ in run.answers] + [end]
        values = [0.0] + [q for _, q, _ in run.answers]
        values.append(values[-1])
        line = ax.step(times, values, where="post", label=run.scheme)[0]
        if run.held:  # the held model's quality at every swap: what the answers sample
            ax.step([t for t, _, _ in run.held] + [end], [q for _, q, _ in run.held] + [run.held[-1][1]],
                    where="post", linestyle=":", color=line.get_color(), label=f"{run.scheme} (held model)")
    ax.set_xlabel("seconds since request")
    ax.set_ylabel(result.quality_name)
    ax.set_title(f"{result.task}: quality vs time on {result.config['link']}")
    answered = [q for run in result.runs for _, q, _ in run.answers]
    if answered:
        ax.set_ylim(max(0.0, min(answered) - 0.05 * (1 - min(answered)) - 1e-4), 1.0 + 1e-4)
    ax.legend(fontsize=8)
    return _save(fig, folder, "quality_vs_time.png")


def _bytes(result: EvalResult, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for x, run in enumerate(result.runs):
        bottom = 0.0
        for name, size in run.rung_bytes:
            ax.bar(x, size / 1e6, bottom=bottom, label=f"{run.scheme}: {name}")
            ax.text(x, bottom + size / 2e6, name, ha="center", va="center", fontsize=7)
            bottom += size / 1e6
    ax.set_xticks(range(len(result.runs)), [run.scheme for run in result.runs], rotation=20, fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title(f"{result.task}: bytes per rung (source {result.source_bytes / 1e6:.1f} MB)")
    return _save(fig, folder, "bytes_per_rung.png")


def _timeline(result: EvalResult, folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(result.runs) + 1.5))
    for y, run in enumerate(result.runs):
        start = 0.0
        for index, (name, at) in enumerate(run.milestones):
            ax.barh(y, at - start, left=start, edgecolor="black", alpha=0.6)
            # Alternate above and below the bar centre: milestones (fetched, loaded) can be a hair apart.
            ax.text(at, y + (0.2 if index % 2 else -0.2), f" {name}", va="center", fontsize=7)
            start = at
        if run.ttfi is not None:
            ax.plot([run.ttfi], [y], "k^")
    ax.set_yticks(range(len(result.runs)), [run.scheme for run in result.runs], fontsize=8)
    ax.set_xlabel("seconds since request (bars end when a rung is applied / the file is loaded; ^ first answer)")
    ax.set_title(f"{result.task}: timeline on {result.config['link']}")
    return _save(fig, folder, "timeline.png")


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name
