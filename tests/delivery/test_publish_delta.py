"""A device uploads its fine-tuned MiniLM as a delta (`push --delta-from`); the server checks lineage and signature."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import bitladder
from bitladder import api
from bitladder.cli import main
from bitladder.delivery.deltapush import delta_name
from bitladder.delivery.server import create_app
from bitladder.format.spec import WeightsHasher
from bitladder.format.writer import PackageWriter

from .conftest import ServerThread

pytestmark = pytest.mark.slow
TOKEN = "s3cret"


def _tuned(weights: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A stand-in for fine-tuning: the last encoder layer moved by Laplace noise of scale 1e-4."""
    rng = np.random.default_rng(seed)
    return {name: (array + rng.laplace(0, 1e-4, array.shape)).astype(np.float32)
            if name.startswith("encoder.layer.5.") else array for name, array in weights.items()}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """v1.blad (MiniLM as published), v1-signed.blad and keys, v2 and v3 (tuned from v2), v1-other (v1 tuned
    elsewhere, same version label) as safetensors."""
    folder = tmp_path_factory.mktemp("versions")
    v1 = load_file(str(minilm_path))
    v2 = _tuned(v1, 1)
    save_file(v2, str(folder / "v2.safetensors"))
    save_file(_tuned(v2, 2), str(folder / "v3.safetensors"))
    save_file(_tuned(v1, 3), str(folder / "v1-other.safetensors"))
    api.encode(minilm_path, folder / "v1.blad", model_id="minilm")
    bitladder.generate_keys(folder / "publisher")
    api.encode(minilm_path, folder / "v1-signed.blad", model_id="minilm", sign=folder / "publisher.key")
    (folder / "token").write_text(TOKEN)
    return folder


def _serve(tmp_path: Path, versions: Path, held: str | None = "v1.blad", trust: bool = False) -> ServerThread:
    root = tmp_path / "served"
    root.mkdir()
    if held is not None:
        shutil.copy(versions / held, root / "minilm.blad")
    keys = bitladder.load_trust(versions / "publisher.pub") if trust else None
    return ServerThread(create_app(root, token=TOKEN, trust=keys)).start()


@pytest.fixture
def server(tmp_path: Path, versions: Path) -> Iterator[ServerThread]:
    running = _serve(tmp_path, versions)
    yield running
    running.stop()


def _push(versions: Path, server: ServerThread, new: str, *options: str) -> int:
    return main(["push", str(versions / new), server.url, "--token-file", str(versions / "token"), *options])


def _stored(server: ServerThread) -> set[str]:
    return {path.name for path in Path(server.app.state.config.root).iterdir()}


def test_push_delta_from_is_listed_as_a_delta_and_patches_bit_exact(
        server: ServerThread, versions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="bitladder.delivery.publish"):
        assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2") == 0
    said = capsys.readouterr().err
    assert "delta 'minilm' 1 -> 2" in said and "minilm-1-to-2.blad" in said and "of the 90," in said
    assert any("applies (checked in" in record.getMessage() for record in caplog.records)
    listing = httpx.get(f"{server.url}/models").json()
    entry = next(entry for entry in listing["models"] if entry["name"] == "minilm-1-to-2.blad")
    assert entry["version"] == "2" and entry["parent"]["version"] == "1"
    assert entry["size"] < 0.1 * (versions / "v2.safetensors").stat().st_size
    assert {"name": "minilm-1-to-2.blad", "from": "1", "parent_held": True} in \
        next(v for v in listing["versions"]["minilm"]["versions"] if v["version"] == "2")["deltas"]
    delta = tmp_path / "delta.blad"
    delta.write_bytes(httpx.get(f"{server.url}/models/minilm-1-to-2.blad").content)
    assert main(["patch", str(versions / "v1.blad"), str(delta), "-o", str(tmp_path / "p.safetensors")]) == 0
    patched, want = load_file(str(tmp_path / "p.safetensors")), load_file(str(versions / "v2.safetensors"))
    assert patched.keys() == want.keys()
    assert all(patched[name].dtype == array.dtype and patched[name].tobytes() == array.tobytes()
               for name, array in want.items())
    # a second device tunes version 2, which the server holds only as a delta: both sides rebuild it through 1
    assert _push(versions, server, "v3.safetensors", "--delta-from", "2", "--model-version", "3") == 0
    assert "delta 'minilm' 2 -> 3" in capsys.readouterr().err
    listing = httpx.get(f"{server.url}/models").json()
    assert [v["version"] for v in listing["versions"]["minilm"]["versions"]] == ["1", "2", "3"]


