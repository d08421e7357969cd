"""Fetching a package over HTTP into the same incremental decoder used for files.

    Download.__iter__           yields TensorUpdates as chunks verify; loops over requests
    └── _attempt                one Range request: open, check, stream until it ends or fails
        ├── _open               send with Range / If-Range; map statuses to typed errors
        └── _consume            feed pieces to the sink; refetch a bad chunk once; record rung events

A dropped connection, a timeout, a 5xx or a 429 resumes from the last verified byte (`sink.rewind()`) with
bounded exponential backoff; what no retry can cure (a bad URL or scheme, another 4xx) fails at once.
Every request after the first carries `If-Range` with the first answer's ETag, so a package replaced
on the server stops the download with `PackageChangedError` instead of mixing versions.

>>> decoder = fetch("http://127.0.0.1:8000/models/minilm.blad")           # doctest: +SKIP
>>> decoder.tensor("embeddings.word_embeddings.weight").shape               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..errors import DecoderStateError, FormatError, TrustError
from ..format.framer import Fed
from ..format.reader import StreamDecoder
from ..format.signing import Trust
from ..format.spec import HEADER_SIZE, Manifest
from .choice import Budget, Choice, choose
from .errors import (
    AuthError,
    ConfigError,
    ConnectionLostError,
    IntegrityError,
    NotFoundError,
    PackageChangedError,
    ServerResponseError,
)
from .link import Clock, RealClock
from .verify import PackageVerifier

log = logging.getLogger(__name__)

PROBE = HEADER_SIZE  # first request when only a prefix is wanted: the header, then the manifest, then the rungs
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class Sink(Protocol):
    """What a download feeds: a `StreamDecoder`, or a `PackageVerifier` for digest-only checks.

    `feed` returns what verified and the error that stopped it (the download re-fetches from `rewind()`).
    """

    @property
    def manifest(self) -> Manifest | None: ...
    @property
    def data_start(self) -> int | None: ...
    @property
    def position(self) -> int: ...
    @property
    def pending(self) -> int: ...
    def feed(self, data: bytes) -> Fed[Any]: ...
    def rewind(self) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Retry:
    """Bounded exponential backoff: `attempts` consecutive failures without progress, then give up."""

    attempts: int = 8
    base: float = 0.05
    cap: float = 2.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** (failures - 1)))


@dataclass
class RungEvent:
    """Clock times at which a rung's last byte arrived and at which it was verified."""

    rung: int
    name: str
    end: int
    arrived: float | None = None
    verified: float | None = None


@dataclass
class Stats:
    requests: int = 0
    received: int = 0       # body bytes read from the network
    discarded: int = 0      # unverified bytes dropped on rewind (they are fetched again)
    reconnects: int = 0
    refetches: int = 0      # chunks fetched again after failing verification
    errors: list[str] = field(default_factory=list)


