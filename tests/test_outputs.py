"""Output files are written whole or not at all; special files are written directly, never replaced."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bitladder import outputs
from bitladder.outputs import OutputError, check_output, output_file, write_safetensors_to


def test_replaces_a_regular_file_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with output_file(target) as out:
        out.write(b"new")
        assert target.read_bytes() == b"old"        # readers see the old file until the rename
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("anonymous", [True, False], ids=["O_TMPFILE", "named"])
def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        anonymous: bool) -> None:
    if not anonymous:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), output_file(target) as out:
        out.write(b"half")
        if not anonymous:
            assert len(os.listdir(tmp_path)) == 2   # the named temporary, beside the target
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_named_temporaries_are_unique_and_get_the_usual_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    target = tmp_path / "out.bin"
    with output_file(target) as first, output_file(target) as second:
        first.write(b"first")
        second.write(b"second")
        names = [n for n in os.listdir(tmp_path) if n.startswith(".out.bin.") and n.endswith(".tmp")]
        assert len(names) == 2
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_fifo_is_written_directly(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with output_file(fifo) as out:
        out.write(b"streamed")
    reader.join(timeout=10)
    assert got == [b"streamed"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_symlink_to_a_stream_stays_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with output_file(link) as out:
        out.write(b"gone")
    assert link.is_symlink() and os.listdir(tmp_path) == ["null"]


def test_bad_outputs_name_the_users_path(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=f"{tmp_path}/no/x.bin: folder {tmp_path}/no does not exist"):
        check_output(tmp_path / "no" / "x.bin")
    with pytest.raises(OutputError, match="it is a directory"):
        check_output(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output(tmp_path / "file" / "x.bin")
    assert isinstance(OutputError("x"), OSError)


def test_safetensors_from_values_or_bits(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    for array in (values, values.view(np.uint32)):                # a decoder may give either
        path = tmp_path / "w.safetensors"
        with output_file(path) as out:
            write_safetensors_to(out, {"w": ("F32", array), "h": ("F16", np.ones(4, np.float16))}, {"k": "v"})
        loaded = load_file(str(path))
        assert loaded["w"].tobytes() == values.tobytes() and loaded["h"].dtype == np.float16
    with pytest.raises(ValueError, match="F16 tensor came as float32"), output_file(tmp_path / "x") as out:
        write_safetensors_to(out, {"w": ("F16", values)})
    assert not (tmp_path / "x").exists()


def test_stdout_is_refused_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs.sys.stdout, "isatty", lambda: True)
    with pytest.raises(OutputError, match="terminal"):
        check_output("-")
