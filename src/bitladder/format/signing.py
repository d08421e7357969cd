"""Signed packages: Ed25519 keys, the trust set a reader accepts, and the one check made against it.

A signed package's header carries the signer's public key and an Ed25519 signature over `SIGNED_CONTEXT` +
header bytes 0-47 (docs/FORMAT.md). Those bytes hold the manifest's BLAKE3 digest and the manifest holds every
chunk's, so one check of 64 bytes, made as soon as the header arrives, binds the whole package: a reader given
a `Trust` refuses the package before its manifest is parsed or any tensor is handed out.

Key files (`generate_keys`):

    NAME.key    the signing key: PKCS#8 PEM, unencrypted, mode 0600; keep it secret
    NAME.pub    one line to paste anywhere: `bitladder-ed25519 <base64 of the 32-byte key> <fingerprint>`

>>> key_path, pub_path = generate_keys("publisher")                       # doctest: +SKIP
>>> signed = sign(header, load_signing_key(key_path))                     # doctest: +SKIP
>>> check_signature(signed, load_trust([pub_path]), "model.blad")          # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final, TypeAlias

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import (
    BadSignatureError,
    DowngradeError,
    FileAccessError,
    KeyFileError,
    UnsignedPackageError,
    UntrustedKeyError,
    UsageError,
    file_access_error,
)
from .spec import HEADER_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, SIGNED_SIZE, Header, version_key

PUBLIC_KEY_TAG: Final = "bitladder-ed25519"
SigningKey: TypeAlias = Ed25519PrivateKey
Keys = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def fingerprint(key: bytes) -> str:
    """How messages name a public key: `ed25519:` + the first 16 hex digits of its BLAKE3 digest."""
    return "ed25519:" + blake3.blake3(key).hexdigest()[:16]


@dataclass(frozen=True)
class Trust:
    """The public keys a reader accepts packages from (several, to rotate keys without a flag day).

    >>> trust = Trust.of(old_key, new_key)        # raw 32-byte public keys   # doctest: +SKIP
    >>> trust = load_trust(["old.pub", "new.pub"])                            # doctest: +SKIP
    """

    keys: frozenset[bytes]

    def __post_init__(self) -> None:
        if not self.keys:
            raise UsageError("a trust set needs at least one public key")
        for key in self.keys:
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
                raise UsageError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes, not {key!r:.60}")

    @classmethod
    def of(cls, *keys: bytes) -> Trust:
        return cls(frozenset(keys))

    @staticmethod
    def fingerprint(key: bytes) -> str:
        """`ed25519:` + the first 16 hex digits of the key's BLAKE3 digest (see the module's `fingerprint`)."""
        return fingerprint(key)

    def describe(self) -> str:
        """The trusted keys' fingerprints, sorted, for messages."""
        return ", ".join(sorted(map(fingerprint, self.keys)))

    @cached_property
    def _verifiers(self) -> dict[bytes, Ed25519PublicKey]:
        return {key: Ed25519PublicKey.from_public_bytes(key) for key in self.keys}

    def verifier(self, key: bytes) -> Ed25519PublicKey | None:
        return self._verifiers.get(key)


