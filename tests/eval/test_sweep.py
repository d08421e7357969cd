"""`bitladder eval --sweep` on the tiny model: links x ladders, one report with curves and TTFI gains."""

from __future__ import annotations

import json
from pathlib import Path

from bitladder.eval.commands import add_arguments
from bitladder.eval.sweep import run_sweep
from bitladder.eval.tasks import tiny_task


def test_sweep_writes_size_quality_curves_and_ttfi_gains(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--sweep", "--sweep-links", "1100mbit,100mbit", "--sweep-ladders",
                              "int8,exact;int4,int8,exact", "--interval", "0.02"])
    path = run_sweep(tiny_task(tmp_path), args, tmp_path / "sweep", tmp_path / "work")
    rows = json.loads((path.parent / "sweep.json").read_text())
    assert [(r["ladder"], r["link"]) for r in rows] == [("int8,exact", "1100mbit"), ("int8,exact", "100mbit"),
                                                         ("int4,int8,exact", "1100mbit"), ("int4,int8,exact", "100mbit")]
    for row in rows:
        assert [c["rung"] for c in row["curve"]] == row["ladder"].split(",")
        sizes = [c["bytes"] for c in row["curve"]]
        # Not ttfi <= exact: on the 1100 Mbit/s link the tiny package lands in less time than one inference takes.
        assert sizes == sorted(sizes) and row["ttfi"] > 0 and row["exact"] > 0
        assert row["curve"][-1]["top1_agreement"] == 1.0 and row["ttfi_gain"] > 0
    four = next(r for r in rows if r["ladder"] == "int4,int8,exact")["curve"]
    assert four[0]["kl_fp32"] > four[1]["kl_fp32"] > four[2]["kl_fp32"] == 0.0  # every rung better than the last
    text = path.read_text()
    assert "TTFI gain" in text and "| int4,int8,exact | int4 |" in text
    assert {p.name for p in path.parent.glob("*.png")} == {"size_vs_quality.png", "ttfi_gain.png"}
