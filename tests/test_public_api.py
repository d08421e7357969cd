"""The public surface: exports, dtypes of decoded tensors, typed errors for bad arguments, no ignored options."""

import subprocess
import sys
import types

import ml_dtypes
import numpy as np
import pytest

import bitladder


def test_exports_match_all():
    exported = {name for name in dir(bitladder)
                if not name.startswith("_") and not isinstance(getattr(bitladder, name), types.ModuleType)}
    assert set(bitladder.__all__) == exported


def test_every_error_is_a_bitladder_error():
    errors = [getattr(bitladder, n) for n in bitladder.__all__ if n.endswith("Error")]
    assert all(issubclass(e, bitladder.BitladderError) for e in errors)


def test_core_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import bitladder, bitladder.cli; "
            "from bitladder.sources import load_source; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


# -- decoded tensors come in their source dtype -------------------------------------------------------------

RAW = {np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16, np.dtype(ml_dtypes.bfloat16): np.uint16,
       np.dtype(np.bool_): np.uint8}


def _cast(arrays, dtype):
    """The real tensors' floats cast to `dtype` (to nearest even); the rest as they are."""
    return {name: a.astype(dtype) if a.dtype == np.float32 else a for name, a in arrays.items()}


@pytest.fixture(scope="module", params=[np.float32, np.float16, ml_dtypes.bfloat16],
                ids=["float32", "float16", "bfloat16"])
def model(request, minilm_layer0, tmp_path_factory):
    """(source arrays, package path) for MiniLM's first layer in one float dtype, plus a bool mask."""
    arrays = {**_cast(minilm_layer0, request.param), "mask": np.arange(24).reshape(4, 6) % 3 == 0}
    path = tmp_path_factory.mktemp("dtypes") / "m.blad"
    bitladder.encode(arrays, path, ladder="int8,exact", min_size=64)
    return arrays, path


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_decode_returns_the_source_dtype(model):
    arrays, path = model
    decoded = bitladder.open(path).decode()
    assert list(decoded) == list(arrays)
    for name, array in arrays.items():
        _same_bits(decoded[name], array)  # dtype and bits: float32 is float32, not its uint32 bit pattern
    assert decoded["embeddings.LayerNorm.weight"].dtype != np.uint32
    assert np.isclose(decoded["embeddings.LayerNorm.weight"].astype(np.float32).mean(),
                      arrays["embeddings.LayerNorm.weight"].astype(np.float32).mean())


def test_raw_gives_the_storage_bits(model):
    arrays, path = model
    raw = bitladder.open(path).decode(raw=True)
    for name, array in arrays.items():
        _same_bits(raw[name], array.view(RAW.get(array.dtype, array.dtype)))


def test_stream_decoder_tensors_come_in_the_source_dtype(model):
    arrays, path = model
    decoder = bitladder.StreamDecoder()
    data = path.read_bytes()
    for start in range(0, len(data), 7919):
        decoder.feed(data[start:start + 7919]).raise_for_error()
    decoder.close()
    tensors, raw = decoder.tensors(), decoder.tensors(raw=True)
    for name, array in arrays.items():
        _same_bits(decoder.tensor(name), array)
        _same_bits(tensors[name], array)
        _same_bits(raw[name], array.view(RAW.get(array.dtype, array.dtype)))
        _same_bits(decoder.tensor(name, raw=True), raw[name])


def test_a_lower_rung_is_in_the_source_dtype_too(model):
    arrays, path = model
    package = bitladder.open(path)
    by_name, by_index = package.decode("int8"), package.decode(0)
    weight = "encoder.layer.0.attention.self.query.weight"
    _same_bits(by_name[weight], by_index[weight])
    assert by_name[weight].dtype == arrays[weight].dtype
    assert by_name[weight].tobytes() != arrays[weight].tobytes()  # int8 is lossy ...
    reference = arrays[weight].astype(np.float32)
    error = np.abs(by_name[weight].astype(np.float32) - reference).max()
    assert error <= np.abs(reference).max() / 127  # ... by at most one int8 step


# -- every failure is a BitladderError that names the valid choices ------------------------------------------

