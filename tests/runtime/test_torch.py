"""ProgressiveModel on a small torch net: first rung at once, swaps between calls, rollback, refusals."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitladder.errors import ChunkIntegrityError, TruncatedError  # noqa: E402
from bitladder.format.reader import Package  # noqa: E402
from bitladder.runtime import (  # noqa: E402
    ModelMismatchError,
    PackageMismatchError,
    RuntimeUpdateError,
    SourceUnavailableError,
    Update,
)
from bitladder.runtime.torch import ProgressiveModel  # noqa: E402

from .conftest import RungFeed, corrupt, encode, full_feed  # noqa: E402

LADDER = "int4,int8,exact"


def make_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 8))
    net[1].running_mean.uniform_(-1, 1)
    return net.eval()


def state_of(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return encode(tmp_path, state_of(make_net()), LADDER, min_size=16)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(6, 48, generator=torch.Generator().manual_seed(1))


def rung_outputs(path: Path, x: torch.Tensor) -> list[torch.Tensor]:
    """What a net loaded with each rung's decoded weights answers."""
    package, outputs = Package.open(path), []
    for rung in range(len(package.manifest.ladder.rungs)):
        net = make_net(seed=99)
        net.load_state_dict({k: torch.from_numpy(v.copy()).view(net.state_dict()[k].dtype)
                             for k, v in package.decode(rung).items()})
        with torch.no_grad():
            outputs.append(net(x))
    return outputs


@pytest.mark.parametrize("apply", ["atomic", "incremental"])
def test_serves_first_rung_then_reaches_exact(package: Path, x: torch.Tensor, apply: str) -> None:
    expected = rung_outputs(package, x)
    feed = RungFeed(package)
    model = ProgressiveModel(make_net(seed=7), feed, apply=apply)
    with torch.no_grad():
        assert model.rung == 0 and torch.equal(model(x), expected[0])
        feed.advance(1)
        assert model.wait(1, timeout=30)
        assert model.rung == 1 and torch.equal(model(x), expected[1])
        feed.finish()
        assert model.wait("exact", timeout=30)
        assert torch.equal(model(x), make_net()(x))
    assert set(model.rungs().values()) == {2} and model.error is None


def test_atomic_swaps_whole_rungs_and_releases_cache(package: Path) -> None:
    events: list[Update] = []
    model = ProgressiveModel(make_net(seed=7), full_feed(package, 256), apply="atomic", on_update=events.append)
    assert model.wait(timeout=30)
    model.close()
    assert [(e.tensor, e.rung) for e in events] == [(None, 0), (None, 1), (None, 2)]
    assert model.runtime.cache_peak_bytes > 0 and not model.runtime._cache


def test_incremental_reports_each_tensor(package: Path) -> None:
    events: list[Update] = []
    model = ProgressiveModel(make_net(seed=7), full_feed(package, 256), apply="incremental", on_update=events.append)
    assert model.wait(timeout=30)
    model.close()
    tensors = {e.tensor for e in events if e.tensor is not None}
    assert {"0.weight", "3.weight"} <= tensors
    assert [e.rung for e in events if e.tensor is None] == [0, 1, 2]
    assert all(e.at >= 0 and e.seconds >= 0 for e in events)


@pytest.mark.parametrize("apply", ["atomic", "incremental"])
def test_a_package_in_one_piece_still_reports_every_rung(package: Path, apply: str) -> None:
    """All rungs verify in one feed, so tensors swap straight to exact; the model still passed each rung."""
    events: list[Update] = []
    model = ProgressiveModel(make_net(seed=7), full_feed(package, package.stat().st_size), apply=apply,
                             on_update=events.append)
    assert model.wait(timeout=30)
    model.close()
    assert [e.rung for e in events if e.tensor is None] == [0, 1, 2]


