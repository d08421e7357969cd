"""Each way a package can be malformed raises its own BitladderError, naming what and where."""

import contextlib
import json
import struct

import blake3
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitladder
from bitladder import (
    BadMagicError,
    BitladderError,
    ChunkIntegrityError,
    DecoderStateError,
    FormatError,
    ManifestError,
    StreamDecoder,
    TruncatedError,
    UnsupportedVersionError,
)
from bitladder.format.spec import HEADER_SIZE, MAX_MANIFEST_SIZE, unpack_manifest

from .conftest import tiny_arrays
from .test_golden import GOLDEN


def _split(package: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<Q", package, 8)[0]
    return unpack_manifest(package[HEADER_SIZE:HEADER_SIZE + length]), package[HEADER_SIZE + length:]


def _frame(text: bytes) -> bytes:
    """Manifest bytes holding `text` (any text: the JSON need not be valid)."""
    return zstandard.ZstdCompressor(write_content_size=True).compress(text)


def _head(body: bytes) -> bytes:
    return b"BLAD" + struct.pack("<HHQ", 2, 0, len(body)) + blake3.blake3(body).digest() + bytes(96) + body


def _offset(manifest: dict, index: int) -> int:
    """Data offset of chunk `index` (chunks are [tensor, block, rung, length, digest], back to back)."""
    return sum(chunk[3] for chunk in manifest["chunks"][:index])


def _rebuild(manifest: dict, data: bytes) -> bytes:
    return _head(_frame(json.dumps(manifest).encode())) + data


def test_truncated_file_names_the_offset(tiny_package):
    with pytest.raises(TruncatedError, match="bytes"):
        bitladder.open(tiny_package[:-1])
    with pytest.raises(TruncatedError, match="manifest"):
        bitladder.open(tiny_package[:HEADER_SIZE + 52])
    with pytest.raises(BadMagicError, match="shorter"):
        bitladder.open(tiny_package[:10])


def test_trailing_bytes_are_refused(tiny_package):
    with pytest.raises(FormatError, match="describe"):
        bitladder.open(tiny_package + b"\0")


def test_bad_magic_and_unknown_version(tiny_package):
    with pytest.raises(BadMagicError, match="magic"):
        bitladder.open(b"PK\x03\x04" + tiny_package[4:])
    with pytest.raises(UnsupportedVersionError, match="version 1"):
        bitladder.open(tiny_package[:4] + struct.pack("<H", 1) + tiny_package[6:])
    with pytest.raises(UnsupportedVersionError, match="flags"):
        bitladder.open(tiny_package[:6] + struct.pack("<H", 2) + tiny_package[8:])


def test_an_unsigned_header_has_one_form(tiny_package):
    """Flags 0 means bytes 48-143 are zero: a key or signature left in an unsigned header is refused."""
    for offset in (48, 100, HEADER_SIZE - 1):
        broken = bytearray(tiny_package)
        broken[offset] = 1
        with pytest.raises(ManifestError, match="not all zero"):
            bitladder.open(bytes(broken))


def test_oversize_or_malformed_manifest(tiny_package):
    with pytest.raises(ManifestError, match="manifest length"):
        bitladder.open(tiny_package[:8] + struct.pack("<Q", MAX_MANIFEST_SIZE + 8) + tiny_package[16:])
    for offset in (16, HEADER_SIZE + 8):  # the digest in the header, then a manifest byte
        broken = bytearray(tiny_package)
        broken[offset] ^= 0x01
        with pytest.raises(ManifestError, match="digest"):
            bitladder.open(bytes(broken))
    with pytest.raises(ManifestError, match="not UTF-8 JSON"):
        bitladder.open(_head(_frame(b"{not json")))
    text = json.dumps(_split(tiny_package)[0]).encode()
    with pytest.raises(ManifestError, match="not one zstd frame"):
        bitladder.open(_head(text))  # JSON that is not compressed
    with pytest.raises(ManifestError, match="not one zstd frame"):
        bitladder.open(_head(_frame(text) + bytes(8)))  # something after the frame
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(text)
    with pytest.raises(ManifestError, match="declares -1 bytes"):
        bitladder.open(_head(unsized))
    huge = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(bytes(MAX_MANIFEST_SIZE + 1)))
    with pytest.raises(ManifestError, match=f"declares {MAX_MANIFEST_SIZE + 1} bytes"):
        bitladder.open(_head(bytes(huge)))


