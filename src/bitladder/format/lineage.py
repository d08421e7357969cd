"""Which weights a delta package applies to: the check that the weights a caller holds are its parent's.

A delta records its parent's model id, version and weights digest (`spec.WeightsHasher`). The caller gives the
weights it holds; they are hashed once, compared, and the parent values of each delta tensor handed to the decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import LineageError, UsageError
from ..sources import SourceModel, from_arrays
from .spec import Manifest, WeightsHasher

Held = SourceModel | Mapping[str, NDArray[np.generic]]
"""The weights a device holds: a `SourceModel`, or arrays by name in their source dtypes (as `decode` returns)."""


def held_model(held: Held) -> SourceModel:
    return held if isinstance(held, SourceModel) else from_arrays(held)


def model_weights(model: SourceModel) -> str:
    """The weights digest of a model (what a package of it records as `model.weights`)."""
    hasher = WeightsHasher()
    for tensor in model.tensors.values():
        hasher.add(tensor.spec, tensor.data)
    return hasher.digest()


def parent_values(manifest: Manifest, held: Held | None) -> dict[int, NDArray[Any]]:
    """Per delta tensor (by index), its parent's values, flat in the storage dtype; raises `LineageError` unless
    `held` are exactly the parent's weights. A full package needs no parent: {} (and `held` must be None)."""
    parent = manifest.parent
    if parent is None:
        if held is not None:
            raise UsageError(f"package {manifest.model_id!r} version {manifest.model_version!r} is a full package, "
                             "not a delta: it takes no parent weights")
        return {}
    where = f"delta {manifest.model_id!r} version {manifest.model_version!r}"
    if held is None:
        raise LineageError(f"{where} updates {parent.describe()}: give the weights it applies to (parent=, fetch --base OLD, or "
                           "bitladder patch OLD UPDATE)")
    model = held_model(held)
    weights = model_weights(model)
    if weights != parent.weights:
        raise LineageError(f"{where} updates {parent.describe()}, but the weights given are {weights[:23]}…: "
                           "another version (or modified weights)")
    values = {}
    for index, spec in enumerate(manifest.tensors):
        if not spec.delta:
            continue
        tensor = model.tensors.get(spec.name)
        if tensor is None or tensor.spec != dataclasses.replace(spec, delta=False):
            raise LineageError(f"{where}: its parent has no tensor {spec.name!r} of {spec.dtype}{list(spec.shape)}")
        values[index] = tensor.data
    return values
