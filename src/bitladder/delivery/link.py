"""Link emulation: an httpx transport that wraps another and delivers its bytes at a shaped pace.

The shaping runs on a `Clock`. `RealClock` sleeps; `VirtualClock` only advances a counter, so tests of
timing behaviour run instantly and deterministically.

>>> clock = VirtualClock()
>>> transport = ShapedTransport(httpx.HTTPTransport(), PROFILES["cell-100m"], clock)   # doctest: +SKIP
>>> httpx.Client(transport=transport).get(url).content                                 # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from .errors import ConfigError

_PIECE = 16 * 1024  # bytes released at a time: fine enough that a 5 Mbit/s link ticks every 26 ms
_RECEIVE_WINDOW = 256 * 1024  # a typical TCP receive buffer (Linux autotunes from 128 KiB up to MiBs)


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Monotonic wall time; `sleep` really sleeps."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """A clock that only moves when someone sleeps on it (tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds


@dataclass(frozen=True)
class Link:
    """A link: constant `rate` (bit/s) or a `trace` of (seconds, bit/s) steps, a round-trip time, and
    loss-induced stalls (each 16 KiB piece stalls with probability `loss` for `stall` seconds)."""

    rate: float = 0.0
    rtt: float = 0.0
    trace: tuple[tuple[float, float], ...] = ()
    loss: float = 0.0
    stall: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate <= 0 and not self.trace:
            raise ConfigError(f"link needs a rate > 0 or a trace (got rate {self.rate})")
        if self.rtt < 0 or not 0 <= self.loss < 1 or self.stall < 0:
            raise ConfigError(f"bad link: rtt {self.rtt}, loss {self.loss}, stall {self.stall}")
        if self.trace and any(bps <= 0 for _, bps in self.trace):
            raise ConfigError("trace rates must be > 0 bit/s")

    def finish_time(self, start: float, nbytes: int) -> float:
        """When `nbytes` sent from `start` (seconds since the link came up) have all left the link."""
        bits = 8.0 * nbytes
        if not self.trace:
            return start + bits / self.rate
        times = [t for t, _ in self.trace]
        index = max(bisect.bisect_right(times, start) - 1, 0)
        now = start
        while True:
            bps = self.trace[index][1]
            until = times[index + 1] if index + 1 < len(times) else float("inf")
            if now + bits / bps <= until:
                return now + bits / bps
            bits -= (until - now) * bps
            now, index = until, index + 1


PROFILES: dict[str, Link] = {
    # 3GPP TS 22.261 (AI/ML model download KPI): 1.1 Gbit/s experienced data rate.
    "ts22261-model-download": Link(rate=1.1e9, rtt=0.010),
    "cell-100m": Link(rate=100e6, rtt=0.030),
    "cell-20m": Link(rate=20e6, rtt=0.050),
    "cell-5m": Link(rate=5e6, rtt=0.080),
}

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float:
    """`"100mbit"`, `"1.1gbit"`, `"50Mbit/s"`, `"5m"` or a plain number of bit/s -> bit/s."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]?)(?:bit|bps|b)?(?:/s)?\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"rate {text!r} is not like '100mbit', '1.1gbit' or '5000000'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_duration(text: str) -> float:
    """`"30ms"`, `"0.03s"`, `"0.03"` -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*", text.lower())
    if match is None:
        raise ConfigError(f"duration {text!r} is not like '30ms' or '0.03s'")
    return float(match.group(1)) * {"ms": 1e-3, "us": 1e-6, "s": 1.0, None: 1.0}[match.group(2)]


def load_trace(path: str | Path) -> tuple[tuple[float, float], ...]:
    """A bandwidth trace: CSV rows `time_s,bit_per_s` (a header row is skipped), times increasing."""
    rows: list[tuple[float, float]] = []
    try:
        with open(path, newline="") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or row[0].strip().startswith("#"):
                    continue
                try:
                    rows.append((float(row[0]), float(row[1])))
                except (ValueError, IndexError):
                    if rows or number > 1:
                        raise ConfigError(f"{path}:{number}: expected 'time_s,bit_per_s', got {row!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read trace {path}: {exc}") from exc
    if not rows or any(b[0] <= a[0] for a, b in zip(rows, rows[1:], strict=False)):
        raise ConfigError(f"{path}: trace is empty or its times do not increase")
    return tuple(rows)


@dataclass
class _Shaper:
    """Shared state of one link: when it is next free, and the loss dice."""

    link: Link
    clock: Clock
    epoch: float
    free_at: float = 0.0
    dice: random.Random = field(default_factory=random.Random)

    def begin(self) -> None:
        """A response starts now: the link cannot have carried any of it before."""
        self.free_at = max(self.free_at, self.clock.now() - self.epoch)

    def release(self, nbytes: int) -> None:
        now = self.clock.now() - self.epoch
        # The receiver's socket buffer keeps taking bytes while the reader is busy or a sleep overslept, so
        # the link idles only once a whole receive window would have waited unread.
        start = max(self.free_at, now - (self.link.finish_time(now, _RECEIVE_WINDOW) - now))
        finish = self.link.finish_time(start, nbytes)
        if self.link.loss and self.dice.random() < self.link.loss:
            finish += self.link.stall
        self.free_at = finish
        self.clock.sleep(self.epoch + finish - self.clock.now())


class _ShapedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, shaper: _Shaper) -> None:
        self._inner = inner
        self._shaper = shaper

    def __iter__(self) -> Iterator[bytes]:
        self._shaper.begin()
        for data in self._inner:
            for start in range(0, len(data), _PIECE):
                piece = data[start:start + _PIECE]
                self._shaper.release(len(piece))
                yield piece

    def close(self) -> None:
        self._inner.close()


