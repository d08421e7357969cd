"""bitladder: send a model as an inference-ready low-precision base, then refinements up to its exact bits.

>>> import bitladder
>>> manifest = bitladder.encode("model.safetensors", "model.blad", ladder="int8,exact")  # doctest: +SKIP
>>> decoder = bitladder.StreamDecoder()                                                  # doctest: +SKIP
"""


from .api import encode, open
from .codecs.ladder import ExactRung, HalfRung, IntRung, Ladder, Rung
from .errors import (
    BadMagicError,
    BitladderError,
    ChunkIntegrityError,
    DecoderStateError,
    FileAccessError,
    FormatError,
    ManifestError,
    MissingFileError,
    SourceError,
    TruncatedError,
    UnknownTensorError,
    UnsupportedDtypeError,
    UnsupportedVersionError,
    UsageError,
)
from .format.framer import Fed
from .format.reader import Package, StreamDecoder, TensorUpdate
from .format.spec import Manifest

__version__ = "0.1.0"

__all__ = [
    "BadMagicError",
    "BitladderError",
    "ChunkIntegrityError",
    "DecoderStateError",
    "ExactRung",
    "Fed",
    "FileAccessError",
    "FormatError",
    "HalfRung",
    "IntRung",
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
    "UnknownTensorError",
    "UnsupportedDtypeError",
    "UnsupportedVersionError",
    "UsageError",
    "encode",
    "open",
]
