"""Every error bitladder raises on bad input.

    BitladderError
    ├── FormatError                 the bytes are not a valid package
    │   ├── BadMagicError           not a bitladder package at all
    │   ├── UnsupportedVersionError a package from a newer (or unknown) format version
    │   ├── ManifestError           the manifest is too large, not JSON, or inconsistent
    │   ├── TruncatedError          the data ended before the manifest said it would
    │   └── ChunkIntegrityError     a chunk's bytes do not match its digest or do not decode
    ├── TrustError                  a package that the caller's trust set does not accept (raised, never retried)
    │   ├── UnsignedPackageError    no signature, but trusted keys were given
    │   ├── BadSignatureError       the signature does not verify over the header (forged or corrupted)
    │   ├── UntrustedKeyError       signed by a key outside the trust set
    │   ├── DowngradeError          an older version of a model than the one already held
    │   └── KeyFileError            a key file that is not a bitladder Ed25519 key
    ├── LineageError                a delta given weights other than its parent's (names both versions)
    ├── SourceError                 a model file we cannot read
    │   └── UnsupportedDtypeError   a tensor dtype the codec does not handle
    ├── DecoderStateError           a call the decoder cannot honour in its current state
    ├── UsageError (also ValueError)    an argument outside its valid choices, or options that conflict
    │   └── UnknownTensorError (also KeyError)  no tensor of that name in the package
    ├── FileAccessError (also OSError)  a package file that cannot be opened (errno and filename set)
    │   └── MissingFileError (also FileNotFoundError)   no file at that path
    ├── delivery.errors.DeliveryError   HTTP: AuthError, NotFoundError, PackageChangedError, ConnectionLostError,
    │                                   IntegrityError, ServerResponseError, BudgetError, ConfigError (a UsageError)
    └── runtime.errors.RuntimeUpdateError   device runtime: PackageMismatchError, ModelMismatchError,
                                            SourceUnavailableError

Each message says what was wrong and where (file offset, chunk index, tensor name).
"""

from __future__ import annotations


class BitladderError(Exception):
    """Base class of every error raised by bitladder on bad input."""


class FormatError(BitladderError):
    """The bytes are not a valid bitladder package.

    `StreamDecoder.feed` and `PackageVerifier.feed` return it (in `Fed.error`, after the chunks that verified
    first) rather than raise it; random access (`Package`) raises it.
    """


class BadMagicError(FormatError):
    """The first bytes are not the bitladder magic."""


class UnsupportedVersionError(FormatError):
    """The package uses a format version this library cannot read."""


class ManifestError(FormatError):
    """The manifest is oversize, malformed, or inconsistent with itself."""


class TruncatedError(FormatError):
    """The stream ended before the bytes the manifest announces."""


class ChunkIntegrityError(FormatError):
    """A chunk failed its digest check or could not be decoded."""


class TrustError(BitladderError):
    """A package the caller's trust set does not accept, or a key that cannot be used.

    Not a `FormatError`: the bytes may be a valid package, so fetching them again cannot help. Decoders raise it
    from `feed` (after the header arrives, before the manifest is parsed or any tensor handed out) and refuse
    every later call with it.
    """


class UnsignedPackageError(TrustError):
    """Trusted keys were given, but the package carries no signature."""


class BadSignatureError(TrustError):
    """The signature does not verify over the header: the header, manifest or signature was altered."""


class UntrustedKeyError(TrustError):
    """The package is signed by a key that is not in the trust set."""


class DowngradeError(TrustError):
    """An older version of a model than the one already held (a replay), refused unless a downgrade is allowed."""


class KeyFileError(TrustError):
    """A signing or public key file that is not a bitladder Ed25519 key."""


class LineageError(BitladderError):
    """A delta package applied to weights other than the parent it was made from, or without them."""


class SourceError(BitladderError):
    """A model source (safetensors, state dict) cannot be read."""


class UnsupportedDtypeError(SourceError):
    """A tensor has a dtype that bitladder does not encode."""


class DecoderStateError(BitladderError):
    """The decoder was asked for something its state does not allow."""


class UsageError(BitladderError, ValueError):
    """An argument is not one of its valid choices (the message lists them), or two options conflict.

    It is also a `ValueError`, so code written against the builtin keeps working.
    """


class UnknownTensorError(UsageError, KeyError):
    """The package has no tensor of that name (also a `KeyError`, as for a dict)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FileAccessError(BitladderError, OSError):
    """A file cannot be opened: a folder, no permission, ... (`errno`, `strerror` and `filename` are set)."""


class MissingFileError(FileAccessError, FileNotFoundError):
    """No file at that path."""


def file_access_error(exc: OSError, what: str) -> FileAccessError:
    """The typed error for an `OSError` raised while opening `what` (e.g. "package")."""
    kind = MissingFileError if isinstance(exc, FileNotFoundError) else FileAccessError
    return kind(exc.errno, f"cannot open {what}: {exc.strerror}", exc.filename)
