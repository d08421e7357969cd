"""Capability-based rung choice: the pure planner on real MiniLM, then `fetch` and `bitladder.open` over loopback."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

import bitladder
from bitladder.cli import main
from bitladder.delivery.catalog import catalog_entry
from bitladder.delivery.choice import Budget, choose, parse_size, rung_costs
from bitladder.delivery.errors import BudgetError
from bitladder.delivery.server import create_app
from bitladder.errors import UsageError
from bitladder.format.reader import Package

from .conftest import ServerThread

LADDER = "int4,int8,bf16,exact"


@pytest.fixture(scope="module")
def served(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All of MiniLM (fp32), encoded once with four rungs, in a folder to serve."""
    root = tmp_path_factory.mktemp("served")
    bitladder.encode(minilm_path, root / "minilm.blad", ladder=LADDER)
    return root


@pytest.fixture(scope="module")
def package(served: Path) -> Package:
    return Package.open(served / "minilm.blad")


@pytest.fixture(scope="module")
def server(served: Path) -> Iterator[ServerThread]:
    running = ServerThread(create_app(served)).start()
    yield running
    running.stop()


def _ends(package: Package) -> list[int]:
    return [package.data_start + package.manifest.rung_end(r) for r in range(len(package.manifest.ladder.rungs))]


# -- the planner ----------------------------------------------------------------------------------------------

def test_costs_are_the_prefix_a_download_fetches(package: Package, served: Path) -> None:
    costs = rung_costs(package.manifest, package.data_start)
    assert [c.bytes for c in costs] == _ends(package) == [r["end"] for r in catalog_entry(served / "minilm.blad")["rungs"]]
    assert costs[-1].bytes == (served / "minilm.blad").stat().st_size
    assert rung_costs(package.manifest) == costs  # data_start defaults to the encoded manifest's size
    assert {c.memory for c in costs} == {package.manifest.tensor_bytes}
    assert [c.dtypes for c in costs] == [{"F32"}, {"F32"}, {"BF16"}, {"F32"}]
    assert [c.quality_db for c in costs] == list(package.manifest.quality)


def test_no_limit_takes_the_last_rung(package: Package) -> None:
    choice = choose(package.manifest, Budget(), package.data_start)
    assert (choice.rung, choice.name, choice.seconds) == (3, "exact", None)
    assert "the whole package fits" in choice.reason[-1]


@pytest.mark.parametrize("rung", range(4))
def test_max_bytes_takes_the_highest_rung_under_it(package: Package, rung: int) -> None:
    ends = _ends(package)
    exactly = choose(package.manifest, Budget(max_bytes=ends[rung]), package.data_start)
    assert exactly.rung == rung and exactly.bytes == ends[rung]
    if rung:
        short = choose(package.manifest, Budget(max_bytes=ends[rung] - 1), package.data_start)
        assert short.rung == rung - 1
        names = package.manifest.ladder.names
        assert any(f"rung {names[rung]} would have taken {ends[rung]:,} bytes" in line and
                   f"> max_bytes {ends[rung] - 1:,}" in line for line in short.reason)


def test_too_few_bytes_for_any_rung(package: Package) -> None:
    with pytest.raises(BudgetError, match=r"no rung of 'minilm'.*rung int4: [\d,]+ bytes > max_bytes 1,000"):
        choose(package.manifest, Budget(max_bytes=1000), package.data_start)


def test_a_deadline_at_a_link_rate(package: Package) -> None:
    ends, rate = _ends(package), 20e6
    deadline = 8 * ends[1] / rate + 0.01  # int8 arrives just in time, bf16 does not
    choice = choose(package.manifest, Budget(link_rate_bps=rate, deadline_s=deadline), package.data_start)
    assert choice.name == "int8" and choice.seconds == pytest.approx(8 * ends[1] / rate)
    assert choice.quality_db == package.manifest.quality[1]
    assert any("bf16 would have taken" in line and "> deadline" in line and "20 Mbit/s" in line
               for line in choice.reason)
    both = choose(package.manifest, Budget(max_bytes=ends[0], link_rate_bps=rate, deadline_s=deadline),
                  package.data_start)
    assert both.name == "int4" and any("max_bytes" in line for line in both.reason)


def test_memory_is_the_tensors_at_every_rung(package: Package) -> None:
    need = package.manifest.tensor_bytes
    assert choose(package.manifest, Budget(max_memory=need), package.data_start).name == "exact"
    with pytest.raises(BudgetError, match=f"{need:,} bytes of tensors in memory > max_memory {need - 1:,}"):
        choose(package.manifest, Budget(max_memory=need - 1), package.data_start)


