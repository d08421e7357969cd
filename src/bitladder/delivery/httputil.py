"""HTTP details the server needs (RFC 9110): byte ranges, entity tags and preconditions, bearer tokens, pacing.

    parse_ranges            Range (§14.2): None = ignore the header (unknown unit, invalid, too many ranges)
    preconditions           If-Match / If-None-Match (§13.2.2): 412, 304 or None (go on)
    if_range_holds          If-Range (§13.1.5): strong comparison with the current ETag
    multipart_parts         the body of a multipart/byteranges answer (§14.6)

>>> parse_ranges("bytes=10-19, 0-9, 50-", 100)
(ByteRange(start=0, end=20), ByteRange(start=50, end=100))
>>> parse_ranges("items=0-5", 100) is None
True
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio

from ..format.spec import SIGNED_SIZE

# A position with more digits than this lies past the end of any file; int() is never called on it (Python
# refuses to parse over 4,300 digits, and a number that large can only mean "to the end" or "past the end").
_MAX_DIGITS = 18
_PAST_ANY_END = 10**_MAX_DIGITS
# More range-specs than this are answered with the whole file (RFC 9110 §14.2 lets a server ignore such lists).
MAX_RANGES = 16
_SPEC = re.compile(r"(\d*)-(\d*)")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


class RangeNotSatisfiable(Exception):
    """No range of a valid `bytes` Range header overlaps the file (answered with 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _PAST_ANY_END


def _one_range(spec: str, size: int) -> ByteRange | None | bool:
    """One range-spec: a range inside the file, None if unsatisfiable, False if invalid."""
    match = _SPEC.fullmatch(spec)
    if match is None or match.group(1) == match.group(2) == "":
        return False
    first, last = match.group(1), match.group(2)
    if first == "":
        start = max(size - _number(last), 0)
        return ByteRange(start, size) if start < size else None  # `-0` and an empty file are unsatisfiable
    start = _number(first)
    if last != "" and _number(last) < start:
        return False
    if start >= size:
        return None
    return ByteRange(start, size if last == "" else min(_number(last) + 1, size))


def parse_ranges(header: str, size: int) -> tuple[ByteRange, ...] | None:
    """The ranges of a `Range` header inside a file of `size` bytes, sorted, overlapping or adjacent ones merged.

    None means the header is to be ignored (answer 200 with the whole file): a unit other than `bytes` (which is
    case-insensitive), a malformed range set, or more than MAX_RANGES ranges. Raises RangeNotSatisfiable when
    none of the ranges overlaps the file.

    >>> parse_ranges("BYTES=-10", 100)
    (ByteRange(start=90, end=100),)
    """
    unit, equals, range_set = header.partition("=")
    if not equals or not _TOKEN.fullmatch(unit) or unit.lower() != "bytes":
        return None
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # empty list elements are allowed (RFC 9110 §5.6.1)
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges = []
    for spec in specs:
        one = _one_range(spec, size)
        if one is False:
            return None
        if isinstance(one, ByteRange):
            ranges.append(one)
    if not ranges:
        raise RangeNotSatisfiable(f"no range of {header[:80]!r} overlaps the {size} bytes of the file")
    ordered = sorted(ranges, key=lambda r: r.start)
    merged = [ordered[0]]
    for part in ordered[1:]:
        if part.start <= merged[-1].end:
            merged[-1] = ByteRange(merged[-1].start, max(merged[-1].end, part.end))
        else:
            merged.append(part)
    return tuple(merged)


def parse_range(header: str, size: int) -> ByteRange:
    """Exactly one satisfiable byte range (a strict helper for tests' mock servers; the server uses parse_ranges).

    >>> parse_range("bytes=10-", 100)
    ByteRange(start=10, end=100)
    """
    ranges = parse_ranges(header, size)
    if ranges is None or len(ranges) != 1:
        raise RangeNotSatisfiable(f"not a single byte range: {header[:80]!r}")
    return ranges[0]


def multipart_parts(ranges: tuple[ByteRange, ...], size: int, boundary: str,
                    content_type: str) -> list[bytes | ByteRange]:
    """The body of a multipart/byteranges 206: literal bytes between the file ranges they introduce."""
    parts: list[bytes | ByteRange] = []
    for index, part in enumerate(ranges):
        lead = "\r\n" if index else ""
        parts.append(f"{lead}--{boundary}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Range: bytes {part.start}-{part.end - 1}/{size}\r\n\r\n".encode())
        parts.append(part)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return parts


def _tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque-tag) for each entity-tag of a list; parsing stops at the first malformed element."""
    tags, at = [], 0
    while at < len(header):
        match = _ETAG.match(header, at)
        if match is None:
            break
        tags.append((match.group(1) is not None, match.group(2)))
        at = match.end()
    return tags


def _matches(header: str, etag: str | None, strong: bool) -> bool:
    """Whether a If-Match / If-None-Match list names the current representation (`etag` None: there is none)."""
    if etag is None:
        return False
    if header.strip() == "*":
        return True
    weak_now, opaque_now = etag.startswith("W/"), etag.removeprefix("W/")
    return any(opaque == opaque_now and not (strong and (weak or weak_now)) for weak, opaque in _tags(header))


def preconditions(method: str, headers: Mapping[str, str], etag: str | None) -> int | None:
    """RFC 9110 §13.2.2 steps 1 and 3 (we send no Last-Modified, so the date conditions never apply).

    `etag` is the current representation's (None: no file yet, as for a PUT that creates). Returns 412 or 304,
    or None to go on with the request.

    >>> preconditions("GET", {"if-none-match": 'W/"a", "b"'}, '"a"')
    304
    """
    if_match = headers.get("if-match")
    if if_match is not None and not _matches(if_match, etag, strong=True):
        return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag, strong=False):
        return 304 if method in ("GET", "HEAD") else 412
    return None


def if_range_holds(header: str | None, etag: str) -> bool:
    """An If-Range holds only for a strong entity-tag equal to ours; a date never does (no Last-Modified)."""
    return header is None or (not etag.startswith("W/") and header.strip() == etag)


def strong_etag(header: bytes, size: int) -> str:
    """Content-derived ETag: the manifest digest (which covers every chunk digest) and the file size.

    Only header bytes 16-47: a package signed again with the same manifest has the same bytes after its header."""
    return f'"{header[16:SIGNED_SIZE].hex()}-{size:x}"'


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
