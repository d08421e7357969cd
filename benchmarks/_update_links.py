"""Time to an approximate and to the exact new version over emulated links: the delta vs the full new package.

Both are served by `bitladder serve` on 127.0.0.1 and fetched through the client's shaped transport (rate, RTT);
the delta is decoded as it arrives onto the old weights, the full package from nothing, so each time includes
verifying and decoding. `update_times(...)` returns one row per link rate.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from delivery import start_server

from bitladder.delivery import Download, Link, ShapedTransport
from bitladder.format.reader import StreamDecoder
from bitladder.sources import SourceModel


@dataclass(frozen=True)
class LinkTimes:
    rate_mbit: float
    delta_first_s: float      # every changed tensor at the delta's approximate rung
    delta_exact_s: float      # the new version bit-exact
    full_first_s: float       # the full new package's first rung (int8)
    full_exact_s: float


def _rung_times(url: str, link: Link, sink: StreamDecoder) -> tuple[float, float]:
    started = time.monotonic()
    download = Download(url, transport=ShapedTransport(httpx.HTTPTransport(), link), sink=sink)
    download.run()
    first, last = download.events[0], download.events[-1]
    assert first.verified is not None and last.verified is not None
    return first.verified - started, last.verified - started


def update_times(delta: Path, full: Path, parent: SourceModel, rates_mbit: tuple[float, ...] = (20.0, 100.0),
                 rtt: float = 0.030, scratch: Path | None = None) -> list[LinkTimes]:
    root = (scratch or delta.parent) / "served"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(delta, root / "delta.blad")
    shutil.copy(full, root / "full.blad")
    process, url = start_server(root)
    try:
        rows = []
        for rate in rates_mbit:
            link = Link(rate=rate * 1e6, rtt=rtt)
            delta_first, delta_exact = _rung_times(f"{url}/models/delta.blad", link, StreamDecoder(parent=parent))
            full_first, full_exact = _rung_times(f"{url}/models/full.blad", link, StreamDecoder())
            rows.append(LinkTimes(rate, delta_first, delta_exact, full_first, full_exact))
        return rows
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(root, ignore_errors=True)
