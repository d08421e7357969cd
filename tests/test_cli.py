"""The command line end to end, in a subprocess-free way: `main(argv)` with real files."""

import numpy as np
import pytest

from bitladder.cli import main
from bitladder.sources import write_safetensors


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"encoder.weight": ("F32", rng.normal(0, 0.02, (128, 96)).astype(np.float32)),
               "encoder.bias": ("F32", rng.normal(0, 0.02, 128).astype(np.float32)),
               "head.weight": ("F16", rng.normal(0, 0.02, (64, 128)).astype(np.float16))}
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors, {"format": "pt"})
    return path


def test_encode_inspect_decode(model_file, tmp_path, capsys):
    package = tmp_path / "model.blad"
    assert main(["encode", str(model_file), "-o", str(package), "--ladder", "int4,int8,exact", "--model-id", "demo"]) == 0
    assert main(["inspect", str(package)]) == 0
    shown = capsys.readouterr().out
    for text in ("demo", "int4", "int8", "exact", "% of source", "F32 x2", "F16 x1", "sha256:"):
        assert text in shown
    out = tmp_path / "out.safetensors"
    assert main(["decode", str(package), "-o", str(out)]) == 0
    assert out.read_bytes() == model_file.read_bytes()
    assert main(["decode", str(package), "-o", str(tmp_path / "int4.safetensors"), "--rung", "int4"]) == 0
    assert (tmp_path / "int4.safetensors").stat().st_size == model_file.stat().st_size


def test_errors_are_one_line_and_exit_2(model_file, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.blad")]) == 2
    (tmp_path / "bad.blad").write_bytes(b"not a package at all, sorry, not even close")
    assert main(["decode", str(tmp_path / "bad.blad"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert main(["encode", str(model_file), "-o", str(tmp_path / "m.blad"), "--ladder", "int9"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "2..8" in err


def test_unknown_rung_name(model_file, tmp_path, capsys):
    package = tmp_path / "model.blad"
    main(["encode", str(model_file), "-o", str(package)])
    assert main(["decode", str(package), "-o", str(tmp_path / "x.safetensors"), "--rung", "fp8"]) == 2
    assert "no rung named 'fp8'" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_from_its_wheel_folder(minilm_path, tmp_path):
    package = tmp_path / "minilm.blad"
    assert main(["encode", str(minilm_path.parent), "-o", str(package)]) == 0
    assert main(["decode", str(package), "-o", str(tmp_path / "out.safetensors")]) == 0
    assert (tmp_path / "out.safetensors").read_bytes() == minilm_path.read_bytes()