class _Retryable(Exception):
    """A failure that a reconnect may cure (dropped connection, timeout, 5xx, 429, short body)."""


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{url!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{url!r} is not an http:// or https:// URL")


class Download:
    """One package download; iterate it for TensorUpdates, or call `run()`.

    >>> download = Download("http://127.0.0.1:8000/models/m.blad", rung="int8")   # doctest: +SKIP
    >>> for update in download: ...                                                # doctest: +SKIP
    >>> download.events[0].verified                                                # doctest: +SKIP

    `trust` (for the default sink; a sink of your own takes its own) refuses a package not signed by a trusted
    key with a `TrustError` as soon as its header arrives, before any tensor: never retried.

    `budget` (instead of `rung`) picks the rung once the manifest arrives: the highest that fits it
    (`delivery.choice.choose`; `BudgetError` if none does). `choice` then says which and why.
    """

    def __init__(self, url: str, *, rung: str | int | None = None, sink: Sink | None = None,
                 transport: httpx.BaseTransport | None = None, clock: Clock | None = None,
                 retry: Retry = Retry(), token: str | None = None, timeout: float = 10.0,
                 trust: Trust | None = None, budget: Budget | None = None) -> None:
        _check_url(url)
        if rung is not None and budget is not None:
            raise ConfigError(f"give a rung ({rung!r}) or a budget to choose one, not both")
        if sink is not None and trust is not None:
            raise ConfigError("trust goes to the sink you pass (StreamDecoder(trust=...)), or to Download without one")
        self.url = url
        self.sink: Sink = sink if sink is not None else StreamDecoder(trust=trust)
        self.clock = clock or RealClock()
        self.retry = retry
        self.stats = Stats()
        self.events: list[RungEvent] = []
        self.etag: str | None = None
        self.total: int | None = None
        self._want_rung = rung
        self._budget = budget
        self.choice: Choice | None = None
        """The rung the budget chose, and why (None without a budget, or before the manifest arrives)."""
        self._rung: int | None = None
        self._failed_at: int | None = None
        self._target: int | None = None
        headers = {"Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(transport=transport or httpx.HTTPTransport(), headers=headers,
                                    timeout=timeout)

    @property
    def decoder(self) -> StreamDecoder:
        if not isinstance(self.sink, StreamDecoder):
            raise DecoderStateError("this download feeds a verifier, not a StreamDecoder")
        return self.sink

    @property
    def offset(self) -> int:
        """Package bytes held: verified plus received-but-unverified."""
        return self.sink.position + self.sink.pending

    def target(self) -> int | None:
        """Byte offset where the download ends (None: not known until the manifest arrives)."""
        if self._target is not None:
            return self._target
        manifest, start = self.sink.manifest, self.sink.data_start
        if manifest is None or start is None or not self.events:
            return None
        last = len(manifest.ladder.rungs) - 1
        self._target = start + (manifest.data_length if self._rung in (None, last) else manifest.rung_end(self._rung))
        return self._target

    def run(self) -> Sink:
        """Download to the end (or to the requested rung); returns the sink (the decoder by default)."""
        for _ in self:
            pass
        return self.sink

    def __iter__(self) -> Iterator[Any]:
        failures = 0
        try:
            while not self._done():
                before = self.sink.position
                try:
                    yield from self._attempt()
                except _Retryable as exc:
                    failures = 0 if self.sink.position > before else failures + 1
                    self._recover(exc, failures)
            if self.target() == self._full_end():
                self.sink.close()
        finally:
            self._client.close()

    def _full_end(self) -> int | None:
        manifest, start = self.sink.manifest, self.sink.data_start
        return None if manifest is None or start is None else start + manifest.data_length

    def _done(self) -> bool:
        target = self.target()
        return target is not None and self.sink.position >= target

    def _recover(self, exc: Exception, failures: int) -> None:
        self.stats.errors.append(str(exc))
        if failures >= self.retry.attempts:
            raise ConnectionLostError(f"{self.url}: gave up at byte {self.sink.position} after "
                                      f"{failures} failed attempts; last: {exc}") from exc
        self.stats.discarded += self.sink.pending
        self.sink.rewind()
        self.stats.reconnects += 1
        delay = self.retry.delay(max(failures, 1))
        log.info("%s: %s; resuming at byte %d in %.2f s", self.url, exc, self.sink.position, delay)
        self.clock.sleep(delay)

    def _range_end(self) -> int | None:
        """Exclusive end of the next request; None for open-ended."""
        target = self.target()
        if target is not None:
            return target
        if self._want_rung is None and self._budget is None:
            return None
        return PROBE if self.sink.data_start is None else self.sink.data_start

    def _attempt(self) -> Iterator[Any]:
        start, end = self.offset, self._range_end()
        if self.total is not None and end is not None:
            end = min(end, self.total)
        try:
            response = self._open(start, end)
            try:
                yield from self._consume(response, start, end)
            finally:
                response.close()
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise ServerResponseError(f"{self.url}: the request cannot be sent: {exc}") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed at byte {self.offset}: {exc!r}") from exc

    def _open(self, start: int, end: int | None) -> httpx.Response:
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        if self.etag is not None:
            headers["If-Range"] = self.etag
        self.stats.requests += 1
        response = self._client.send(self._client.build_request("GET", self.url, headers=headers), stream=True)
        try:
            self._check_response(response, start)
        except BaseException:
            response.close()
            raise
        return response

    def _check_response(self, response: httpx.Response, start: int) -> None:
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"{self.url}: the server answered {status} (token missing or wrong)")
        if status == 404:
            raise NotFoundError(f"{self.url}: no such package (404)")
        if status >= 500 or status == 429:
            raise _Retryable(f"server answered {status} {response.reason_phrase} at byte {start}")
        etag = response.headers.get("ETag")
        if status == 416:
            raise PackageChangedError(f"{self.url}: range from byte {start} is no longer satisfiable "
                                      f"({response.headers.get('Content-Range')}); the package changed")
        if status == 200:
            total = int(response.headers.get("Content-Length", -1))
            if start > 0 or (self.total is not None and total != self.total):
                raise PackageChangedError(f"{self.url}: resuming at byte {start} returned the whole file "
                                          f"(ETag {etag} vs {self.etag}); the package changed")
        elif status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != start:
                raise ServerResponseError(f"{self.url}: bad Content-Range {response.headers.get('Content-Range')!r} "
                                          f"for a request from byte {start}")
            total = int(match.group(3))
            if self.total is not None and total != self.total:
                raise PackageChangedError(f"{self.url}: size changed from {self.total} to {total} bytes")
        else:
            raise ServerResponseError(f"{self.url}: unexpected status {status} {response.reason_phrase} at byte {start}")
        if self.etag is not None and etag is not None and etag != self.etag:
            raise PackageChangedError(f"{self.url}: ETag changed from {self.etag} to {etag}")
        self.etag = self.etag or etag
        self.total = total if total >= 0 else self.total

    def _consume(self, response: httpx.Response, start: int, end: int | None) -> Iterator[Any]:
        for piece in response.iter_bytes():
            self.stats.received += len(piece)
            try:
                fed = self.sink.feed(piece)
            except TrustError as exc:
                raise type(exc)(f"{self.url}: {exc}") from exc
            self._record_events()
            yield from fed.updates  # with an error: the chunks of this piece that verified before it
            if fed.error is not None:
                self._refetch(fed.error)
                return
            if self._done():
                return
        if end is not None and self.offset < end or end is None and not self._done():
            raise _Retryable(f"body ended at byte {self.offset}, expected {end if end is not None else 'more'}")

    def _refetch(self, exc: FormatError) -> None:
        """A chunk failed verification: drop it and fetch it again once; a second failure is fatal."""
        position = self.sink.position
        if self._failed_at == position:
            raise IntegrityError(f"{self.url}: bytes at offset {position} failed verification twice: {exc}") from exc
        self._failed_at = position
        self.stats.refetches += 1
        self.stats.discarded += self.sink.pending
        self.sink.rewind()
        log.warning("%s: %s; fetching again from byte %d", self.url, exc, position)

    def _record_events(self) -> None:
        manifest = self.sink.manifest
        if manifest is None:
            return
        if not self.events:
            self._start_events(manifest)
        now, received, verified = self.clock.now(), self.offset, self.sink.position
        for event in self.events:
            if event.arrived is None and received >= event.end:
                event.arrived = now
            if event.verified is None and verified >= event.end:
                event.verified = now

    def _start_events(self, manifest: Manifest) -> None:
        data_start = self.sink.data_start
        assert data_start is not None  # the manifest follows the header
        try:
            if isinstance(self._want_rung, str):
                self._rung = manifest.ladder.index(self._want_rung)
            elif self._want_rung is not None:
                self._rung = manifest.ladder.index(manifest.ladder.names[self._want_rung])
        except (ValueError, IndexError) as exc:
            raise ConfigError(f"{self.url}: rung {self._want_rung!r}: {exc}") from exc
        if self._budget is not None:
            self.choice = choose(manifest, self._budget, data_start)
            self._rung = self.choice.rung
        for index, rung in enumerate(manifest.ladder.rungs):
            if self._rung is None or index <= self._rung:
                self.events.append(RungEvent(index, rung.name, data_start + manifest.rung_end(index)))


