"""Through a CDN: real Varnish (Debian package) caches in front of `bitladder serve` and of nginx on 127.0.0.1.

The first fetch fills the cache, a second client is served from it bit-exact (Varnish's hit header, and the
origin sent the body once), resumed (Range + If-Range) and `--rung` fetches work through it, an expired copy is
revalidated with If-None-Match (304), and a package replaced at the origin is never mixed with the cached one.
Skipped when varnishd is not installed (apt-get install varnish); the nginx origin also needs nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bitladder.delivery import Download, PackageChangedError, Retry, VirtualClock
from bitladder.delivery.server import create_app

from .conftest import ServerThread, bit_exact, free_port, make_package, wait_until_serving
from .test_nginx import NGINX, DropEvery, start_nginx

VARNISHD = shutil.which("varnishd") or next((p for p in ("/usr/sbin/varnishd",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(VARNISHD is None, reason="varnish is not installed (apt-get install varnish)")

# Cache everything for 120 s (Varnish's default), or for X-Ttl seconds then keep it to revalidate; PURGE drops it.
VCL = """vcl 4.1;
import std;
backend origin {{ .host = "127.0.0.1"; .port = "{port}"; }}
sub vcl_recv {{
    if (req.url == "/__ping") {{ return (synth(200)); }}
    if (req.method == "PURGE") {{ return (purge); }}
}}
sub vcl_backend_response {{
    if (bereq.http.X-Ttl) {{
        set beresp.ttl = std.duration(bereq.http.X-Ttl + "s", 120s);
        set beresp.grace = 0s;
        set beresp.keep = 300s;
    }}
}}
sub vcl_deliver {{
    if (obj.hits > 0) {{ set resp.http.X-Cache = "HIT"; }} else {{ set resp.http.X-Cache = "MISS"; }}
}}
"""


@dataclass
class Origin:
    url: str
    root: Path
    seen: list[tuple[str, int]] = field(default_factory=list)  # (method, status) of each request it answered
    log: Path | None = None

    def requests(self) -> list[tuple[str, int]]:
        if self.log is None:
            return list(self.seen)
        lines = self.log.read_text().split() if self.log.exists() else []
        return [(method, int(status)) for method, status in zip(lines[::2], lines[1::2], strict=True)]

    def bodies(self) -> int:
        """Responses that carried the package (not 304s)."""
        return sum(status in (200, 206) and method == "GET" for method, status in self.requests())

    def replace(self, data: bytes) -> None:
        staged = self.root / ".staged.part"
        staged.write_bytes(data)
        os.replace(staged, self.root / "small.blad")


class _Counting:
    """ASGI wrapper recording each request's method and status."""

    def __init__(self, app: Any, seen: list[tuple[str, int]]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], message["status"]))
            await send(message)
        await self.app(scope, receive, counted)


@pytest.fixture
def bitladder_origin(tmp_path: Path) -> Iterator[Origin]:
    root = tmp_path / "packages"
    root.mkdir()
    make_package(root / "small.blad", rows=300)
    origin = Origin("", root)
    running = ServerThread(_Counting(create_app(root, token="s3cret"), origin.seen)).start()
    origin.url = running.url
    yield origin
    running.stop()


@pytest.fixture
def nginx_origin(tmp_path: Path) -> Iterator[Origin]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    root = tmp_path / "www" / "models"
    root.mkdir(parents=True)
    make_package(root / "small.blad", rows=300)
    process, url = start_nginx(tmp_path, http=f"log_format counted '$request_method $status'; "
                                              f"access_log {tmp_path}/access.log counted;")
    yield Origin(url, root, log=tmp_path / "access.log")
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(params=["bitladder", "nginx"])
def origin(request: pytest.FixtureRequest) -> Origin:
    return request.getfixturevalue(f"{request.param}_origin")  # type: ignore[no-any-return]


