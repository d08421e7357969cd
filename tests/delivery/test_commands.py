"""The serve / push / fetch subcommands, driven through argparse as cli.py will drive them."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest
from safetensors.numpy import load_file

import bitladder
from bitladder.delivery import AuthError, ConfigError, ServerResponseError
from bitladder.delivery.client import Download
from bitladder.delivery.commands import push_url, register
from bitladder.delivery.link import VirtualClock

from .conftest import ServerThread, make_package, serve_bytes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitladder")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_register_adds_three_commands() -> None:
    args = _parser().parse_args(["fetch", "http://127.0.0.1:1/m.blad", "-o", "x.safetensors", "--rate", "50mbit",
                                 "--rtt", "30ms"])
    assert callable(args.run) and args.rate == "50mbit"
    assert _parser().parse_args(["serve", "dir", "--port", "9"]).port == 9
    with pytest.raises(SystemExit):          # argparse refuses a rate together with a trace
        _parser().parse_args(["fetch", "u", "-o", "x", "--rate", "5m", "--trace", "t.csv"])


def test_push_then_fetch_through_the_commands(server: ServerThread, tmp_path: Path) -> None:
    package = make_package(tmp_path / "pushed.blad", seed=3)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    parser = _parser()
    args = parser.parse_args(["push", str(package), server.url, "--token-file", str(token)])
    args.run(args)
    out = tmp_path / "out.safetensors"
    args = parser.parse_args(["fetch", f"{server.url}/models/pushed.blad", "-o", str(out), "--rate", "1gbit"])
    args.run(args)
    got, want = load_file(str(out)), bitladder.open(package).decode()
    assert got.keys() == want.keys() and all(got[k].tobytes() == want[k].tobytes() for k in want)


def test_push_errors_are_typed(server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BITLADDER_TOKEN", raising=False)
    package = make_package(tmp_path / "pushed.blad")
    args = _parser().parse_args(["push", str(package), server.url])
    with pytest.raises(AuthError):
        args.run(args)
    args = _parser().parse_args(["fetch", server.url + "/models/small.blad", "-o", "x", "--profile", "cell-5m",
                                 "--token-file", str(tmp_path / "missing")])
    with pytest.raises(ConfigError):
        args.run(args)


@pytest.mark.parametrize(("url", "want"), [
    ("http://h:8000", "http://h:8000/models/m.blad"),             # a bitladder server: its /models folder
    ("http://h:8000/", "http://h:8000/models/m.blad"),
    ("http://h:8000/models/", "http://h:8000/models/m.blad"),     # a folder: the file name is appended
    ("http://h:8000/models", "http://h:8000/models/m.blad"),
    ("https://cdn.example/a/b/", "https://cdn.example/a/b/m.blad"),
    ("http://h:8000/models/other.blad", "http://h:8000/models/other.blad"),
], ids=["server", "server-slash", "folder", "folder-no-slash", "deep-folder", "full"])
def test_push_url(url: str, want: str) -> None:
    assert push_url(url, "m.blad") == want


@pytest.mark.parametrize("url", ["notaurl", "ftp://h/m.blad", "h:8000/models/"])
def test_push_url_refuses_what_is_not_http(url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        push_url(url, "m.blad")


@pytest.mark.parametrize("options", [["--profile", "cell-5m", "--rtt", "30ms"], ["--profile", "cell-5m", "--loss", "0.1"],
                                     ["--rtt", "30ms"], ["--loss", "0.1"]], ids=" ".join)
def test_link_options_that_would_be_ignored_are_refused(options: list[str], tmp_path: Path) -> None:
    args = _parser().parse_args(["fetch", "http://127.0.0.1:9/m.blad", "-o", str(tmp_path / "o"), *options])
    with pytest.raises(ConfigError, match="goes with --rate or --trace"):
        args.run(args)


def test_fetch_checks_its_output_first(server: ServerThread, tmp_path: Path) -> None:
    args = _parser().parse_args(["fetch", f"{server.url}/models/small.blad", "-o", str(tmp_path / "no" / "o")])
    with pytest.raises(OSError, match="does not exist"):
        args.run(args)


@pytest.mark.parametrize("url", ["notaurl", "ftp://h/m.blad", "http:///m.blad"])
def test_a_bad_url_is_not_retried(url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        Download(url, clock=VirtualClock()).run()


def test_429_is_retried_and_other_4xx_are_not(tmp_path: Path) -> None:
    good = serve_bytes(make_package(tmp_path / "m.blad").read_bytes())
    answers = iter([429, 429])

    def busy(request: httpx.Request) -> httpx.Response:
        status = next(answers, None)
        return httpx.Response(status) if status else good(request)

    download = Download("http://test/m.blad", transport=httpx.MockTransport(busy), clock=VirtualClock())
    download.run()
    assert download.stats.reconnects == 2
    calls = []

    def bad(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400)

    with pytest.raises(ServerResponseError, match="400 Bad Request"):
        Download("http://test/m.blad", transport=httpx.MockTransport(bad), clock=VirtualClock()).run()
    assert len(calls) == 1
