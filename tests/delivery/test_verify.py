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
from bitladder.format.spec import HEADER_SIZE

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
        chunks += verifier.feed(data[a:b]).raise_for_error()
    verifier.close()
    assert verifier.manifest is not None and chunks == list(range(len(verifier.manifest.chunks)))
    assert verifier.position == len(data) and verifier.pending == 0


def test_flipped_byte_is_caught_and_rewind_recovers(data: bytes) -> None:
    bad = bytearray(data)
    bad[-50] ^= 1
    verifier = PackageVerifier()
    fed = verifier.feed(bytes(bad))
    assert isinstance(fed.error, ChunkIntegrityError) and "digest" in str(fed.error)
    assert fed.updates == tuple(range(len(fed.updates))) and verifier.position < len(data) - 50
    with pytest.raises(DecoderStateError):
        verifier.feed(b"x")
    with pytest.raises(ChunkIntegrityError):
        verifier.close()
    resume = verifier.rewind()
    assert resume == verifier.position and verifier.pending == 0
    verifier.feed(data[resume:]).raise_for_error()
    verifier.close()


def test_manifest_damage_trailing_bytes_and_truncation(data: bytes) -> None:
    bad = bytearray(data)
    bad[HEADER_SIZE + 8] ^= 1
    with pytest.raises(ManifestError):
        PackageVerifier().feed(bytes(bad)).raise_for_error()
    verifier = PackageVerifier()
    fed = verifier.feed(data + b"!")
    assert isinstance(fed.error, FormatError) and "after the last chunk" in str(fed.error)
    assert verifier.finished and len(fed.updates) == len(verifier.manifest.chunks)  # type: ignore[union-attr]
    with pytest.raises(FormatError, match="after the last chunk"):
        verifier.close()  # the end of the stream does not hide the error feed returned
    verifier = PackageVerifier()
    verifier.feed(data[:-1]).raise_for_error()
    with pytest.raises(TruncatedError):
        verifier.close()


def test_a_bad_header_or_manifest_is_fetched_again_from_byte_0(data: bytes) -> None:
    for offset in (0, 16, HEADER_SIZE + 8):   # magic, manifest digest, manifest bytes
        bad = bytearray(data)
        bad[offset] ^= 1
        verifier = PackageVerifier()
        fed = verifier.feed(bytes(bad[:HEADER_SIZE]))
        assert fed.error is None or offset == 0
        if fed.error is None:
            assert verifier.data_start is not None and verifier.position == 0
            fed = verifier.feed(bytes(bad[HEADER_SIZE:]))
        assert isinstance(fed.error, FormatError) and fed.updates == ()
        assert verifier.rewind() == 0 and verifier.data_start is None and verifier.pending == 0
        verifier.feed(data).raise_for_error()
        verifier.close()

