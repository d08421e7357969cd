"""Model files in and out: safetensors (single, sharded), PyTorch state dicts, real models in three dtypes."""

import json
import struct

import numpy as np
import pytest

import bitladder
from bitladder import SourceError, UnsupportedDtypeError
from bitladder.sources import load_source, write_safetensors

torch = pytest.importorskip("torch")


def _roundtrip(source_path, tmp_path, ladder="int8,exact"):
    package = tmp_path / "model.blad"
    bitladder.encode(source_path, package, ladder=ladder)
    return load_source(source_path), bitladder.open(package)


def _assert_bit_exact(model, package):
    decoded = package.decode()
    assert list(decoded) == list(model.tensors)
    for name, tensor in model.tensors.items():
        assert decoded[name].shape == tensor.shape
        assert decoded[name].tobytes() == tensor.data.tobytes(), name
    assert [t.dtype for t in package.manifest.tensors] == [t.dtype for t in model.tensors.values()]


def test_safetensors_round_trip_keeps_names_order_and_metadata(tmp_path):
    arrays = {"b": ("F32", np.arange(6000, dtype=np.float32).reshape(60, 100) / 7), "a": ("I64", np.arange(3))}
    write_safetensors(tmp_path / "m.safetensors", arrays, {"format": "pt", "note": "kept"})
    model, package = _roundtrip(tmp_path / "m.safetensors", tmp_path)
    assert list(model.tensors) == ["b", "a"] and model.metadata == {"format": "pt", "note": "kept"}
    _assert_bit_exact(model, package)
    assert package.manifest.source["metadata"] == {"format": "pt", "note": "kept"}


def test_sharded_folder_with_index(tmp_path):
    rng = np.random.default_rng(1)
    shards = {"model-00001-of-00002.safetensors": {"x.weight": rng.normal(size=(64, 80)).astype(np.float32)},
              "model-00002-of-00002.safetensors": {"y.weight": rng.normal(size=(80, 64)).astype(np.float16)}}
    weight_map = {}
    for file, tensors in shards.items():
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
        write_safetensors(tmp_path / file, {n: (dtype[a.dtype], a) for n, a in tensors.items()})
        weight_map.update({n: file for n in tensors})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model, package = _roundtrip(tmp_path, tmp_path, ladder="int4,int8,exact")
    assert list(model.tensors) == ["x.weight", "y.weight"]
    _assert_bit_exact(model, package)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ladder", ["int8,exact", "int4,int8,bf16,exact", "fp16,exact"])
def test_real_models_in_three_dtypes_come_back_bit_exact(minilm_path, mobilenet_path, tmp_path, dtype, ladder):
    from safetensors.torch import load_file

    for name, state in (("minilm", load_file(minilm_path)), ("mobilenet", torch.load(mobilenet_path, weights_only=True))):
        cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        path = tmp_path / f"{name}.pt"
        torch.save(cast, path)
        model, package = _roundtrip(path, tmp_path, ladder)
        _assert_bit_exact(model, package)


def test_pytorch_files_are_loaded_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(3), "payload": _NotATensor()}, path)
    with pytest.raises(SourceError, match="weights-only"):
        load_source(path)


class _NotATensor:
    pass


def test_unsupported_dtypes_are_typed_errors(tmp_path):
    torch.save({"z": torch.ones(4, dtype=torch.complex64)}, tmp_path / "c.pt")
    with pytest.raises(UnsupportedDtypeError, match="complex64"):
        load_source(tmp_path / "c.pt")
    header = json.dumps({"z": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "f8.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    with pytest.raises(UnsupportedDtypeError, match="F8_E4M3"):
        load_source(tmp_path / "f8.safetensors")


_SHORT = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()


@pytest.mark.parametrize("blob, message", [
    (b"", "empty"),
    (b"\x05\x00", "too short"),
    (struct.pack("<Q", 1 << 40) + b"{}", "exceeds"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", len(_SHORT)) + _SHORT + bytes(8), "offsets"),
])
def test_malformed_safetensors(tmp_path, blob, message):
    (tmp_path / "bad.safetensors").write_bytes(blob)
    with pytest.raises(SourceError, match=message):
        load_source(tmp_path / "bad.safetensors")


def test_unknown_file_type(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(SourceError, match="unknown model file type"):
        load_source(tmp_path / "model.tflite")
    with pytest.raises(SourceError, match="no such file"):
        load_source(tmp_path / "missing.safetensors")
