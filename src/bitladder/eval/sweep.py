"""`bitladder eval --sweep`: links x ladders, each against fp32+zstd on the same link.

Writes sweep.md, sweep.json, size_vs_quality.png (cumulative bytes vs task quality per rung, one line per
ladder) and ttfi_gain.png (fp32+zstd load time / bitladder TTFI vs link rate, one line per ladder).

>>> run_sweep(task, args, Path("sweep"), Path("/tmp/work"))   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .report import _table
from .scenario import LINKS, PACKAGE, Progress, ScenarioConfig, resolve_link, run_eval
from .tasks import Task


def run_sweep(task: Task, args: argparse.Namespace, folder: Path, work: Path,
              progress: Progress | None = None) -> Path:
    """Run every (link, ladder); returns the path of sweep.md."""
    links = [link for link in args.sweep_links.split(",") if link]
    ladders = [ladder for ladder in args.sweep_ladders.split(";") if ladder]
    rows: list[dict[str, Any]] = []
    for ladder in ladders:
        for link in links:
            config = ScenarioConfig(ladder=ladder, link=link, apply=args.apply, baselines=("fp32+zstd",),
                                    interval=args.interval)
            result = run_eval(task, config, work / f"{ladder}-{link}".replace(",", "_"), progress)
            package, zstd = result.runs[0], result.runs[-1]
            cumulative, curve = 0, []
            for name, size in package.rung_bytes:
                cumulative += size
                curve.append({"rung": name, "bytes": cumulative, **result.rung_quality[PACKAGE][name]})
            rows.append({"ladder": ladder, "link": link, "rate": resolve_link(link).rate, "ttfi": package.ttfi,
                         "exact": package.t_exact, "zstd_load": zstd.t_exact, "curve": curve,
                         "ttfi_gain": (zstd.t_exact or 0.0) / package.ttfi if package.ttfi else None})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(rows, indent=1))
    _plots(rows, folder)
    text = f"# bitladder eval --sweep: {task.name}\n\n## TTFI gain vs link\n\n" + _timing_table(rows) + \
        "\n\n## Size vs task quality per ladder (cumulative bytes at each rung)\n\n" + _curve_table(rows)
    path = folder / "sweep.md"
    path.write_text(text + "\n\n![size vs quality](size_vs_quality.png)\n\n![TTFI gain](ttfi_gain.png)\n")
    return path


def _timing_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["ladder"], r["link"], f"{r['ttfi']:.2f}", f"{r['exact']:.2f}", f"{r['zstd_load']:.2f}",
             f"{r['ttfi_gain']:.2f}"] for r in rows]
    return _table(["ladder", "link", "TTFI s", "exact s", "fp32+zstd load s", "TTFI gain"], body)


def _curve_table(rows: list[dict[str, Any]]) -> str:
    """One row per (ladder, rung): task quality does not depend on the link, so the first link's curve."""
    body = []
    for ladder in dict.fromkeys(r["ladder"] for r in rows):
        for point in next(r for r in rows if r["ladder"] == ladder)["curve"]:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in point.items() if k not in ("rung", "bytes"))
            body.append([ladder, point["rung"], f"{point['bytes']:,}", metrics])
    return _table(["ladder", "rung", "cumulative bytes", "task quality"], body)


def _plots(rows: list[dict[str, Any]], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (size_ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for ladder in dict.fromkeys(r["ladder"] for r in rows):
        mine = [r for r in rows if r["ladder"] == ladder]
        curve = mine[0]["curve"]
        metric = next(k for k in curve[0] if k not in ("rung", "bytes"))
        size_ax.plot([c["bytes"] / 1e6 for c in curve], [c[metric] for c in curve], "o-", label=ladder)
        size_ax.set_ylabel(metric)
        gain_ax.plot([r["rate"] / 1e6 for r in mine], [r["ttfi_gain"] for r in mine], "o-", label=ladder)
    size_ax.set_xlabel("cumulative MB")
    gain_ax.set_xscale("log")
    gain_ax.set_xlabel("link Mbit/s")
    gain_ax.set_ylabel("fp32+zstd load time / TTFI")
    size_ax.legend(fontsize=8)
    gain_ax.legend(fontsize=8)
    fig.tight_layout()
    for ax, name in ((size_ax, "size_vs_quality.png"), (gain_ax, "ttfi_gain.png")):
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg canvas has one
        extent = ax.get_tightbbox(renderer).transformed(fig.dpi_scale_trans.inverted())
        fig.savefig(folder / name, dpi=110, bbox_inches=extent.expanded(1.05, 1.1))
    plt.close(fig)


__all__ = ["LINKS", "run_sweep"]
