"""HTTP details the server needs: single byte ranges, strong ETags, bearer tokens, pacing."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass

import anyio

from ..format.spec import HEADER_SIZE

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The Range header is malformed, multi-range, or outside the file (answered with 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str, size: int) -> ByteRange:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range, clipped to `size`.

    >>> parse_range("bytes=10-", 100)
    ByteRange(start=10, end=100)
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"not a single byte range: {header[:80]!r}")
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size
        if int(last) == 0:
            raise RangeNotSatisfiable(f"empty suffix range {header!r}")
    else:
        start, end = int(first), size if last == "" else min(int(last) + 1, size)
        if last != "" and int(last) < start:
            raise RangeNotSatisfiable(f"range {header!r} ends before it starts")
    if start >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts at or past the end ({size} bytes)")
    return ByteRange(start, end)


def strong_etag(header: bytes, size: int) -> str:
    """Content-derived ETag: the manifest digest (which covers every chunk digest) and the file size."""
    return f'"{header[16:HEADER_SIZE].hex()}-{size:x}"'


def token_ok(authorization: str | None, token: str) -> bool:
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class Pacer:
    """Holds a sender to `rate` bit/s (one per response, i.e. per connection at a time)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._sent = 0

    async def wait(self, nbytes: int) -> None:
        self._sent += nbytes
        due = self._start + 8.0 * self._sent / self._rate
        delay = due - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