def test_a_bf16_device_stops_at_the_bf16_rung(package: Package) -> None:
    choice = choose(package.manifest, Budget(dtypes={"BF16"}), package.data_start)
    assert choice.name == "bf16" and choice.dtypes == {"BF16"}
    text = "\n".join(choice.reason)
    assert "rung exact would have taken" in text and "need F32" in text
    assert "lower rungs int4, int8 do not fit either" in text and "cast by the device to BF16" in text
    assert choose(package.manifest, Budget(dtypes={"F32"}), package.data_start).name == "exact"


def test_a_device_without_any_rung_dtype_is_refused(package: Package) -> None:
    with pytest.raises(BudgetError, match=r"fp16 rung would fit.*rung int4: its values need F32.*supports F16"):
        choose(package.manifest, Budget(dtypes={"F16"}), package.data_start)


def test_a_16_bit_model_is_held_in_its_dtype_at_every_rung(minilm_layer0: dict[str, np.ndarray],
                                                           tmp_path: Path) -> None:
    arrays = {name: a.astype(ml_dtypes.bfloat16) for name, a in minilm_layer0.items()}
    manifest = bitladder.encode(arrays, tmp_path / "m.blad", ladder="int4,int8,bf16")
    assert [c.dtypes for c in rung_costs(manifest)] == [{"BF16"}] * 3
    assert choose(manifest, Budget(dtypes={"BF16"})).name == "bf16"


# Ids list a set sorted: its order follows the hash seed, and parallel workers must collect the same ids.
@pytest.mark.parametrize("options", [
    {"max_bytes": 0}, {"max_bytes": -5}, {"max_bytes": 1.5}, {"max_bytes": True}, {"max_memory": "1G"},
    {"link_rate_bps": math.nan}, {"link_rate_bps": 0}, {"deadline_s": 5}, {"link_rate_bps": 1e6, "deadline_s": -1},
    {"dtypes": "F16"}, {"dtypes": set()}, {"dtypes": {"F16", "int8"}},
], ids=lambda options: str({key: sorted(v) if isinstance(v, set) else v for key, v in options.items()}))
def test_a_bad_budget_is_a_usage_error(options: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Budget(**options)  # type: ignore[arg-type]


def test_budget_normalises_dtypes_and_sizes_parse() -> None:
    assert Budget(dtypes=["bf16", "F16"]).dtypes == frozenset({"BF16", "F16"})
    assert Budget(link_rate_bps=8e6, deadline_s=2, max_bytes=10**9).byte_limit == 2e6
    assert [parse_size(t) for t in ("50M", "1.5GB", "2GiB", "300000", "4k")] == [50_000_000, 1_500_000_000, 2**31,
                                                                                300_000, 4000]
    for bad in ("", "-1M", "fast", "0"):
        with pytest.raises(UsageError):
            parse_size(bad)


# -- fetch and the Python API -------------------------------------------------------------------------------------

def test_fetch_with_a_budget_says_what_it_chose(server: ServerThread, package: Package, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ends = _ends(package)
    out = tmp_path / "m.safetensors"
    url = server.url + "/models/minilm.blad"
    assert main(["fetch", url, "-o", str(out), "--max-bytes", str(ends[2] - 1), "--link-rate", "20M"]) == 0
    err = capsys.readouterr().err
    assert f"chose rung int8 ({ends[1]:,} bytes" in err and "bound by" in err and "rung bf16 would have taken" in err
    assert f"{ends[1]:,} bytes received" in err and "rung bf16: verified" not in err
    want = package.decode("int8")
    got = load_file(str(out))
    assert got.keys() == want.keys() and all(got[name].tobytes() == want[name].tobytes() for name in want)


def test_fetch_budget_and_rung_conflict(server: ServerThread, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = server.url + "/models/minilm.blad"
    assert main(["fetch", url, "-o", str(tmp_path / "a.safetensors"), "--rung", "int8", "--max-bytes", "1M"]) == 2
    assert "give one or the other" in capsys.readouterr().err
    assert main(["fetch", url, "-o", str(tmp_path / "b.safetensors"), "--deadline", "3"]) == 2
    assert "--deadline 3 needs --link-rate" in capsys.readouterr().err
    assert main(["fetch", url, "-o", str(tmp_path / "c.safetensors"), "--dtype", "f16"]) == 2
    assert "no rung of 'minilm'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_open_with_a_budget_stops_after_the_chosen_rung(server: ServerThread, package: Package) -> None:
    download = bitladder.open(server.url + "/models/minilm.blad", budget=Budget(dtypes={"BF16"}))
    assert isinstance(download, bitladder.delivery.Download)
    decoder = download.run()
    assert download.choice is not None and download.choice.name == "bf16"
    assert download.stats.received == _ends(package)[2] and download.decoder.rung == 2
    assert decoder.manifest is not None and [e.name for e in download.events] == ["int4", "int8", "bf16"]


def test_open_a_file_with_a_budget_is_refused(served: Path) -> None:
    with pytest.raises(UsageError, match="http"):
        bitladder.open(served / "minilm.blad", budget=Budget(max_bytes=10**6))
