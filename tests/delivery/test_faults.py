"""Faults: server-side drops at random offsets, restarts, replaced packages, corrupting proxies, 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bitladder.delivery import (
    ConnectionLostError,
    Download,
    IntegrityError,
    PackageChangedError,
    Retry,
    VirtualClock,
)
from bitladder.delivery.server import create_app

from .conftest import ServerThread, bit_exact, make_package, serve_bytes

URL = "/models/small.blad"


class DropAt:
    """ASGI wrapper: while streaming a GET body, abort the connection when it reaches each offset in turn."""

    def __init__(self, app: Any, offsets: list[int]) -> None:
        self.app, self.offsets = app, sorted(offsets)
        self.drops: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        ranges = dict(scope["headers"]).get(b"range", b"bytes=0-").decode()
        position = int(ranges[6:].split("-")[0] or 0)

        async def cut(message: dict[str, Any]) -> None:
            nonlocal position
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and self.offsets and position <= self.offsets[0] < position + len(body):
                offset = self.offsets.pop(0)
                self.drops.append(offset)
                await send({**message, "body": body[:offset - position], "more_body": True})
                raise RuntimeError(f"injected drop at {offset}")
            position += len(body)
            await send(message)

        await self.app(scope, receive, cut)


def test_fifty_server_side_drops_resume_bit_exact(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    path = make_package(root / "small.blad", rows=200)
    size = path.stat().st_size
    offsets = np.random.default_rng(1).choice(np.arange(1, size), 50, replace=False).tolist()
    app = DropAt(create_app(root), offsets)
    running = ServerThread(app).start()
    try:
        download = Download(running.url + URL, clock=VirtualClock(), retry=Retry(attempts=60))
        download.run()
    finally:
        running.stop()
    assert len(app.drops) == 50 and download.stats.reconnects == 50
    assert bit_exact(download.decoder, path)
    # re-downloaded bytes are exactly the unverified tails dropped at each rewind, each under one chunk
    assert download.stats.received - size == download.stats.discarded
    largest = max(c.length for c in download.decoder.manifest.chunks)  # type: ignore[union-attr]
    assert download.stats.discarded <= 50 * largest


def test_server_restart_mid_download(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    path = make_package(root / "small.blad", rows=3000)
    running = ServerThread(create_app(root, rate=40e6)).start()
    download = Download(running.url + URL, retry=Retry(attempts=20, base=0.02, cap=0.2))
    try:
        restarted = False
        for _update in download:
            if not restarted:                        # at the first tensor that arrives
                running.stop()                       # drops the connection mid-body
                running.start()                      # same port
                restarted = True
        assert bit_exact(download.decoder, path)
        assert download.stats.reconnects >= 1
    finally:
        running.stop()


def test_replaced_package_stops_with_a_typed_error(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    path = make_package(root / "small.blad", rows=200)
    old = path.read_bytes()
    new = make_package(tmp_path / "new.blad", seed=5, rows=200).read_bytes()
    app = DropAt(create_app(root, token="t"), [len(old) // 2])
    running = ServerThread(app).start()
    download = Download(running.url + URL, clock=VirtualClock())
    got = []
    try:
        with pytest.raises(PackageChangedError, match="changed"):
            for update in download:
                got.append(update)
                if len(got) == 1:
                    httpx.put(running.url + URL, content=new, headers={"Authorization": "Bearer t"}).raise_for_status()
    finally:
        running.stop()
    assert got and download.decoder.position < len(old)
    reference = make_package(tmp_path / "again.blad", rows=200)   # same arrays as the old package
    from bitladder.format.reader import Package
    old_tensors = Package.open(reference).decode(0)
    for update in got:                                              # whatever was handed over is the old version
        if update.reaches == 0:
            assert download.decoder.tensor(update.name).tobytes() == old_tensors[update.name].tobytes() or \
                download.decoder.rungs()[update.name] > 0


class Corrupting(httpx.BaseTransport):
    """A proxy transport flipping the byte at absolute package offset `at` in the first `times` responses."""

    def __init__(self, inner: httpx.BaseTransport, at: int, times: int) -> None:
        self.inner, self.at, self.times = inner, at, times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        start = int(response.headers.get("content-range", "bytes 0-").split()[1].split("-")[0])
        if self.times <= 0:
            return response
        self.times -= 1
        return httpx.Response(response.status_code, headers=response.headers, request=request,
                              stream=_Flip(response.stream, self.at - start))  # type: ignore[arg-type]


class _Flip(httpx.SyncByteStream):
    def __init__(self, inner: Any, at: int) -> None:
        self.inner, self.at = inner, at

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for piece in self.inner:
            if seen <= self.at < seen + len(piece):
                piece = bytearray(piece)
                piece[self.at - seen] ^= 0x10
                piece = bytes(piece)
            seen += len(piece)
            yield piece


@pytest.mark.parametrize("where", ["chunk", "manifest", "header"])
def test_corruption_is_refetched_and_never_delivered(tmp_path: Path, where: str) -> None:
    path = make_package(tmp_path / "m.blad", rows=200)
    data = path.read_bytes()
    at = {"chunk": len(data) - 3000, "manifest": 100, "header": 2}[where]
    download = Download("http://test/m.blad", transport=Corrupting(httpx.MockTransport(serve_bytes(data)), at, 1))
    download.run()
    assert bit_exact(download.decoder, path)
    assert download.stats.refetches == 1


def test_persistent_corruption_raises_and_hands_over_nothing_bad(tmp_path: Path) -> None:
    path = make_package(tmp_path / "m.blad", rows=200)
    data = path.read_bytes()
    download = Download("http://test/m.blad",
                        transport=Corrupting(httpx.MockTransport(serve_bytes(data)), len(data) - 3000, 99))
    delivered = []
    with pytest.raises(IntegrityError, match="twice"):
        for update in download:
            delivered.append(update.chunk)
    manifest = download.decoder.manifest
    assert manifest is not None
    bad = next(i for i, c in enumerate(manifest.chunks)
               if download.decoder.position <= len(data) - 3000 < len(data) - manifest.data_length + c.end)
    assert bad not in delivered and delivered == list(range(bad))


def test_5xx_is_retried_then_gives_up(tmp_path: Path) -> None:
    data = make_package(tmp_path / "m.blad").read_bytes()
    good = serve_bytes(data)
    failures = iter([503, 500])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(failures, None)
        return httpx.Response(status) if status else good(request)

    clock = VirtualClock()
    download = Download("http://test/m.blad", transport=httpx.MockTransport(flaky), clock=clock)
    download.run()
    assert download.stats.reconnects == 2 and clock.now() == pytest.approx(0.05 + 0.1)

    clock = VirtualClock()
    never = Download("http://test/m.blad", transport=httpx.MockTransport(lambda r: httpx.Response(502)),
                     clock=clock, retry=Retry(attempts=5, base=0.1, cap=0.5))
    with pytest.raises(ConnectionLostError, match="5 failed attempts"):
        never.run()
    assert clock.now() == pytest.approx(0.1 + 0.2 + 0.4 + 0.5)
