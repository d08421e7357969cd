"""ProgressiveModel with a budget: it stops after the rung the budget chooses, from a file or over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bitladder  # noqa: E402
from bitladder import Budget, BudgetError  # noqa: E402
from bitladder.delivery.server import create_app  # noqa: E402
from bitladder.format.reader import Package  # noqa: E402
from bitladder.runtime.torch import ProgressiveModel  # noqa: E402

from ..delivery.conftest import ServerThread  # noqa: E402

FFN = "encoder.layer.0.intermediate.dense"


def make_net(minilm_layer0: dict[str, np.ndarray]) -> torch.nn.Module:
    """MiniLM's first feed-forward layer (384 -> 1536) as a torch module, with its real weights."""
    net = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU())
    net.load_state_dict({"0.weight": torch.from_numpy(minilm_layer0[f"{FFN}.weight"]),
                         "0.bias": torch.from_numpy(minilm_layer0[f"{FFN}.bias"])})
    return net.eval()


@pytest.fixture
def package(minilm_layer0: dict[str, np.ndarray], tmp_path: Path) -> Path:
    state = {k: v.detach().numpy().copy() for k, v in make_net(minilm_layer0).state_dict().items()}
    bitladder.encode(state, tmp_path / "ffn.blad", ladder="int4,int8,bf16,exact")
    return tmp_path / "ffn.blad"


def _ends(path: Path) -> list[int]:
    package = Package.open(path)
    return [package.data_start + package.manifest.rung_end(r) for r in range(len(package.manifest.ladder.rungs))]


def _held(model: ProgressiveModel, path: Path, rung: str) -> bool:
    want = Package.open(path).decode(rung)
    got = model.module.state_dict()
    return all(np.array_equal(got[name].numpy(), want[name]) for name in want)


def test_a_file_stops_after_the_chosen_rung(minilm_layer0: dict[str, np.ndarray], package: Path) -> None:
    model = ProgressiveModel(make_net(minilm_layer0), package, budget=Budget(max_bytes=_ends(package)[2] - 1))
    try:
        assert model.choice is not None and model.choice.name == "int8"
        assert model.wait(timeout=30)  # waits for the chosen rung
        model.runtime.close(timeout=10)
        assert model.rung == 1 and model.error is None and not model.runtime.running
        assert _held(model, package, "int8")
        with pytest.raises(bitladder.BitladderError, match="rung 3 will not arrive"):
            model.wait("exact", timeout=5)
    finally:
        model.close()


def test_over_http_only_the_chosen_rung_is_fetched(minilm_layer0: dict[str, np.ndarray], package: Path) -> None:
    running = ServerThread(create_app(package.parent)).start()
    try:
        model = ProgressiveModel(make_net(minilm_layer0), f"{running.url}/models/ffn.blad", apply="atomic",
                                 budget=Budget(dtypes={"BF16"}))
        try:
            assert model.choice is not None and model.choice.name == "bf16"
            assert model.choice.bytes == _ends(package)[2]
            assert model.wait(timeout=30) and model.rung == 2 and model.error is None
            assert _held(model, package, "bf16")
        finally:
            model.close()
    finally:
        running.stop()


def test_no_rung_fits(minilm_layer0: dict[str, np.ndarray], package: Path) -> None:
    with pytest.raises(BudgetError, match="max_bytes 100"):
        ProgressiveModel(make_net(minilm_layer0), package, budget=Budget(max_bytes=100))
