"""Signed packages on real MiniLM weights: every way to tamper is a typed `TrustError` or `FormatError`, and
no tensor of a refused package is handed out (random access, stream, verifier)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import bitladder
from bitladder.delivery.verify import PackageVerifier
from bitladder.errors import (
    BadSignatureError,
    ChunkIntegrityError,
    FileAccessError,
    FormatError,
    KeyFileError,
    TrustError,
    UnsignedPackageError,
    UntrustedKeyError,
    UsageError,
)
from bitladder.format.reader import Package, StreamDecoder
from bitladder.format.signing import (
    Trust,
    check_downgrade,
    fingerprint,
    generate_keys,
    load_public_key,
    load_signing_key,
    load_trust,
    public_key,
    sign,
)
from bitladder.format.spec import (
    FLAG_SIGNED,
    HEADER_SIZE,
    SIGNED_CONTEXT,
    Header,
    manifest_digest,
    pack_manifest,
    unpack_manifest,
    version_key,
)

PIECES = (1, 7, 143, 144, 4096, 1 << 20)  # refusals come with the header: even 1-byte pieces are quick
WHOLE = (4093, 1 << 20)                   # for streams that go through every chunk


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: generate_keys(folder / name) for name in ("publisher", "rotated", "attacker")}


def _trust(keys: dict[str, tuple[Path, Path]], *names: str) -> Trust:
    return load_trust([keys[name][1] for name in names])


@pytest.fixture(scope="module")
def packages(minilm_layer0, keys, tmp_path_factory) -> dict[str, bytes]:
    """MiniLM's first layer: v1 signed, v2 (retrained: weights moved) signed, v1 unsigned, v1 signed by the
    rotated key."""
    folder = tmp_path_factory.mktemp("signed")
    newer = {name: (a * np.float32(1.01) if a.dtype == np.float32 else a) for name, a in minilm_layer0.items()}
    made = {}
    for label, arrays, version, key in (("v1", minilm_layer0, "1", "publisher"), ("v2", newer, "2", "publisher"),
                                        ("unsigned", minilm_layer0, "1", None),
                                        ("rotated", minilm_layer0, "1", "rotated")):
        path = folder / f"{label}.blad"
        bitladder.encode(arrays, path, ladder="int8,exact", model_id="minilm", model_version=version,
                         sign=None if key is None else keys[key][0])
        made[label] = path.read_bytes()
    return made


def _stream(data: bytes, trust: Trust, piece: int) -> tuple[list[object], BaseException | None]:
    """Feed `data` in pieces to a trusting decoder: the updates it handed out, and the error that stopped it."""
    decoder, updates = StreamDecoder(trust=trust), []
    try:
        for start in range(0, len(data), piece):
            fed = decoder.feed(data[start:start + piece])
            updates += fed.updates
            if fed.error is not None:
                return updates, fed.error
        decoder.close()
    except (TrustError, FormatError) as exc:
        return updates, exc
    return updates, None


def _refused_everywhere(data: bytes, trust: Trust, kind: type[BaseException]) -> None:
    with pytest.raises(kind):
        Package.open(data, trust=trust)
    for piece in PIECES:
        updates, error = _stream(data, trust, piece)
        assert isinstance(error, kind) and updates == [], (piece, error)
    with pytest.raises(kind):
        PackageVerifier(trust=trust).feed(data)


def test_signed_round_trip(packages, keys, minilm_layer0):
    data, trust = packages["v1"], _trust(keys, "publisher")
    header = Header.unpack(data[:HEADER_SIZE])
    assert header.signed and int.from_bytes(data[6:8], "little") == FLAG_SIGNED
    assert data[48:80] == load_public_key(keys["publisher"][1])
    Ed25519PublicKey.from_public_bytes(data[48:80]).verify(data[80:144], SIGNED_CONTEXT + data[:48])
    decoded = Package.open(data, trust=trust).decode()
    assert all(decoded[name].tobytes() == array.tobytes() for name, array in minilm_layer0.items())
    for piece in WHOLE:
        updates, error = _stream(data, trust, piece)
        assert error is None and len(updates) >= len(minilm_layer0)
    verifier = PackageVerifier(trust=trust)
    verifier.feed(data).raise_for_error()
    verifier.close()
    # Signing changes the header only: the same bytes follow it, and without trust nothing changes.
    assert data[HEADER_SIZE:] == packages["unsigned"][HEADER_SIZE:]
    assert Package.open(packages["unsigned"]).manifest.model_version == "1"


def test_unsigned_package_is_refused(packages, keys):
    _refused_everywhere(packages["unsigned"], _trust(keys, "publisher"), UnsignedPackageError)


def test_stripped_signature_is_an_unsigned_package(packages, keys):
    """Clearing the flag and zeroing key and signature leaves a valid unsigned package: trust refuses it."""
    stripped = bytearray(packages["v1"])
    stripped[6:8] = b"\0\0"
    stripped[48:HEADER_SIZE] = bytes(HEADER_SIZE - 48)
    Package.open(bytes(stripped)).decode("int8")
    _refused_everywhere(bytes(stripped), _trust(keys, "publisher"), UnsignedPackageError)


def test_wrong_key_is_named(packages, keys):
    trust = _trust(keys, "attacker")
    with pytest.raises(UntrustedKeyError) as caught:
        Package.open(packages["v1"], trust=trust)
    message = str(caught.value)
    assert fingerprint(load_public_key(keys["publisher"][1])) in message
    assert fingerprint(load_public_key(keys["attacker"][1])) in message
    _refused_everywhere(packages["v1"], trust, UntrustedKeyError)


@pytest.mark.parametrize("offset", [80, 111, HEADER_SIZE - 1])
def test_bit_flip_in_signature(packages, keys, offset):
    broken = bytearray(packages["v1"])
    broken[offset] ^= 0x10
    _refused_everywhere(bytes(broken), _trust(keys, "publisher"), BadSignatureError)


@pytest.mark.parametrize("which", [0, 0.5, -1])
def test_manifest_edit_with_recomputed_digest_fails_the_signature(packages, keys, which):
    """An attacker edits the manifest (a chunk digest, to slip in other chunk bytes) and fixes the header's
    manifest digest: the digest check passes, the signature over it does not."""
    data = packages["v1"]
    length = int.from_bytes(data[8:16], "little")
    manifest = unpack_manifest(data[HEADER_SIZE:HEADER_SIZE + length])
    entry = manifest["chunks"][int(which * (len(manifest["chunks"]) - 1)) if which >= 0 else -1]
    entry[4] = ("0" if entry[4][0] != "0" else "1") + entry[4][1:]
    body = pack_manifest(manifest)
    forged = data[:16] + manifest_digest(body) + data[48:HEADER_SIZE] + body + data[HEADER_SIZE + length:]
    with pytest.raises(ChunkIntegrityError):
        Package.open(forged).decode()  # without trust: caught later, by that chunk's digest
    _refused_everywhere(forged, _trust(keys, "publisher"), BadSignatureError)


def test_chunk_swapped_in_from_another_signed_package_fails_its_digest(packages, keys):
    trust = _trust(keys, "publisher")
    v1, v2 = Package.open(packages["v1"], trust=trust), Package.open(packages["v2"], trust=trust)
    index = max(range(len(v1.manifest.chunks)), key=lambda i: v1.manifest.chunks[i].length)  # a weight chunk
    start = v1.data_start + v1.manifest.chunks[index].offset
    swapped = bytes(packages["v1"][:start]) + bytes(v2.chunk_bytes(index)) + \
        packages["v1"][start + v1.manifest.chunks[index].length:]
    assert bytes(v2.chunk_bytes(index)) != bytes(v1.chunk_bytes(index))
    with pytest.raises(FormatError):
        Package.open(swapped, trust=trust).decode()
    for piece in WHOLE:
        updates, error = _stream(swapped, trust, piece)
        assert isinstance(error, ChunkIntegrityError), error
        assert all(update.chunk < index for update in updates)  # nothing from the swapped chunk on


def test_resigned_by_an_untrusted_key(packages, keys):
    data, trust = packages["v1"], _trust(keys, "publisher")
    header = Header.unpack(data[:HEADER_SIZE])
    resigned = sign(header, load_signing_key(keys["attacker"][0])).pack() + data[HEADER_SIZE:]
    Package.open(resigned).decode("int8")  # a valid package: only the trust set tells it apart
    _refused_everywhere(resigned, trust, UntrustedKeyError)
    # The attacker's signature under the trusted key's name does not verify.
    impostor = resigned[:48] + data[48:80] + resigned[80:]
    _refused_everywhere(impostor, trust, BadSignatureError)


def test_key_rotation_trusts_either_key(packages, keys):
    both = _trust(keys, "publisher", "rotated")
    for label in ("v1", "rotated"):
        Package.open(packages[label], trust=both).decode("int8")
        assert _stream(packages[label], both, 4096)[1] is None
    _refused_everywhere(packages["v1"], _trust(keys, "rotated"), UntrustedKeyError)


def test_refusal_is_final_for_the_decoder(packages, keys):
    decoder = StreamDecoder(trust=_trust(keys, "attacker"))
    with pytest.raises(UntrustedKeyError):
        decoder.feed(packages["v1"][:HEADER_SIZE])
    assert decoder.manifest is None and decoder.header is None
    decoder.rewind()
    with pytest.raises(UntrustedKeyError):
        decoder.feed(packages["v1"])
    with pytest.raises(UntrustedKeyError):
        decoder.close()


def test_trust_through_bitladder_open(packages, keys, tmp_path):
    path = tmp_path / "v1.blad"
    path.write_bytes(packages["v1"])
    assert bitladder.open(path, trust=bitladder.load_trust(keys["publisher"][1])).manifest.model_id == "minilm"
    with pytest.raises(bitladder.UntrustedKeyError, match=str(path)):
        bitladder.open(path, trust=bitladder.load_trust(keys["attacker"][1]))


def test_version_order():
    ordered = ["0.9", "1", "1.0.1", "1.2", "1.9", "1.9a", "1.10", "2", "10", "v11"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    check_downgrade("m", "1.9", "1.10", False, "here")
    check_downgrade("m", "2", "2", False, "here")
    check_downgrade("m", "2", "1", True, "here")
    with pytest.raises(bitladder.DowngradeError, match="'1.10'.*'1.9a'|version '1.9a' is older than version '1.10'"):
        check_downgrade("m", "1.10", "1.9a", False, "here")


# -- key files --------------------------------------------------------------------------------------------


def test_keygen_files(tmp_path):
    key_path, pub_path = generate_keys(tmp_path / "pub")
    assert (key_path.name, pub_path.name) == ("pub.key", "pub.pub")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    line = pub_path.read_text()
    assert line.startswith("bitladder-ed25519 ") and line.count("\n") == 1
    key = load_signing_key(key_path)
    assert load_public_key(pub_path) == public_key(key)
    assert fingerprint(public_key(key)) in line
    with pytest.raises(FileAccessError, match="overwrite"):
        generate_keys(tmp_path / "pub")
    assert load_public_key(pub_path) == public_key(key)  # untouched


def test_bad_key_files(tmp_path, keys):
    with pytest.raises(KeyFileError, match="secret key"):
        load_trust(keys["publisher"][0])  # the .key where the .pub belongs
    with pytest.raises(KeyFileError, match="PEM"):
        load_signing_key(keys["publisher"][1])
    (tmp_path / "short.pub").write_text("bitladder-ed25519 AAAA\n")
    with pytest.raises(KeyFileError, match="32 bytes"):
        load_public_key(tmp_path / "short.pub")
    with pytest.raises(bitladder.MissingFileError):
        load_trust([tmp_path / "absent.pub"])
    with pytest.raises(UsageError):
        load_trust([])
    with pytest.raises(UsageError):
        Trust(frozenset())
    other = Ed25519PrivateKey.generate()
    assert Trust.of(public_key(other)).describe() == fingerprint(public_key(other))
