"""Which files of the served folder are packages, and what `GET /models` says about each.

A name is served only if it is `NAME.blad` (no leading dot) and resolves, through any symlinks, to a regular
`.blad` file inside the folder. A catalog entry holds only values that JSON can carry: every string is valid
Unicode (no lone surrogates) of at most MAX_TEXT characters, every number an integer in [0, 2**63) or a finite
float (a rung's `quality_db`, the SQNR measured at encode time). A PUT whose entry breaks this is refused
(`check_entry` raises a `ManifestError`); a file already on disk that breaks it is left out of the catalog and
logged once, so one bad file never takes the catalog down. `signed` and `key` (the signer's fingerprint, None when
unsigned) say what the header claims; a client given a trust set checks it. `weights` is the digest of the
model's exact weights and `parent` (null for a full package) what a delta updates. `listing()` adds `versions`:
per model id, its versions in `version_key` order, each with the full packages that hold it and the deltas that
lead to it from another version.

>>> Catalog(Path("packages")).entries()               # doctest: +SKIP
[{'name': 'minilm.blad', 'url': '/models/minilm.blad', 'id': 'minilm', ...}]
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

from ..errors import FormatError, ManifestError
from ..format.signing import signer
from ..format.spec import HEADER_SIZE, MAX_MANIFEST_SIZE, Header, Manifest, version_key
from .httputil import strong_etag

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.blad")
MAX_TEXT = 1024
_MAX_INT = 2**63


def resolve(root: Path, name: str) -> Path | None:
    """The file `name` stands for in the folder `root` (already resolved), or None if it may not be served."""
    if not NAME.fullmatch(name) or ".." in name:
        return None
    try:
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not target.is_relative_to(root) or not NAME.fullmatch(target.name):
        return None
    return target


def open_package(path: Path) -> int:
    """A descriptor of the regular file `path` (O_NONBLOCK: a FIFO named like a package must not hang us)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path.name} is not a regular file")
    return fd


def read_manifest(fd: int, max_manifest: int = MAX_MANIFEST_SIZE) -> tuple[bytes, Manifest]:
    header = os.pread(fd, HEADER_SIZE, 0)
    parsed = Header.unpack(header)
    if parsed.manifest_length > max_manifest:
        raise ManifestError(f"manifest of {parsed.manifest_length} bytes exceeds this server's limit of {max_manifest}")
    return header, Manifest.decode(parsed, os.pread(fd, parsed.manifest_length, HEADER_SIZE))


