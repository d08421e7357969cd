"""The serve / push / fetch subcommands, driven through argparse as cli.py will drive them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import bitladder
from bitladder.delivery import AuthError, ConfigError
from bitladder.delivery.commands import register

from .conftest import ServerThread, make_package


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
