"""Packages for runtime tests, and a stepped feed so the background thread is driven without sleeps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import bitladder
from bitladder.format.reader import Package
from bitladder.runtime import PieceQueue, file_pieces

PIECE = 64 * 1024


def encode(tmp_path: Path, state: Mapping[str, np.ndarray] | object, ladder: str, name: str = "m",
           **kwargs: object) -> Path:
    out = tmp_path / f"{name}.blad"
    bitladder.encode(state, out, ladder=ladder, **kwargs)  # type: ignore[arg-type]
    return out


class RungFeed(PieceQueue):
    """A feed cut at rung boundaries: holds the bytes of rung 0 at first; `advance(r)` adds rung r."""

    def __init__(self, path: Path, piece: int = PIECE) -> None:
        super().__init__()
        package = Package.open(path)
        self._data = path.read_bytes()
        self._piece = piece
        self._ends = [package.data_start + package.manifest.rung_end(r)
                      for r in range(len(package.manifest.ladder.rungs))]
        self._sent = 0
        self.advance(0)

    def _send_to(self, end: int) -> None:
        for start in range(self._sent, end, self._piece):
            self.put(self._data[start:min(start + self._piece, end)])
        self._sent = max(self._sent, end)

    def advance(self, rung: int) -> None:
        self._send_to(self._ends[rung])
        if rung == len(self._ends) - 1:
            self.close()

    def finish(self) -> None:
        self.advance(len(self._ends) - 1)

    def send_bytes(self, count: int) -> None:
        self._send_to(self._sent + count)


def full_feed(path: Path, piece: int = PIECE) -> PieceQueue:
    feed = PieceQueue(file_pieces(path, piece))
    feed.release()
    feed.close()
    return feed


def corrupt(path: Path, out: Path, chunk: int) -> Path:
    """A copy of the package with one byte flipped inside chunk `chunk`."""
    package = Package.open(path)
    entry = package.manifest.chunks[chunk]
    data = bytearray(path.read_bytes())
    data[package.data_start + entry.offset + entry.length // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
