"""The reader fuzzer (benchmarks/fuzz.py), bounded: mutated real packages fail typed and fast, both ways of reading."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).parents[2] / "benchmarks" / "fuzz.py"
COUNT = 1200
TIMEOUT = 5.0  # seconds an input may take (the benchmark's bar is 2 s; a busy CI machine gets slack)


def _fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bitladder_bench_fuzz", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # results come back from the workers pickled, by module name
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path for its helpers; not for the other tests
    finally:
        sys.path[:] = saved
    return module


@pytest.mark.slow
def test_mutated_packages_fail_typed_without_hanging(tmp_path):
    fuzz = _fuzzer()
    summary = fuzz.fuzz(COUNT, workers=min(4, os.cpu_count() or 1), timeout=TIMEOUT, folder=tmp_path)
    assert len(summary.results) == COUNT
    assert summary.count("untyped") == 0, summary.failures()
    assert summary.count("hang") == 0, summary.failures()
    assert summary.disagreements == 0 and summary.resume_failures == 0, summary.failures()
    # The inputs get past the digests to the parsers and into the C decoders, and some are valid packages.
    sites = {site for result in summary.results for site in result.sites}
    assert any(site.startswith("ManifestError at spec.py") for site in sites), sites
    assert any(site.startswith("ChunkIntegrityError at native.py") for site in sites), sites
    assert summary.count("ok") > 0