class ShapedTransport(httpx.BaseTransport):
    """Wraps a transport: each request waits one RTT, then response bodies flow at the link's pace."""

    def __init__(self, inner: httpx.BaseTransport, link: Link, clock: Clock | None = None) -> None:
        self._inner = inner
        self.link = link
        self.clock = clock or RealClock()
        self._shaper = _Shaper(link, self.clock, self.clock.now(), dice=random.Random(link.seed))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.sleep(self.link.rtt)
        response = self._inner.handle_request(request)
        if not isinstance(response.stream, httpx.SyncByteStream):
            raise TypeError("ShapedTransport wraps synchronous transports only")
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_ShapedStream(response.stream, self._shaper),
                              extensions=response.extensions, request=request)

    def close(self) -> None:
        self._inner.close()


def make_link(profile: str | None = None, rate: str | None = None, rtt: str | None = None,
              trace: str | None = None, loss: float | None = None) -> Link | None:
    """The link the CLI options describe, or None when emulation is off.

    With a `profile`, the other options override its settings (`rate` or `trace` its bandwidth, `rtt`,
    `loss`). `rate` with `trace`, or an `rtt` or nonzero `loss` without a profile, rate or trace, is a
    `ConfigError`: an option is never silently dropped.

    >>> make_link("cell-20m", rtt="120ms", loss=0.01)                  # doctest: +ELLIPSIS
    Link(rate=20000000.0, rtt=0.12, trace=(), loss=0.01, ...)
    """
    if rate is not None and trace is not None:
        raise ConfigError("give a link rate or a trace, not both (a trace sets the rate at every moment)")
    if profile is None and rate is None and trace is None:
        if rtt is not None or loss:  # a loss of 0 on no emulated link drops nothing
            raise ConfigError("an RTT or loss needs a link to apply to: give a rate, a trace or a profile "
                              f"({', '.join(sorted(PROFILES))})")
        return None
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"unknown link profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    link = PROFILES[profile] if profile is not None else Link(rate=1.0)  # rate and rtt replaced below
    if rate is not None:
        link = dataclasses.replace(link, rate=parse_rate(rate), trace=())
    elif trace is not None:
        link = dataclasses.replace(link, rate=0.0, trace=load_trace(trace))
    if rtt is not None or profile is None:
        link = dataclasses.replace(link, rtt=parse_duration(rtt) if rtt is not None else 0.0)
    if loss is not None:
        link = dataclasses.replace(link, loss=loss)
    return link
