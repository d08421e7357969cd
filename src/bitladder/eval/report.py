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
MIN_AUC_INPUTS = 10
"""An AUC over a horizon that holds fewer inputs than this is not reported: a handful of answers is no curve."""
TTFI_DEFINITION = "TTFI (time to first inference): seconds from the request to the device's first answer."
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


def auc_omitted(result: EvalResult) -> str | None:
    """Why this result reports no AUC, or None when it does."""
    if result.weights_only:
        return ("the model is measured on its weights only: its 'answers' are samples of the weights it held, "
                "not inferences")
    inputs = horizon(result.runs) / result.config["interval"]
    if inputs < MIN_AUC_INPUTS:
        return f"the common horizon holds {inputs:.0f} inputs (fewer than {MIN_AUC_INPUTS}): too few for a curve"
    return None


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
    out["header_bytes"] = package.header_bytes
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
    if rd is not None and not result.weights_only:  # both orders hold the same weights: nothing to compare
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
    """Everything measured, for machines: `auc` is null (and `auc_omitted` says why) where report.md omits it."""
    end, omitted = horizon(result.runs), auc_omitted(result)
    runs = []
    for run in result.runs:
        entry = dataclasses.asdict(run)
        entry["auc"] = None if omitted else auc(run.answers, 0.0, end)
        runs.append(entry)
    return {"task": result.task, "config": result.config, "environment": result.environment,
            "weights_only": result.weights_only, "source_bytes": result.source_bytes,
            "quality": result.quality_name, "horizon_s": end, "auc_omitted": omitted, "runs": runs,
            "rung_quality": result.rung_quality, "encode_s": result.encode_s, "claims": claims(result),
            "projection": projection(result)}


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
    end, omitted = horizon(result.runs), auc_omitted(result)
    return [[run.scheme, f"{run.total_bytes:,}", f"{100 * run.total_bytes / result.source_bytes:.1f}",
             _fmt(run.ttfi), _fmt(run.t_exact), "—" if omitted else _fmt(auc(run.answers, 0.0, end), 4),
             _fmt(run.latency_p99),
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
                         ", ".join(f"{k} {_metric(v)}" for k, v in metrics.items())])
    return _table(["scheme", "rung", "bytes", "cumulative % src", "reached at s", "task quality"], rows)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def target_lines(result: EvalResult) -> list[str]:
    """One line per claim and target, each ending in its verdict, as report.md and the demo's summary state them."""
    c = claims(result)
    if not c:
        return ["No bitladder run in this result."]
    lines = [f"Size: base {c['base_bytes']:,} B (header and manifest {c['header_bytes']:,} B included) + update "
             f"{c['update_bytes']:,} B = {c['package_bytes']:,} B, the whole package file."]
    for name in ("zstd", "zipnn"):
        if f"package_over_{name}" in c:
            lines.append(f"Package bytes / fp32+{name} bytes = {c[f'package_over_{name}']:.4f} (claim \"base + "
                         f"update, compressed, cost no more than the compressed full model\", target <= 1: "
                         f"{_verdict(c[f'size_claim_vs_{name}'])}).")
    if "ttfi_over_zstd_load" in c:
        lines.append(f"TTFI / fp32+zstd load time = {_fmt(c['ttfi_over_zstd_load'], 3)} "
                     f"(target <= {TTFI_TARGET}: {_verdict(c['ttfi_target_met'])}).")
    if "exact_over_zipnn_load" in c:
        lines.append(f"Time to exact / fp32+ZipNN load time = {_fmt(c['exact_over_zipnn_load'], 3)} "
                     f"(target <= {EXACT_TARGET}: {_verdict(c['exact_target_met'])}).")
    if "auc_rd" in c:
        lines.append(f"RD order vs rung-major, mean distance to fp32 ({distance_name(result.quality_name)}) of the held "
                     f"model replayed at every swap, from when both answer to the horizon: RD "
                     f"{_distance(c['held_auc_rd'])}, rung-major {_distance(c['held_auc_rung_major'])} (target RD "
                     f"<= rung-major: {_verdict(c['rd_target_met'])}).")
    elif _run(result, PACKAGE_RD) is not None:
        lines.append("RD order vs rung-major: not compared, since the model is measured on its weights only "
                     "(no task answers for the order to improve).")
    return lines


def distance_name(quality_name: str) -> str:
    """'cosine to fp32' -> '1 - cosine to fp32'; '1 - relative error' -> 'relative error'."""
    return quality_name[4:] if quality_name.startswith("1 - ") else f"1 - {quality_name}"


def _distance(mean_quality: float) -> str:
    """1 - a mean quality, in 3 significant digits: 0.9999994 vs 0.9999996 read as 6e-07 vs 4e-07."""
    return f"{1.0 - mean_quality:.3g}"


def _claim_text(result: EvalResult) -> str:
    lines = [f"- {line}" for line in target_lines(result)]
    c = claims(result)
    if "auc_rd" in c and auc_omitted(result) is None:
        lines.append(f"- The same from the live answers (one per input): RD {_distance(c['auc_refine_rd'])}, "
                     f"rung-major {_distance(c['auc_refine_rung_major'])} after both answer; over the whole horizon "
                     f"(distance 1 before the first answer) RD {_distance(c['auc_rd'])}, rung-major "
                     f"{_distance(c['auc_rung_major'])}.")
    return "\n".join(lines)