@pytest.fixture(scope="module")
def package_path(minilm_layer0, tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "m.blad"
    bitladder.encode(minilm_layer0, path, ladder="int4,int8,exact")
    return path


def test_unknown_rung_in_a_ladder_is_a_usage_error(tmp_path, minilm_layer0):
    with pytest.raises(bitladder.UsageError, match=r"int9.*int2\.\.int8, bf16, fp16, exact") as info:
        bitladder.encode(minilm_layer0, tmp_path / "m.blad", ladder="int9")
    assert isinstance(info.value, ValueError)
    with pytest.raises(bitladder.UsageError, match="more precise"):
        bitladder.encode(minilm_layer0, tmp_path / "m.blad", ladder="int8,int4")
    assert not (tmp_path / "m.blad").exists()


@pytest.mark.parametrize("rung", ["int9", 99, -1, 3, "INT8", 1.0, True], ids=repr)
def test_decode_of_an_unknown_rung_lists_the_rungs(package_path, rung):
    with pytest.raises(bitladder.UsageError, match=r"its rungs are 0 or 'int4', 1 or 'int8', 2 or 'exact'"):
        bitladder.open(package_path).decode(rung)


def test_decode_takes_a_rung_by_name(package_path):
    package = bitladder.open(package_path)
    for index, name in enumerate(["int4", "int8", "exact"]):
        by_name, by_index, by_numpy = package.decode(name), package.decode(index), package.decode(np.int64(index))
        assert all(by_name[k].tobytes() == by_index[k].tobytes() == by_numpy[k].tobytes() for k in by_index)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(package.decode("exact").values(),
                                                          package.decode().values(), strict=True))


def test_bad_threads_is_a_usage_error(package_path):
    with pytest.raises(bitladder.UsageError, match="threads"):
        bitladder.open(package_path).decode(threads=0)


def test_a_missing_package_is_a_typed_file_error(tmp_path):
    with pytest.raises(bitladder.MissingFileError, match="nope.blad") as info:
        bitladder.open(tmp_path / "nope.blad")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, bitladder.BitladderError)
    assert info.value.filename == str(tmp_path / "nope.blad")
    with pytest.raises(bitladder.FileAccessError, match="Is a directory"):
        bitladder.open(tmp_path)


def test_an_unknown_tensor_name_is_typed(package_path):
    decoder = bitladder.open(package_path).stream()
    with pytest.raises(bitladder.UnknownTensorError, match=r"no tensor 'nope'.*embeddings") as info:
        decoder.tensor("nope")
    assert isinstance(info.value, KeyError) and str(info.value).startswith("package")


def test_wait_takes_rungs_by_name_and_refuses_unknown_ones(package_path):
    torch = pytest.importorskip("torch")
    from bitladder.runtime.torch import ProgressiveModel

    class Layer(torch.nn.Module):
        def __init__(self, arrays):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(arrays["embeddings.LayerNorm.weight"].shape))

    module = torch.nn.Module()
    module.embeddings = torch.nn.Module()
    module.embeddings.LayerNorm = Layer(bitladder.open(package_path).decode())
    model = ProgressiveModel(module, package_path)
    try:
        assert model.wait("int8", timeout=30) and model.wait(0, timeout=30)
        for bad in ("bogus", 7):
            with pytest.raises(bitladder.UsageError, match=r"no rung .* its rungs are 0 or 'int4'") as info:
                model.wait(bad)
            assert isinstance(info.value, ValueError)
        assert model.wait("exact", timeout=30) and model.rung == 2
    finally:
        model.close()
    with pytest.raises(bitladder.UsageError, match="'incremental', 'atomic'"):
        ProgressiveModel(module, package_path, apply="lazy")  # type: ignore[arg-type]


# -- options are never silently ignored ---------------------------------------------------------------------

@pytest.mark.parametrize("option", [{"min_size": 10**9}, {"group_size": 64}, {"min_size": 4096}],
                         ids=["min_size", "group_size", "min_size-equal-to-the-ladder's"])
def test_options_given_with_a_ladder_object_are_refused(tmp_path, minilm_layer0, option):
    ladder = bitladder.Ladder.parse("int8,exact")
    with pytest.raises(bitladder.UsageError, match=f"{next(iter(option))}=.*Ladder object"):
        bitladder.encode(minilm_layer0, tmp_path / "m.blad", ladder=ladder, **option)
    assert not (tmp_path / "m.blad").exists()


def test_a_ladder_object_or_string_options_are_recorded(tmp_path, minilm_layer0):
    ladder = bitladder.Ladder.parse("int8,exact", group_size=64, min_size=10**9)
    manifest = bitladder.encode(minilm_layer0, tmp_path / "a.blad", ladder=ladder)
    assert manifest.ladder == ladder and manifest.ladder.min_size == 10**9
    manifest = bitladder.encode(minilm_layer0, tmp_path / "b.blad", ladder="int8,exact", group_size=64, min_size=10**9)
    assert manifest.ladder == ladder
    assert bitladder.open(tmp_path / "b.blad").manifest.ladder == ladder