def _set(chunk: list, field: int, value: object) -> None:
    chunk[field] = value


@pytest.mark.parametrize("mutate, message", [
    (lambda m: _set(m["chunks"][0], 0, 99), "tensor index"),
    (lambda m: _set(m["chunks"][0], 1, 5), "block 5 out of range"),
    (lambda m: _set(m["chunks"][0], 2, 7), "carries no chunk"),
    (lambda m: _set(m["chunks"][0], 2, [0]), "carries no chunk"),
    (lambda m: _set(m["chunks"][0], 3, -1), "length"),
    (lambda m: _set(m["chunks"][0], 4, "00"), "digest"),
    (lambda m: m["chunks"][0].pop(), "is not \\[tensor, block, rung, length, digest\\]"),
    (lambda m: m["chunks"][-1].__setitem__(3, m["chunks"][-1][3] + 1), "describe"),
    (lambda m: m["tensors"][0].update(dtype="C64"), "unknown dtype"),
    (lambda m: m["tensors"][0].update(shape=[-1]), "bad shape"),
    (lambda m: m["tensors"][1].update(name=m["tensors"][0]["name"]), "duplicate"),
    (lambda m: m.update(version=9), "version 9"),
    (lambda m: m.update(digest="xxh3"), "chunk digest"),
    (lambda m: m.pop("ladder"), "ladder"),
    (lambda m: m["ladder"]["rungs"].reverse(), "more precise"),
    (lambda m: m["ladder"].update(block_size=0), "block_size"),
    (lambda m: m["ladder"]["rungs"][0].update(kind=["int"]), "unknown rung"),
    (lambda m: m["chunks"].reverse(), "out of order"),
    (lambda m: m["chunks"].pop(), "lacks the chunk"),
])
def test_inconsistent_manifest(tiny_package, mutate, message):
    manifest, data = _split(tiny_package)
    mutate(manifest)
    with pytest.raises((ManifestError, UnsupportedVersionError, FormatError), match=message):
        bitladder.open(_rebuild(manifest, data))


def test_corrupted_chunk_is_caught_by_its_digest(tiny_package):
    manifest, data = _split(tiny_package)
    start = len(tiny_package) - len(data)
    broken = bytearray(tiny_package)
    broken[start + 3] ^= 0xFF
    with pytest.raises(ChunkIntegrityError, match=r"chunk 0 \(tensor 'layer.weight', block 0, rung int4\).*digest"):
        bitladder.open(bytes(broken)).decode()


def test_decoder_keeps_rung_k_after_a_bad_chunk_in_rung_k_plus_1(tiny_package):
    manifest, data = _split(tiny_package)
    start = len(tiny_package) - len(data)
    rung1 = _offset(manifest, next(i for i, c in enumerate(manifest["chunks"]) if c[2] == 1))
    broken = bytearray(tiny_package)
    broken[start + rung1] ^= 0x55
    decoder = StreamDecoder()
    fed = decoder.feed(bytes(broken))
    assert isinstance(fed.error, ChunkIntegrityError)
    assert fed.updates and all(u.rung == 0 for u in fed.updates)
    assert decoder.rung == 0
    before = decoder.values("layer.weight").copy()
    assert np.abs(before - tiny_arrays()["layer.weight"]).max() < 0.1
    with pytest.raises(DecoderStateError):
        decoder.feed(b"more")
    assert np.array_equal(decoder.values("layer.weight"), before)
    # A client re-fetches the bad chunk from the last verified byte and carries on.
    resume_at = decoder.rewind()
    assert resume_at == start + rung1 and decoder.pending == 0
    decoder.feed(tiny_package[resume_at:]).raise_for_error()
    decoder.close()
    assert decoder.tensor("layer.weight").tobytes() == tiny_arrays()["layer.weight"].tobytes()


