"""Static serving: real nginx (Debian package) on 127.0.0.1 serves a package folder; the client fetches
and resumes from it. Skipped when nginx is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bitladder.delivery import Download, Retry, VirtualClock

from .conftest import bit_exact, free_port, make_package, wait_until_serving

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")


def start_nginx(tmp_path: Path, http: str = "access_log off;") -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving `tmp_path/www` on a free port of 127.0.0.1, with `http` added to its http block; returns the
    process and its URL once it answers (the test is skipped if it cannot start)."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    # as root, nginx would hand its workers to an unprivileged user who cannot read pytest's 0700 tmp_path
    user = "user root root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    {http}
    client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;
    server {{ listen 127.0.0.1:{port}; root {tmp_path}/www; location = /__ping {{ return 204; }} }}
}}
""")
    process = subprocess.Popen([str(NGINX), "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url + "/__ping", process, "nginx")
    return process, url


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www" / "models"
    root.mkdir(parents=True)
    make_package(root / "small.blad", rows=300)
    process, url = start_nginx(tmp_path)
    yield url, root
    process.terminate()
    process.wait(timeout=10)


class DropEvery(httpx.BaseTransport):
    """Drops each response after `after` bytes (a connection lost on the way), `times` times."""

    def __init__(self, after: int, times: int) -> None:
        self.inner, self.after, self.times = httpx.HTTPTransport(), after, times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.times <= 0:
            return response
        self.times -= 1
        return httpx.Response(response.status_code, headers=response.headers, request=request,
                              stream=_Cut(response.stream, self.after))  # type: ignore[arg-type]


class _Cut(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for piece in self.inner:
            if seen + len(piece) >= self.after:
                yield piece[:self.after - seen]
                raise httpx.ReadError("connection lost (injected)")
            seen += len(piece)
            yield piece

    def close(self) -> None:
        self.inner.close()


def test_fetch_from_nginx(nginx: tuple[str, Path]) -> None:
    url, root = nginx
    download = Download(url + "/models/small.blad")
    assert bit_exact(download.run(), root / "small.blad")  # type: ignore[arg-type]
    assert download.etag is not None


def test_resume_from_nginx(nginx: tuple[str, Path]) -> None:
    url, root = nginx
    size = (root / "small.blad").stat().st_size
    download = Download(url + "/models/small.blad", transport=DropEvery(30_000, 5), clock=VirtualClock(),
                        retry=Retry(attempts=10))
    download.run()
    assert bit_exact(download.decoder, root / "small.blad")
    assert download.stats.reconnects == 5 and download.stats.received - size == download.stats.discarded


def test_rung_fetch_from_nginx(nginx: tuple[str, Path]) -> None:
    url, _ = nginx
    download = Download(url + "/models/small.blad", rung="int8")
    download.run()
    assert download.stats.received == download.events[0].end
