"""The HTTP client against a real server: bit-exact fetches, rung-limited fetches, typed errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bitladder.delivery import (
    AuthError,
    Download,
    NotFoundError,
    PackageVerifier,
    fetch,
)
from bitladder.delivery.server import create_app

from .conftest import ServerThread, bit_exact

URL = "/models/small.blad"


def test_fetch_is_bit_exact_in_one_request(server: ServerThread, package_dir: Path) -> None:
    download = Download(server.url + URL)
    updates = list(download)
    assert bit_exact(download.decoder, package_dir / "small.blad")
    assert download.stats.requests == 1 and download.stats.discarded == 0
    assert [u.chunk for u in updates] == list(range(len(download.decoder.manifest.chunks)))  # type: ignore[union-attr]
    assert [e.name for e in download.events] == ["int8", "exact"]
    assert all(e.arrived is not None and e.verified is not None for e in download.events)


def test_rung_fetch_downloads_only_that_rung(server: ServerThread, package_dir: Path) -> None:
    download = Download(server.url + URL, rung="int8")
    decoder = download.run()
    rung_end = httpx.get(server.url + "/models").json()["models"][0]["rungs"][0]["end"]
    assert download.stats.received == rung_end
    assert decoder.rung == 0 and 0 in decoder.rungs().values()   # small tensors travel exact in rung 0
    assert not decoder.finished


def test_fetch_helper_and_a_verifier_sink(server: ServerThread, package_dir: Path) -> None:
    assert bit_exact(fetch(server.url + URL), package_dir / "small.blad")
    verifier = PackageVerifier()
    Download(server.url + URL, sink=verifier).run()
    assert verifier.finished and verifier.position == (package_dir / "small.blad").stat().st_size


def test_unknown_package_is_not_found(server: ServerThread) -> None:
    with pytest.raises(NotFoundError, match="nope.blad"):
        fetch(server.url + "/models/nope.blad")


def test_bad_rung_name_is_typed(server: ServerThread) -> None:
    from bitladder.delivery import ConfigError
    with pytest.raises(ConfigError, match="int4"):
        fetch(server.url + URL, rung="int4")


def test_tokens_for_reads(package_dir: Path) -> None:
    running = ServerThread(create_app(package_dir, token="s3cret", protect_reads=True)).start()
    try:
        with pytest.raises(AuthError):
            fetch(running.url + URL)
        with pytest.raises(AuthError):
            fetch(running.url + URL, token="wrong")
        assert bit_exact(fetch(running.url + URL, token="s3cret"), package_dir / "small.blad")
    finally:
        running.stop()


def test_open_url_yields_only_verified_bytes(server: ServerThread, package_dir: Path) -> None:
    from bitladder.delivery.client import open_url

    pieces = list(open_url(server.url + URL))
    assert b"".join(pieces) == (package_dir / "small.blad").read_bytes()


def test_runtime_takes_a_url(server: ServerThread, package_dir: Path) -> None:
    from bitladder.runtime.feed import open_source

    decoder, pieces = open_source(server.url + URL)
    for piece in pieces:
        decoder.feed(piece).raise_for_error()
    assert bit_exact(decoder, package_dir / "small.blad")
