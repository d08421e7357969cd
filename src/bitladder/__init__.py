"""bitladder: send a model as an inference-ready low-precision base, then refinements up to its exact bits.

>>> import bitladder
>>> manifest = bitladder.encode("model.safetensors", "model.blad", ladder="int8,exact")  # doctest: +SKIP
>>> decoder = bitladder.StreamDecoder()                                                  # doctest: +SKIP
"""


from .api import encode, open
from .codecs.ladder import ExactRung, HalfRung, IntRung, Ladder, Rung
from .delivery.choice import Budget, Choice
from .delivery.errors import BudgetError
from .errors import (
    BadMagicError,
    BadSignatureError,
    BitladderError,
    ChunkIntegrityError,
    DecoderStateError,
    DowngradeError,
    FileAccessError,
    FormatError,
    KeyFileError,
    ManifestError,
    MissingFileError,
    SourceError,
    TruncatedError,
    TrustError,
    UnknownTensorError,
    UnsignedPackageError,
    UnsupportedDtypeError,
    UnsupportedVersionError,
    UntrustedKeyError,
    UsageError,
)
from .format.framer import Fed
from .format.reader import Package, StreamDecoder, TensorUpdate
from .format.signing import Trust, generate_keys, load_signing_key, load_trust
from .format.spec import Manifest

__version__ = "0.1.0"

__all__ = [
    "BadMagicError",
    "BadSignatureError",
    "BitladderError",
    "Budget",
    "BudgetError",
    "Choice",
    "ChunkIntegrityError",
    "DecoderStateError",
    "DowngradeError",
    "ExactRung",
    "Fed",
    "FileAccessError",
    "FormatError",
    "HalfRung",
    "IntRung",
    "KeyFileError",
    "Ladder",
    "Manifest",
    "ManifestError",
    "MissingFileError",
    "Package",
    "Rung",
    "SourceError",
    "StreamDecoder",
    "TensorUpdate",
    "TruncatedError",
    "Trust",
    "TrustError",
    "UnknownTensorError",
    "UnsignedPackageError",
    "UnsupportedDtypeError",
    "UnsupportedVersionError",
    "UntrustedKeyError",
    "UsageError",
    "encode",
    "generate_keys",
    "load_signing_key",
    "load_trust",
    "open",
]