def test_a_tensor_ahead_of_the_first_rung_reports_its_own_rung(package: Path) -> None:
    """The first rung and the first refinement chunk arrive together: one swap installs both, and the
    refined tensor's rung is reported, not just the model's."""
    opened = Package.open(package)
    manifest = opened.manifest
    first = next(c for c in manifest.chunks if c.rung == 1)
    data = package.read_bytes()
    split = opened.data_start + first.offset + first.length
    events: list[Update] = []
    model = ProgressiveModel(make_net(seed=7), iter([data[:split], data[split:]]), apply="incremental",
                             on_update=events.append)
    assert model.wait(timeout=30)
    model.close()
    name = manifest.tensors[first.tensor].name
    assert (None, 0) in [(e.tensor, e.rung) for e in events]
    assert [e.rung for e in events if e.tensor == name][0] == 1


@pytest.mark.parametrize("apply", ["atomic", "incremental"])
def test_forward_never_sees_a_half_swap(package: Path, x: torch.Tensor, apply: str) -> None:
    """Every answer during refinement equals some consistent mix of per-tensor rungs, never garbage:
    in atomic mode it is exactly one rung's answer."""
    expected = rung_outputs(package, x)
    feed = RungFeed(package, piece=997)
    model = ProgressiveModel(make_net(seed=7), feed, apply=apply)
    answers: list[tuple[torch.Tensor, int]] = []
    stop = threading.Event()

    def serve() -> None:
        with torch.no_grad():
            while not stop.is_set():
                answers.append(model.call_with_rung(x))

    worker = threading.Thread(target=serve)
    worker.start()
    feed.finish()
    model.wait(timeout=30)
    stop.set()
    worker.join()
    assert answers
    for output, rung in answers:
        assert torch.isfinite(output).all()
        if apply == "atomic":
            assert torch.equal(output, expected[rung])
    assert torch.equal(model(x), expected[-1])


def test_bad_chunk_keeps_last_good_rung_then_resumes(package: Path, tmp_path: Path, x: torch.Tensor) -> None:
    expected = rung_outputs(package, x)
    manifest = Package.open(package).manifest
    bad_chunk = next(i for i, c in enumerate(manifest.chunks) if c.rung == 1)
    bad = corrupt(package, tmp_path / "bad.blad", bad_chunk)
    model = ProgressiveModel(make_net(seed=7), str(bad), apply="atomic")
    with pytest.raises(ChunkIntegrityError, match=f"chunk {bad_chunk}"):
        model.wait(1, timeout=30)
    assert model.rung == 0 and isinstance(model.error, ChunkIntegrityError)
    with torch.no_grad():
        assert torch.equal(model(x), expected[0])
    model.resume(package)
    assert model.wait(timeout=30) and model.error is None
    with torch.no_grad():
        assert torch.equal(model(x), expected[-1])


def test_incremental_refines_in_the_modules_own_memory_and_a_bad_chunk_changes_nothing(
        package: Path, tmp_path: Path, x: torch.Tensor) -> None:
    manifest = Package.open(package).manifest
    bad_chunk = next(i for i, c in enumerate(manifest.chunks) if c.rung == 2)
    hit = manifest.tensors[manifest.chunks[bad_chunk].tensor].name
    net = make_net(seed=7)
    memory = {name: t.data_ptr() for name, t in net.state_dict().items() if t.is_floating_point()}
    model = ProgressiveModel(net, str(corrupt(package, tmp_path / "bad.blad", bad_chunk)), apply="incremental")
    with pytest.raises(ChunkIntegrityError, match=f"chunk {bad_chunk}"):
        model.wait(timeout=30)
    assert model.rungs()[hit] == 1
    at_int8 = Package.open(package).decode(1, raw=True)[hit]
    assert net.state_dict()[hit].numpy().view(at_int8.dtype).tobytes() == at_int8.tobytes()  # untouched
    assert {name: t.data_ptr() for name, t in net.state_dict().items() if t.is_floating_point()} == memory
    model.resume(package)
    assert model.wait(timeout=30) and model.error is None
    with torch.no_grad():
        assert torch.equal(model(x), make_net()(x))