def test_push_delta_against_a_local_base(server: ServerThread, versions: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2",
                 "--base", str(versions / "v1.blad"), "--name", "tuned.blad", "--approximate-bits", "0") == 0
    assert "tuned.blad" in _stored(server) and "(exact " in capsys.readouterr().err
    assert _push(versions, server, "v3.safetensors", "--delta-from", "2", "--model-version", "3",
                 "--base", str(versions / "v1.blad")) == 2
    assert "holds version '1', not --delta-from '2'" in capsys.readouterr().err


def test_a_delta_whose_parent_the_server_does_not_hold_is_refused(
        tmp_path: Path, versions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.diff(versions / "v1.blad", versions / "v2.safetensors", tmp_path / "orphan.blad", version="2")
    (tmp_path / "token").write_text(TOKEN)
    server = _serve(tmp_path, versions, held=None)
    try:
        capsys.readouterr()
        assert _push(tmp_path, server, "orphan.blad") == 2
        err = capsys.readouterr().err
        assert "409" in err and "delta 'minilm' 2 <- 1: the server holds no 'minilm' version '1' with weights blake3:" \
            in err and "it holds no version of 'minilm'" in err
        assert _stored(server) == set()  # nothing stored, no spool file left
        assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2") == 2
        assert "lists no model at version '1'" in capsys.readouterr().err
        assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2",
                     "--model-id", "minilm") == 2
        assert "lists no 'minilm' version '1' (it holds no version of 'minilm')" in capsys.readouterr().err
    finally:
        server.stop()


def test_a_delta_made_against_other_weights_of_the_same_version_is_refused(
        server: ServerThread, versions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2",
                 "--base", str(versions / "v1-other.safetensors"), "--model-id", "minilm") == 2
    err = capsys.readouterr().err
    held = bitladder.open(versions / "v1.blad").manifest.weights
    assert "409" in err and "holds no 'minilm' version '1' with weights blake3:" in err
    assert f"it holds version '1' ({held[:23]}…)" in err
    assert _stored(server) == {"minilm.blad"}
    # nor may a delta replace its own parent
    api.diff(versions / "v1.blad", versions / "v2.safetensors", tmp_path / "delta.blad", version="2")
    assert _push(versions, server, str(tmp_path / "delta.blad")) == 0  # beside it: fine
    assert main(["push", str(tmp_path / "delta.blad"), f"{server.url}/models/minilm.blad",
                 "--token-file", str(versions / "token")]) == 2
    assert "holds that version only as minilm.blad, which the delta would replace" in capsys.readouterr().err
    assert bitladder.open(Path(server.app.state.config.root) / "minilm.blad").manifest.parent is None


def test_a_delta_that_does_not_give_the_weights_it_records_is_refused(
        server: ServerThread, versions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk verifies and the parent is held, but the weights digest it records is not what it decodes to."""
    finish = PackageWriter.finish

    def lying(writer: PackageWriter) -> object:
        writer._weights = WeightsHasher()  # the digest of no tensors at all
        return finish(writer)

    with monkeypatch.context() as patched:
        patched.setattr(PackageWriter, "finish", lying)
        api.diff(versions / "v1.blad", versions / "v2.safetensors", tmp_path / "lying.blad", version="2")
    (tmp_path / "token").write_text(TOKEN)
    assert _push(tmp_path, server, "lying.blad") == 2
    err = capsys.readouterr().err
    assert "422" in err and "delta 'minilm' 2 <- 1 does not apply" in err
    assert _stored(server) == {"minilm.blad"}


def test_a_trusting_server_takes_only_signed_deltas(tmp_path: Path, versions: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    server = _serve(tmp_path, versions, held="v1-signed.blad", trust=True)
    trust = ["--trust", str(versions / "publisher.pub")]
    try:
        capsys.readouterr()
        assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2", *trust) == 2
        err = capsys.readouterr().err
        assert "403" in err and "not signed" in err and _stored(server) == {"minilm.blad"}
        assert _push(versions, server, "v2.safetensors", "--delta-from", "1", "--model-version", "2", *trust,
                     "--sign", str(versions / "publisher.key")) == 0
        assert _stored(server) == {"minilm.blad", "minilm-1-to-2.blad"}
        assert bitladder.open(Path(server.app.state.config.root) / "minilm-1-to-2.blad").header.signed
    finally:
        server.stop()


def test_delta_only_options_need_delta_from(server: ServerThread, versions: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _push(versions, server, "v1.blad", "--model-version", "2") == 2
    assert "--model-version goes with --delta-from" in capsys.readouterr().err
    assert _push(versions, server, "v2.safetensors", "--delta-from", "1") == 2
    assert "needs --model-version" in capsys.readouterr().err


def test_delta_name() -> None:
    assert delta_name("minilm", "1", "2") == "minilm-1-to-2.blad"
    assert delta_name("org/all MiniLM", "1.0", "1.1+ft") == "org-all-MiniLM-1.0-to-1.1-ft.blad"
