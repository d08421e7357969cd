"""Every error bitladder raises on bad input.

    BitladderError
    ├── FormatError                 the bytes are not a valid package
    │   ├── BadMagicError           not a bitladder package at all
    │   ├── UnsupportedVersionError a package from a newer (or unknown) format version
    │   ├── ManifestError           the manifest is too large, not JSON, or inconsistent
    │   ├── TruncatedError          the data ended before the manifest said it would
    │   └── ChunkIntegrityError     a chunk's bytes do not match its digest or do not decode
    ├── SourceError                 a model file we cannot read
    │   └── UnsupportedDtypeError   a tensor dtype the codec does not handle
    ├── DecoderStateError           a call the decoder cannot honour in its current state
    ├── delivery.errors.DeliveryError   HTTP: AuthError, NotFoundError, PackageChangedError, ConnectionLostError,
    │                                   IntegrityError, ServerResponseError, ConfigError
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


class SourceError(BitladderError):
    """A model source (safetensors, state dict) cannot be read."""


class UnsupportedDtypeError(SourceError):
    """A tensor has a dtype that bitladder does not encode."""


class DecoderStateError(BitladderError):
    """The decoder was asked for something its state does not allow."""
