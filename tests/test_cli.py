"""The command line end to end: `main(argv)` in process, and `python -m bitladder` in a subprocess for what a
user sees (one line on stderr, no traceback, exit 2 on an error and 130 on Ctrl-C, no partial or temporary file)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bitladder
from bitladder.cli import main
from bitladder.delivery.server import create_app
from bitladder.sources import load_source, write_safetensors

from .delivery.conftest import ServerThread, free_port

TOKEN = "s3cret"


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    tensors = {"encoder.weight": ("F32", rng.normal(0, 0.02, (128, 96)).astype(np.float32)),
               "encoder.bias": ("F32", rng.normal(0, 0.02, 128).astype(np.float32)),
               "head.weight": ("F16", rng.normal(0, 0.02, (64, 128)).astype(np.float16))}
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors, {"format": "pt"})
    return path


@pytest.fixture(scope="session")
def minilm_package(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM (22.7M parameters, fp32) encoded once, int8,exact."""
    return _encoded(minilm_path, tmp_path_factory.mktemp("minilm") / "minilm.blad")


def _encoded(source: Path, package: Path) -> Path:
    bitladder.encode(source, package, ladder="int8,exact")
    return package


def bitladder_cli(*args: str | Path, cwd: Path | None = None, python: tuple[str, ...] = ("-m", "bitladder"),
                  timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "BITLADDER_TOKEN"}
    return subprocess.run([sys.executable, *python, *map(str, args)], capture_output=True, cwd=cwd, env=env,
                          timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess[bytes], code: int = 2) -> str:
    """The single stderr line of a failed command (asserting the exit code and that nothing else was printed)."""
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    assert result.returncode == code, (result.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


class Counting:
    """ASGI middleware that records (method, path) of every request, to show what a command sent."""

    def __init__(self, app: Any) -> None:
        self.app, self.requests = app, list[tuple[str, str]]()
        self.first = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
            self.first.set()
        await self.app(scope, receive, send)


@pytest.fixture
def served(tmp_path: Path, model_file: Path) -> Iterator[tuple[ServerThread, Counting, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    bitladder.encode(model_file, root / "model.blad", ladder="int8,exact")
    app = Counting(create_app(root, token=TOKEN))
    server = ServerThread(app).start()
    yield server, app, root
    server.stop()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def maps(proc: subprocess.Popen[bytes], name: str) -> bool:
    """Whether the process has memory-mapped a file called `name` (it has started reading it)."""
    try:
        return name in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


# In process: main(argv)

def test_encode_inspect_decode(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    assert not [name for name in listing(tmp_path) if name.endswith(".tmp")]


def test_inspect_json_and_tensors(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "model.blad"
    manifest = bitladder.encode(model_file, package, ladder="int4,int8,exact")
    capsys.readouterr()
    assert main(["inspect", str(package), "--json", "--tensors"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["rungs"]] == ["int4", "int8", "exact"]
    assert [r["bytes"] for r in report["rungs"]] == manifest.rung_bytes()
    assert report["package_bytes"] == package.stat().st_size
    assert report["source"]["dtypes"] == {"F16": 1, "F32": 2}
    by_name = {t["name"]: t for t in report["tensors"]}
    assert by_name["encoder.bias"]["exact_at"] == "int4"          # under --min-size: exact in the first rung
    assert by_name["encoder.weight"]["exact_at"] == "exact"
    assert by_name["head.weight"]["shape"] == [64, 128]
    assert sum(sum(t["rung_bytes"].values()) for t in report["tensors"]) == sum(manifest.rung_bytes())
    assert main(["inspect", str(package), "--tensors"]) == 0
    shown = capsys.readouterr().out
    assert "encoder.weight" in shown and "128x96" in shown and "exact at" in shown


def test_inspect_shows_weights_lineage_and_quality(model_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    old = bitladder.encode(model_file, tmp_path / "v1.blad", ladder="int4,int8,exact", model_id="m")
    new = bitladder.open(tmp_path / "v1.blad").decode()
    new["encoder.weight"] = new["encoder.weight"] * np.float32(1.5)
    bitladder.api.diff(tmp_path / "v1.blad", new, tmp_path / "d.blad", version="2")
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "v1.blad"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == old.weights and report["parent"] is None
    assert [r["quality_db"] for r in report["rungs"]] == list(old.quality) and old.quality[0] < old.quality[1]
    assert main(["inspect", str(tmp_path / "v1.blad")]) == 0
    shown = capsys.readouterr().out
    assert f"weights    {old.weights}" in shown and "full package (no parent)" in shown and "SQNR dB" in shown
    assert f"{old.quality[1]:.1f}" in shown
    assert main(["inspect", str(tmp_path / "d.blad"), "--json"]) == 0
    parent = json.loads(capsys.readouterr().out)["parent"]
    assert parent == {"id": "m", "version": "1", "weights": old.weights, "rung": "exact"}
    assert main(["inspect", str(tmp_path / "d.blad")]) == 0
    assert "delta from 'm' version '1'" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing.blad")]) == 2
    (tmp_path / "bad.blad").write_bytes(b"not a package at all, sorry, not even close")
    assert main(["decode", str(tmp_path / "bad.blad"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert main(["encode", str(model_file), "-o", str(tmp_path / "m.blad"), "--ladder", "int9"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "2..8" in err


def test_unknown_rung_name(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "model.blad"
    main(["encode", str(model_file), "-o", str(package)])
    assert main(["decode", str(package), "-o", str(tmp_path / "x.safetensors"), "--rung", "fp8"]) == 2
    assert "no rung 'fp8'" in (err := capsys.readouterr().err) and "'int8'" in err   # it lists the rungs


def test_messages_keep_their_brackets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "[weights].blad").write_bytes(b"")
    assert main(["inspect", str(tmp_path / "[weights].blad")]) == 2
    assert "[weights].blad" in capsys.readouterr().err   # rich would take [weights] for markup


# In a subprocess: what a user sees

def test_version_and_help() -> None:
    result = bitladder_cli("--version")
    assert result.returncode == 0 and result.stdout.decode().strip() == f"bitladder {bitladder.__version__}"
    top = bitladder_cli("--help").stdout.decode()
    assert "The only module" not in top and "encode" in top and "fetch" in top
    encode = bitladder_cli("encode", "--help").stdout.decode()
    assert "int2..int8, bf16, fp16, exact" in encode
    serve = " ".join(bitladder_cli("serve", "--help").stdout.decode().split())
    for text in ("folder of .blad packages", "address to listen on", "TCP port", "BITLADDER_TOKEN"):
        assert text in serve, text
    evaluate = " ".join(bitladder_cli("eval", "--help").stdout.decode().split())
    for text in ("int2..int8", "swap a whole rung at once", "semicolon list of ladders", "comma list of links"):
        assert text in evaluate, text


def test_bad_options_are_one_line(model_file: Path, tmp_path: Path) -> None:
    line = one_line_error(bitladder_cli("encode", model_file, "-o", tmp_path / "x.blad", "--ladder", "int8,,exact"))
    assert "empty rung" in line and "int2..int8" in line
    line = one_line_error(bitladder_cli("serve", tmp_path, "--port", "99999"))
    assert "--port 99999" in line and "0..65535" in line
    line = one_line_error(bitladder_cli("fetch", "http://127.0.0.1:9/m.blad", "-o", tmp_path / "o.safetensors",
                                        "--profile", "cell-5m", "--rtt", "30ms"))
    assert "--rtt" in line and "--rate" in line
    line = one_line_error(bitladder_cli("fetch", "http://127.0.0.1:9/m.blad", "-o", tmp_path / "o.safetensors",
                                        "--rtt", "30ms"))
    assert "--rtt goes with --rate or --trace" in line
    assert listing(tmp_path) == {"model.safetensors"}


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_line_error(bitladder_cli("serve", tmp_path, "--port", str(port)))
    assert f"127.0.0.1:{port}" in line


def test_eval_without_torch_names_the_extra(model_file: Path) -> None:
    hide_torch = ("-c", "import sys; sys.modules['torch'] = None; from bitladder.cli import main; sys.exit(main())")
    line = one_line_error(bitladder_cli("eval", "--model", model_file, python=hide_torch))
    assert "torch" in line and "pip install 'bitladder[eval]'" in line


def test_encode_to_a_missing_folder_names_the_path(model_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.blad"
    line = one_line_error(bitladder_cli("encode", model_file, "-o", target))
    assert str(target) in line and "tmp" not in line.replace(str(tmp_path), "")


def test_decode_into_a_folder_leaves_nothing(model_file: Path, tmp_path: Path) -> None:
    package = _encoded(model_file, tmp_path / "model.blad")
    (tmp_path / "somedir").mkdir()
    line = one_line_error(bitladder_cli("decode", package, "-o", "somedir", cwd=tmp_path))
    assert "somedir" in line and "directory" in line and ".tmp" not in line
    assert listing(tmp_path) == {"model.safetensors", "model.blad", "somedir"}
    assert not list((tmp_path / "somedir").iterdir())


def test_decode_to_stdout_and_through_a_symlink_to_it(model_file: Path, tmp_path: Path) -> None:
    package = _encoded(model_file, tmp_path / "model.blad")
    result = bitladder_cli("decode", package, "-o", "-")
    assert result.returncode == 0 and result.stdout == model_file.read_bytes()
    link = tmp_path / "stdout"
    link.symlink_to("/dev/stdout")
    result = bitladder_cli("decode", package, "-o", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"     # not replaced by a regular file
    assert result.stdout == model_file.read_bytes()
    assert listing(tmp_path) == {"model.safetensors", "model.blad", "stdout"}


def test_decode_through_a_symlink_replaces_its_target(model_file: Path, tmp_path: Path) -> None:
    package = _encoded(model_file, tmp_path / "model.blad")
    (tmp_path / "real.safetensors").write_bytes(b"old")
    (tmp_path / "link.safetensors").symlink_to("real.safetensors")
    assert bitladder_cli("decode", package, "-o", tmp_path / "link.safetensors").returncode == 0
    assert (tmp_path / "link.safetensors").is_symlink()
    assert (tmp_path / "real.safetensors").read_bytes() == model_file.read_bytes()


def test_decode_temporaries_are_unique(model_file: Path, tmp_path: Path) -> None:
    package = _encoded(model_file, tmp_path / "model.blad")
    (tmp_path / ".out.safetensors.tmp").mkdir()      # the one fixed temporary name of old: taken
    result = bitladder_cli("decode", package, "-o", tmp_path / "out.safetensors")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.safetensors").read_bytes() == model_file.read_bytes()
    assert listing(tmp_path) == {"model.safetensors", "model.blad", "out.safetensors", ".out.safetensors.tmp"}


@pytest.mark.slow
def test_concurrent_decodes_to_one_output(minilm_package: Path, minilm_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    env = {k: v for k, v in os.environ.items() if k != "BITLADDER_TOKEN"}
    runs = [subprocess.Popen([sys.executable, "-m", "bitladder", "decode", str(minilm_package), "-o", str(out),
                              "--rung", rung], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for rung in ("int8", "exact")]
    results = [(run.wait(timeout=120), run.stderr.read().decode() if run.stderr else "") for run in runs]
    assert all(code == 0 for code, _ in results), results
    data = out.read_bytes()
    assert len(data) == minilm_path.stat().st_size  # one whole output, never a mix or a half
    assert listing(tmp_path) == {"out.safetensors"}


@pytest.mark.slow
def test_ctrl_c_during_encode(minilm_path: Path, tmp_path: Path) -> None:
    output = tmp_path / "minilm.blad"
    output.write_bytes(b"the previous package")
    proc = subprocess.Popen([sys.executable, "-m", "bitladder", "encode", str(minilm_path.parent), "-o", str(output),
                             "--ladder", "int4,int8,bf16,exact"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: maps(proc, minilm_path.name) or proc.poll() is not None, "encode to read the model")
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, b"", err), code=130)
    assert "interrupted" in line
    assert listing(tmp_path) == {"minilm.blad"} and output.read_bytes() == b"the previous package"


@pytest.mark.slow
def test_kill_during_decode_leaves_no_temporary(minilm_package: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bitladder", "decode", str(minilm_package), "-o",
                             str(tmp_path / "out.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: maps(proc, minilm_package.name) or proc.poll() is not None, "decode to open the package")
    time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=30)
    assert listing(tmp_path) <= {"out.safetensors"}
    if (tmp_path / "out.safetensors").exists():  # the rename had happened (the process may not have exited): whole
        decoded = load_source(tmp_path / "out.safetensors")
        assert len(decoded.tensors) == len(bitladder.open(minilm_package).manifest.tensors)


@pytest.mark.slow
def test_ctrl_c_during_fetch(minilm_package: Path, tmp_path: Path) -> None:
    app = Counting(create_app(minilm_package.parent))
    server = ServerThread(app).start()
    try:
        output = tmp_path / "out.safetensors"
        proc = subprocess.Popen([sys.executable, "-m", "bitladder", "fetch", f"{server.url}/models/minilm.blad",
                                 "-o", str(output), "--rate", "20mbit"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert app.first.wait(timeout=60), "fetch sent no request"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert "interrupted" in one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, b"", err), 130)
    assert listing(tmp_path) == set()


@pytest.mark.slow
def test_fetch_prints_each_rung_as_it_verifies(minilm_package: Path, minilm_path: Path, tmp_path: Path) -> None:
    server = ServerThread(create_app(minilm_package.parent)).start()
    try:
        result = bitladder_cli("fetch", f"{server.url}/models/minilm.blad", "-o", tmp_path / "m.safetensors",
                               "--rate", "300mbit")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    shown = re.findall(r"^rung (\w+): verified at byte [\d,]+, ([\d.]+) s$", result.stderr.decode(), re.MULTILINE)
    times = {name: float(seconds) for name, seconds in shown}
    assert list(times) == ["int8", "exact"] and times["int8"] < times["exact"]  # int8 printed when it verified
    assert (tmp_path / "m.safetensors").read_bytes() == minilm_path.read_bytes()


def test_fetch_checks_the_output_before_downloading(served: tuple[ServerThread, Counting, Path],
                                                    tmp_path: Path) -> None:
    server, app, _ = served
    target = tmp_path / "nonexistent" / "d" / "out.safetensors"
    line = one_line_error(bitladder_cli("fetch", f"{server.url}/models/model.blad", "-o", target))
    assert str(target) in line and app.requests == []


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/models/model.blad", "http:///models/m.blad"])
def test_fetch_does_not_retry_a_bad_url(url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    line = one_line_error(bitladder_cli("fetch", url, "-o", tmp_path / "o.safetensors"))
    assert url in line and "attempts" not in line
    assert time.monotonic() - started < 30
    assert listing(tmp_path) == set()


def test_fetch_does_not_retry_a_404(served: tuple[ServerThread, Counting, Path], tmp_path: Path) -> None:
    server, app, _ = served
    line = one_line_error(bitladder_cli("fetch", f"{server.url}/models/none.blad", "-o", tmp_path / "o.safetensors"))
    assert "404" in line and len(app.requests) == 1


def test_push_to_a_dead_port(model_file: Path, tmp_path: Path) -> None:
    package = _encoded(model_file, tmp_path / "x.blad")
    (tmp_path / "token").write_text(TOKEN)
    url = f"http://127.0.0.1:{free_port()}/models/x.blad"
    line = one_line_error(bitladder_cli("push", package, url, "--token-file", tmp_path / "token"))
    assert url in line and "refused" in line.lower()


def test_push_into_a_folder_url(served: tuple[ServerThread, Counting, Path], model_file: Path, tmp_path: Path) -> None:
    server, app, root = served
    package = _encoded(model_file, tmp_path / "x.blad")
    (tmp_path / "token").write_text(TOKEN)
    result = bitladder_cli("push", package, f"{server.url}/models/", "--token-file", tmp_path / "token")
    assert result.returncode == 0, result.stderr
    assert app.requests == [("PUT", "/models/x.blad")]
    assert (root / "x.blad").read_bytes() == package.read_bytes()
    assert f"published {server.url}/models/x.blad" in result.stderr.decode()


def test_push_refusals_name_status_and_url(served: tuple[ServerThread, Counting, Path], model_file: Path,
                                           tmp_path: Path) -> None:
    server, app, _ = served
    package = _encoded(model_file, tmp_path / "x.blad")
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "wrong").write_text("not the token")
    line = one_line_error(bitladder_cli("push", package, f"{server.url}/elsewhere/", "--token-file", tmp_path / "token"))
    assert f"{server.url}/elsewhere/x.blad" in line and "404" in line
    line = one_line_error(bitladder_cli("push", package, server.url, "--token-file", tmp_path / "wrong"))
    assert f"{server.url}/models/x.blad" in line and "401" in line
    requests = len(app.requests)
    line = one_line_error(bitladder_cli("push", tmp_path / "missing.blad", server.url, "--token-file", tmp_path / "token"))
    assert "missing.blad" in line and len(app.requests) == requests      # no request for a missing file


# Signatures and trust

def _metadata(path: Path) -> dict[str, str]:
    length = int.from_bytes(path.read_bytes()[:8], "little")
    return json.loads(path.read_bytes()[8:8 + length]).get("__metadata__", {})


def test_keygen_sign_inspect_decode(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-o", str(tmp_path / "publisher")]) == 0
    shown = capsys.readouterr().out
    fingerprint = re.search(r"ed25519:[0-9a-f]{16}", shown)
    assert fingerprint is not None and "publisher.key" in shown and "publisher.pub" in shown
    key, pub = tmp_path / "publisher.key", tmp_path / "publisher.pub"
    assert main(["keygen", "-o", str(tmp_path / "publisher")]) == 2 and "overwrite" in capsys.readouterr().err
    package = tmp_path / "m.blad"
    assert main(["encode", str(model_file), "-o", str(package), "--sign", str(key), "--model-id", "m"]) == 0
    assert f"signed by {fingerprint[0]}" in capsys.readouterr().err
    assert main(["inspect", str(package), "--trust", str(pub)]) == 0
    assert f"signature  {fingerprint[0]}, verified against --trust" in capsys.readouterr().out
    assert main(["inspect", str(package)]) == 0
    assert "not checked" in capsys.readouterr().out
    assert main(["inspect", str(package), "--json", "--trust", str(pub)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["signed"], report["key"], report["trusted"]) == (True, fingerprint[0], True)
    plain = tmp_path / "plain.safetensors"
    assert main(["decode", str(package), "-o", str(plain)]) == 0
    assert plain.read_bytes() == model_file.read_bytes()  # without --trust: the source bit for bit
    trusted = tmp_path / "trusted.safetensors"
    assert main(["decode", str(package), "-o", str(trusted), "--trust", str(pub)]) == 0
    assert _metadata(trusted) == {"format": "pt", "bitladder.model_id": "m", "bitladder.model_version": "1",
                                  "bitladder.signer": fingerprint[0]}
    source = load_source(model_file)
    decoded = load_source(trusted)
    assert all(np.asarray(decoded.tensors[n].data).tobytes() == np.asarray(t.data).tobytes()
               for n, t in source.tensors.items())


def test_untrusted_or_unsigned_packages_write_nothing(model_file: Path, tmp_path: Path) -> None:
    for name in ("publisher", "other"):
        assert main(["keygen", "-o", str(tmp_path / name)]) == 0
    signed, unsigned = tmp_path / "signed.blad", tmp_path / "unsigned.blad"
    assert main(["encode", str(model_file), "-o", str(signed), "--sign", str(tmp_path / "publisher.key")]) == 0
    assert main(["encode", str(model_file), "-o", str(unsigned)]) == 0
    out = tmp_path / "out.safetensors"
    line = one_line_error(bitladder_cli("decode", signed, "-o", out, "--trust", tmp_path / "other.pub"))
    assert "not trusted" in line and "signed.blad" in line
    line = one_line_error(bitladder_cli("decode", unsigned, "-o", out, "--trust", tmp_path / "publisher.pub"))
    assert "not signed" in line
    assert main(["inspect", str(signed), "--trust", str(tmp_path / "other.pub")]) == 2
    # Key rotation: either key of the set is accepted.
    assert main(["decode", str(signed), "-o", str(out), "--trust", str(tmp_path / "other.pub"),
                 "--trust", str(tmp_path / "publisher.pub")]) == 0
    assert not [p for p in listing(tmp_path) if p.endswith(".tmp")]


def test_an_older_version_is_not_written_over_a_newer_one(model_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-o", str(tmp_path / "k")]) == 0
    trust = ["--trust", str(tmp_path / "k.pub")]
    for version in ("1.9", "1.10"):
        assert main(["encode", str(model_file), "-o", str(tmp_path / f"v{version}.blad"), "--model-id", "m",
                     "--model-version", version, "--sign", str(tmp_path / "k.key")]) == 0
    out = tmp_path / "out.safetensors"
    assert main(["decode", str(tmp_path / "v1.10.blad"), "-o", str(out), *trust]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "v1.9.blad"), "-o", str(out), *trust]) == 2
    assert "version '1.9' is older than version '1.10'" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["decode", str(tmp_path / "v1.9.blad"), "-o", str(out)]) == 2  # the record counts without --trust too
    assert main(["decode", str(tmp_path / "v1.9.blad"), "-o", str(out), *trust, "--allow-downgrade"]) == 0
    assert _metadata(out)["bitladder.model_version"] == "1.9"


def test_fetch_with_trust(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("publisher", "other"):
        assert main(["keygen", "-o", str(tmp_path / name)]) == 0
    root = tmp_path / "served"
    root.mkdir()
    for version in ("1", "2"):
        assert main(["encode", str(model_file), "-o", str(root / f"v{version}.blad"), "--model-id", "m",
                     "--model-version", version, "--sign", str(tmp_path / "publisher.key")]) == 0
    server = ServerThread(create_app(root)).start()
    try:
        out = tmp_path / "out.safetensors"
        capsys.readouterr()
        assert main(["fetch", f"{server.url}/models/v2.blad", "-o", str(out), "--trust", str(tmp_path / "other.pub")]) == 2
        assert "not trusted" in capsys.readouterr().err and not out.exists()
        assert main(["fetch", f"{server.url}/models/v2.blad", "-o", str(out),
                     "--trust", str(tmp_path / "publisher.pub")]) == 0
        assert _metadata(out)["bitladder.model_version"] == "2"
        assert main(["fetch", f"{server.url}/models/v1.blad", "-o", str(out),
                     "--trust", str(tmp_path / "publisher.pub")]) == 2
        assert "older than version '2'" in capsys.readouterr().err
        assert _metadata(out)["bitladder.model_version"] == "2"
    finally:
        server.stop()


def test_push_to_a_trusting_server_says_why_it_was_refused(model_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-o", str(tmp_path / "k")]) == 0
    root = tmp_path / "served"
    root.mkdir()
    (tmp_path / "token").write_text(TOKEN)
    assert main(["encode", str(model_file), "-o", str(tmp_path / "m.blad")]) == 0
    server = ServerThread(create_app(root, token=TOKEN, trust=bitladder.load_trust(tmp_path / "k.pub"))).start()
    try:
        capsys.readouterr()
        assert main(["push", str(tmp_path / "m.blad"), server.url, "--token-file", str(tmp_path / "token")]) == 2
        err = capsys.readouterr().err
        assert "403" in err and "not signed" in err and "token" not in err
        assert main(["encode", str(model_file), "-o", str(tmp_path / "s.blad"), "--sign", str(tmp_path / "k.key")]) == 0
        assert main(["push", str(tmp_path / "s.blad"), server.url, "--token-file", str(tmp_path / "token")]) == 0
        assert listing(root) == {"s.blad"}
    finally:
        server.stop()


def test_diff_and_patch(minilm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real MiniLM update (its last layer changed), coded against v1 and applied bit-exactly."""
    from safetensors.numpy import load_file

    v1 = load_file(str(minilm_path))
    rng = np.random.default_rng(0)
    v2 = {name: ("F32" if array.dtype == np.float32 else "I64",
                 (array + rng.laplace(0, 1e-4, array.shape)).astype(np.float32)
                 if name.startswith("encoder.layer.5.") else array) for name, array in v1.items()}
    write_safetensors(tmp_path / "v2.safetensors", v2)
    assert main(["encode", str(minilm_path), "-o", str(tmp_path / "v1.blad"), "--model-id", "minilm"]) == 0
    assert main(["diff", str(tmp_path / "v1.blad"), str(tmp_path / "v2.safetensors"), "-o", str(tmp_path / "u.blad"),
                 "--model-version", "2"]) == 0
    said = capsys.readouterr().err
    assert "minilm 1 -> 2" in said and "16 of 104 tensors changed" in said
    assert main(["patch", str(tmp_path / "v1.blad"), str(tmp_path / "u.blad"), "-o", str(tmp_path / "p.safetensors")]) == 0
    patched = load_file(str(tmp_path / "p.safetensors"))
    assert all(np.array_equal(patched[name].view(np.uint8), array.view(np.uint8)) for name, (_, array) in v2.items())
    # the update applied to the wrong weights: refused, nothing written
    assert main(["patch", str(tmp_path / "v2.safetensors"), str(tmp_path / "u.blad"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "updates 'minilm' version '1'" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    assert main(["diff", str(minilm_path), str(tmp_path / "v2.safetensors"), "-o", str(tmp_path / "y.blad"),
                 "--model-version", "2"]) == 2
    assert "--parent-version" in capsys.readouterr().err
    # over HTTP: the update fetched onto the weights the device holds, bit-exact; without them, refused
    server = ServerThread(create_app(tmp_path)).start()
    try:
        fetched = tmp_path / "f.safetensors"
        assert main(["fetch", f"{server.url}/models/u.blad", "--base", str(tmp_path / "v1.blad"), "-o", str(fetched)]) == 0
        assert all(np.array_equal(load_file(str(fetched))[name].view(np.uint8), array.view(np.uint8))
                   for name, (_, array) in v2.items())
        assert main(["fetch", f"{server.url}/models/u.blad", "-o", str(tmp_path / "g.safetensors")]) == 2
        assert "give the weights it applies to" in capsys.readouterr().err
    finally:
        server.stop()
