"""`PUT /models/NAME.blad`: spool the body to a hidden file in the folder, verify it as it passes, rename it in.

Everything that touches the file or the verifier runs in a worker thread, so a large manifest (parsed when its
last byte arrives) never stalls the event loop; memory stays bounded by the server's manifest limit (checked
on the header bytes, before the manifest is received) plus one spool block. The package replaces the old
one only when every digest matched and its catalog entry is valid (see `catalog.check_entry`); the temporary
file is removed on every other outcome, including a client that goes away mid-upload (one log line).

A server given a `Trust` also checks the signature as soon as the header arrives, and refuses a version of a
model older than one it holds (a replay; the same version may be published again, e.g. signed by a new key).

A delta (a device's fine-tune, `bitladder push NEW URL --delta-from VERSION`) is accepted only if the folder holds
its parent: a package of the parent's model id and version whose `weights` are the digest the delta names (a full
package, or a delta to those weights). That is checked when the manifest arrives and again at the rename. Once
every digest matched, the worker thread also decodes the delta against its parent (rebuilt through a chain of
deltas if need be) and compares the result's weights digest with the one the delta records: on MiniLM
(90.9 MB of fp32) that costs about 0.4 s and twice the model's size in memory, off the event loop.

    201/200   published (new / replaced); the body is the catalog entry
    403       (with a trust set) the package is unsigned, or signed by a key the server does not trust
    409       (with a trust set) an older version of a model id the server holds; (always) a delta whose
              parent the folder does not hold: "delta 'm' 2 <- 1: the server holds no 'm' version '1' with weights
              blake3:…", with what it does hold of that model
    412       If-Match / If-None-Match failed (`If-None-Match: *` publishes only a new name)
    413       the manifest is larger than the server's limit
    422       the package does not verify (a bad signature too), its catalog entry could not be listed, or a
              delta decoded against its parent does not give the weights it records
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    BadSignatureError,
    DowngradeError,
    FormatError,
    LineageError,
    TrustError,
    UnsignedPackageError,
    UntrustedKeyError,
)
from ..format.reader import Package
from ..format.signing import Trust
from ..format.spec import HEADER_SIZE, Header, Manifest, version_key
from .catalog import Catalog, entry_of, open_package, resolve
from .httputil import preconditions, strong_etag
from .lineage import ParentNotHeldError, Tensors, check_applies, check_parent, rebuild
from .verify import PackageVerifier

log = logging.getLogger(__name__)

_RENAMES = threading.Lock()
_DELTA_CHECKS = threading.Semaphore(1)
"""Deltas decoded against their parents one at a time: each holds two models' weights while it runs."""
SPOOL = 1024 * 1024  # body bytes gathered on the loop before one worker-thread call writes and verifies them


class ManifestTooLarge(FormatError):
    """The upload's header declares a manifest larger than the server accepts (answered with 413)."""


class PreconditionFailed(Exception):
    """If-Match / If-None-Match do not hold for the package now in place (answered with 412)."""


_TRUST_STATUS: dict[type[TrustError], int] = {UnsignedPackageError: 403, UntrustedKeyError: 403,
                                              BadSignatureError: 422, DowngradeError: 409}


def check_replay(catalog: Catalog, manifest: Manifest, name: str) -> None:
    """Raise `DowngradeError` if the folder holds a newer version of `manifest`'s model id than it carries."""
    held = [(entry["version"], entry["name"]) for entry in catalog.entries() if entry["id"] == manifest.model_id]
    newest, where = max(held, key=lambda item: version_key(item[0]), default=(None, None))
    if newest is not None and version_key(manifest.model_version) < version_key(newest):
        raise DowngradeError(f"{name}: {manifest.model_id!r} version {manifest.model_version!r} is older than "
                             f"version {newest!r} this server holds ({where}); refused as a replay")


def current_etag(root: Path, name: str) -> str | None:
    """The ETag of the package now served as `name`, None when there is none (or it is not a package)."""
    path = resolve(root, name)
    if path is None:
        return None
    try:
        fd = open_package(path)
    except OSError:
        return None
    try:
        header = os.pread(fd, HEADER_SIZE, 0)
        Header.unpack(header)
        return strong_etag(header, os.fstat(fd).st_size)
    except FormatError:
        return None
    finally:
        os.close(fd)