def _check(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ManifestError(f"{where} is longer than {MAX_TEXT} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ManifestError(f"{where} is not valid Unicode ({exc.reason} at index {exc.start})") from None
    elif isinstance(value, int):
        if not 0 <= value < _MAX_INT:
            raise ManifestError(f"{where} = {value} is outside [0, 2**63)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{where} = {value} is not a finite number")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, f"{where} key")
            _check(item, f"{where}.{key}")
    else:
        raise ManifestError(f"{where} is a {type(value).__name__} ({value!r:.40}), which the catalog cannot carry")


def check_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Raise ManifestError unless every string and number of a catalog entry can go out as JSON."""
    if entry["digest"] is not None and not isinstance(entry["digest"], str):
        raise ManifestError(f"source digest is a {type(entry['digest']).__name__}, not a string")
    _check(entry, "catalog entry")
    return entry


def entry_of(fd: int, name: str, max_manifest: int = MAX_MANIFEST_SIZE) -> dict[str, Any]:
    """The catalog entry of the package open as `fd`, to be listed as `name`; checked (see `check_entry`)."""
    size = os.fstat(fd).st_size
    header, manifest = read_manifest(fd, max_manifest)
    parsed = Header.unpack(header)
    data_start = HEADER_SIZE + parsed.manifest_length
    quality = manifest.quality or (None,) * len(manifest.ladder.rungs)
    rungs = [{"name": rung.name, "bytes": nbytes, "end": data_start + manifest.rung_end(index), "quality_db": db}
             for index, (rung, nbytes, db) in enumerate(zip(manifest.ladder.rungs, manifest.rung_bytes(), quality,
                                                            strict=True))]
    return check_entry({"name": name, "url": f"/models/{name}", "id": manifest.model_id,
                        "version": manifest.model_version, "size": size, "etag": strong_etag(header, size),
                        "digest": manifest.source.get("digest"), "rungs": rungs, "tensors": len(manifest.tensors),
                        "signed": parsed.signed, "key": signer(parsed), "weights": manifest.weights or None,
                        "parent": _parent_json(manifest)})


def _parent_json(manifest: Manifest) -> dict[str, Any] | None:
    parent = manifest.parent
    return None if parent is None else {"id": parent.model_id, "version": parent.version, "weights": parent.weights,
                                        "rung": parent.rung}


def versions(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model id (sorted): `latest` and `versions`, oldest first (`version_key`), each with the `weights`
    digest its packages record (None if they disagree), the `full` packages holding it, and the `deltas` to it:
    name, the version it updates (`from`), and whether the folder holds that version (whole, or as a delta to it)
    with the weights the delta names (`parent_held`).

    >>> versions([{"name": "m1.blad", "id": "m", "version": "1", "weights": "blake3:aa", "parent": None}])
    {'m': {'latest': '1', 'versions': [{'version': '1', 'weights': 'blake3:aa', 'full': ['m1.blad'], 'deltas': []}]}}
    """
    by_id: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for entry in entries:
        by_id.setdefault(entry["id"], {}).setdefault(entry["version"], []).append(entry)
    view: dict[str, dict[str, Any]] = {}
    for model_id in sorted(by_id):
        held = by_id[model_id]
        ordered = sorted(held, key=version_key)
        view[model_id] = {"latest": ordered[-1], "versions": [_version(held, version) for version in ordered]}
    return view


def _version(held: dict[str, list[dict[str, Any]]], version: str) -> dict[str, Any]:
    packages = held[version]
    digests = {entry["weights"] for entry in packages}
    deltas = [{"name": entry["name"], "from": entry["parent"]["version"],
               "parent_held": any(other["weights"] == entry["parent"]["weights"]
                                  for other in held.get(entry["parent"]["version"], []))}
              for entry in packages if entry["parent"] is not None]
    return {"version": version, "weights": digests.pop() if len(digests) == 1 else None,
            "full": [entry["name"] for entry in packages if entry["parent"] is None], "deltas": deltas}


def catalog_entry(path: Path) -> dict[str, Any]:
    """What `GET /models` says about one package file (raises FormatError or OSError)."""
    fd = open_package(path)
    try:
        return entry_of(fd, path.name)
    finally:
        os.close(fd)


class Catalog:
    """The folder's entries, each kept while its file stays the same (device, inode, size, mtime), so a file is
    parsed once and a bad one logged once. Thread-safe; `entries()` does file I/O (run it in a worker thread)."""

    def __init__(self, root: Path, max_manifest: int = MAX_MANIFEST_SIZE) -> None:
        self.root, self.max_manifest = root.resolve(), max_manifest
        self._known: dict[str, tuple[tuple[int, ...], dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def listing(self) -> dict[str, Any]:
        """What `GET /models` answers: every entry (`models`) and the per-id view of them (`versions`)."""
        entries = self.entries()
        return {"models": entries, "versions": versions(entries)}

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(p.name for p in self.root.glob("*.blad") if not p.name.startswith("."))
            self._known = {name: self._entry(name) for name in names}
            return [entry for _, entry in self._known.values() if entry is not None]

    def _entry(self, name: str) -> tuple[tuple[int, ...], dict[str, Any] | None]:
        try:
            link = os.lstat(self.root / name)
            target = resolve(self.root, name)
            info = os.stat(target) if target is not None else link
        except OSError:
            return (), None
        identity = (link.st_ino, link.st_mtime_ns, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        known = self._known.get(name)
        if known is not None and known[0] == identity:
            return known
        if target is None:
            log.warning("catalog skips %s: it resolves outside %s or to a non-package name", name, self.root)
            return identity, None
        try:
            fd = open_package(target)
            try:
                return identity, entry_of(fd, name, self.max_manifest)
            finally:
                os.close(fd)
        except (FormatError, OSError) as exc:
            log.warning("catalog skips %s: %s", name, exc)
            return identity, None
