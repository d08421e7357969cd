"""Turning an `EvalResult` into numbers, claims, a projection, report.md, metrics.json and PNG plots.

Quality over time is a step function: 0 until a scheme's first answer, then the quality of its latest
answer. `auc` is its mean over a window (1.0 = fp32 answers from t = 0), so schemes compare on one horizon.

>>> auc([(1.0, 1.0, 0)], 0.0, 2.0)
0.5
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..delivery.link import PROFILES
from .scenario import LINKS, PACKAGE, PACKAGE_RD, EvalResult, SchemeRun

log = logging.getLogger(__name__)

PROJECTION_SIZES = (100e6, 1e9, 10e9, 100e9)
TTFI_TARGET = 0.3
EXACT_TARGET = 1.0
Answers = Sequence[tuple[float, float, int]]


def auc(answers: Answers, start: float, end: float) -> float:
    """Mean quality over [start, end] of the step curve of `answers` ((time, quality, rung), time-ordered).

    A window of no width (the model was final before its first answer: a tiny model on a fast link) gives the
    curve's value at `start`."""
    if end <= start:
        return next((q for t, q, _ in reversed(answers) if t <= start), 0.0)
    area, level, at = 0.0, 0.0, start
    for t, quality, _ in answers:
        if t >= end:
            break
        if t > at:
            area += level * (t - at)
            at = t
        level = quality
    area += level * (end - at)
    return area / (end - start)


def horizon(runs: Sequence[SchemeRun]) -> float:
    """The common end of the quality curves: when the slowest scheme gave its first answer in its final state."""
    ends = [1e-9]
    for run in runs:
        last = run.milestones[-1][1] if run.milestones else 0.0
        ends.append(next((t for t, _, _ in run.answers if t >= last), last))
    return max(ends)


