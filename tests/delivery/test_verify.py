"""The digest-only verifier used for uploads and load tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitladder.delivery import PackageVerifier
from bitladder.errors import (
    ChunkIntegrityError,
    DecoderStateError,
    FormatError,
    ManifestError,
    TruncatedError,
)

from .conftest import make_package


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    return make_package(tmp_path / "m.blad").read_bytes()


@pytest.mark.parametrize("seed", range(5))
def test_any_split_verifies(data: bytes, seed: int) -> None:
    cuts = sorted(np.random.default_rng(seed).choice(len(data), 20, replace=False).tolist())
    verifier = PackageVerifier()
    chunks = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False):
        chunks += verifier.feed(data[a:b])
    verifier.close()
    assert verifier.manifest is not None and chunks == list(range(len(verifier.manifest.chunks)))
    assert verifier.position == len(data) and verifier.pending == 0


def test_flipped_byte_is_caught_and_rewind_recovers(data: bytes) -> None:
    bad = bytearray(data)
    bad[-50] ^= 1
    verifier = PackageVerifier()
    with pytest.raises(ChunkIntegrityError, match="digest"):
        verifier.feed(bytes(bad))
    with pytest.raises(DecoderStateError):
        verifier.feed(b"x")
    resume = verifier.rewind()
    verifier.feed(data[resume:])
    verifier.close()


def test_manifest_damage_trailing_bytes_and_truncation(data: bytes) -> None:
    bad = bytearray(data)
    bad[40] ^= 1
    with pytest.raises(ManifestError):
        PackageVerifier().feed(bytes(bad))
    with pytest.raises(FormatError, match="after the last chunk"):
        PackageVerifier().feed(data + b"!")
    verifier = PackageVerifier()
    verifier.feed(data[:-1])
    with pytest.raises(TruncatedError):
        verifier.close()
