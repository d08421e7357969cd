"""Errors of the device runtime (to be folded into `bitladder.errors`).

    BitladderError
    └── RuntimeUpdateError          the runtime cannot take or apply a package
        ├── PackageMismatchError    the package is for another model id or version, or another tensor set
        ├── ModelMismatchError      the module needs a tensor the package lacks, or a shape differs
        └── SourceUnavailableError  the source cannot be opened (e.g. no HTTP client installed)
"""

from __future__ import annotations

from ..errors import BitladderError


class RuntimeUpdateError(BitladderError):
    """The runtime cannot take or apply a package."""


class PackageMismatchError(RuntimeUpdateError):
    """Updates come from a package with another model id, version or tensor set."""


class ModelMismatchError(RuntimeUpdateError):
    """The module and the package disagree on which tensors exist or on their shapes."""


class SourceUnavailableError(RuntimeUpdateError):
    """The source cannot be opened."""