def test_chunk_that_verifies_but_does_not_decode(tiny_package):
    """A well-formed digest over garbage (a hostile or buggy encoder) still fails cleanly."""
    manifest, data = _split(tiny_package)
    chunk = manifest["chunks"][0]
    garbage = bytes(chunk[3])
    data = garbage + data[chunk[3]:]
    chunk[4] = blake3.blake3(garbage).hexdigest()
    package = _rebuild(manifest, data)
    with pytest.raises(ChunkIntegrityError, match="chunk 0"):
        bitladder.open(package).decode()
    decoder = StreamDecoder()
    fed = decoder.feed(package)
    assert isinstance(fed.error, ChunkIntegrityError) and "chunk 0" in str(fed.error)
    assert "digest" not in str(fed.error)  # it verified; the codec refused it
    assert fed.updates == () and decoder.position == decoder.data_start  # the chunk was not accepted
    assert decoder.rewind() == decoder.data_start


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 10**6))
def test_fuzz_corrupted_packages_only_raise_bitladder_errors(flips, cut):
    package = bytearray(GOLDEN.read_bytes())
    for position, mask in flips:
        package[position % len(package)] ^= mask
    package = bytes(package[: cut % (len(package) + 1)]) if cut % 3 == 0 else bytes(package)
    for attempt in (lambda: bitladder.open(package).decode(), lambda: StreamDecoder().feed(package).raise_for_error()):
        with contextlib.suppress(BitladderError):
            attempt()


@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 5000), st.sampled_from(['"', "}", "0", "-1", "[]", "null", "1e999"])),
                      min_size=1, max_size=4))
def test_fuzz_manifest_text(edits):
    manifest_text = json.dumps(_split(GOLDEN.read_bytes())[0])
    for position, text in edits:
        position %= len(manifest_text)
        manifest_text = manifest_text[:position] + text + manifest_text[position + 1:]
    package = _head(_frame(manifest_text.encode()))
    with contextlib.suppress(BitladderError):
        bitladder.open(package + _split(GOLDEN.read_bytes())[1]).decode()


@pytest.mark.parametrize("offset", [0, 5, 9, 20, HEADER_SIZE + 8])  # magic, version, length, digest, manifest
def test_a_bad_header_or_manifest_is_fetched_again_from_byte_0(tiny_package, offset):
    broken = bytearray(tiny_package)
    broken[offset] ^= 0x01
    decoder = StreamDecoder()
    fed = decoder.feed(bytes(broken))
    assert isinstance(fed.error, FormatError) and fed.updates == ()
    assert decoder.position == 0 and decoder.manifest is None
    assert decoder.rewind() == 0
    assert decoder.data_start is None and decoder.pending == 0  # the bad header is forgotten with the manifest
    decoder.feed(tiny_package).raise_for_error()
    decoder.close()
    assert decoder.tensor("layer.weight").tobytes() == tiny_arrays()["layer.weight"].tobytes()


def test_a_header_that_arrived_alone_is_forgotten_by_rewind(tiny_package):
    decoder = StreamDecoder()
    decoder.feed(tiny_package[:HEADER_SIZE + 3]).raise_for_error()
    assert decoder.data_start is not None and decoder.position == 0 and decoder.pending == HEADER_SIZE + 3
    assert decoder.rewind() == 0 and decoder.data_start is None
    decoder.feed(tiny_package).raise_for_error()
    decoder.close()


def test_feed_returns_the_updates_before_a_failure(tiny_package):
    manifest, data = _split(tiny_package)
    start = len(tiny_package) - len(data)
    damaged = bytearray(tiny_package)
    damaged[start + _offset(manifest, 2)] ^= 0x55
    decoder = StreamDecoder()
    fed = decoder.feed(bytes(damaged))
    assert isinstance(fed.error, ChunkIntegrityError) and "chunk 2" in str(fed.error)
    assert [u.chunk for u in fed.updates] == [0, 1]
    assert decoder.data_start == start and decoder.position == start + _offset(manifest, 2)
    with pytest.raises(ChunkIntegrityError, match="chunk 2"):
        fed.raise_for_error()
    with pytest.raises(ChunkIntegrityError, match="chunk 2"):
        decoder.close()


def test_max_bytes_refuses_a_package_too_large_for_the_caller(tiny_package):
    declared = sum(a.nbytes for a in tiny_arrays().values())
    with pytest.raises(ManifestError, match="max_bytes"):
        bitladder.open(tiny_package, max_bytes=declared - 1)
    fed = StreamDecoder(max_bytes=declared - 1).feed(tiny_package)
    assert isinstance(fed.error, ManifestError) and fed.updates == ()
    assert bitladder.open(tiny_package, max_bytes=declared).decode()["layer.weight"].shape == (8, 12)