def public_key(signing_key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a signing key's public key (what a header and a `Trust` hold)."""
    return signing_key.public_key().public_bytes_raw()


def sign(header: Header, signing_key: Ed25519PrivateKey) -> Header:
    """`header` signed: flag set, the key's public key and the signature over `signed_message()` filled in.

    >>> signed = sign(Header(8, bytes(32)), Ed25519PrivateKey.generate())
    >>> signed.signed, len(signed.pack())
    (True, 144)
    """
    key = public_key(signing_key)
    unsigned = Header(header.manifest_length, header.manifest_digest, key, bytes(SIGNATURE_SIZE))
    return Header(header.manifest_length, header.manifest_digest, key, signing_key.sign(unsigned.signed_message()))


def sign_head(head: bytes, signing_key: Ed25519PrivateKey) -> bytes:
    """Header and manifest bytes (`Manifest.encode()`) with the header signed (what `PackageWriter` writes)."""
    return sign(Header.unpack(head), signing_key).pack() + head[HEADER_SIZE:]


def check_signature(header: Header, trust: Trust, where: str) -> None:
    """Raise unless `header` is signed, by a key in `trust`, with a signature that verifies; `where` names the
    package in the message (a path, a URL, "stream").

    Membership comes first, so a key outside the set is named (`UntrustedKeyError`) whatever its signature.
    """
    if header.public_key is None or header.signature is None:
        raise UnsignedPackageError(f"{where}: the package is not signed (flags 0 at offset 6), but only packages "
                                   f"signed by {trust.describe()} are trusted")
    verifier = trust.verifier(header.public_key)
    if verifier is None:
        raise UntrustedKeyError(f"{where}: signed by {fingerprint(header.public_key)}, which is not trusted "
                                f"(trusted: {trust.describe()})")
    try:
        verifier.verify(header.signature, header.signed_message())
    except InvalidSignature:
        raise BadSignatureError(f"{where}: the signature by {fingerprint(header.public_key)} does not verify over "
                                f"header bytes 0-{SIGNED_SIZE - 1}: the header, the manifest digest or the "
                                "signature was altered") from None


def signer(header: Header) -> str | None:
    """The fingerprint of the key that signed `header` (unchecked), None when it is unsigned."""
    return None if header.public_key is None else fingerprint(header.public_key)


def check_downgrade(model_id: str, held: str, offered: str, allow: bool, where: str) -> None:
    """Refuse `offered`, a version of `model_id` older than the `held` one (a replay), unless `allow`.

    Versions compare by `spec.version_key` (digit runs as numbers): "1.10" is newer than "1.9".
    """
    if not allow and version_key(offered) < version_key(held):
        raise DowngradeError(f"{where}: {model_id!r} version {offered!r} is older than version {held!r} already "
                             "held; refused as a downgrade (allow_downgrade=True or --allow-downgrade accepts it)")


# -- key files ----------------------------------------------------------------------------------------------


def generate_keys(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new key pair to `PREFIX.key` (secret, mode 0600) and `PREFIX.pub`; returns both paths.

    Never overwrites: if either file exists, nothing is written (`FileAccessError`).

    >>> key_path, pub_path = generate_keys("keys/publisher")    # doctest: +SKIP
    """
    base = os.fspath(prefix)
    key_path, pub_path = Path(base + ".key"), Path(base + ".pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise FileAccessError(errno.EEXIST, "refusing to overwrite an existing key file (remove it first, or "
                                  "choose another name)", str(path))
    signing_key = Ed25519PrivateKey.generate()
    pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    key = public_key(signing_key)
    line = f"{PUBLIC_KEY_TAG} {base64.b64encode(key).decode()} {fingerprint(key)}\n"
    _create(key_path, pem, 0o600)
    try:
        _create(pub_path, line.encode(), 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise file_access_error(exc, "key file") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(fd)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise file_access_error(exc, what) from exc


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 signing key in a PKCS#8 PEM file (as `generate_keys` writes); `KeyFileError` otherwise."""
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # not PEM, or an encrypted one
        raise KeyFileError(f"{path}: not an unencrypted PKCS#8 PEM signing key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__.lstrip('_')}, not an Ed25519 signing key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte public key in a `.pub` file: `bitladder-ed25519 <base64>` (anything after is a comment)."""
    text = _read(path, "public key").decode("utf-8", "replace")
    fields = text.split()
    if len(fields) < 2 or fields[0] != PUBLIC_KEY_TAG:
        hint = " (that is the secret key: trust the .pub file)" if "PRIVATE KEY" in text else ""
        raise KeyFileError(f"{path}: not a bitladder public key: it must start with '{PUBLIC_KEY_TAG} <base64>'{hint}")
    try:
        key = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        key = b""
    if len(key) != PUBLIC_KEY_SIZE:
        raise KeyFileError(f"{path}: the key is not {PUBLIC_KEY_SIZE} bytes of base64")
    return key


def load_trust(paths: Keys) -> Trust:
    """The trust set of one `.pub` file or several (key rotation: accept the old and the new signer).

    >>> trust = load_trust(["publisher-2025.pub", "publisher-2026.pub"])   # doctest: +SKIP
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise UsageError("load_trust needs at least one public key file")
    return Trust(frozenset(load_public_key(path) for path in items))
