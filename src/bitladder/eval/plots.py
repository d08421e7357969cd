"""PNG plots of an eval (matplotlib, Agg backend): quality vs time, bytes per rung, the rung timeline.

Quality is drawn as the distance to fp32, 1 - quality, on a symmetric-log axis: 0 (identical to fp32) sits
at the bottom and 10^-4 and 10^-2 are a readable step apart, with no offset on the axis. Each `*_figure`
returns the figure (tests inspect it); `write_plots` saves and closes them.

>>> write_plots(result, Path("report"))      # doctest: +SKIP
['quality_vs_time.png', 'bytes_per_rung.png', 'timeline.png']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .report import distance_name, horizon  # noqa: E402
from .scenario import PACKAGE, EvalResult, SchemeRun  # noqa: E402

NO_MODEL, LOADING, EXACT, LOSSY, BASELINE = "#c8c8c8", "#f0a040", "#3a9a48", "#9a68c0", "#b0a070"


def write_plots(result: EvalResult, folder: Path) -> list[str]:
    """The three plots, written into `folder`; returns their file names."""
    return [_save(quality_figure(result), folder, "quality_vs_time.png"),
            _save(bytes_figure(result), folder, "bytes_per_rung.png"),
            _save(timeline_figure(result), folder, "timeline.png")]


def _distance(quality: float) -> float:
    return max(0.0, 1.0 - quality)


def _at(points: Sequence[tuple[float, float, int]], t: float) -> float | None:
    """The quality of a step curve at time `t` (the last point at or before it, else the first after)."""
    before = [q for at, q, _ in points if at <= t + 1e-9]
    return before[-1] if before else next((q for at, q, _ in points if at > t), None)


def quality_figure(result: EvalResult) -> Figure:
    """Distance to fp32 of every answer (solid) and of the held weights (dotted), first answers and rungs marked."""
    end = horizon(result.runs) * 1.05
    fig, ax = plt.subplots(figsize=(10, 5.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    distances = []
    for index, run in enumerate(result.runs):
        colour = colours[index % len(colours)]
        if run.answers:
            times = [t for t, _, _ in run.answers] + [end]
            values = [_distance(q) for _, q, _ in run.answers]
            distances += values
            ax.step(times, values + values[-1:], where="post", color=colour, label=f"{run.scheme}: its answers")
            ax.plot([times[0]], [values[0]], "o", color=colour, markeredgecolor="black", markersize=7)
        if run.held:
            held = [_distance(q) for _, q, _ in run.held]
            distances += held
            ax.step([t for t, _, _ in run.held] + [end], held + held[-1:], where="post", linestyle=":",
                    color=colour, linewidth=1.8, label=f"{run.scheme}: weights it held, rescored at each swap")
        _mark_rungs(ax, run, colour, index)
    _distance_axis(ax, [d for d in distances if d > 0])
    ax.set_xlim(0.0, end)
    ax.set_xlabel("seconds since the request")
    ax.set_ylabel(f"{distance_name(result.quality_name)}\n(distance to fp32; 0 = identical)")
    ax.set_title(f"{result.task}: distance to fp32 over time, {result.config['link']} link")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black", markersize=7,
                       label="first answer (TTFI)"),
                Line2D([], [], marker="v", linestyle="", color="black", label="rung applied / file loaded")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.text(0.01, 0.01, "A line starts at its scheme's first answer; before it the scheme has no model and gives no "
             f"answer. One input every {result.config['interval']} s. Baselines answer only once the whole file "
             "is loaded.\nDotted: what the device held, rescored after every tensor swap (the answers are "
             "samples of it). At the bottom (0) a scheme answers exactly as fp32 does.", fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _mark_rungs(ax: Axes, run: SchemeRun, colour: str, index: int) -> None:
    """A ▼ where each rung was applied (the file loaded, for a baseline), named; labels staggered per scheme."""
    for name, at in run.milestones:
        if name == "fetched":
            continue
        quality = _at(run.held, at) if run.held else _at(run.answers, at)
        if quality is None:
            continue
        y = _distance(quality)
        ax.plot([at], [y], "v", color=colour, markeredgecolor="black", markersize=7)
        if not run.scheme.startswith(PACKAGE):
            continue  # one ▼ per baseline, its legend entry names it
        ax.annotate(name, (at, y), xytext=(5, 6 + 10 * index), textcoords="offset points", fontsize=7,
                    color=colour, arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.5})


def _distance_axis(ax: Axes, positive: list[float]) -> None:
    """Symmetric log with its linear part below the smallest distance seen: 0 shows as 0, no offset."""
    if not positive:
        ax.set_ylim(-0.05, 1.0)
        return
    low = 10.0 ** math.floor(math.log10(min(positive)))
    ax.set_yscale("symlog", linthresh=low, linscale=0.4)
    # a little below 0, so that lines at 0 (identical to fp32) show above the axis
    ax.set_ylim(-0.15 * low, max(3 * max(positive), 10 * low))
    ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    ax.grid(True, which="major", axis="y", linewidth=0.4, alpha=0.5)


def _power_of_ten(value: float, _: object) -> str:
    if value == 0:
        return "0"
    exponent = math.log10(abs(value))
    return f"$10^{{{round(exponent)}}}$" if abs(exponent - round(exponent)) < 1e-6 else f"{value:g}"


def _rung_colours(result: EvalResult) -> dict[str, str]:
    """One colour per package rung (light to dark blue), the same in every plot."""
    names = list(dict.fromkeys(name for run in result.runs if run.scheme.startswith(PACKAGE)
                               for name, _ in run.rung_bytes))
    cmap = matplotlib.colormaps["Blues"]
    return {name: matplotlib.colors.to_hex(cmap(0.35 + 0.55 * i / max(1, len(names) - 1)))
            for i, name in enumerate(names)}


def bytes_figure(result: EvalResult) -> Figure:
    """Stacked bytes per rung; a package's first rung includes its header and manifest."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = _rung_colours(result)
    legend: dict[str, str] = {}
    largest = max((run.total_bytes for run in result.runs), default=1)
    for x, run in enumerate(result.runs):
        bottom = 0
        for index, (name, size) in enumerate(run.rung_bytes):
            if run.scheme.startswith(PACKAGE):
                label = f"package rung {name}" + (" + header and manifest" if index == 0 else "")
                colour = colours[name]
            else:
                label, colour = ("baseline: whole file", BASELINE) if run.exact else ("lossy baseline", LOSSY)
            ax.bar(x, size / 1e6, bottom=bottom / 1e6, color=colour, edgecolor="black", linewidth=0.5)
            legend.setdefault(label, colour)
            if size > 0.04 * largest:
                ink = "white" if sum(matplotlib.colors.to_rgb(colour)) < 1.5 else "black"
                ax.text(x, (bottom + size / 2) / 1e6, f"{size / 1e6:.2f}", ha="center", va="center", fontsize=7,
                        color=ink)
            bottom += size
    ax.set_xticks(range(len(result.runs)), [run.scheme for run in result.runs], rotation=20, fontsize=8)
    ax.set_ylabel("MB sent over the link")
    ax.set_title(f"{result.task}: bytes per rung (source {result.source_bytes / 1e6:.2f} MB)")
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=label) for label, c in legend.items()],
              fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def timeline_figure(result: EvalResult) -> Figure:
    """Per scheme, what the device had over time, one colour per state, and ▲ at its first answer."""
    end = horizon(result.runs) * 1.05
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(result.runs) + 2.2))
    colours = _rung_colours(result)
    legend: dict[str, str] = {}
    for y, run in enumerate(result.runs):
        for start, stop, label, colour in _states(run, end, colours):
            ax.barh(y, stop - start, left=start, height=0.5, color=colour, edgecolor="black", linewidth=0.4)
            legend.setdefault(label, colour)
        if run.ttfi is not None:
            ax.plot([run.ttfi], [y - 0.25], "o", color="white", markeredgecolor="black", markersize=7)
            ax.annotate(f"{run.ttfi:.2f} s", (run.ttfi, y - 0.25), xytext=(6, 2), textcoords="offset points",
                        fontsize=7, va="bottom")
    ax.set_yticks(range(len(result.runs)), [run.scheme for run in result.runs], fontsize=8)
    ax.set_ylim(len(result.runs) - 0.5, -0.8)
    ax.set_xlim(0.0, end)
    ax.set_xlabel("seconds since the request")
    ax.set_title(f"{result.task}: what each device held over time, {result.config['link']} link")
    handles: list[Patch | Line2D] = [Patch(facecolor=c, edgecolor="black", label=label) for label, c in legend.items()]
    handles.append(Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black", markersize=7,
                          label="first answer (TTFI)"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def _states(run: SchemeRun, end: float,
            colours: dict[str, str]) -> list[tuple[float, float, str, str]]:
    """(start, stop, meaning, colour) segments of a run, from the request to `end`."""
    segments: list[tuple[float, float, str, str]] = []
    start, label, colour = 0.0, "no model yet: fetching", NO_MODEL
    final = ("exact (= fp32)", EXACT) if run.exact else ("final, lossy", LOSSY)
    package = run.scheme.startswith(PACKAGE)
    for index, (name, at) in enumerate(run.milestones):
        segments.append((start, at, label, colour))
        last = index == len(run.milestones) - 1
        if last:
            label, colour = final
        elif package:
            label, colour = f"holding {name}, next rung streaming", colours.get(name, LOSSY)
        else:
            label, colour = "baseline: decoding + loading the file", LOADING
        start = at
    segments.append((start, max(start, end), label, colour))
    return [s for s in segments if s[1] > s[0]]


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


__all__: list[str] = ["bytes_figure", "quality_figure", "timeline_figure", "write_plots"]