def _projection_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No projection (the measured link has no constant rate)."
    schemes = [k[:-5] for k in rows[0] if k.endswith(" ttfi")]
    header = ["model", "link"] + [f"{s} {w}" for s in schemes for w in ("TTFI s", "exact s")]
    body = [[f"{row['model_bytes'] / 1e9:g} GB", row["link"]] + [_fmt(row[f"{s} {w}"], 1) for s in schemes
                                                                  for w in ("ttfi", "exact")] for row in rows]
    return _table(header, body)


def _setting(result: EvalResult) -> str:
    """Date, machine and link of the run, and the scenario's knobs."""
    cfg, env = result.config, result.environment
    link = env.get("link", {})
    rate = f"{link['rate_bit_s'] / 1e6:g} Mbit/s" if link.get("rate_bit_s") else \
        f"a trace of {link.get('trace_steps', 0)} rate steps"
    loss = f"loss {link['loss']:g} ({link['stall_s']:g} s stalls)" if link.get("loss") else "no loss"
    lines = [f"- Date: {env.get('date', 'not recorded')}.",
             f"- Machine: {env.get('cpu', 'not recorded')}, {env.get('cores', '?')} cores "
             f"({env.get('usable_cores', '?')} usable by this run), {env.get('os', '?')}, Python "
             f"{env.get('python', '?')}.",
             f"- Link `{cfg['link']}`: emulated ({link.get('emulated', 'paced HTTP')}), {rate}, RTT "
             f"{1e3 * link.get('rtt_s', 0.0):g} ms, {loss}; every scheme gets its own link of this profile, "
             "one after the other.",
             f"- Ladder `{cfg['ladder']}`, apply {cfg['apply']}, order {cfg['order']}; one input every "
             f"{cfg['interval']} s ({'queued' if cfg['buffer'] else 'dropped'} when the model is busy); source "
             f"{result.source_bytes:,} B of weights."]
    return "\n".join(lines)


def _definitions(result: EvalResult) -> str:
    cfg, omitted = result.config, auc_omitted(result)
    lines = [f"- **{TTFI_DEFINITION.replace(' (', '** (', 1)} A baseline can only answer once its whole file is "
             "fetched, decoded and loaded.",
             "- **exact s**: bitladder: when its last rung was applied and the model is bit-identical to the "
             "source. Baselines: their load time, from the request until the file was fetched, decoded and "
             "loaded into the model (— for a lossy baseline); their TTFI is a little later, at the next input.",
             "- **bytes**: everything sent over the link. For bitladder the whole package file: its header and "
             "manifest are counted in the first rung. For a baseline its whole file.",
             f"- **AUC**: the mean of '{result.quality_name}' from 0 s to the common horizon (when the slowest "
             "scheme first answered in its final state), counting 0 before a scheme's first answer: 1.0 would be "
             "fp32's answers from the moment of the request." + (f" Omitted here: {omitted}." if omitted else ""),
             "- **latency p99**: 99th percentile of input arrival to answer, over inputs after the first answer "
             "(stalls behind swaps included).",
             _inputs_definition(cfg["interval"], cfg["buffer"])]
    if result.weights_only:
        lines.append("- **Weights only**: bitladder has no task for this architecture, so its quality is that of "
                     "the weights, not of answers: an 'answer' is a fixed sample of the weights the device held, "
                     "and TTFI is when those were first usable. No AUC and no RD-vs-rung-major comparison: they "
                     "would only restate the per-rung weight fidelity below.")
    return "\n".join(lines)


def _inputs_definition(interval: float, buffer: bool) -> str:
    never = "none: inputs are queued" if buffer else "they arrived while the model was busy or not there yet"
    early = "queued until then" if buffer else "dropped, so counted in dropped too"
    return (f"- **inputs/dropped/waited**: inputs sent, one every {interval} s from the request until shortly after "
            f"the scheme was final / inputs never answered ({never}) / inputs that arrived before the first answer "
            f"({early}).")


def _metric(value: float) -> str:
    """4 decimals, or 3 significant digits for a small value (a KL of 3e-08 is not 0.0000)."""
    if math.isinf(value) or value == 0 or abs(value) >= 1e-2:
        return _fmt(float(value), 4)
    return f"{value:.3g}"


def markdown(result: EvalResult, plots: Sequence[str]) -> str:
    parts = [f"# bitladder eval: {result.task}", _setting(result),
             "Times are seconds from the request; baselines ran in the same process over the same link profile.",
             "## Schemes", _table(SUMMARY_HEADER, summary_rows(result)), _definitions(result),
             "## Bytes and task quality per rung", _rung_table(result),
             "## The claim, measured", _claim_text(result),
             "## Scale on paper (PROJECTION, not measured)",
             "Extrapolated from this run's per-byte costs: RTT + bytes x 8 / rate + the measured time beyond "
             "the transfer, per source byte, times the model size.", _projection_text(projection(result))]
    if plots:
        parts += ["## Plots"] + [f"![{name}]({name})\n\n{PLOT_CAPTIONS.get(name, '')}".rstrip() for name in plots]
    return "\n\n".join(parts) + "\n"


PLOT_CAPTIONS = {
    "quality_vs_time.png": "Distance to the fp32 answers (1 - quality, symmetric log axis: 0 = identical) over "
                           "time. Solid: each scheme's answers, from its first answer (o) on. Dotted: the "
                           "weights the device held, rescored after every swap (the answers sample it). "
                           "▼: a rung applied, or a baseline's file loaded.",
    "bytes_per_rung.png": "Bytes sent per rung; a package's first rung includes its header and manifest.",
    "timeline.png": "What each device held over time, one colour per state; o marks the first answer (TTFI).",
}


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
