"""The Starlette server on real uvicorn (127.0.0.1): catalog, ranges, ETag/If-Range, auth, publish."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest

from bitladder.delivery.server import create_app

from .conftest import ServerThread, make_package

URL = "/models/small.blad"
AUTH = {"Authorization": "Bearer s3cret"}


def test_catalog_lists_packages(server: ServerThread, package_dir: Path) -> None:
    (package_dir / "junk.blad").write_bytes(b"not a package")
    models = httpx.get(server.url + "/models").json()["models"]
    assert [m["name"] for m in models] == ["small.blad"]
    (entry,) = models
    assert entry["id"] == "small" and entry["version"] == "0"
    assert entry["size"] == (package_dir / "small.blad").stat().st_size
    assert [r["name"] for r in entry["rungs"]] == ["int8", "exact"] and entry["rungs"][-1]["end"] == entry["size"]
    assert entry["digest"].startswith("sha256:") and entry["etag"].startswith('"')


def test_get_whole_file(server: ServerThread, package_dir: Path) -> None:
    response = httpx.get(server.url + URL)
    assert response.status_code == 200
    assert response.content == (package_dir / "small.blad").read_bytes()
    assert response.headers["accept-ranges"] == "bytes"
    assert not response.headers["etag"].startswith("W/")


@pytest.mark.parametrize(("header", "start", "end"), [("bytes=0-31", 0, 32), ("bytes=100-", 100, None),
                                                       ("bytes=-10", -10, None), ("bytes=5-999999999", 5, None)])
def test_single_ranges(server: ServerThread, package_dir: Path, header: str, start: int, end: int | None) -> None:
    data = (package_dir / "small.blad").read_bytes()
    response = httpx.get(server.url + URL, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == data[start:end]
    first = start % len(data)
    assert response.headers["content-range"] == f"bytes {first}-{first + len(response.content) - 1}/{len(data)}"


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=10-5", "bytes=0-1,5-6", "items=0-3", "bytes=-0"])
def test_bad_ranges_answer_416_and_are_logged(server: ServerThread, package_dir: Path, header: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bitladder.delivery.server"):
        response = httpx.get(server.url + URL, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{(package_dir / 'small.blad').stat().st_size}"
    assert any("416" in r.getMessage() for r in caplog.records)


def test_if_range(server: ServerThread) -> None:
    etag = httpx.head(server.url + URL).headers["etag"]
    assert httpx.get(server.url + URL, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    stale = httpx.get(server.url + URL, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and len(stale.content) > 10


def test_head_has_headers_only(server: ServerThread, package_dir: Path) -> None:
    response = httpx.head(server.url + URL)
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == (package_dir / "small.blad").stat().st_size


def test_keep_alive_reuses_one_connection(server: ServerThread) -> None:
    with httpx.Client() as client:
        streams = set()
        for _ in range(3):
            response = client.get(server.url + URL, headers={"Range": "bytes=0-31"})
            streams.add(id(response.extensions["network_stream"]))
        assert len(streams) == 1


def _raw(port: int, target: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return int(sock.recv(100).split()[1])


@pytest.mark.parametrize("target", ["/models/../packages/small.blad", "/models/..%2fsmall.blad",
                                    "/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/models/nope.blad",
                                    "/models/.hidden.blad", "/models/small.txt", "/etc/passwd"])
def test_traversal_and_unknown_names_are_404_and_logged(server: ServerThread, target: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bitladder.delivery.server"):
        assert _raw(server.port, target) == 404
    assert any("404" in r.getMessage() for r in caplog.records)


def test_put_needs_the_token(server: ServerThread, tmp_path: Path) -> None:
    data = make_package(tmp_path / "new.blad", seed=1).read_bytes()
    assert httpx.put(server.url + "/models/new.blad", content=data).status_code == 401
    assert httpx.put(server.url + "/models/new.blad", content=data,
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(server.url + "/models/new.blad").status_code == 404


def test_put_publishes_a_verified_package(server: ServerThread, package_dir: Path, tmp_path: Path) -> None:
    data = make_package(tmp_path / "new.blad", seed=1).read_bytes()
    response = httpx.put(server.url + "/models/new.blad", content=data, headers=AUTH)
    assert response.status_code == 201 and response.json()["size"] == len(data)
    assert httpx.get(server.url + "/models/new.blad").content == data
    assert sorted(p.name for p in package_dir.iterdir()) == ["new.blad", "small.blad"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_put_rejects_a_bad_package(server: ServerThread, package_dir: Path, tmp_path: Path, damage: str) -> None:
    data = bytearray(make_package(tmp_path / "new.blad", seed=1).read_bytes())
    if damage == "flip":
        data[-100] ^= 0x40
    elif damage == "truncate":
        del data[-7:]
    else:
        data += b"extra"
    response = httpx.put(server.url + "/models/small.blad", content=bytes(data), headers=AUTH)
    assert response.status_code == 422 and "small.blad" in response.json()["error"]
    assert sorted(p.name for p in package_dir.iterdir()) == ["small.blad"]        # no temporary left over
    assert httpx.get(server.url + URL).content == (package_dir / "small.blad").read_bytes()


def test_replacing_never_changes_a_package_under_a_reader(server: ServerThread, package_dir: Path,
                                                          tmp_path: Path) -> None:
    old = (package_dir / "small.blad").read_bytes()
    new = make_package(tmp_path / "small.blad", seed=2).read_bytes()
    with httpx.Client() as reader, reader.stream("GET", server.url + URL) as response:
        pieces = response.iter_raw(1024)
        got = next(pieces)
        assert httpx.put(server.url + URL, content=new, headers=AUTH).status_code == 200
        got += b"".join(pieces)
    assert got == old
    assert httpx.get(server.url + URL).content == new


def test_reads_can_require_the_token(package_dir: Path) -> None:
    running = ServerThread(create_app(package_dir, token="s3cret", protect_reads=True)).start()
    try:
        assert httpx.get(running.url + URL).status_code == 401
        assert httpx.get(running.url + "/models").status_code == 401
        assert httpx.get(running.url + URL, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(running.url + URL, headers=AUTH).status_code == 200
    finally:
        running.stop()


def test_pacing_serves_the_same_bytes(package_dir: Path) -> None:
    running = ServerThread(create_app(package_dir, rate=200e6)).start()
    try:
        assert httpx.get(running.url + URL).content == (package_dir / "small.blad").read_bytes()
    finally:
        running.stop()
