"""Writing an output file whole or not at all, and writing a decoded model as safetensors or ONNX.

A regular file (new or existing) is written to an anonymous temporary file in its folder (`O_TMPFILE`; a
uniquely named hidden `.NAME.XXXX.tmp` where the filesystem has no `O_TMPFILE`), fsynced, then renamed over
it, so a reader sees the old file or the new one, two writers never share a temporary, and a failure (an
exception, Ctrl-C) leaves nothing behind; with `O_TMPFILE` even `kill -9` leaves nothing. `-` (stdout), a
device, a FIFO, or a symlink through `/dev` or `/proc` (`/dev/stdout`) is written directly: renaming over
it would replace it with a regular file. A symlink to a regular file replaces the file it points to.

Provenance: a model written from a package whose signature was checked (`write_model(..., signer=)`, the
`--trust` of `decode` and `fetch`) records `bitladder.model_id`, `bitladder.model_version` and `bitladder.signer`
in its safetensors metadata, and an older version of that model id is then refused over it (`DowngradeError`)
unless a downgrade is allowed. Without a signer nothing is added, so an exact decode stays the source bit for bit.

>>> with output_file("model.safetensors") as out:     # doctest: +SKIP
...     out.write(data)
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from .codecs.states import STORAGE
from .errors import FileAccessError

if TYPE_CHECKING:
    from .format.spec import Manifest

STDOUT = "-"
_LINK_HOPS = 40  # as the kernel's symlink limit
MODEL_ID_KEY, MODEL_VERSION_KEY, SIGNER_KEY = "bitladder.model_id", "bitladder.model_version", "bitladder.signer"
_MAX_HEADER = 100 * 1024 * 1024  # as safetensors


class OutputError(FileAccessError):
    """An output path that cannot be written (its folder is missing, it is a folder, permission)."""


def _target(path: str | os.PathLike[str]) -> Path | None:
    """The regular file to replace atomically, or None to write `path` directly (stdout, a device, a FIFO)."""
    if os.fspath(path) == STDOUT:
        return None
    current = Path(os.path.abspath(path))
    for _ in range(_LINK_HOPS):
        if not current.is_symlink():
            break
        current = Path(os.path.abspath(current.parent / os.readlink(current)))
        if current.parts[1:2] in (("dev",), ("proc",)):
            return None  # /dev/stdout, /dev/fd/N, /proc/self/fd/N: a stream, even when it is a regular file
    else:
        raise OutputError(f"cannot write {path}: too many levels of symbolic links")
    try:
        mode = current.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return current  # a new file (check_output tells whether its folder exists)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {path}: it is a directory")
    return current if stat.S_ISREG(mode) else None


def check_output(path: str | os.PathLike[str]) -> None:
    """Raise `OutputError` now if `path` cannot be written, before any long work.

    >>> check_output("/nonexistent/dir/model.safetensors")   # doctest: +SKIP
    OutputError: cannot write /nonexistent/dir/model.safetensors: folder /nonexistent/dir does not exist
    """
    target = _target(path)
    if os.fspath(path) == STDOUT and sys.stdout.isatty():
        raise OutputError("refusing to write a binary file to the terminal: redirect stdout, or give a file name")
    if target is None:
        if os.fspath(path) != STDOUT and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        return
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {folder} is not writable")


@contextlib.contextmanager
def output_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write `path` through: atomically for a regular file, directly otherwise (see above).

    >>> with output_file("-") as out:                    # doctest: +SKIP
    ...     out.write(b"to stdout")
    """
    check_output(path)
    target = _target(path)
    if target is None:
        with _direct(path) as handle:
            yield handle
        return
    with _atomic(path, target) as handle:
        yield handle