def fetch(url: str, **options: Any) -> StreamDecoder:
    """Download a package into a `StreamDecoder` (options as for `Download`).

    >>> decoder = fetch("http://127.0.0.1:8000/models/m.blad", rung="int8")   # doctest: +SKIP
    """
    download = Download(url, **options)
    download.run()
    return download.decoder


class _VerifiedPieces:
    """A verifying sink that keeps the bytes it has verified, to hand them on (see `open_url`)."""

    def __init__(self, trust: Trust | None = None) -> None:
        self._verifier = PackageVerifier(trust=trust)
        self._held = bytearray()  # received from `_given` on; the verified part is taken by `take`
        self._given = 0

    @property
    def manifest(self) -> Manifest | None:
        return self._verifier.manifest

    @property
    def data_start(self) -> int | None:
        return self._verifier.data_start

    @property
    def position(self) -> int:
        return self._verifier.position

    @property
    def pending(self) -> int:
        return self._verifier.pending

    def feed(self, data: bytes) -> Fed[int]:
        self._held += data  # before verifying: a failure mid-call is trimmed by `rewind`
        return self._verifier.feed(data)

    def rewind(self) -> int:
        position = self._verifier.rewind()
        del self._held[position - self._given:]
        return position

    def close(self) -> None:
        self._verifier.close()

    def take(self) -> bytes:
        """The bytes verified since the last call."""
        count = self._verifier.position - self._given
        piece = bytes(self._held[:count])
        del self._held[:count]
        self._given += count
        return piece


def open_url(url: str, *, trust: Trust | None = None, **options: Any) -> Iterator[bytes]:
    """The package at `url` as byte pieces that already passed their digests, resuming after drops.

    For feeding a decoder of your own (the device runtime does): unverified bytes are never yielded, and with
    `trust` nothing is yielded from a package whose signature is refused (its `TrustError` is raised).

    >>> decoder = StreamDecoder()                                              # doctest: +SKIP
    >>> for piece in open_url("http://127.0.0.1:8000/models/m.blad"):         # doctest: +SKIP
    ...     decoder.feed(piece).raise_for_error()
    """
    sink = _VerifiedPieces(trust)
    for _ in Download(url, sink=sink, **options):
        if piece := sink.take():
            yield piece
    if piece := sink.take():
        yield piece
