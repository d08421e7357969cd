"""`bitladder push NEW URL --delta-from VERSION`: send a device's fine-tuned weights as a delta against the
version the server holds, instead of the whole model.

    delta_upload                the delta package, built in a temporary folder (a context manager)
    ├── server_catalog          GET the folder's catalog (`GET /models` JSON), with the token
    ├── lineage.rebuild         the server's VERSION, downloaded exact and decoded in memory (through its chain of
    │                           deltas, if it holds that version only as a delta), unless `base` is given
    └── api.diff                NEW coded against it; the caller PUTs the result like any package

The server checks the delta's parent and that it applies before the new version appears in its catalog
(publish.py); a refusal comes back as the PUT's 409 or 422.

>>> with delta_upload("tuned.safetensors", "http://h:8000/models", delta_from="1", version="2") as upload:  # doctest: +SKIP
...     print(upload.name, upload.manifest.rung_bytes())
minilm-1-to-2.blad [411200, 3902000]
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from .. import api
from ..errors import UsageError, file_access_error
from ..format.reader import Package, StreamDecoder
from ..format.signing import SigningKey, Trust
from ..format.spec import Manifest
from .catalog import NAME
from .client import Download
from .errors import AuthError, ConfigError, NotFoundError, ServerResponseError
from .lineage import Decode, Tensors, candidates, held, rebuild

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DeltaUpload:
    """A delta package ready to PUT: its file (deleted when the context ends), the name to publish it as, its
    manifest, and the bytes of NEW it stands in for."""

    path: Path
    name: str
    manifest: Manifest
    replaces: int


def server_catalog(folder_url: str, token: str | None = None,
                   transport: httpx.BaseTransport | None = None) -> list[dict[str, Any]]:
    """The package entries a bitladder server lists at `folder_url` (e.g. `http://h:8000/models`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(transport=transport, headers=headers, timeout=30, follow_redirects=True) as client:
            response = client.get(folder_url)
    except httpx.HTTPError as exc:
        raise ServerResponseError(f"{folder_url}: cannot read the catalog: {exc or type(exc).__name__}") from exc
    if response.status_code in (401, 403):
        raise AuthError(f"{folder_url}: the server refused the token for its catalog ({response.status_code})")
    if response.status_code == 404:
        raise NotFoundError(f"{folder_url}: no catalog there (404); give the version you hold with --base FILE")
    try:
        models = response.json()["models"] if response.is_success else None
    except (ValueError, KeyError, TypeError):
        models = None
    if not isinstance(models, list):
        raise ServerResponseError(f"{folder_url}: answered {response.status_code} without a bitladder catalog; give "
                                  "the version you hold with --base FILE")
    return models


def _manifest(path: str | os.PathLike[str], trust: Trust | None) -> Manifest | None:
    """The manifest of a package file, None for a model file (which must exist)."""
    try:
        os.stat(path)
    except OSError as exc:
        raise file_access_error(exc, "model") from exc
    return Package.open(path, trust=trust).manifest if Path(path).suffix == ".blad" else None


def _model_id(given: str | None, manifests: list[Manifest | None], entries: list[dict[str, Any]] | None,
              delta_from: str) -> str:
    """The model id: given, a package's own, or the only one the server holds at `delta_from`."""
    for candidate in (given, *(manifest.model_id for manifest in manifests if manifest is not None)):
        if candidate:
            return candidate
    ids = sorted({entry["id"] for entry in entries or () if entry["version"] == delta_from})
    if not ids:
        raise NotFoundError(f"the server lists no model at version {delta_from!r}: check --delta-from")
    if len(ids) > 1:
        raise ConfigError(f"the server holds several models at version {delta_from!r} ({', '.join(map(repr, ids))}): "
                          "say which with --model-id")
    return str(ids[0])


def _downloader(folder_url: str, token: str | None, trust: Trust | None,
                transport: httpx.BaseTransport | None) -> Decode:
    def decode(entry: dict[str, Any], parent: Tensors | None) -> Tensors:
        sink = StreamDecoder(trust=trust, parent=parent)
        Download(urljoin(folder_url, entry["url"]), sink=sink, token=token, transport=transport).run()
        return sink.tensors()

    return decode


def delta_name(model_id: str, delta_from: str, version: str) -> str:
    """`<id>-<parent>-to-<version>.blad`, with what a package name may not hold replaced by '-'.

    >>> delta_name("org/minilm", "1", "2+ft")
    'org-minilm-1-to-2-ft.blad'
    """
    name = _UNSAFE.sub("-", f"{model_id}-{delta_from}-to-{version}").strip("-.") + ".blad"
    if not NAME.fullmatch(name):
        raise ConfigError(f"cannot make a package name of {model_id!r} {delta_from} -> {version}: give --name")
    return name


@contextmanager
def delta_upload(new: str | os.PathLike[str], folder_url: str, *, delta_from: str, version: str,
                 token: str | None = None, base: str | os.PathLike[str] | None = None, model_id: str | None = None,
                 name: str | None = None, approximate_bits: int | None = 8,
                 sign: str | os.PathLike[str] | SigningKey | None = None, trust: Trust | None = None,
                 transport: httpx.BaseTransport | None = None) -> Iterator[DeltaUpload]:
    """The delta from the server's `delta_from` (or `base`, the same version held locally) to `new` (a model
    file or a full package), as version `version`; see the module docstring.

    >>> with delta_upload("tuned.safetensors", url, delta_from="1", version="2", base="v1.blad") as upload:  # doctest: +SKIP
    ...     upload.path.stat().st_size
    """
    if version == delta_from:
        raise UsageError(f"--model-version {version!r} is the version the delta starts from: give the update its own")
    new_manifest = _manifest(new, trust)
    if new_manifest is not None and new_manifest.is_delta:
        raise UsageError(f"{new} is a delta package: give the fine-tuned model (a model file or a full package)")
    base_manifest = None if base is None else _manifest(base, trust)
    if base_manifest is not None and base_manifest.model_version != delta_from:
        raise ConfigError(f"--base {base} holds version {base_manifest.model_version!r}, not --delta-from {delta_from!r}")
    entries = None if base is not None and (model_id or base_manifest) else server_catalog(folder_url, token, transport)
    model_id = _model_id(model_id, [base_manifest, new_manifest], entries, delta_from)
    old: str | os.PathLike[str] | Tensors
    if base is not None:
        old = base
    else:
        assert entries is not None  # read above whenever there is no base
        if not candidates(entries, model_id, delta_from):
            raise NotFoundError(f"{folder_url}: the server lists no {model_id!r} version {delta_from!r} "
                                f"({held(entries, model_id)})")
        old = rebuild(entries, model_id, delta_from, None, _downloader(folder_url, token, trust, transport))
    name = name or delta_name(model_id, delta_from, version)
    if not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"--name {name!r}: a package name is letters, digits, '_', '.' and '-', ending in .blad")
    with tempfile.TemporaryDirectory(prefix="bitladder-push-") as folder:
        path = Path(folder) / name
        manifest = api.diff(old, new, path, version=version, model_id=model_id, parent_version=delta_from,
                            approximate_bits=approximate_bits, sign=sign, trust=trust)
        yield DeltaUpload(path, name, manifest, os.stat(new).st_size)