@contextlib.contextmanager
def _direct(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    if os.fspath(path) == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        handle = open(path, "wb")  # noqa: SIM115 (closed below, after the caller's writes)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with handle:
        yield handle


@contextlib.contextmanager
def _atomic(path: str | os.PathLike[str], target: Path) -> Iterator[IO[bytes]]:
    named: Path | None = None
    try:
        fd, named = _open_temporary(target)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                yield handle
            except OSError as exc:
                if exc.filename is None:  # a failed write (disk full): name the file the user asked for
                    raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
                raise
            try:
                handle.flush()
                os.fsync(fd)
                if target.exists():
                    os.fchmod(fd, stat.S_IMODE(target.stat().st_mode))
                if named is None:
                    named = _name_anonymous(fd, target)
                os.replace(named, target)
                named = None
                _sync_folder(target.parent)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if named is not None:
            named.unlink(missing_ok=True)


def _open_temporary(target: Path) -> tuple[int, Path | None]:
    """A file in the target's folder: anonymous (`O_TMPFILE`, path None) where possible, else uniquely named."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(target.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666), None
        except OSError:
            pass  # the filesystem has no O_TMPFILE (or refuses it): use a named temporary
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; a new output gets the usual mode
    return fd, Path(name)


def _name_anonymous(fd: int, target: Path) -> Path:
    """Link an `O_TMPFILE` file into its folder under a unique hidden name (to rename it over the target)."""
    named = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:  # a folder fd makes os.link call linkat(..., AT_SYMLINK_FOLLOW), which follows the /proc magic link
        os.link(f"/proc/self/fd/{fd}", named.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)
    return named


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened and fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def storage_bits(dtype: str, array: NDArray[Any]) -> NDArray[Any]:
    """The array's bits in its storage dtype (a decoder may give source-dtype values or raw bits)."""
    array = np.ascontiguousarray(array)
    storage = STORAGE[dtype]
    if array.dtype.itemsize != storage.itemsize:
        raise ValueError(f"a {dtype} tensor came as {array.dtype} ({array.dtype.itemsize} bytes per element)")
    return array.view(storage)


_GATHER: Final = 4 << 20  # bytes: tensors smaller than this are written in batches of about this size


def write_safetensors_to(out: IO[bytes], tensors: Mapping[str, tuple[str, NDArray[Any]]],
                         metadata: Mapping[str, str] | None = None) -> None:
    """Write `name -> (dtype, array)` as a safetensors file to an open binary file, in the given order.

    >>> with output_file("w.safetensors") as out:                                      # doctest: +SKIP
    ...     write_safetensors_to(out, {"w": ("F32", np.ones((2, 2), np.float32))})
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (dtype, array) in tensors.items():
        size = array.size * STORAGE[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    out.write(struct.pack("<Q", len(blob)))
    out.write(blob)
    # Small tensors go out gathered: a write call here cost about what copying 100 KiB costs, and a model may have
    # tens of thousands of them. Large ones go out as they are (no copy).
    gathered = bytearray()
    for dtype, array in tensors.values():
        data = storage_bits(dtype, array).reshape(-1).view(np.uint8).data
        small = len(data) < _GATHER
        if small:
            gathered += data
        if gathered and (len(gathered) >= _GATHER or not small):
            out.write(gathered)
            gathered = bytearray()
        if not small:
            out.write(data)
    out.write(gathered)


def recorded_model(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """The (model id, version) an existing safetensors file at `path` records in its metadata, if it does."""
    target = _target(path)
    if target is None or not target.is_file():
        return None
    try:
        with open(target, "rb") as handle:
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else _MAX_HEADER + 1
            header = json.loads(handle.read(length)) if length <= _MAX_HEADER else None
    except (OSError, ValueError, RecursionError):
        return None  # unreadable, or not safetensors: nothing recorded
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        return None
    model_id, version = metadata.get(MODEL_ID_KEY), metadata.get(MODEL_VERSION_KEY)
    return (model_id, version) if isinstance(model_id, str) and isinstance(version, str) else None


def check_not_older(path: str | os.PathLike[str], manifest: Manifest, allow_downgrade: bool = False) -> None:
    """Raise `DowngradeError` if the file at `path` records a newer version of `manifest`'s model id."""
    from .format.signing import check_downgrade  # outputs is imported by the format package itself

    recorded = recorded_model(path)
    if recorded is not None and recorded[0] == manifest.model_id:
        check_downgrade(manifest.model_id, recorded[1], manifest.model_version, allow_downgrade, f"output {path}")


def write_model(path: str | os.PathLike[str], manifest: Manifest, tensors: Mapping[str, NDArray[Any]], *,
                signer: str | None = None, allow_downgrade: bool = False) -> str:
    """Write decoded tensors as the source's format: ONNX for an ONNX source, else safetensors. Returns it.

    `signer` (the fingerprint of the key whose signature was checked) records the provenance in the metadata;
    an output recording a newer version of the same model id is never replaced unless `allow_downgrade`.

    >>> write_model("out.safetensors", package.manifest, package.decode())   # doctest: +SKIP
    'safetensors'
    """
    check_not_older(path, manifest, allow_downgrade)
    metadata = manifest.source.get("metadata") or {}
    specs = {t.name: t for t in manifest.tensors}
    stored = {name: (specs[name].dtype, array) for name, array in tensors.items()}
    if manifest.source.get("format") == "onnx":
        from .sources.onnx import onnx_model

        data = onnx_model({name: storage_bits(dtype, array) for name, (dtype, array) in stored.items()},
                          metadata).SerializeToString()
        with output_file(path) as out:
            out.write(data)
        return "onnx"
    if signer is not None:
        metadata = {**metadata, MODEL_ID_KEY: manifest.model_id, MODEL_VERSION_KEY: manifest.model_version,
                    SIGNER_KEY: signer}
    with output_file(path) as out:
        write_safetensors_to(out, stored, metadata or None)
    return "safetensors"
