"""`make demo`: MiniLM from its wheel, served on 127.0.0.1, streamed over an emulated 20 Mbit/s link into a
ProgressiveModel that answers sentence-similarity probes from the first rung on; fp32+zstd and fp32+ZipNN
go over the same link in the same run. Prints live progress, the summary table and the report's path.

    python -m bitladder.demo [-o out/demo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from .errors import BitladderError
from .eval.commands import LiveProgress, summary_table
from .eval.report import TTFI_DEFINITION, target_lines, write_report
from .eval.scenario import ScenarioConfig, run_eval

console = Console(soft_wrap=True, width=140)
DEMO = ScenarioConfig(link="20mbit", ladder="int8,exact", baselines=("fp32+zstd", "fp32+zipnn"), interval=0.25)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bitladder.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/demo", help="report folder (default out/demo)")
    args = parser.parse_args(argv)
    import torch

    from .eval.tasks import minilm_task

    torch.set_num_threads(1)  # one core answers, the other decodes refinements
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bitladder-demo-") as tmp:
            result = run_eval(minilm_task(), DEMO, Path(tmp), LiveProgress(console))
        report = write_report(result, Path(args.output))
    except (BitladderError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(summary_table(result))
    console.print(TTFI_DEFINITION)
    for line in target_lines(result):
        console.print(f"- {line}", markup=False)
    console.print(f"report: {report} (plots: {', '.join(p.name for p in sorted(report.parent.glob('*.png')))})")
    console.print(f"demo took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
