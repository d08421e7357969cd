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


def _entry(start, end):
    return {"dtype": "F32", "shape": [(end - start) // 4], "data_offsets": [start, end]}


def _raw(header, size):
    return struct.pack("<Q", len(header)) + header + bytes(size)


def _blob(header, size):
    return _raw(json.dumps(header).encode(), size)


_SHORT = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()


@pytest.mark.parametrize("blob, message", [
    (b"", "empty"),
    (b"\x05\x00", "too short"),
    (struct.pack("<Q", 1 << 40) + b"{}", "exceeds"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", len(_SHORT)) + _SHORT + bytes(8), "offsets"),
    (_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16), "belong to no tensor|end at byte"),
    (_blob({"a": _entry(0, 8), "b": _entry(4, 12)}, 12), "overlap"),
    (_blob({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, 0), "offsets"),
    (_blob({"w": {"dtype": "F32", "shape": [-1, -2], "data_offsets": [0, 8]}}, 8), "not an integer"),
    (_blob({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, 8), "not an integer"),
    (_blob({"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, 8), "not a string"),
    (_blob({"__metadata__": {"n": 1}, "w": _entry(0, 8)}, 8), "strings to strings"),
    (_raw(b'{"w":' + json.dumps(_entry(0, 8)).encode() + b',"w":' + json.dumps(_entry(0, 8)).encode() + b"}", 8),
     "appears twice"),
    (_raw(b'{"w":' + b"[" * 5000 + b"]" * 5000 + b"}", 0), "nested"),
    (_raw(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}', 8), "not valid JSON"),
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


def _folder(tmp_path, weight_map):
    write_safetensors(tmp_path / "a.safetensors", {"x": ("F32", np.ones(4, np.float32))})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tmp_path


@pytest.mark.parametrize("weight_map, message", [
    ({"x": "missing.safetensors"}, "cannot open"),
    ({"x": "../a.safetensors"}, "not a file in"),
    ({"x": "a.safetensors", "y": "a.safetensors"}, "in no shard"),
    ({}, "no .safetensors file"),
    ({"x": 3}, "no weight_map"),
])
def test_malformed_index(tmp_path, weight_map, message):
    with pytest.raises(SourceError, match=message):
        load_source(_folder(tmp_path, weight_map))


@pytest.mark.parametrize("obj, message", [
    ({"w": torch.ones(1).expand(2**40)}, "more than the"),
    ({"w": torch.ones(3).to_sparse()}, "not a dense CPU tensor"),
    ({"w": torch.empty(3, device="meta")}, "not a dense CPU tensor"),
    ({1: torch.ones(3)}, "not a string"),
    ({"state_dict": {"state_dict": {"state_dict": {"state_dict": {"state_dict": {"state_dict": {"state_dict": {
        "state_dict": {"state_dict": {"w": torch.ones(3)}}}}}}}}}}, "not a state dict"),
])
def test_malformed_state_dicts(tmp_path, obj, message):
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(SourceError, match=message):
        load_source(tmp_path / "bad.pt")


def test_legacy_pickle_declaring_more_storage_than_the_file(tmp_path):
    import io
    import pickletools

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(300)}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    ops = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data[_pickle_end(data, 3):])]
    start = _pickle_end(data, 3) + next(pos for name, arg, pos in ops if name == "BININT2" and arg == 300)
    bad = data[:start] + b"J" + struct.pack("<i", 2**30) + data[start + 3:]  # numel 300 -> 2**30 (4 GiB of floats)
    (tmp_path / "bad.pt").write_bytes(bad)
    with pytest.raises(SourceError, match="declares"):
        load_source(tmp_path / "bad.pt")


def _pickle_end(data, count):
    import io
    import pickletools

    handle = io.BytesIO(data)
    for _ in range(count):
        for _ in pickletools.genops(handle):
            pass
    return handle.tell()
