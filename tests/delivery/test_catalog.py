"""`GET /models`: each package's weights digest, lineage and per-rung quality; each model id's versions."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

import bitladder
from bitladder.api import diff
from bitladder.delivery.catalog import Catalog, check_entry, versions
from bitladder.delivery.server import create_app
from bitladder.errors import ManifestError

from .conftest import ServerThread, arrays

TUNED = "encoder.layer.0.output.dense.weight"


@pytest.fixture(scope="module")
def releases(minilm_layer0: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's first layer as version 1 and 2 (one tensor changed), full, and the delta from 1 to 2."""
    made = tmp_path_factory.mktemp("releases")
    new = {**minilm_layer0, TUNED: minilm_layer0[TUNED] * np.float32(1.01)}
    bitladder.encode(minilm_layer0, made / "m-1.blad", ladder="int4,int8,exact", model_id="m", model_version="1")
    bitladder.encode(new, made / "m-2.blad", ladder="int4,int8,exact", model_id="m", model_version="2")
    diff(made / "m-1.blad", new, made / "m-1-to-2.blad", version="2")
    return made


def _folder(tmp_path: Path, releases: Path, *names: str) -> Path:
    root = tmp_path / "packages"
    root.mkdir()
    for name in names:
        shutil.copy(releases / name, root / name)
    return root


def test_entries_carry_weights_lineage_and_quality(releases: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path, releases, "m-1.blad", "m-2.blad", "m-1-to-2.blad")
    entries = {entry["name"]: entry for entry in Catalog(root).entries()}
    full, delta = entries["m-2.blad"], entries["m-1-to-2.blad"]
    manifest = bitladder.open(root / "m-2.blad").manifest
    assert full["weights"] == manifest.weights and full["weights"].startswith("blake3:")
    assert full["parent"] is None
    assert [r["quality_db"] for r in full["rungs"]] == list(manifest.quality)
    int4, int8, exact = (r["quality_db"] for r in full["rungs"])
    assert 10 < int4 < int8 and exact is None
    assert delta["weights"] == full["weights"]  # the delta ends on version 2's exact weights
    assert delta["parent"] == {"id": "m", "version": "1", "weights": entries["m-1.blad"]["weights"], "rung": "exact"}


def test_versions_list_full_packages_and_deltas(releases: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path, releases, "m-1.blad", "m-2.blad", "m-1-to-2.blad")
    view = Catalog(root).listing()["versions"]
    assert list(view) == ["m"] and view["m"]["latest"] == "2"
    one, two = view["m"]["versions"]
    assert (one["version"], one["full"], one["deltas"]) == ("1", ["m-1.blad"], [])
    assert (two["version"], two["full"]) == ("2", ["m-2.blad"])
    assert two["deltas"] == [{"name": "m-1-to-2.blad", "from": "1", "parent_held": True}]
    assert two["weights"] == bitladder.open(root / "m-2.blad").manifest.weights


def test_a_delta_whose_parent_is_not_held(releases: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path, releases, "m-1-to-2.blad")
    (version,) = Catalog(root).listing()["versions"]["m"]["versions"]
    assert version["version"] == "2" and version["full"] == []
    assert version["deltas"] == [{"name": "m-1-to-2.blad", "from": "1", "parent_held": False}]


def test_versions_sort_as_versions_not_text(tmp_path: Path) -> None:
    for seed, version in enumerate(["1.10", "2", "1.9"]):
        bitladder.encode(arrays(seed, rows=16), tmp_path / f"m{seed}.blad", model_id="m", model_version=version)
    bitladder.encode(arrays(7, rows=16), tmp_path / "other.blad", model_id="a", model_version="1")
    view = Catalog(tmp_path).listing()["versions"]
    assert list(view) == ["a", "m"]
    assert [v["version"] for v in view["m"]["versions"]] == ["1.9", "1.10", "2"] and view["m"]["latest"] == "2"


def test_packages_of_one_version_that_disagree_have_no_single_digest() -> None:
    entries = [{"name": f"{n}.blad", "id": "m", "version": "1", "weights": f"blake3:{n}", "parent": None}
               for n in ("a", "b")]
    (version,) = versions(entries)["m"]["versions"]
    assert version["weights"] is None and version["full"] == ["a.blad", "b.blad"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_number_is_refused(bad: float) -> None:
    with pytest.raises(ManifestError, match="finite"):
        check_entry({"digest": None, "rungs": [{"quality_db": bad}]})


def test_the_server_answers_the_listing(releases: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path, releases, "m-1.blad", "m-1-to-2.blad")
    running = ServerThread(create_app(root)).start()
    try:
        answer = httpx.get(running.url + "/models", timeout=10).json()
    finally:
        running.stop()
    assert answer == Catalog(root).listing()
    assert [m["name"] for m in answer["models"]] == ["m-1-to-2.blad", "m-1.blad"]
    assert answer["versions"]["m"]["versions"][1]["deltas"][0]["parent_held"] is True
