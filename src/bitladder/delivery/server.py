"""The package server: a Starlette app (run it on uvicorn) over a folder of `.blad` files, per RFC 9110.

    GET  /models                  JSON catalog: id, version, lineage, rungs (bytes, SQNR), sizes, ETag, source digest,
                                  signer; and each model id's versions, full and delta (catalog.py)
    GET  /models/{name}.blad      the package; Range (206, multipart/byteranges, 416), If-Range, If-Match,
                                  If-None-Match (412, 304), strong ETag
    HEAD /models/{name}.blad      headers only (Range does not apply to HEAD)
    PUT  /models/{name}.blad      publish (token required): spooled, verified off the loop, renamed in (publish.py);
                                  with a trust set, only signed by a trusted key and no older version (403/409/422);
                                  a delta only if the folder holds its parent and it applies to it (409/422)

Only names that resolve to `.blad` files inside the folder are served (catalog.resolve). A response streams from
a file descriptor opened when the request arrives, so a package replaced by a PUT (a rename) never changes under
a reader: the reader keeps the old inode until its response ends, or until the client goes away (the response
stops at once and closes the descriptor).

>>> app = create_app(Path("packages"), token="s3cret")          # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import FormatError
from ..format.signing import Trust
from ..format.spec import HEADER_SIZE, Header
from .catalog import NAME, Catalog, catalog_entry, open_package, resolve
from .httputil import (
    ByteRange,
    Pacer,
    RangeNotSatisfiable,
    if_range_holds,
    multipart_parts,
    parse_ranges,
    preconditions,
    strong_etag,
    token_ok,
)
from .publish import publish

__all__ = ["BLOCK", "MAX_MANIFEST", "ServerConfig", "catalog_entry", "create_app"]

log = logging.getLogger(__name__)

BLOCK = 256 * 1024
MAX_MANIFEST = 16 * 1024 * 1024  # default limit on an uploaded manifest (a 7B-parameter model's is ~5 MB)
_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ServerConfig:
    root: Path
    token: str | None = None        # required for PUT; PUT is refused when None
    protect_reads: bool = False     # require the token for GET/HEAD too
    rate: float | None = None       # pace each response to this many bit/s
    max_manifest: int = MAX_MANIFEST
    trust: Trust | None = None      # accept PUTs only of packages signed by these keys, and no replays


class _FileResponse(Response):
    """Streams `parts` (literal bytes, or ranges of an open file descriptor), then closes the descriptor.

    uvicorn's `send` returns quietly once the client has gone, so the body is sent while a second task waits
    for `http.disconnect`; the first to finish cancels the other.
    """

    def __init__(self, fd: int, parts: list[bytes | ByteRange], status: int, headers: dict[str, str],
                 head: bool, rate: float | None) -> None:
        super().__init__(status_code=status, headers=headers)
        self._fd, self._parts, self._head, self._rate = fd, parts, head, rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, group.cancel_scope)
                try:
                    await send({"type": "http.response.start", "status": self.status_code,
                                "headers": self.raw_headers})
                    if not self._head:
                        await self._send_body(send)
                    await send({"type": "http.response.body", "body": b""})
                except OSError as exc:  # servers other than uvicorn raise when the client went away
                    log.info("client disconnected: %s", exc)
                group.cancel_scope.cancel()
        finally:
            os.close(self._fd)

    @staticmethod
    async def _watch(receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        log.info("client disconnected mid-response; stopping it")
        scope.cancel()

    async def _send_body(self, send: Send) -> None:
        pacer = Pacer(self._rate) if self._rate else None
        block = BLOCK if not self._rate else max(4096, min(BLOCK, int(self._rate / 8 / 50)))
        for part in self._parts:
            if isinstance(part, bytes):
                await _send_piece(send, part, pacer)
                continue
            offset = part.start
            while offset < part.end:
                data = await anyio.to_thread.run_sync(os.pread, self._fd, min(block, part.end - offset), offset)
                if not data:
                    raise OSError(f"file shrank at byte {offset}")
                offset += len(data)
                await _send_piece(send, data, pacer)


async def _send_piece(send: Send, data: bytes, pacer: Pacer | None) -> None:
    if pacer is not None:
        await pacer.wait(len(data))
    await send({"type": "http.response.body", "body": data, "more_body": True})


def _deny(request: Request, status: int, why: str, headers: dict[str, str] | None = None) -> Response:
    client = request.client.host if request.client else "?"
    log.warning("%s %s %s from %s: %s", status, request.method, request.url.path, client, why)
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Response(status_code=status, headers=headers)


def _authorized(request: Request, config: ServerConfig, write: bool) -> bool:
    if not write and not config.protect_reads:
        return True
    return config.token is not None and token_ok(request.headers.get("authorization"), config.token)


async def _catalog(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    if not _authorized(request, config, write=False):
        return _deny(request, 401, "bad or missing token")
    catalog: Catalog = request.app.state.catalog
    return JSONResponse(await anyio.to_thread.run_sync(catalog.listing))


async def _package(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    name = request.path_params["name"]
    write = request.method == "PUT"
    if not _authorized(request, config, write):
        return _deny(request, 401, "bad or missing token")
    if write:  # to the name itself: a symlink there is replaced, never written through
        if not NAME.fullmatch(name) or ".." in name:
            return _deny(request, 404, "not a package name")
        return await publish(request, config.root, name, config.max_manifest, trust=config.trust,
                             catalog=request.app.state.catalog)
    path = resolve(config.root, name)
    if path is None:
        return _deny(request, 404, "no such package in the folder")
    try:
        fd = open_package(path)
    except OSError:
        return _deny(request, 404, "no such package")
    try:
        return _answer_read(request, fd, config)
    except BaseException:
        os.close(fd)
        raise


def _answer_read(request: Request, fd: int, config: ServerConfig) -> Response:
    size = os.fstat(fd).st_size
    header = os.pread(fd, HEADER_SIZE, 0)
    try:
        Header.unpack(header)
    except FormatError as exc:
        os.close(fd)
        return _deny(request, 404, f"not a package: {exc}")
    etag = strong_etag(header, size)
    failed = preconditions(request.method, request.headers, etag)
    if failed is not None:
        os.close(fd)
        log.info("%d %s %s: precondition", failed, request.method, request.url.path)
        return Response(status_code=failed, headers={"ETag": etag} if failed == 304 else None)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": _TYPE}
    wanted = request.headers.get("range")
    ranges = None
    if wanted is not None and request.method == "GET" and if_range_holds(request.headers.get("if-range"), etag):
        try:
            ranges = parse_ranges(wanted, size)
        except RangeNotSatisfiable as exc:
            os.close(fd)
            return _deny(request, 416, str(exc), {"Content-Range": f"bytes */{size}"})
    parts: list[bytes | ByteRange]
    if ranges is None:
        status, parts = 200, [ByteRange(0, size)]
    elif len(ranges) == 1:
        (one,) = ranges
        status, parts = 206, [one]
        headers["Content-Range"] = f"bytes {one.start}-{one.end - 1}/{size}"
    else:
        boundary = uuid.uuid4().hex
        status, parts = 206, multipart_parts(ranges, size, boundary, _TYPE)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    headers["Content-Length"] = str(sum(len(p) if isinstance(p, bytes) else p.length for p in parts))
    return _FileResponse(fd, parts, status, headers, request.method == "HEAD", config.rate)


async def _trailing_slash(request: Request) -> Response:
    """307 to the same path without its trailing slash, as a relative reference (never from the Host header)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    location = raw.decode("latin-1").rstrip("/")
    if request.url.query:
        location += "?" + request.url.query
    return Response(status_code=307, headers={"Location": location})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if "Allow" in headers:
        headers["Allow"] = ", ".join(sorted(method.strip() for method in headers["Allow"].split(",")))
    return _deny(request, status, "no such route" if status == 404 else "method not allowed", headers)


def create_app(root: str | os.PathLike[str], *, token: str | None = None, protect_reads: bool = False,
               rate: float | None = None, max_manifest: int = MAX_MANIFEST, trust: Trust | None = None) -> Starlette:
    """The ASGI app serving every `.blad` in `root`; uploads whose manifest exceeds `max_manifest` get 413, and
    with `trust`, uploads not signed by one of its keys (403, 422) or older than a version held (409).

    >>> app = create_app("packages", token="s3cret", trust=load_trust("publisher.pub"))   # doctest: +SKIP
    """
    config = ServerConfig(Path(root).resolve(), token, protect_reads, rate, max_manifest, trust)
    routes = [Route("/models", _catalog, methods=["GET"]),
              Route("/models/", _trailing_slash),
              Route("/models/{name}", _package, methods=["GET", "HEAD", "PUT"]),
              Route("/models/{name}/", _trailing_slash)]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.router.redirect_slashes = False  # Starlette's redirect builds an absolute URL from the Host header
    app.state.config = config
    app.state.catalog = Catalog(config.root, max_manifest)
    return app
