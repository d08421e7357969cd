"""Bounded parsing shared by the source readers: files opened only when regular, JSON with its nesting depth,
duplicate keys and number syntax checked, integers and shapes checked before any size is computed from them.

Every failure is a `SourceError` that names the file and what was wrong where.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError

MAX_RANK = 64  # numpy's limit on dimensions
MAX_DIM = 2**63 - 1  # a dimension fits int64, as in every framework
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BLOCK = 1 << 20


def regular_file(path: Path, what: str = "file") -> int:
    """The size of `path`, which must be a regular file (not a folder, a FIFO that would block, or missing)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise SourceError(f"{path}: cannot open the {what} ({getattr(exc, 'strerror', None) or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: the {what} is not a regular file")
    return info.st_size


def nesting(text: bytes) -> int:
    """The deepest nesting of JSON arrays and objects in `text` (brackets inside strings do not count)."""
    stripped = _STRINGS.sub(b'""', text)
    depth = deepest = 0
    for at in range(0, len(stripped), _BLOCK):
        block = np.frombuffer(stripped, np.uint8, count=min(_BLOCK, len(stripped) - at), offset=at)
        steps = ((block == 0x5B) | (block == 0x7B)).astype(np.int32) - ((block == 0x5D) | (block == 0x7D))
        running = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def _unique(where: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise SourceError(f"{where}: key {key[:80]!r} appears twice in one JSON object")
            result[key] = value
        return result
    return pairs


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes, where: str, max_depth: int) -> Any:
    """`raw` as strict JSON: UTF-8, no NaN or Infinity, no duplicate keys, at most `max_depth` levels deep."""
    depth = nesting(raw)
    if depth > max_depth:
        raise SourceError(f"{where}: JSON nested {depth} levels deep (at most {max_depth})")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique(where), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{where}: not UTF-8 at byte {exc.start}") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, integers past Python's digit limit
        raise SourceError(f"{where}: not valid JSON ({str(exc)[:200]})") from exc


def integer(value: object, what: str, where: str, low: int = 0, high: int = MAX_DIM) -> int:
    """`value` if it is an integer (not a bool, float or string) in [low, high]."""
    if type(value) is not int or not low <= value <= high:
        raise SourceError(f"{where}: {what} {_show(value)} is not an integer in [{low}, {high}]")
    return value


def shape_of(dims: object, where: str) -> tuple[tuple[int, ...], int]:
    """A shape (a list of non-negative int64 dimensions, at most `MAX_RANK`) and its element count."""
    if not isinstance(dims, (list, tuple)) or len(dims) > MAX_RANK:
        raise SourceError(f"{where}: shape {_show(dims)} is not a list of at most {MAX_RANK} dimensions")
    shape = tuple(integer(d, "dimension", where) for d in dims)
    return shape, math.prod(shape)


def encodable(text: str, what: str, where: str) -> str:
    """`text` if it encodes as UTF-8 (JSON and pickles can carry lone surrogates, which the manifest cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SourceError(f"{where}: {what} {_show(text)} is not valid Unicode (a lone surrogate at {exc.start})") from exc
    return text


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