def test_chunks_verified_before_a_bad_one_in_the_same_piece_are_applied(package: Path, tmp_path: Path) -> None:
    manifest = Package.open(package).manifest
    rung1 = [i for i, c in enumerate(manifest.chunks) if c.rung == 1]
    assert len(rung1) > 2
    feed = RungFeed(corrupt(package, tmp_path / "bad.blad", rung1[-1]), piece=1 << 24)
    model = ProgressiveModel(make_net(seed=7), feed, apply="incremental")
    feed.advance(1)  # all of rung 1 in one piece, its last chunk damaged
    with pytest.raises(ChunkIntegrityError, match=f"chunk {rung1[-1]}"):
        model.wait(1, timeout=30)
    refined = {manifest.tensors[manifest.chunks[i].tensor].name for i in rung1[:-1]}
    assert all(model.rungs()[name] >= 1 for name in refined)
    assert model.rungs()[manifest.tensors[manifest.chunks[rung1[-1]].tensor].name] == 0


def test_truncated_stream_is_reported(package: Path) -> None:
    feed = RungFeed(package)
    feed.send_bytes(100)
    feed.close()
    model = ProgressiveModel(make_net(seed=7), feed)
    with pytest.raises(TruncatedError):
        model.wait(timeout=30)
    assert model.rung == 0


def test_other_model_id_or_version_refused(package: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageMismatchError, match="expected 'other'"):
        ProgressiveModel(make_net(), package, model_id="other")
    newer = encode(tmp_path, state_of(make_net()), LADDER, name="m2", min_size=16, model_version="2", model_id="m")
    model = ProgressiveModel(make_net(seed=7), package)
    model.wait(timeout=30)
    with pytest.raises(PackageMismatchError, match="version '2' refused"):
        model.resume(newer)


def test_module_tensor_missing_from_package_is_an_error(tmp_path: Path) -> None:
    state = state_of(make_net())
    del state["3.bias"]
    path = encode(tmp_path, state, LADDER, min_size=16)
    with pytest.raises(ModelMismatchError, match="3.bias"):
        ProgressiveModel(make_net(), path)


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    state = state_of(make_net())
    state["3.bias"] = np.zeros(9, np.float32)
    with pytest.raises(ModelMismatchError, match="3.bias"):
        ProgressiveModel(make_net(), encode(tmp_path, state, LADDER, min_size=16))


def test_extra_package_tensor_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = {**state_of(make_net()), "position_ids": np.arange(16, dtype=np.int64)}
    with caplog.at_level(logging.WARNING, logger="bitladder.runtime.core"):
        model = ProgressiveModel(make_net(seed=7), encode(tmp_path, state, LADDER, min_size=16))
    assert "position_ids" in caplog.text and "position_ids" not in model.rungs()
    assert model.wait(timeout=30)


def test_sources_path_pieces_and_decoder(package: Path, x: torch.Tensor) -> None:
    want = make_net()(x)
    pieces = [package.read_bytes()[i:i + 1000] for i in range(0, package.stat().st_size, 1000)]
    for source in (str(package), package, pieces, Package.open(package).stream()):
        model = ProgressiveModel(make_net(seed=7), source)
        assert model.wait(timeout=30)
        with torch.no_grad():
            assert torch.equal(model(x), want)


def test_url_without_delivery_client(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitladder.delivery.client", None)
    with pytest.raises(SourceUnavailableError, match="open_url"):
        ProgressiveModel(make_net(), "https://example.invalid/m.blad")


def test_bad_arguments(package: Path) -> None:
    with pytest.raises(ValueError, match="apply"):
        ProgressiveModel(make_net(), package, apply="lazy")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ProgressiveModel(make_net(), 42)  # type: ignore[arg-type]
    with pytest.raises(SourceUnavailableError):
        ProgressiveModel(make_net(), package.with_name("nope.blad"))


def test_stream_ending_before_first_rung(package: Path) -> None:
    with pytest.raises(TruncatedError):
        ProgressiveModel(make_net(), [package.read_bytes()[:200]])
    assert issubclass(TruncatedError, Exception) and issubclass(PackageMismatchError, RuntimeUpdateError)
