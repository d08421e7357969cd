"""The README's snippets run as written, against a real small model (MiniLM's first layer) in a temp folder.

Python blocks run unchanged; the setup provides what they name: `model.safetensors` in the working folder and
`pieces`, the package's bytes in pieces. Shell blocks run line by line through the installed `bitladder`;
the lines listed in `SKIPPED` are not run, for the reason given there, and any other line fails the test, so
that a new snippet cannot go unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent

RUN = ("bitladder encode", "bitladder inspect", "bitladder decode", "bitladder diff", "bitladder patch")
SKIPPED = {
    "make demo": "creates the virtualenv and streams MiniLM over an emulated link for minutes (`make demo` itself)",
    "make test": "runs the whole test suite, this test included",
    "bitladder serve": "a long-running server on fixed port 8000 (tests/delivery/test_commands.py serves on free ports)",
    "bitladder push": "needs the server of the `serve` line (tests/delivery/test_commands.py pushes to a real one)",
    "bitladder fetch": "needs the server of the `serve` line (tests/delivery/test_commands.py fetches from a real one)",
    "bitladder eval": "runs for minutes on MiniLM (tests/eval cover the workflow)",
}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced block in `language`."""
    text = README.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(2))
            for match in FENCE.finditer(text) if match.group(1) == language]


def commands(block: str) -> Iterator[str]:
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            yield command


@pytest.fixture
def folder(tmp_path: Path, minilm_layer0: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding `model.safetensors`: MiniLM's embeddings and first layer, real weights."""
    from safetensors.numpy import save_file

    save_file(minilm_layer0, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    rng = np.random.default_rng(0)
    tuned = {name: (array + rng.laplace(0, 1e-4, array.shape)).astype(array.dtype) if "attention" in name else array
             for name, array in minilm_layer0.items()}
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Pieces:
    """The bytes of `model.blad` in pieces of 64 KiB, read when iterated (the snippet writes the file first)."""

    def __iter__(self) -> Iterator[bytes]:
        data = Path("model.blad").read_bytes()
        return iter([data[start:start + 65536] for start in range(0, len(data), 65536)])


def test_readme_has_the_snippets_this_test_checks() -> None:
    assert len(blocks("python")) == 1
    lines = [command for _, block in blocks("sh") for command in commands(block)]
    assert sum(line.startswith(RUN) for line in lines) == 11
    assert all(line.startswith(RUN) or line.startswith(tuple(SKIPPED)) for line in lines), lines


@pytest.mark.parametrize(("line", "code"), blocks("python"), ids=[f"README.md:{n}" for n, _ in blocks("python")])
def test_python_snippet(folder: Path, minilm_layer0: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str],
                        line: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": "__readme__", "pieces": Pieces()}
    exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    tensors = namespace["tensors"]
    assert isinstance(tensors, dict) and tensors.keys() == minilm_layer0.keys()
    for name, array in minilm_layer0.items():  # "name -> numpy array, source dtype", and exact at the last rung
        assert tensors[name].dtype == array.dtype and tensors[name].tobytes() == array.tobytes(), name
    weights = namespace["weights"]
    query = minilm_layer0["encoder.layer.0.attention.self.query.weight"]
    bits = namespace["bits"]  # the int8 rung, raw: float32 tensors as their uint32 bit patterns
    assert isinstance(bits, dict) and bits["encoder.layer.0.attention.self.query.weight"].dtype == np.uint32
    int8 = bits["encoder.layer.0.attention.self.query.weight"].view(np.float32)
    assert int8.tobytes() != query.tobytes() and np.abs(int8 - query).max() <= np.abs(query).max() / 127
    assert isinstance(weights, np.ndarray) and weights.dtype == np.float32 and weights.shape == query.shape
    assert weights.tobytes() == query.tobytes()  # the stream was fed to its end: the exact rung
    printed = capsys.readouterr().out.splitlines()
    assert "encoder.layer.0.attention.self.query.weight int8" in printed
    assert "encoder.layer.0.attention.self.query.weight exact" in printed


@pytest.mark.parametrize(("line", "block"), blocks("sh"), ids=[f"README.md:{n}" for n, _ in blocks("sh")])
def test_shell_snippet(folder: Path, line: int, block: str) -> None:
    runnable = [command for command in commands(block) if command.startswith(RUN)]
    if not runnable:
        pytest.skip("; ".join(f"{c!r}: {reason}" for c in commands(block)
                              for prefix, reason in SKIPPED.items() if c.startswith(prefix)))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in runnable:
        result = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, f"README.md:{line}: {command}\n{result.stdout}\n{result.stderr}"
    if any(command.startswith("bitladder patch") for command in runnable):
        _check_patched(folder)
    else:
        _check_decoded(folder)


def _check_patched(folder: Path) -> None:
    """`diff` then `patch` gave the tuned model bit for bit."""
    from safetensors.numpy import load_file

    tuned, patched = (load_file(str(folder / f"{name}.safetensors")) for name in ("tuned", "new"))
    assert patched.keys() == tuned.keys() and all(patched[k].tobytes() == tuned[k].tobytes() for k in tuned)


def _check_decoded(folder: Path) -> None:
    """`decode` wrote the source bit for bit (metadata kept), and `--rung int8` the int8 model."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    source, exact, int8 = (load_file(str(folder / f"{name}.safetensors")) for name in ("source", "model", "int8"))
    assert exact.keys() == source.keys() and all(exact[k].tobytes() == source[k].tobytes() for k in source)
    with safe_open(str(folder / "model.safetensors"), "np") as handle:
        assert handle.metadata() == {"format": "pt"}
    weight = "encoder.layer.0.attention.self.query.weight"
    assert int8[weight].dtype == np.float32 and int8[weight].tobytes() != source[weight].tobytes()
    assert np.abs(int8[weight] - source[weight]).max() <= np.abs(source[weight]).max() / 127
