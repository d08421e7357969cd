"""Issue 5's numbers in one table: `bitladder eval --order rd` on each real model and link.

Run: .venv/bin/python benchmarks/eval.py [--models minilm,mobilenetv2,mtcnn] [--links 100mbit,20mbit]
Each run's report (with plots) goes to out/eval/MODEL-LINK/; its report.md is copied to
benchmarks/results/eval-MODEL-LINK.md and the table below to benchmarks/results/eval.md.
Columns: TTFI over fp32+zstd's fetch+load (target <= 0.3), time to exact over fp32+ZipNN's (<= 1.0), package
size over ZipNN's file (the floor of the second ratio on a link-bound run), and the RD order's area under the
held model's quality curve against rung-major order (target RD >= rung-major).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HEADER = ["model", "link", "TTFI / zstd load", "exact / ZipNN load", "package / ZipNN", "RD held AUC",
          "rung-major held AUC", "RD >= rung-major", "run s"]


def run(model: str, link: str, out: Path) -> list[str]:
    from bitladder.eval.report import claims, write_report
    from bitladder.eval.scenario import ScenarioConfig, run_eval
    from bitladder.eval.tasks import get_task

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bitladder-bench-") as tmp:
        result = run_eval(get_task(model, Path(tmp)), ScenarioConfig(link=link, order="rd"), Path(tmp))
    report = write_report(result, out / f"{model}-{link}")
    shutil.copyfile(report, RESULTS / f"eval-{model}-{link}.md")
    c = claims(result)
    return [model, link, f"{c['ttfi_over_zstd_load']:.3f}", f"{c['exact_over_zipnn_load']:.3f}",
            f"{c['package_over_zipnn']:.3f}", f"{c['held_auc_rd']:.6f}", f"{c['held_auc_rung_major']:.6f}",
            "yes" if c["rd_target_met"] else "NO", f"{time.perf_counter() - start:.0f}"]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mobilenetv2,mtcnn")
    parser.add_argument("--links", default="100mbit,20mbit")
    parser.add_argument("--out", default=str(ROOT / "out" / "eval"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core answers, the other decodes, as `bitladder eval` does
    rows = [run(model, link, Path(args.out)) for model in args.models.split(",") for link in args.links.split(",")]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (RESULTS / "eval.md").write_text(f"# {__doc__.splitlines()[0]}\n\n`{' '.join(sys.argv[1:]) or 'defaults'}`, "
                                     f"one machine, baselines in the same run.\n\n{table}\n")


if __name__ == "__main__":
    main()
