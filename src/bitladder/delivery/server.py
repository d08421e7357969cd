"""The package server: a Starlette app (run it on uvicorn) over a folder of `.blad` files.

    GET  /models                  JSON catalog: id, version, rungs, sizes, ETag, source digest
    GET  /models/{name}.blad      the package, single Range requests (206/416), If-Range, strong ETag
    HEAD /models/{name}.blad      headers only
    PUT  /models/{name}.blad      publish (token required): verified, then renamed into place

A response streams from a file descriptor opened when the request arrives, so a package replaced by a
PUT (a rename) never changes under a reader: the reader keeps the old inode until its response ends.

>>> app = create_app(Path("packages"), token="s3cret")          # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import FormatError
from ..format.spec import HEADER_SIZE, Header, Manifest
from .httputil import (
    ByteRange,
    Pacer,
    RangeNotSatisfiable,
    parse_range,
    strong_etag,
    token_ok,
)
from .verify import PackageVerifier

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.blad")
BLOCK = 256 * 1024


@dataclass(frozen=True)
class ServerConfig:
    root: Path
    token: str | None = None        # required for PUT; PUT is refused when None
    protect_reads: bool = False     # require the token for GET/HEAD too
    rate: float | None = None       # pace each response to this many bit/s


class _FileResponse(Response):
    """Streams `byte_range` of an open file descriptor, then closes it."""

    def __init__(self, fd: int, byte_range: ByteRange, status: int, headers: dict[str, str],
                 head: bool, rate: float | None) -> None:
        super().__init__(status_code=status, headers=headers)
        self._fd, self._range, self._head, self._rate = fd, byte_range, head, rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if not self._head:
                await self._send_body(send)
            else:
                await send({"type": "http.response.body", "body": b""})
        except OSError as exc:  # the client went away mid-body
            log.info("client disconnected: %s", exc)
        finally:
            os.close(self._fd)

    async def _send_body(self, send: Send) -> None:
        pacer = Pacer(self._rate) if self._rate else None
        block = BLOCK if not self._rate else max(4096, min(BLOCK, int(self._rate / 8 / 50)))
        offset = self._range.start
        while offset < self._range.end:
            size = min(block, self._range.end - offset)
            data = await anyio.to_thread.run_sync(os.pread, self._fd, size, offset)
            if not data:
                raise OSError(f"file shrank at byte {offset}")
            offset += len(data)
            if pacer is not None:
                await pacer.wait(len(data))
            await send({"type": "http.response.body", "body": data, "more_body": offset < self._range.end})
        if self._range.length == 0:
            await send({"type": "http.response.body", "body": b""})


def _deny(request: Request, status: int, why: str) -> Response:
    client = request.client.host if request.client else "?"
    log.warning("%s %s %s from %s: %s", status, request.method, request.url.path, client, why)
    return Response(status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _authorized(request: Request, config: ServerConfig, write: bool) -> bool:
    if not write and not config.protect_reads:
        return True
    return config.token is not None and token_ok(request.headers.get("authorization"), config.token)


def _package_path(config: ServerConfig, name: str) -> Path | None:
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    return config.root / name


def _read_manifest(fd: int) -> tuple[bytes, Manifest]:
    header = os.pread(fd, HEADER_SIZE, 0)
    parsed = Header.unpack(header)
    return header, Manifest.decode(parsed, os.pread(fd, parsed.manifest_length, HEADER_SIZE))


def catalog_entry(path: Path) -> dict[str, Any]:
    """What `GET /models` says about one package file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        header, manifest = _read_manifest(fd)
    finally:
        os.close(fd)
    data_start = HEADER_SIZE + Header.unpack(header).manifest_length
    rungs = [{"name": rung.name, "bytes": nbytes, "end": data_start + manifest.rung_end(index)}
             for index, (rung, nbytes) in enumerate(zip(manifest.ladder.rungs, manifest.rung_bytes(), strict=False))]
    return {"name": path.name, "url": f"/models/{path.name}", "id": manifest.model_id,
            "version": manifest.model_version, "size": size, "etag": strong_etag(header, size),
            "digest": manifest.source.get("digest"), "rungs": rungs, "tensors": len(manifest.tensors)}


async def _catalog(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    if not _authorized(request, config, write=False):
        return _deny(request, 401, "bad or missing token")
    entries = []
    for path in sorted(config.root.glob("*.blad")):
        if path.name.startswith("."):
            continue
        try:
            entries.append(await anyio.to_thread.run_sync(catalog_entry, path))
        except (FormatError, OSError) as exc:
            log.warning("catalog skips %s: %s", path.name, exc)
    return JSONResponse({"models": entries})


async def _package(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    name = request.path_params["name"]
    write = request.method == "PUT"
    if not _authorized(request, config, write):
        return _deny(request, 401, "bad or missing token")
    path = _package_path(config, name)
    if path is None:
        return _deny(request, 404, "not a package name")
    if write:
        return await _publish(request, path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return _deny(request, 404, "no such package")
    try:
        return _answer_read(request, fd, config)
    except BaseException:
        os.close(fd)
        raise


def _answer_read(request: Request, fd: int, config: ServerConfig) -> Response:
    size = os.fstat(fd).st_size
    etag = strong_etag(os.pread(fd, HEADER_SIZE, 0), size)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "application/octet-stream"}
    byte_range, status = ByteRange(0, size), 200
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted is not None and (if_range is None or if_range == etag):
        try:
            byte_range, status = parse_range(wanted, size), 206
        except RangeNotSatisfiable as exc:
            os.close(fd)
            response = _deny(request, 416, str(exc))
            response.headers["Content-Range"] = f"bytes */{size}"
            return response
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end - 1}/{size}"
    headers["Content-Length"] = str(byte_range.length)
    return _FileResponse(fd, byte_range, status, headers, request.method == "HEAD", config.rate)


async def _publish(request: Request, path: Path) -> Response:
    """Receive into a hidden temporary file, verify every digest, then rename over the old package."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    verifier = PackageVerifier()
    try:
        with open(temporary, "wb") as handle:
            async for piece in request.stream():
                verifier.feed(piece).raise_for_error()
                await anyio.to_thread.run_sync(handle.write, piece)
            verifier.close()
            handle.flush()
            await anyio.to_thread.run_sync(os.fsync, handle.fileno())
        existed = path.exists()
        os.replace(temporary, path)
    except FormatError as exc:
        log.warning("422 PUT %s: upload rejected: %s", path.name, exc)
        return JSONResponse({"error": f"{path.name}: {exc}"}, status_code=422)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("published %s (%d bytes)", path.name, verifier.position)
    entry = await anyio.to_thread.run_sync(catalog_entry, path)
    return JSONResponse(entry, status_code=200 if existed else 201)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return _deny(request, status, "no such route")


def create_app(root: str | os.PathLike[str], *, token: str | None = None, protect_reads: bool = False,
               rate: float | None = None) -> Starlette:
    """The ASGI app serving every `.blad` in `root`.

    >>> app = create_app("packages", token="s3cret", rate=100e6)   # doctest: +SKIP
    """
    config = ServerConfig(Path(root), token, protect_reads, rate)
    routes = [Route("/models", _catalog, methods=["GET"]),
              Route("/models/{name}", _package, methods=["GET", "HEAD", "PUT"])]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.config = config
    return app