class _Upload:
    """One upload's spool file and verifier; every method runs in a worker thread."""

    def __init__(self, temporary: Path, name: str, max_manifest: int, trust: Trust | None,
                 catalog: Catalog | None) -> None:
        self.temporary, self.name, self.max_manifest = temporary, name, max_manifest
        self.verifier = PackageVerifier(trust=trust)
        self._catalog = catalog if trust is not None else None  # replays are refused only with a trust set
        self._lineage = catalog  # a delta's parent must be held, with or without a trust set
        self._checked = False
        self._head: bytearray | None = bytearray()
        self._file = open(temporary, "xb")  # noqa: SIM115 - closed by finish() or abort()

    @property
    def awaiting_header(self) -> bool:
        return self._head is not None

    def take(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data[:HEADER_SIZE - len(self._head)]
            if len(self._head) == HEADER_SIZE:
                length = Header.unpack(self._head).manifest_length
                if length > self.max_manifest:
                    raise ManifestTooLarge(f"manifest of {length} bytes exceeds this server's limit of "
                                           f"{self.max_manifest}")
                self._head = None
        self._file.write(data)
        self.verifier.feed(data).raise_for_error()
        manifest = self.verifier.manifest
        if manifest is not None and not self._checked:
            self._check_catalog(manifest)  # early, to stop the upload of a replay or of an orphan delta
            self._checked = True

    def _check_catalog(self, manifest: Manifest) -> None:
        if self._catalog is not None:
            check_replay(self._catalog, manifest, self.name)
        if self._lineage is not None and manifest.is_delta:
            check_parent(self._lineage.entries(), manifest, replacing=self.name)

    def _check_delta(self, manifest: Manifest) -> None:
        """Decode the spooled delta against its parent: it must give the weights it records (LineageError)."""
        parent = manifest.parent
        if self._lineage is None or parent is None:
            return
        started, root = time.perf_counter(), self._lineage.root

        def decode(entry: dict[str, Any], below: Tensors | None) -> Tensors:
            path = resolve(root, entry["name"])
            if path is None:
                raise ParentNotHeldError(f"{entry['name']} left the folder during the upload")
            return Package.open(path).decode(parent=below)

        entries = [entry for entry in self._lineage.entries() if entry["name"] != self.name]
        with _DELTA_CHECKS:
            base = rebuild(entries, parent.model_id, parent.version, parent.weights, decode)
            check_applies(manifest, Package.open(self.temporary).decode(parent=base))
        log.info("PUT %s: delta %r %s <- %s applies (checked in %.2f s)", self.name, manifest.model_id,
                 manifest.model_version, parent.version, time.perf_counter() - started)

    def finish(self, path: Path, headers: dict[str, str]) -> tuple[dict[str, Any], bool]:
        """Close and check the spooled package, then rename it over `path`; returns its entry, and whether it
        replaced a package."""
        self.verifier.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        fd = open_package(self.temporary)
        try:
            entry = entry_of(fd, path.name, self.max_manifest)
        finally:
            os.close(fd)
        manifest = self.verifier.manifest
        if manifest is not None and manifest.is_delta:
            self._check_delta(manifest)
        with _RENAMES:  # check and rename as one step: another PUT may have landed during the upload
            etag = current_etag(path.parent, path.name)
            if preconditions("PUT", headers, etag) is not None:
                raise PreconditionFailed(f"the package changed to {etag} during the upload")
            if manifest is not None:
                self._check_catalog(manifest)
            os.replace(self.temporary, path)
        return entry, etag is not None

    def abort(self) -> None:
        self._file.close()
        self.temporary.unlink(missing_ok=True)


async def publish(request: Request, root: Path, name: str, max_manifest: int, *, trust: Trust | None = None,
                  catalog: Catalog | None = None) -> Response:
    """Receive, verify and publish the package in `request`'s body as `root / name` (see the module docstring);
    with `trust`, only packages signed by its keys, and no older version of a model `catalog` lists."""
    path = root / name
    headers = {key: value for key, value in request.headers.items() if key in ("if-match", "if-none-match")}
    if preconditions("PUT", headers, await anyio.to_thread.run_sync(current_etag, root, name)) is not None:
        log.warning("412 PUT %s: If-Match / If-None-Match do not hold", path.name)
        return Response(status_code=412)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        upload = await anyio.to_thread.run_sync(_Upload, temporary, name, max_manifest, trust,
                                                catalog if catalog is not None else Catalog(root, max_manifest))
    except OSError as exc:
        return _store_failed(path, exc)
    try:
        await _receive(request, upload)
        entry, replaced = await anyio.to_thread.run_sync(upload.finish, path, headers)
    except ManifestTooLarge as exc:
        return _refuse(413, path, exc)
    except TrustError as exc:
        return _refuse(_TRUST_STATUS.get(type(exc), 403), path, exc)
    except LineageError as exc:
        return _refuse(409 if isinstance(exc, ParentNotHeldError) else 422, path, exc)
    except FormatError as exc:
        return _refuse(422, path, exc)
    except PreconditionFailed as exc:
        log.warning("412 PUT %s: %s", path.name, exc)
        return Response(status_code=412)
    except ClientDisconnect:
        log.info("PUT %s: the client went away after %d bytes; upload dropped", path.name,
                 upload.verifier.position + upload.verifier.pending)
        return Response(status_code=400)
    except OSError as exc:
        return _store_failed(path, exc)
    finally:
        await anyio.to_thread.run_sync(upload.abort)
    log.info("published %s (%d bytes)", path.name, entry["size"])
    return JSONResponse(entry, status_code=200 if replaced else 201, headers={"ETag": entry["etag"]})


async def _receive(request: Request, upload: _Upload) -> None:
    pending = bytearray()
    async for piece in request.stream():
        pending += piece
        if len(pending) >= SPOOL or (upload.awaiting_header and len(pending) >= HEADER_SIZE):
            await anyio.to_thread.run_sync(upload.take, bytes(pending))
            pending.clear()
    if pending:
        await anyio.to_thread.run_sync(upload.take, bytes(pending))


def _refuse(status: int, path: Path, exc: Exception) -> Response:
    log.warning("%d PUT %s: upload rejected: %s", status, path.name, exc)
    return JSONResponse({"error": f"{path.name}: {exc}"}, status_code=status)


def _store_failed(path: Path, exc: OSError) -> Response:
    """The folder is full or not writable: one log line, not a traceback."""
    log.error("PUT %s failed: %s", path.name, exc)
    return JSONResponse({"error": f"{path.name}: could not store the package"},
                        status_code=507 if exc.errno == errno.ENOSPC else 500)
