"""Which package of a catalog holds a delta's parent, and rebuilding a version's exact weights from a catalog.

Both sides of an uploaded delta use it. The server (publish.py) accepts a delta only when its catalog holds the
parent the delta names (model id, version and weights digest; a full package, or a delta whose `weights` are
those), and only when the delta, decoded against that parent, gives the weights it records. The client
(`bitladder push NEW URL --delta-from VERSION`, deltapush.py) rebuilds the server's version to code the delta
against. A version held only as a delta is rebuilt through its chain of parents, down to a full package.

>>> check_parent(catalog.entries(), manifest)                           # doctest: +SKIP
>>> rebuild(entries, "minilm", "2", None, decode)["pooler.dense.weight"]   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import LineageError
from ..format.lineage import model_weights
from ..format.spec import Manifest, version_key
from ..sources import from_arrays

Tensors = dict[str, NDArray[np.generic]]
Decode = Callable[[dict[str, Any], Tensors | None], Tensors]
"""decode(catalog entry, its parent's weights or None for a full package) -> its exact weights."""


class ParentNotHeldError(LineageError):
    """The catalog holds no package of the version (with the weights) a delta updates (a PUT gets 409)."""


def _short(weights: str | None) -> str:
    return f"{weights[:23]}…" if weights else "unknown weights"


def candidates(entries: Iterable[dict[str, Any]], model_id: str, version: str,
               weights: str | None = None) -> list[dict[str, Any]]:
    """The entries holding `model_id` at `version` (with `weights`, when given), full packages first."""
    found = [entry for entry in entries if entry["id"] == model_id and entry["version"] == version
             and (weights is None or entry["weights"] == weights)]
    return sorted(found, key=lambda entry: (entry["parent"] is not None, entry["name"]))


def held(entries: list[dict[str, Any]], model_id: str) -> str:
    """What the catalog holds of `model_id`, for a message: "it holds version '1' (blake3:…)", or "none"."""
    versions = sorted({(entry["version"], entry["weights"]) for entry in entries if entry["id"] == model_id},
                      key=lambda item: version_key(item[0]))
    if not versions:
        return f"it holds no version of {model_id!r}"
    return "it holds " + ", ".join(f"version {version!r} ({_short(weights)})" for version, weights in versions)


def check_parent(entries: list[dict[str, Any]], manifest: Manifest, replacing: str | None = None) -> None:
    """Raise `ParentNotHeldError` unless `entries` hold the parent of the delta `manifest` (a full one: no-op),
    in a package other than `replacing` (the name the delta is published as: it may not replace its own parent)."""
    parent = manifest.parent
    if parent is None:
        return
    found = candidates(entries, parent.model_id, parent.version, parent.weights)
    if any(entry["name"] != replacing for entry in found):
        return
    if found:
        raise ParentNotHeldError(f"delta {manifest.model_id!r} {manifest.model_version} <- {parent.version}: the "
                                 f"server holds that version only as {replacing}, which the delta would replace; "
                                 "publish the delta under another name")
    raise ParentNotHeldError(f"delta {manifest.model_id!r} {manifest.model_version} <- {parent.version}: the server "
                             f"holds no {parent.model_id!r} version {parent.version!r} with weights "
                             f"{_short(parent.weights)} ({held(entries, parent.model_id)}); publish that version "
                             "first, or code the delta against one the server holds")


def rebuild(entries: list[dict[str, Any]], model_id: str, version: str, weights: str | None, decode: Decode,
            _seen: frozenset[tuple[str, str, str | None]] = frozenset()) -> Tensors:
    """The exact weights of `model_id` at `version` (with `weights`, when given) from the packages `entries`
    list, decoding a delta's parents first; raises `ParentNotHeldError` if some link of the chain is missing.

    >>> rebuild(listing["models"], "m", "2", None, lambda entry, parent: ...)   # doctest: +SKIP
    """
    found = candidates(entries, model_id, version, weights)
    digests = {entry["weights"] for entry in found}
    if weights is None and len(digests) > 1:
        raise LineageError(f"{model_id!r} version {version!r} is held with {len(digests)} different weights "
                           f"({', '.join(_short(digest) for digest in sorted(digests))}): say which")
    usable = [entry for entry in found if entry["parent"] is None
              or (entry["parent"]["id"], entry["parent"]["version"], entry["parent"]["weights"]) not in _seen]
    if not usable:
        want = f" with weights {_short(weights)}" if weights else ""
        loop = " (only as deltas that lead back to it)" if found else ""
        raise ParentNotHeldError(f"the server holds no {model_id!r} version {version!r}{want}{loop} "
                                 f"({held(entries, model_id)})")
    entry = usable[0]
    parent = entry["parent"]
    if parent is None:
        return decode(entry, None)
    below = rebuild(entries, parent["id"], parent["version"], parent["weights"], decode,
                    _seen | {(model_id, version, entry["weights"])})
    return decode(entry, below)


def check_applies(manifest: Manifest, tensors: Tensors) -> None:
    """Raise `LineageError` unless `tensors` (a delta decoded against its parent) are the weights `manifest`
    records: what a delta that verified chunk by chunk can still get wrong is the weights it claims to give."""
    got = model_weights(from_arrays(tensors))
    if got != manifest.weights:
        parent = manifest.parent
        base = "" if parent is None else f" <- {parent.version}"
        raise LineageError(f"delta {manifest.model_id!r} {manifest.model_version}{base} does not apply: decoded "
                           f"against its parent it gives weights {_short(got)}, not the {_short(manifest.weights)} "
                           "it records")
