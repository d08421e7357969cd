"""The Starlette server on real uvicorn (127.0.0.1): catalog, RFC 9110 ranges and preconditions, auth, publish,
disconnects, and what may be served."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

import bitladder
from bitladder.delivery import verify
from bitladder.delivery.server import create_app
from bitladder.format.signing import fingerprint, generate_keys, load_public_key, load_trust
from bitladder.format.spec import HEADER_SIZE, Header, manifest_digest, unpack_manifest

from .conftest import ServerThread, make_package

URL = "/models/small.blad"
AUTH = {"Authorization": "Bearer s3cret"}
HUGE = "9" * 4301  # Python refuses int() on more than 4,300 digits


def _size(package_dir: Path) -> int:
    return (package_dir / "small.blad").stat().st_size


def _data(package_dir: Path) -> bytes:
    return (package_dir / "small.blad").read_bytes()


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; the status, headers (lower-case names) and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _get(port: int, target: str, host: str = "x") -> tuple[int, dict[str, str], bytes]:
    return _raw(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())


def test_catalog_lists_packages(server: ServerThread, package_dir: Path) -> None:
    (package_dir / "junk.blad").write_bytes(b"not a package")
    models = httpx.get(server.url + "/models").json()["models"]
    assert [m["name"] for m in models] == ["small.blad"]
    (entry,) = models
    assert entry["id"] == "small" and entry["version"] == "0"
    assert entry["size"] == _size(package_dir)
    assert [r["name"] for r in entry["rungs"]] == ["int8", "exact"] and entry["rungs"][-1]["end"] == entry["size"]
    assert entry["digest"].startswith("sha256:") and entry["etag"].startswith('"')


def test_get_whole_file(server: ServerThread, package_dir: Path) -> None:
    response = httpx.get(server.url + URL)
    assert response.status_code == 200
    assert response.content == _data(package_dir)
    assert response.headers["accept-ranges"] == "bytes"
    assert not response.headers["etag"].startswith("W/")


# --- Range (RFC 9110 §14) ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-31", 0, 32), ("bytes=100-", 100, None), ("bytes=-10", -10, None), ("bytes=5-999999999", 5, None),
    ("BYTES=0-5", 0, 6), ("Bytes=-10", -10, None), (f"bytes=0-{HUGE}", 0, None), (f"bytes=-{HUGE}", 0, None),
    ("bytes=0-9, 5-19", 0, 20), ("bytes=10-19,0-9", 0, 20), ("bytes=0-4,,", 0, 5), ("bytes=00000000000000000000007-7", 7, 8),
], ids=lambda v: v[:24] if isinstance(v, str) else None)
def test_single_ranges(server: ServerThread, package_dir: Path, header: str, start: int, end: int | None) -> None:
    data = _data(package_dir)
    response = httpx.get(server.url + URL, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == data[start:end]
    first = start % len(data)
    assert response.headers["content-range"] == f"bytes {first}-{first + len(response.content) - 1}/{len(data)}"
    assert response.headers["content-length"] == str(len(response.content))


@pytest.mark.parametrize("header", ["items=0-5", "abc", "bytes=10-5", "bytes=", "bytes=x-y", "bytes = 0-5",
                                    "bytes=0-5;x", ",".join(["bytes=0-0"] + [f"{2 * i}-{2 * i}" for i in range(1, 17)])],
                         ids=lambda v: v[:16])
def test_ranges_to_ignore_get_the_whole_file(server: ServerThread, package_dir: Path, header: str) -> None:
    response = httpx.get(server.url + URL, headers={"Range": header})
    assert response.status_code == 200 and response.content == _data(package_dir)
    assert "content-range" not in response.headers


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0", f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}",
                                    "bytes=999999999-,999999999-1000000000"], ids=lambda v: v[:24])
def test_unsatisfiable_ranges_answer_416_and_are_logged(server: ServerThread, package_dir: Path, header: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bitladder.delivery.server"):
        response = httpx.get(server.url + URL, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{_size(package_dir)}"
    assert any("416" in r.getMessage() for r in caplog.records)


def test_multiple_ranges_answer_multipart_byteranges(server: ServerThread, package_dir: Path) -> None:
    data, size = _data(package_dir), _size(package_dir)
    response = httpx.get(server.url + URL, headers={"Range": "bytes=-3,0-1,5-6,2-3"})  # 0-1 and 2-3 merge
    assert response.status_code == 206 and "content-range" not in response.headers
    match = re.fullmatch(r"multipart/byteranges; boundary=(\w+)", response.headers["content-type"])
    assert match is not None
    boundary = match.group(1)
    parts = [(0, 4), (5, 7), (size - 3, size)]
    want = b"".join(f"{'' if i == 0 else chr(13) + chr(10)}--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {a}-{b - 1}/{size}\r\n\r\n".encode() + data[a:b]
                    for i, (a, b) in enumerate(parts)) + f"\r\n--{boundary}--\r\n".encode()
    assert response.content == want
    assert response.headers["content-length"] == str(len(want))


def test_head_ignores_range(server: ServerThread, package_dir: Path) -> None:
    response = httpx.head(server.url + URL, headers={"Range": "bytes=0-9"})
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(_size(package_dir))


def test_if_range(server: ServerThread) -> None:
    etag = httpx.head(server.url + URL).headers["etag"]
    assert httpx.get(server.url + URL, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    for stale in ('"old"', f"W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT"):  # a weak tag or a date never holds
        response = httpx.get(server.url + URL, headers={"Range": "bytes=0-9", "If-Range": stale})
        assert response.status_code == 200 and len(response.content) > 10


# --- If-Match / If-None-Match (RFC 9110 §13) --------------------------------------------------------------

def _etag(server: ServerThread) -> str:
    return httpx.head(server.url + URL).headers["etag"]


@pytest.mark.parametrize(("value", "status"), [("{etag}", 304), ("W/{etag}", 304), ('"x", {etag}', 304),
                                               ("*", 304), ('"x"', 200), ('W/"x", "y"', 200)])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match(server: ServerThread, value: str, status: int, method: str) -> None:
    etag = _etag(server)
    response = httpx.request(method, server.url + URL, headers={"If-None-Match": value.format(etag=etag)})
    assert response.status_code == status
    assert response.headers["etag"] == etag
    if status == 304:
        assert response.content == b"" and "content-length" not in response.headers


@pytest.mark.parametrize(("value", "status"), [("{etag}", 200), ('"x", {etag}', 200), ("*", 200),
                                               ("W/{etag}", 412), ('"x"', 412)])
def test_if_match(server: ServerThread, value: str, status: int) -> None:
    etag = _etag(server)
    response = httpx.get(server.url + URL, headers={"If-Match": value.format(etag=etag)})
    assert response.status_code == status
    ranged = httpx.get(server.url + URL, headers={"If-Match": value.format(etag=etag), "Range": "bytes=0-9"})
    assert ranged.status_code == (206 if status == 200 else 412)


def test_if_match_is_checked_before_if_none_match(server: ServerThread) -> None:
    etag = _etag(server)
    assert httpx.get(server.url + URL, headers={"If-Match": '"x"', "If-None-Match": etag}).status_code == 412


def test_put_preconditions(server: ServerThread, package_dir: Path, tmp_path: Path) -> None:
    etag, old = _etag(server), _data(package_dir)
    new = make_package(tmp_path / "small.blad", seed=3).read_bytes()
    for headers in ({"If-None-Match": "*"}, {"If-Match": '"stale"'}, {"If-Match": f"W/{etag}"}):
        assert httpx.put(server.url + URL, content=new, headers={**AUTH, **headers}).status_code == 412
        assert _data(package_dir) == old
    assert httpx.put(server.url + "/models/other.blad", content=new,
                     headers={**AUTH, "If-Match": "*"}).status_code == 412
    created = httpx.put(server.url + "/models/other.blad", content=new, headers={**AUTH, "If-None-Match": "*"})
    assert created.status_code == 201 and created.headers["etag"] == created.json()["etag"]
    assert httpx.put(server.url + URL, content=new, headers={**AUTH, "If-Match": etag}).status_code == 200
    assert _data(package_dir) == new
    assert sorted(p.name for p in package_dir.iterdir()) == ["other.blad", "small.blad"]


# --- routes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "target", "allow"), [("DELETE", URL, "GET, HEAD, PUT"),
                                                         ("POST", URL, "GET, HEAD, PUT"),
                                                         ("PUT", "/models", "GET, HEAD")])
def test_405_names_the_allowed_methods(server: ServerThread, method: str, target: str, allow: str) -> None:
    response = httpx.request(method, server.url + target, headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == allow


@pytest.mark.parametrize(("target", "location"), [("/models/", "/models"), ("/models/small.blad/", URL),
                                                  ("/models/?a=1", "/models?a=1")])
def test_trailing_slash_redirect_is_relative(server: ServerThread, target: str, location: str) -> None:
    status, headers, _ = _get(server.port, target, host="evil.example")
    assert status == 307 and headers["location"] == location


def test_keep_alive_reuses_one_connection(server: ServerThread) -> None:
    with httpx.Client() as client:
        streams = set()
        for _ in range(3):
            response = client.get(server.url + URL, headers={"Range": "bytes=0-31"})
            streams.add(id(response.extensions["network_stream"]))
        assert len(streams) == 1


@pytest.mark.parametrize("target", ["/models/../packages/small.blad", "/models/..%2fsmall.blad",
                                    "/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/models/nope.blad",
                                    "/models/.hidden.blad", "/models/small.txt", "/etc/passwd"])
def test_traversal_and_unknown_names_are_404_and_logged(server: ServerThread, target: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bitladder.delivery.server"):
        assert _get(server.port, target)[0] == 404
    assert any("404" in r.getMessage() for r in caplog.records)


def test_only_packages_inside_the_folder_are_served(server: ServerThread, package_dir: Path, tmp_path: Path) -> None:
    outside = make_package(tmp_path / "outside.blad", seed=4)
    (package_dir / "away.blad").symlink_to(outside)
    (package_dir / "notes.txt").write_text("secret")
    (package_dir / "notes.blad").symlink_to(package_dir / "notes.txt")
    (package_dir / "junk.blad").write_bytes(b"not a package, but named like one")
    os.mkfifo(package_dir / "fifo.blad")
    (package_dir / "dir.blad").mkdir()
    (package_dir / "latest.blad").symlink_to("small.blad")
    for name in ("away", "notes", "junk", "fifo", "dir"):
        assert httpx.get(f"{server.url}/models/{name}.blad", timeout=5).status_code == 404, name
    assert httpx.get(server.url + "/models/latest.blad").content == _data(package_dir)
    names = [m["name"] for m in httpx.get(server.url + "/models", timeout=5).json()["models"]]
    assert names == ["latest.blad", "small.blad"]


# --- catalog poisoning ----------------------------------------------------------------------------------------

def _rewrite(data: bytes, edit: Callable[[dict[str, Any]], None], raw: tuple[str, str] | None = None) -> bytes:
    """The package with its manifest edited (and its digest recomputed): `edit` changes the JSON value, `raw`
    then replaces one text in the JSON (for numbers JSON writes no other way)."""
    header = Header.unpack(data[:HEADER_SIZE])
    manifest = unpack_manifest(data[HEADER_SIZE:HEADER_SIZE + header.manifest_length])
    edit(manifest)
    text = json.dumps(manifest, separators=(",", ":"))  # ensure_ascii: a lone surrogate goes out as \udXXX
    if raw is not None:
        text = text.replace(*raw)
    body = zstandard.ZstdCompressor().compress(text.encode())
    return Header(len(body), manifest_digest(body)).pack() + body + data[HEADER_SIZE + header.manifest_length:]


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


POISONS = {
    "id-surrogate": (_set(("model", "id"), "bad\ud800id"), None),
    "version-surrogate": (_set(("model", "version"), "\udfff"), None),
    "digest-surrogate": (_set(("source", "digest"), "sha256:\ud83d"), None),
    "digest-nan": (_set(("source", "digest"), "@"), ('"@"', "NaN")),
    "digest-inf": (_set(("source", "digest"), "@"), ('"@"', "1e999")),
    "digest-number": (_set(("source", "digest"), 7), None),
    "digest-huge": (_set(("source", "digest"), "@"), ('"@"', "9" * 40)),
    "digest-dict": (_set(("source", "digest"), {"a": [1.5]}), None),
    "id-long": (_set(("model", "id"), "x" * 5000), None),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_put_refuses_what_the_catalog_cannot_list(server: ServerThread, package_dir: Path, tmp_path: Path,
                                                  poison: str) -> None:
    data = _rewrite(make_package(tmp_path / "p.blad", seed=5).read_bytes(), *POISONS[poison])
    response = httpx.put(server.url + "/models/p.blad", content=data, headers=AUTH)
    assert response.status_code == 422 and "p.blad" in response.json()["error"]
    assert sorted(p.name for p in package_dir.iterdir()) == ["small.blad"]
    catalog = httpx.get(server.url + "/models")
    assert catalog.status_code == 200 and [m["name"] for m in catalog.json()["models"]] == ["small.blad"]


def test_catalog_skips_a_bad_file_on_disk_and_logs_it_once(server: ServerThread, package_dir: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    data = make_package(tmp_path / "p.blad", seed=5).read_bytes()
    for poison in POISONS:
        (package_dir / f"{poison}.blad").write_bytes(_rewrite(data, *POISONS[poison]))
    with caplog.at_level(logging.WARNING, logger="bitladder.delivery.catalog"):
        for _ in range(3):
            catalog = httpx.get(server.url + "/models")
            assert catalog.status_code == 200 and [m["name"] for m in catalog.json()["models"]] == ["small.blad"]
    skipped = [r.getMessage() for r in caplog.records if "catalog skips" in r.getMessage()]
    assert sorted(m.split()[2].rstrip(":") for m in skipped) == sorted(f"{p}.blad" for p in POISONS)


# --- disconnects and uploads ----------------------------------------------------------------------------------

def _open_fds(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed since listdir
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_abandoned_downloads_stop_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    path = make_package(root / "big.blad", rows=3000)  # 4 MB: 4 s at the paced 8 Mbit/s
    running = ServerThread(create_app(root, rate=8e6)).start()
    try:
        with caplog.at_level(logging.INFO, logger="bitladder.delivery.server"):
            sockets = []
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
                sock.sendall(b"GET /models/big.blad HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096)
                sockets.append(sock)
            assert _open_fds(path) == 20
            for sock in sockets:
                sock.close()
            deadline = time.monotonic() + 1.0
            while _open_fds(path) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _open_fds(path) == 0
        assert sum("disconnected" in r.getMessage() for r in caplog.records) == 20
    finally:
        running.stop()


def test_aborted_upload_logs_one_line_and_leaves_nothing(server: ServerThread, package_dir: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    data = make_package(tmp_path / "new.blad", rows=1000).read_bytes()
    with caplog.at_level(logging.INFO, logger="uvicorn.error"), caplog.at_level(logging.INFO, logger="bitladder"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"PUT /models/new.blad HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:len(data) // 2])
            deadline = time.monotonic() + 5
            while not any(p.name.endswith(".part") for p in package_dir.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.01)
        deadline = time.monotonic() + 5
        while len(list(package_dir.iterdir())) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    assert sorted(p.name for p in package_dir.iterdir()) == ["small.blad"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert [r.name for r in caplog.records if "went away" in r.getMessage()] == ["bitladder.delivery.publish"]


def test_put_verifies_off_the_event_loop(server: ServerThread, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[threading.Thread] = set()
    feed = verify.PackageVerifier.feed

    def spy(self: verify.PackageVerifier, data: Any) -> Any:
        threads.add(threading.current_thread())
        return feed(self, data)

    monkeypatch.setattr(verify.PackageVerifier, "feed", spy)
    data = make_package(tmp_path / "new.blad", seed=1, rows=1000).read_bytes()
    assert httpx.put(server.url + "/models/new.blad", content=data, headers=AUTH).status_code == 201
    assert threads and server._thread not in threads  # the uvicorn thread runs the event loop


def test_put_refuses_a_manifest_over_the_limit(package_dir: Path, tmp_path: Path) -> None:
    data = make_package(tmp_path / "new.blad", seed=1).read_bytes()
    length = Header.unpack(data[:HEADER_SIZE]).manifest_length
    running = ServerThread(create_app(package_dir, token="s3cret", max_manifest=length - 8)).start()
    try:
        response = httpx.put(running.url + "/models/new.blad", content=data, headers=AUTH)
        assert response.status_code == 413 and f"{length} bytes" in response.json()["error"]
        assert sorted(p.name for p in package_dir.iterdir()) == ["small.blad"]
    finally:
        running.stop()


# --- auth and publish -------------------------------------------------------------------------------------------

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


def test_put_replaces_a_symlink_and_never_writes_through_it(server: ServerThread, package_dir: Path,
                                                            tmp_path: Path) -> None:
    outside = make_package(tmp_path / "outside.blad", seed=4)
    before = outside.read_bytes()
    (package_dir / "away.blad").symlink_to(outside)
    data = make_package(tmp_path / "new.blad", seed=1).read_bytes()
    assert httpx.put(server.url + "/models/away.blad", content=data, headers=AUTH).status_code == 201
    assert outside.read_bytes() == before and not (package_dir / "away.blad").is_symlink()
    assert httpx.get(server.url + "/models/away.blad").content == data


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
    assert httpx.get(server.url + URL).content == _data(package_dir)


def test_replacing_never_changes_a_package_under_a_reader(server: ServerThread, package_dir: Path,
                                                          tmp_path: Path) -> None:
    old = _data(package_dir)
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
        assert httpx.get(running.url + URL).content == _data(package_dir)
    finally:
        running.stop()


# --- signed uploads (a server run with --trust) ---------------------------------------------------------------

def _signed(path: Path, key: Path, version: str, model_id: str = "m", seed: int = 0) -> bytes:
    from .conftest import arrays

    bitladder.encode(arrays(seed), path, ladder="int8,exact", model_id=model_id, model_version=version, sign=key)
    return path.read_bytes()


def test_a_trusting_server_takes_only_trusted_signed_uploads_and_no_replays(package_dir: Path, tmp_path: Path) -> None:
    publisher, attacker = generate_keys(tmp_path / "publisher"), generate_keys(tmp_path / "attacker")
    running = ServerThread(create_app(package_dir, token="s3cret", trust=load_trust(publisher[1]))).start()
    try:
        def put(name: str, data: bytes) -> httpx.Response:
            return httpx.put(f"{running.url}/models/{name}", content=data, headers=AUTH)

        refused = {
            "unsigned": (put("m.blad", make_package(tmp_path / "u.blad").read_bytes()), 403, "not signed"),
            "untrusted": (put("m.blad", _signed(tmp_path / "a.blad", attacker[0], "2")), 403, "not trusted"),
        }
        forged = bytearray(_signed(tmp_path / "f.blad", publisher[0], "2"))
        forged[100] ^= 1
        refused["forged"] = (put("m.blad", bytes(forged)), 422, "does not verify")
        for what, (response, status, text) in refused.items():
            assert response.status_code == status and text in response.json()["error"], what
        assert put("m.blad", _signed(tmp_path / "v2.blad", publisher[0], "2")).status_code == 201
        replay = put("m-old.blad", _signed(tmp_path / "v1.blad", publisher[0], "1", seed=1))
        assert replay.status_code == 409
        assert "'1' is older than version '2'" in replay.json()["error"] and "m.blad" in replay.json()["error"]
        assert put("m.blad", _signed(tmp_path / "v2b.blad", publisher[0], "2", seed=2)).status_code == 200  # same
        assert put("m.blad", _signed(tmp_path / "v10.blad", publisher[0], "10", seed=3)).status_code == 200
        assert put("m-old.blad", _signed(tmp_path / "v9.blad", publisher[0], "9")).status_code == 409
        models = {m["name"]: m for m in httpx.get(running.url + "/models").json()["models"]}
        assert sorted(models) == ["m.blad", "small.blad"] and models["m.blad"]["version"] == "10"
        assert models["m.blad"]["signed"] and models["m.blad"]["key"] == fingerprint(load_public_key(publisher[1]))
        assert models["small.blad"]["signed"] is False and models["small.blad"]["key"] is None
        assert sorted(p.name for p in package_dir.iterdir()) == ["m.blad", "small.blad"]  # no spool left behind
    finally:
        running.stop()


def test_a_server_without_trust_takes_unsigned_and_older_uploads(server: ServerThread, tmp_path: Path) -> None:
    key = generate_keys(tmp_path / "k")[0]
    def put(data: bytes) -> httpx.Response:
        return httpx.put(server.url + "/models/m.blad", content=data, headers=AUTH)

    assert put(_signed(tmp_path / "v2.blad", key, "2")).status_code == 201
    assert put(_signed(tmp_path / "v1.blad", key, "1", seed=1)).status_code == 200
    assert put(make_package(tmp_path / "u.blad").read_bytes()).status_code == 200
