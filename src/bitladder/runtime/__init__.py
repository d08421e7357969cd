"""The device runtime: serve a model while its package streams in, swapping refinements between calls.

Torch-free at import; adapters live in submodules: `bitladder.runtime.torch.ProgressiveModel` (PyTorch) and
`bitladder.runtime.onnx.ProgressiveSession` (ONNX Runtime).
"""

from __future__ import annotations

from .core import ApplyMode, ProgressiveRuntime, RWLock, Update
from .errors import ModelMismatchError, PackageMismatchError, RuntimeUpdateError, SourceUnavailableError
from .feed import PieceQueue, file_pieces, open_source
from .stream import InputRecord, StreamRunner

__all__ = [
    "ApplyMode",
    "InputRecord",
    "ModelMismatchError",
    "PackageMismatchError",
    "PieceQueue",
    "ProgressiveRuntime",
    "RWLock",
    "RuntimeUpdateError",
    "SourceUnavailableError",
    "StreamRunner",
    "Update",
    "file_pieces",
    "open_source",
]