@pytest.fixture
def proxy(origin: Origin, tmp_path: Path) -> Iterator[str]:
    """Varnish in front of `origin`; yields its URL for the package."""
    port = free_port()
    vcl = tmp_path / "cache.vcl"
    vcl.write_text(VCL.format(port=origin.url.rsplit(":", 1)[1]))
    process = subprocess.Popen([str(VARNISHD), "-F", "-j", "none", "-n", str(tmp_path / "varnish"),
                                "-a", f"127.0.0.1:{port}", "-f", str(vcl), "-s", "malloc,64m"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until_serving(f"http://127.0.0.1:{port}/__ping", process, "varnishd")
    yield f"http://127.0.0.1:{port}/models/small.blad"
    process.terminate()
    process.wait(timeout=20)


class Recording(httpx.BaseTransport):
    """Remembers every request's headers and its response's status and headers."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.exchanges: list[tuple[httpx.Headers, int, httpx.Headers]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.exchanges.append((request.headers, response.status_code, response.headers))
        return response


def test_second_client_is_served_from_the_cache(origin: Origin, proxy: str) -> None:
    first = Recording()
    assert bit_exact(Download(proxy, transport=first).run(), origin.root / "small.blad")
    assert first.exchanges[0][2]["x-cache"] == "MISS" and origin.bodies() == 1
    second = Recording()
    assert bit_exact(Download(proxy, transport=second).run(), origin.root / "small.blad")
    assert [headers["x-cache"] for _, _, headers in second.exchanges] == ["HIT"]
    assert origin.bodies() == 1


def test_resumed_fetch_through_the_cache(origin: Origin, proxy: str) -> None:
    size = (origin.root / "small.blad").stat().st_size
    recording = Recording(DropEvery(30_000, 4))
    download = Download(proxy, transport=recording, clock=VirtualClock(), retry=Retry(attempts=10))
    download.run()
    assert bit_exact(download.decoder, origin.root / "small.blad")
    assert download.stats.reconnects == 4 and download.stats.received - size == download.stats.discarded
    resumed = recording.exchanges[1:]
    assert len(resumed) == 4 and all(status == 206 for _, status, _ in resumed)
    assert all(request["if-range"] == download.etag for request, _, _ in resumed)
    assert origin.bodies() == 1


def test_rung_fetch_through_the_cache(origin: Origin, proxy: str) -> None:
    download = Download(proxy, rung="int8")
    download.run()
    assert download.stats.received == download.events[0].end
    assert download.events[0].verified is not None and len(download.events) == 1
    assert origin.bodies() == 1


def test_an_expired_copy_is_revalidated_with_304(origin: Origin, proxy: str) -> None:
    data = (origin.root / "small.blad").read_bytes()
    assert httpx.get(proxy, headers={"X-Ttl": "1"}).content == data
    time.sleep(1.5)
    again = httpx.get(proxy)
    assert again.status_code == 200 and again.content == data
    assert origin.bodies() == 1 and ("GET", 304) in origin.requests()


class _ReplaceOnRetry(httpx.BaseTransport):
    """Cuts the first response, then replaces the package at the origin and purges the cache before the retry."""

    def __init__(self, origin: Origin, proxy: str, new: bytes) -> None:
        self.inner, self.origin, self.proxy, self.new = DropEvery(30_000, 1), origin, proxy, new
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests == 2:
            self.origin.replace(self.new)
            assert httpx.request("PURGE", self.proxy).status_code == 200
        return self.inner.handle_request(request)


def test_a_replaced_package_is_never_mixed_with_the_cached_one(origin: Origin, proxy: str, tmp_path: Path) -> None:
    old_path = tmp_path / "old.blad"
    shutil.copy(origin.root / "small.blad", old_path)
    new = make_package(tmp_path / "small.blad", seed=7, rows=300).read_bytes()
    assert bit_exact(Download(proxy).run(), old_path)               # the cache holds the old package
    origin.replace(new)
    assert bit_exact(Download(proxy).run(), old_path)               # still served whole from the cache
    assert httpx.request("PURGE", proxy).status_code == 200
    assert bit_exact(Download(proxy).run(), origin.root / "small.blad")   # then the new one, whole
    origin.replace(old_path.read_bytes())
    assert httpx.request("PURGE", proxy).status_code == 200
    midway = Download(proxy, transport=_ReplaceOnRetry(origin, proxy, new), clock=VirtualClock())
    with pytest.raises(PackageChangedError):
        midway.run()
    assert midway.decoder.position < (origin.root / "small.blad").stat().st_size
