"""Each way a package can be malformed raises its own BitladderError, naming what and where."""

import contextlib
import json
import struct

import numpy as np
import pytest
import xxhash
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
from bitladder.format.spec import MAX_MANIFEST_SIZE

from .conftest import tiny_arrays
from .test_golden import GOLDEN


def _split(package: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<Q", package, 8)[0]
    return json.loads(package[32:32 + length]), package[32 + length:]


def _rebuild(manifest: dict, data: bytes) -> bytes:
    body = json.dumps(manifest).encode()
    body += b" " * (-len(body) % 8)
    return b"BLAD" + struct.pack("<HHQ", 1, 0, len(body)) + xxhash.xxh3_128_digest(body) + body + data


def test_truncated_file_names_the_offset(tiny_package):
    with pytest.raises(TruncatedError, match="bytes"):
        bitladder.open(tiny_package[:-1])
    with pytest.raises(TruncatedError, match="manifest"):
        bitladder.open(tiny_package[:100])
    with pytest.raises(BadMagicError, match="shorter"):
        bitladder.open(tiny_package[:10])


def test_trailing_bytes_are_refused(tiny_package):
    with pytest.raises(FormatError, match="describe"):
        bitladder.open(tiny_package + b"\0")


def test_bad_magic_and_unknown_version(tiny_package):
    with pytest.raises(BadMagicError, match="magic"):
        bitladder.open(b"PK\x03\x04" + tiny_package[4:])
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        bitladder.open(tiny_package[:4] + struct.pack("<H", 2) + tiny_package[6:])
    with pytest.raises(UnsupportedVersionError, match="flags"):
        bitladder.open(tiny_package[:6] + struct.pack("<H", 1) + tiny_package[8:])


def test_oversize_or_malformed_manifest(tiny_package):
    with pytest.raises(ManifestError, match="manifest length"):
        bitladder.open(tiny_package[:8] + struct.pack("<Q", MAX_MANIFEST_SIZE + 8) + tiny_package[16:])
    broken = bytearray(tiny_package)
    broken[40] ^= 0x01
    with pytest.raises(ManifestError, match="digest"):
        bitladder.open(bytes(broken))
    manifest, data = _split(tiny_package)
    with pytest.raises(ManifestError, match="not UTF-8 JSON"):
        body = b"{not json" + b" " * 7
        bitladder.open(b"BLAD" + struct.pack("<HHQ", 1, 0, len(body)) + xxhash.xxh3_128_digest(body) + body)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["chunks"][1].update(offset=m["chunks"][1]["offset"] + 1), "hole or overlap"),
    (lambda m: m["chunks"][0].update(tensor=99), "tensor index"),
    (lambda m: m["chunks"][0].update(rung=7), "out of range"),
    (lambda m: m["chunks"][0].update(codec="lzma"), "unknown codec"),
    (lambda m: m["chunks"][0].update(length=1), "sum of its sections"),
    (lambda m: m["chunks"][0].update(sections=[1]), "sections"),
    (lambda m: m["tensors"][0].update(dtype="C64"), "unknown dtype"),
    (lambda m: m["tensors"][0].update(shape=[-1]), "bad shape"),
    (lambda m: m["tensors"][1].update(name=m["tensors"][0]["name"]), "duplicate"),
    (lambda m: m.update(version=9), "version 9"),
    (lambda m: m.pop("ladder"), "ladder"),
    (lambda m: m["ladder"]["rungs"].reverse(), "more precise"),
    (lambda m: m["chunks"].reverse(), "hole or overlap"),
    (lambda m: m["chunks"].pop(), "describe"),
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
    broken[start + manifest["chunks"][0]["offset"] + 3] ^= 0xFF
    with pytest.raises(ChunkIntegrityError, match=r"chunk 0 \(tensor 'layer.weight', rung int4\).*digest"):
        bitladder.open(bytes(broken)).decode()


def test_decoder_keeps_rung_k_after_a_bad_chunk_in_rung_k_plus_1(tiny_package):
    manifest, data = _split(tiny_package)
    start = len(tiny_package) - len(data)
    rung1 = next(c for c in manifest["chunks"] if c["rung"] == 1)
    broken = bytearray(tiny_package)
    broken[start + rung1["offset"]] ^= 0x55
    decoder = StreamDecoder()
    with pytest.raises(ChunkIntegrityError):
        decoder.feed(bytes(broken))
    assert decoder.rung == 0
    before = decoder.values("layer.weight").copy()
    assert np.abs(before - tiny_arrays()["layer.weight"]).max() < 0.1
    with pytest.raises(DecoderStateError):
        decoder.feed(b"more")
    assert np.array_equal(decoder.values("layer.weight"), before)
    # A client re-fetches the bad chunk from the last verified byte and carries on.
    resume_at = decoder.rewind()
    assert resume_at == start + rung1["offset"] and decoder.pending == 0
    decoder.feed(tiny_package[resume_at:])
    decoder.close()
    assert decoder.tensor("layer.weight").tobytes() == tiny_arrays()["layer.weight"].tobytes()


def test_chunk_that_verifies_but_does_not_decode(tiny_package):
    """A well-formed digest over garbage (a hostile or buggy encoder) still fails cleanly."""
    manifest, data = _split(tiny_package)
    chunk = manifest["chunks"][0]
    garbage = bytes(chunk["length"])
    data = garbage + data[chunk["length"]:]
    chunk["digest"] = "xxh3-128:" + xxhash.xxh3_128_hexdigest(garbage)
    with pytest.raises(ChunkIntegrityError, match="chunk 0"):
        bitladder.open(_rebuild(manifest, data)).decode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 10**6))
def test_fuzz_corrupted_packages_only_raise_bitladder_errors(flips, cut):
    package = bytearray(GOLDEN.read_bytes())
    for position, mask in flips:
        package[position % len(package)] ^= mask
    package = bytes(package[: cut % (len(package) + 1)]) if cut % 3 == 0 else bytes(package)
    for attempt in (lambda: bitladder.open(package).decode(), lambda: StreamDecoder().feed(package)):
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
    body = manifest_text.encode()
    body += b" " * (-len(body) % 8)
    package = b"BLAD" + struct.pack("<HHQ", 1, 0, len(body)) + xxhash.xxh3_128_digest(body) + body
    with contextlib.suppress(BitladderError):
        bitladder.open(package + _split(GOLDEN.read_bytes())[1]).decode()


def test_rewind_after_a_corrupt_manifest_and_updates_on_failure(tiny_package):
    broken = bytearray(tiny_package)
    broken[40] ^= 0x01
    decoder = StreamDecoder()
    with pytest.raises(ManifestError):
        decoder.feed(bytes(broken))
    assert decoder.rewind() == 32
    decoder.feed(tiny_package[32:])
    decoder.close()
    manifest, data = _split(tiny_package)
    start = len(tiny_package) - len(data)
    damaged = bytearray(tiny_package)
    damaged[start + manifest["chunks"][2]["offset"]] ^= 0x55
    decoder = StreamDecoder()
    with pytest.raises(ChunkIntegrityError) as caught:
        decoder.feed(bytes(damaged))
    assert [u.chunk for u in caught.value.updates] == [0, 1]
    assert decoder.data_start == start