def _run(result: EvalResult, scheme: str) -> SchemeRun | None:
    return next((run for run in result.runs if run.scheme == scheme), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def claims(result: EvalResult) -> dict[str, Any]:
    """The seed's size claim and the issue's timing targets, with the measured numbers."""
    package, zstd, zipnn = _run(result, PACKAGE), _run(result, "fp32+zstd"), _run(result, "fp32+zipnn")
    out: dict[str, Any] = {}
    if package is None:
        return out
    base = package.rung_bytes[0][1]
    out["base_bytes"], out["update_bytes"], out["package_bytes"] = base, package.total_bytes - base, package.total_bytes
    for name, run in (("zstd", zstd), ("zipnn", zipnn)):
        if run is not None:
            out[f"package_over_{name}"] = package.total_bytes / run.total_bytes
            out[f"size_claim_vs_{name}"] = package.total_bytes <= run.total_bytes
    if zstd is not None:
        ratio = _ratio(package.ttfi, zstd.t_exact)
        out["ttfi_over_zstd_load"], out["ttfi_target_met"] = ratio, ratio is not None and ratio <= TTFI_TARGET
    if zipnn is not None:
        ratio = _ratio(package.t_exact, zipnn.t_exact)
        out["exact_over_zipnn_load"], out["exact_target_met"] = ratio, ratio is not None and ratio <= EXACT_TARGET
    rd = _run(result, PACKAGE_RD)
    if rd is not None:
        end = horizon(result.runs)
        late = max(package.ttfi or 0.0, rd.ttfi or 0.0)
        out["auc_rung_major"], out["auc_rd"] = auc(package.answers, 0.0, end), auc(rd.answers, 0.0, end)
        out["auc_refine_rung_major"] = auc(package.answers, late, end)
        out["auc_refine_rd"] = auc(rd.answers, late, end)
        late = max([late, *(run.held[0][0] for run in (package, rd) if run.held)])
        out["held_auc_rung_major"], out["held_auc_rd"] = auc(package.held, late, end), auc(rd.held, late, end)
        out["rd_target_met"] = out["held_auc_rd"] >= out["held_auc_rung_major"]
    return out


def projection(result: EvalResult) -> list[dict[str, Any]]:
    """Per model size and link profile: TTFI and time to exact from the measured per-byte costs.

    A PROJECTION, not a measurement: time = RTT + bytes x 8 / rate + (measured time beyond that on the
    measured link, per source byte) x model size. Compressed fractions are those measured here.
    """
    measured = PROFILES[LINKS.get(result.config["link"], result.config["link"])] \
        if result.config["link"] in LINKS or result.config["link"] in PROFILES else None
    if measured is None or not measured.rate:
        return []
    costs = {run.scheme: _costs(run, result.source_bytes, measured.rate, measured.rtt) for run in result.runs}
    rows = []
    for size in PROJECTION_SIZES:
        for label, profile in LINKS.items():
            link = PROFILES[profile]
            row: dict[str, Any] = {"model_bytes": size, "link": label}
            for scheme, (first, exact) in costs.items():
                row[f"{scheme} ttfi"] = _project(first, size, link.rate, link.rtt)
                row[f"{scheme} exact"] = _project(exact, size, link.rate, link.rtt) if exact else None
            rows.append(row)
    return rows


def _costs(run: SchemeRun, source: int, rate: float, rtt: float) -> tuple[tuple[float, float],
                                                                           tuple[float, float] | None]:
    """((bytes per source byte, extra s per source byte) to first answer, same to exact or None)."""
    first_bytes = run.rung_bytes[0][1]
    first = (first_bytes / source, max(0.0, (run.ttfi or 0.0) - rtt - 8 * first_bytes / rate) / source)
    if run.t_exact is None:
        return first, None
    return first, (run.total_bytes / source, max(0.0, run.t_exact - rtt - 8 * run.total_bytes / rate) / source)


def _project(cost: tuple[float, float], size: float, rate: float, rtt: float) -> float:
    fraction, extra = cost
    return rtt + 8 * fraction * size / rate + extra * size


def metrics_json(result: EvalResult) -> dict[str, Any]:
    end = horizon(result.runs)
    runs = []
    for run in result.runs:
        entry = dataclasses.asdict(run)
        entry["auc"] = auc(run.answers, 0.0, end)
        runs.append(entry)
    return {"task": result.task, "config": result.config, "source_bytes": result.source_bytes,
            "quality": result.quality_name, "horizon_s": end, "runs": runs, "rung_quality": result.rung_quality,
            "encode_s": result.encode_s, "claims": claims(result), "projection": projection(result)}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary_rows(result: EvalResult) -> list[list[str]]:
    """One row per scheme: bytes, % of source, TTFI, time to exact, AUC, p99 answer latency after the first
    answer (stalls behind swaps included), inputs/dropped/waited."""
    end = horizon(result.runs)
    return [[run.scheme, f"{run.total_bytes:,}", f"{100 * run.total_bytes / result.source_bytes:.1f}",
             _fmt(run.ttfi), _fmt(run.t_exact), _fmt(auc(run.answers, 0.0, end), 4), _fmt(run.latency_p99),
             f"{run.inputs}/{run.dropped}/{run.waited}"] for run in result.runs]


SUMMARY_HEADER = ["scheme", "bytes", "% src", "TTFI s", "exact s", "AUC", "latency p99 s", "inputs/dropped/waited"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _rung_metrics(result: EvalResult, scheme: str, rung: str) -> dict[str, float]:
    """Both package orders share their rung states; lossless baselines are the fp32 model."""
    if scheme.startswith(PACKAGE):
        return result.rung_quality.get(PACKAGE, {}).get(rung, {})
    if scheme in result.rung_quality:
        return result.rung_quality[scheme].get(scheme, {})
    return result.rung_quality.get("fp32", {}).get("fp32", {})


def _rung_table(result: EvalResult) -> str:
    rows = []
    for run in result.runs:
        reached = dict(run.milestones)
        cumulative = 0
        for name, size in run.rung_bytes:
            cumulative += size
            metrics = _rung_metrics(result, run.scheme, name)
            rows.append([run.scheme, name, f"{size:,}", f"{100 * cumulative / result.source_bytes:.1f}",
                         _fmt(reached.get(name, reached.get("loaded"))),
                         ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())])
    return _table(["scheme", "rung", "bytes", "cumulative % src", "reached at s", "task quality"], rows)


def _claim_text(c: dict[str, Any]) -> str:
    if not c:
        return "No bitladder run in this result."
    lines = [f"- Size: base {c['base_bytes']:,} B + update {c['update_bytes']:,} B = {c['package_bytes']:,} B."]
    for name in ("zstd", "zipnn"):
        if f"package_over_{name}" in c:
            verdict = "holds" if c[f"size_claim_vs_{name}"] else "does NOT hold"
            lines.append(f"  vs fp32+{name}: {c[f'package_over_{name}']:.3f}x — the claim \"reduced model + update, "
                         f"compressed, total less than the compressed full model\" {verdict} against {name}.")
    if "ttfi_over_zstd_load" in c:
        lines.append(f"- TTFI / (fetch + load fp32+zstd) = {_fmt(c['ttfi_over_zstd_load'], 3)} "
                     f"(target <= {TTFI_TARGET}: {'met' if c['ttfi_target_met'] else 'NOT met'}).")
    if "exact_over_zipnn_load" in c:
        lines.append(f"- Time to exact / (fetch + load fp32+ZipNN) = {_fmt(c['exact_over_zipnn_load'], 3)} "
                     f"(target <= {EXACT_TARGET}: {'met' if c['exact_target_met'] else 'NOT met'}).")
    if "auc_rd" in c:
        lines.append(f"- RD order vs rung-major, quality of the held model replayed at every swap, mean from when "
                     f"both answer to the horizon: RD {c['held_auc_rd']:.6f}, rung-major "
                     f"{c['held_auc_rung_major']:.6f} (target RD >= rung-major: "
                     f"{'met' if c['rd_target_met'] else 'NOT met'}). From the live answers (one per input): "
                     f"RD {c['auc_refine_rd']:.6f}, rung-major {c['auc_refine_rung_major']:.6f} after both answer; "
                     f"RD {c['auc_rd']:.5f}, rung-major {c['auc_rung_major']:.5f} over the whole horizon.")
    return "\n".join(lines)


def _projection_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No projection (the measured link has no constant rate)."
    schemes = [k[:-5] for k in rows[0] if k.endswith(" ttfi")]
    header = ["model", "link"] + [f"{s} {w}" for s in schemes for w in ("TTFI s", "exact s")]
    body = [[f"{row['model_bytes'] / 1e9:g} GB", row["link"]] + [_fmt(row[f"{s} {w}"], 1) for s in schemes
                                                                  for w in ("ttfi", "exact")] for row in rows]
    return _table(header, body)


def markdown(result: EvalResult, plots: Sequence[str]) -> str:
    cfg = result.config
    parts = [f"# bitladder eval: {result.task}",
             f"Link {cfg['link']}, ladder `{cfg['ladder']}`, apply {cfg['apply']}, order {cfg['order']}, one input "
             f"every {cfg['interval']} s ({'buffered' if cfg['buffer'] else 'dropped when busy'}); source "
             f"{result.source_bytes:,} B. Times in seconds from the request. AUC: mean of '{result.quality_name}' "
             "over the common horizon, 0 before the first answer. Baselines ran in the same process, same link.",
             "## Schemes", _table(SUMMARY_HEADER, summary_rows(result)),
             "## Bytes and task quality per rung", _rung_table(result),
             "## The claim, measured", _claim_text(claims(result)),
             "## Scale on paper (PROJECTION, not measured)",
             "Extrapolated from this run's per-byte costs: RTT + bytes x 8 / rate + the measured time beyond "
             "the transfer, per source byte, times the model size.", _projection_text(projection(result))]
    if plots:
        parts += ["## Plots"] + [f"![{name}]({name})" for name in plots]
    return "\n\n".join(parts) + "\n"


def write_report(result: EvalResult, folder: Path) -> Path:
    """Write report.md, metrics.json and the PNG plots into `folder`; returns report.md's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics_json(result), indent=1, default=str))
    try:
        from .plots import write_plots
    except ImportError as exc:  # matplotlib is optional
        log.warning("no plots (%s)", exc)
        plots: list[str] = []
    else:
        plots = write_plots(result, folder)
    path = folder / "report.md"
    path.write_text(markdown(result, plots))
    return path
