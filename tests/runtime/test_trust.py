"""ProgressiveModel with a trust set: a refused package never reaches the module, an older version is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bitladder  # noqa: E402
from bitladder.delivery.server import create_app  # noqa: E402
from bitladder.errors import DowngradeError, UnsignedPackageError, UntrustedKeyError  # noqa: E402
from bitladder.format.signing import generate_keys, load_trust  # noqa: E402
from bitladder.runtime import PackageMismatchError  # noqa: E402
from bitladder.runtime.torch import ProgressiveModel  # noqa: E402

from ..delivery.conftest import ServerThread  # noqa: E402
from .conftest import encode  # noqa: E402
from .test_torch import LADDER, make_net, state_of  # noqa: E402


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: generate_keys(tmp_path / name) for name in ("publisher", "attacker")}


def _package(tmp_path: Path, keys: dict[str, tuple[Path, Path]], name: str, version: str = "1",
             key: str | None = "publisher") -> Path:
    return encode(tmp_path, state_of(make_net()), LADDER, name=name, min_size=16, model_id="m",
                  model_version=version, sign=None if key is None else keys[key][0])


def _untouched(make: object) -> None:
    net = make_net(seed=7)
    before = state_of(net)
    with pytest.raises((UntrustedKeyError, UnsignedPackageError)):
        make(net)  # type: ignore[operator]
    assert all(np.array_equal(before[k], v) for k, v in state_of(net).items())


def test_a_refused_package_never_reaches_the_module(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    trust = load_trust(keys["publisher"][1])
    signed, unsigned = _package(tmp_path, keys, "s"), _package(tmp_path, keys, "u", key=None)
    model = ProgressiveModel(make_net(seed=7), signed, trust=trust)
    assert model.wait(timeout=30)
    x = torch.randn(6, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), make_net()(x))
    _untouched(lambda net: ProgressiveModel(net, unsigned, trust=trust))
    _untouched(lambda net: ProgressiveModel(net, signed, trust=load_trust(keys["attacker"][1])))
    _untouched(lambda net: ProgressiveModel(net, [signed.read_bytes()], trust=load_trust(keys["attacker"][1])))


def test_a_refused_url_never_reaches_the_module(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    root = tmp_path / "served"
    root.mkdir()
    _package(root, keys, "s")
    server = ServerThread(create_app(root)).start()
    try:
        url = f"{server.url}/models/s.blad"
        _untouched(lambda net: ProgressiveModel(net, url, trust=load_trust(keys["attacker"][1])))
        download = bitladder.open(url, trust=load_trust(keys["attacker"][1]))
        with pytest.raises(UntrustedKeyError, match=url):
            list(download)  # type: ignore[call-overload]
        assert ProgressiveModel(make_net(seed=7), url, trust=load_trust(keys["publisher"][1])).wait(timeout=30)
    finally:
        server.stop()


def test_resume_refuses_an_older_version_or_an_untrusted_key(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    trust = load_trust(keys["publisher"][1])
    newer, older = _package(tmp_path, keys, "v2", version="2"), _package(tmp_path, keys, "v1", version="1")
    model = ProgressiveModel(make_net(seed=7), newer, trust=trust)
    assert model.wait(timeout=30)
    held = state_of(model.module)
    with pytest.raises(DowngradeError, match="version '1' is older than version '2'"):
        model.resume(older)
    with pytest.raises(UntrustedKeyError):
        model.resume(_package(tmp_path, keys, "evil", version="2", key="attacker"))
    assert model.runtime.manifest is not None and model.runtime.manifest.model_version == "2"
    assert all(np.array_equal(held[k], v) for k, v in state_of(model.module).items())
    allowed = ProgressiveModel(make_net(seed=7), newer, trust=trust, allow_downgrade=True)
    assert allowed.wait(timeout=30)
    with pytest.raises(PackageMismatchError):  # not a downgrade error: resume continues the same package only
        allowed.resume(older)
