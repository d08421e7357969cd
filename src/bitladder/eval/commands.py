"""CLI subcommand `eval`; `register(subparsers)` adds it to the `bitladder` parser. This module prints.

    bitladder eval --model minilm --link 100mbit -o report/            # bitladder vs fp32, +zstd, +ZipNN
    bitladder eval --model mobilenetv2 --order rd --nncodec -o report/  # + RD order, + NNCodec (cached)
    bitladder eval --model minilm --sweep -o sweep/                     # links x ladders
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ..cliargs import LADDER_HELP, check_ladder
from ..errors import BitladderError
from .schemes import NNCODEC_QP

# The scenario, its tasks and its report import torch: they are imported when `eval` runs, so that the
# rest of the command line works without torch.
if TYPE_CHECKING:
    from .scenario import EvalResult, ScenarioConfig

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=140)
DEFAULT_CACHE = Path.home() / ".cache" / "bitladder"
EVAL_EXTRA = "pip install 'bitladder[eval]'"


class MissingExtraError(BitladderError):
    """`eval` needs a package of the `eval` extra (torch, transformers, ...) that is not installed."""


class LiveProgress:
    """Prints stages, rungs and (at most once a second per scheme) answers as the scenario runs."""

    def __init__(self, show: Console) -> None:
        self._show = show
        self._last: dict[str, float] = {}
        self._start = time.monotonic()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        clock = f"[dim]{time.monotonic() - self._start:6.1f}s[/dim]"
        if event == "stage":
            self._show.print(f"{clock} {fields['text']}")
        elif event == "scheme":
            self._show.print(f"{clock} [bold]{fields['scheme']}[/bold] over {fields['link']}")
        elif event == "rung":
            self._show.print(f"{clock}   {fields['scheme']}: [green]{fields['rung']}[/green] at {fields['t']:.2f} s "
                             f"({fields['bytes'] / 1e6:.1f} MB)")
        elif event == "answer" and fields["t"] - self._last.get(fields["scheme"], -1.0) >= 1.0:
            self._last[fields["scheme"]] = fields["t"]
            self._show.print(f"{clock}   {fields['scheme']}: answer at {fields['t']:.2f} s on {fields['rung']}, "
                             f"{fields['bytes'] / 1e6:.1f} MB in, quality {fields['quality']:.5f}")


def summary_table(result: EvalResult) -> Table:
    from .report import SUMMARY_HEADER, summary_rows

    table = Table(title=f"{result.task} over {result.config['link']} (ladder {result.config['ladder']})")
    for column in SUMMARY_HEADER:
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for row in summary_rows(result):
        table.add_row(*row)
    return table


def config_from(args: argparse.Namespace, link: str | None = None, ladder: str | None = None) -> ScenarioConfig:
    from .scenario import ScenarioConfig

    baselines = tuple(b for b in args.baselines.split(",") if b) + (("nncodec",) if args.nncodec else ())
    return ScenarioConfig(ladder=ladder or args.ladder, link=link or args.link, apply=args.apply, order=args.order,
                          baselines=baselines, interval=args.interval, buffer=args.buffer,
                          nncodec_qp=args.qp, cache=None if args.no_cache else DEFAULT_CACHE)


def _check(args: argparse.Namespace) -> None:
    """Options `eval` would otherwise refuse only after encoding the model."""
    check_ladder(args.ladder)
    if args.sweep:
        for ladder in args.sweep_ladders.split(";"):
            check_ladder(ladder, "--sweep-ladders")


def cmd_eval(args: argparse.Namespace) -> None:
    _check(args)
    try:
        import torch

        from .report import write_report
        from .scenario import run_eval
        from .tasks import get_task
    except ModuleNotFoundError as exc:
        raise MissingExtraError(f"bitladder eval needs {exc.name or 'the eval extra'}, which is not installed: "
                                f"{EVAL_EXTRA}") from exc

    torch.set_num_threads(args.threads)  # the other core decodes refinements, as on a device
    folder = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="bitladder-eval-") as tmp:
        task = get_task(args.model, Path(tmp))
        if args.sweep:
            from .sweep import run_sweep

            path = run_sweep(task, args, folder, Path(tmp), LiveProgress(console))
            out.print(f"sweep report: {path}")
            return
        result = run_eval(task, config_from(args), Path(tmp), LiveProgress(console))
    path = write_report(result, folder)
    out.print(summary_table(result))
    from .report import TTFI_DEFINITION, target_lines

    out.print(TTFI_DEFINITION)
    for line in target_lines(result):
        out.print(line)
    out.print(f"report: {path} (metrics.json and plots beside it)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm",
                        help="minilm, mobilenetv2, mtcnn, tiny (a test MLP), a Hugging Face text encoder folder, or "
                             "any model file or folder (quality then measured on the weights)")
    parser.add_argument("--ladder", default="int8,exact", help=f"{LADDER_HELP} (default int8,exact)")
    parser.add_argument("--link", default="100mbit", help="1100mbit, 100mbit, 20mbit, 5mbit, or a trace .csv (time_s,bit_per_s)")
    parser.add_argument("--apply", choices=("incremental", "atomic"), default="incremental",
                        help="incremental (default): swap in each refined tensor as it verifies; atomic: swap a "
                             "whole rung at once")
    parser.add_argument("--order", choices=("rung", "rd"), default="rung",
                        help="rd: also run a package in rate-distortion order and compare their AUC")
    parser.add_argument("--baselines", default="fp32,fp32+zstd,fp32+zipnn", help="comma list of baselines")
    parser.add_argument("--nncodec", action="store_true",
                        help=f"add NNCodec at qp {NNCODEC_QP} (encode ~40 s for MiniLM, cached under {DEFAULT_CACHE})")
    parser.add_argument("--qp", type=int, default=NNCODEC_QP, help="NNCodec qp")
    parser.add_argument("--no-cache", action="store_true", help="do not cache the NNCodec bitstream")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between inputs")
    parser.add_argument("--buffer", action="store_true", help="queue inputs instead of dropping them when busy")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference")
    parser.add_argument("--sweep", action="store_true", help="run every --sweep-links x --sweep-ladders")
    parser.add_argument("--sweep-links", default="1100mbit,100mbit,20mbit",
                        help="comma list of links for --sweep (as --link; default 1100mbit,100mbit,20mbit)")
    parser.add_argument("--sweep-ladders", default="int8,exact;int4,int8,exact;bf16,exact",
                        help="semicolon list of ladders for --sweep (each as --ladder; "
                             "default int8,exact;int4,int8,exact;bf16,exact)")
    parser.add_argument("-o", "--output", default="report", help="folder for report.md, metrics.json, plots")


def register(subparsers: Any) -> None:
    """Add `eval` to the `bitladder` command."""
    parser = subparsers.add_parser("eval", help="deliver a real model over an emulated link and measure it")
    add_arguments(parser)
    parser.set_defaults(run=cmd_eval)
