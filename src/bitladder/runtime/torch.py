"""PyTorch: serve an `nn.Module` whose parameters and buffers arrive as a progressive package.

>>> model = ProgressiveModel(MyNet(), "model.blad")      # doctest: +SKIP
>>> logits = model(images)                               # runs at once, on the first rung
>>> model.wait("exact")                                  # doctest: +SKIP
True
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ..codecs.states import TensorSpec, is_float
from ..delivery.choice import Budget
from ..format.reader import StreamDecoder
from ..format.signing import Trust
from .core import ApplyMode, ProgressiveRuntime, RuntimeFacade, Update
from .errors import ModelMismatchError, RuntimeUpdateError
from .feed import DEFAULT_PIECE, Source
from .updates import Activation, HeldVersion, ModelTensors, UpdateState, VersionUpdate

# Integer views of the float dtypes a package holds, for numpy (which has no bfloat16) to see their bits.
_BITS_VIEW: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "F32": (torch.float32, torch.int32), "F16": (torch.float16, torch.int16), "BF16": (torch.bfloat16, torch.int16)}


class TorchAdapter:
    """Parameters and persistent buffers of a module, addressed by their `state_dict` names."""

    def __init__(self, module: torch.nn.Module) -> None:
        self._targets: dict[str, torch.Tensor] = dict(module.state_dict(keep_vars=True))
        users = Counter(t.data_ptr() for t in self._targets.values() if t.numel())
        self._shared = {name for name, t in self._targets.items() if t.numel() and users[t.data_ptr()] > 1}
        self._placed: dict[str, tuple[torch.Tensor, int]] = {}  # tensors given as storage, and that storage's address

    def storage(self, spec: TensorSpec) -> NDArray[Any] | None:
        """The tensor's own memory, for the decoder to refine in place (flat, as the package's storage dtype): a
        float parameter or buffer of the package's dtype on the CPU, contiguous, sharing its memory with no other
        name. None otherwise: the decoder keeps a copy, which `prepare` converts."""
        target = self._targets.get(spec.name)  # None: a package tensor the module lacks
        dtypes = _BITS_VIEW.get(spec.dtype)
        if target is None or dtypes is None or spec.name in self._shared:
            return None
        if (target.dtype != dtypes[0] or target.device.type != "cpu" or not target.is_contiguous()
                or tuple(target.shape) != spec.shape or not target.numel()):
            return None
        tensor = target.detach()
        view: NDArray[Any] = tensor.view(dtypes[1]).reshape(-1).numpy().view(spec.storage)
        self._placed[spec.name] = (tensor, view.__array_interface__["data"][0])
        return view

    def names(self) -> Collection[str]:
        return self._targets.keys()

    def check(self, spec: TensorSpec) -> None:
        target = self._targets[spec.name]
        if tuple(target.shape) != spec.shape:
            raise ModelMismatchError(f"tensor {spec.name!r}: package shape {spec.shape}, module shape "
                                     f"{tuple(target.shape)}")

    def prepare(self, spec: TensorSpec, decoder: StreamDecoder) -> torch.Tensor:
        """The decoder's tensor in the module tensor's dtype and device (no copy when nothing changes)."""
        placed = self._placed.get(spec.name)
        if placed is not None and decoder.tensor(spec.name, raw=True).__array_interface__["data"][0] == placed[1]:
            return placed[0]  # refined in place: this decoder's tensor is the module's (not a resumed stream's)
        target = self._targets[spec.name]
        array = decoder.values(spec.name) if is_float(spec.dtype) else decoder.tensor(spec.name)
        if not array.flags.writeable:  # torch cannot share read-only memory
            array = array.copy()
        if array.dtype == np.uint64 or array.dtype == np.uint32:
            array = array.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=target.device, dtype=target.dtype)

    def nbytes(self, prepared: torch.Tensor) -> int:
        return prepared.numel() * prepared.element_size()

    def stage(self, batch: dict[str, torch.Tensor], lowest: int) -> dict[str, torch.Tensor]:
        """The tensors to install: not those the module already holds (refined in place)."""
        return {name: tensor for name, tensor in batch.items() if tensor is not self._installed(name)}

    def _installed(self, name: str) -> torch.Tensor | None:
        placed = self._placed.get(name)
        return placed[0] if placed is not None and placed[0].data_ptr() == self._targets[name].data_ptr() else None

    def commit(self, staged: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        retired = [self._targets[name].data for name in staged]
        for name, tensor in staged.items():
            self._targets[name].data = tensor
            if name in self._placed and self._placed[name][0] is not tensor:  # memory the module no longer uses
                del self._placed[name]
        return retired


class ProgressiveModel(RuntimeFacade):
    """An `nn.Module` that serves from the first rung and refines itself in the background.

    `apply="incremental"` swaps each tensor as soon as its refinement verifies (mixed precision meanwhile), and
    refines the module's own tensors in place where they are on the CPU in the package's dtype (each block
    written between two forward passes), so that refining takes little memory beyond the model's;
    `apply="atomic"` caches a rung's tensors and swaps them all at once when the rung is complete. Call it
    like the module; swaps never happen during a call. `trust`, `allow_downgrade` and `budget` (stop after the
    highest rung that fits a `bitladder.Budget`; `model.choice` says which and why): see `ProgressiveRuntime`.

    >>> model = ProgressiveModel(net, "net.blad", apply="atomic")   # doctest: +SKIP
    >>> model.rung, model(x).shape                                  # doctest: +SKIP
    (0, torch.Size([1, 1000]))
    """

    def __init__(self, module: torch.nn.Module, source: Source, apply: ApplyMode | str = ApplyMode.INCREMENTAL,
                 buffer: bool = False, *, on_update: Callable[[Update], None] | None = None,
                 piece_size: int = DEFAULT_PIECE, model_id: str | None = None,
                 model_version: str | None = None, trust: Trust | None = None,
                 allow_downgrade: bool = False, budget: Budget | None = None) -> None:
        self.module = module
        self.buffer = buffer
        self._last_call = float("-inf")
        self._calls = 0  # forward passes in progress (idle activation waits for none, and a pause)
        self._update: VersionUpdate | None = None
        self.runtime = ProgressiveRuntime(TorchAdapter(module), source, apply=apply, on_update=on_update,
                                          piece_size=piece_size, model_id=model_id, model_version=model_version,
                                          trust=trust, allow_downgrade=allow_downgrade, budget=budget)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._calls += 1
        try:
            with self.runtime.reading():
                return self.module(*args, **kwargs)
        finally:
            self._calls -= 1
            self._last_call = time.monotonic()

    # -- version updates (runtime.updates) --------------------------------------------------------------

    @property
    def held_version(self) -> HeldVersion:
        """The version the model serves: its package's, or that of the last update that went live."""
        update = self._update
        if update is not None:  # live: its version; otherwise (not yet, failed, rolled back) the one before it
            return update.version if update.state is UpdateState.ACTIVE and update.version else update.previous
        manifest = self.runtime.manifest
        assert manifest is not None  # the constructor returns once the manifest has arrived
        return HeldVersion(manifest.model_id, manifest.model_version, manifest.weights)

    def update(self, source: str | os.PathLike[str] | bytes | Iterable[bytes], *,
               apply: ApplyMode | str = ApplyMode.ATOMIC, activate: Activation | str = Activation.NOW,
               at: dt.datetime | float | None = None, idle_s: float = 0.5, trust: Trust | None = None,
               allow_downgrade: bool = False) -> VersionUpdate:
        """Start updating the running model to a new version from a delta package (`bitladder diff`): a path, a
        URL, bytes or pieces. Returns the update (its `wait()`, `activate()`, `cancel()`, `rungs()`); see
        `bitladder.runtime.updates`. The model must hold its exact rung; one update runs at a time, and the
        one before is final (a rollback is possible only for the last update)."""
        manifest = self.runtime.manifest
        assert manifest is not None
        if self.runtime.running or self.runtime.rung != len(manifest.ladder.rungs) - 1:
            raise RuntimeUpdateError("a version update needs the model at its exact rung: wait() for it first")
        if self._update is not None and self._update.state in (UpdateState.STREAMING, UpdateState.READY):
            raise RuntimeUpdateError("another update is in progress: wait() for it or cancel() it first")
        held = self.held_version
        if self._update is None:
            self._tensors = ModelTensors(dict(self.module.state_dict(keep_vars=True)), self.runtime.unused)
        self._update = VersionUpdate(held, self._tensors, source, self.runtime.replace,
                                     self._idle_for, apply=apply, activate=activate,
                                     at=at, idle_s=idle_s, trust=trust, allow_downgrade=allow_downgrade)
        return self._update

    def _idle_for(self) -> float:
        """Seconds since the last forward pass ended; 0 while one runs."""
        return 0.0 if self._calls else time.monotonic() - self._last_call

    def rollback(self) -> None:
        """Return to the version before the last update, bit-exact (from the reverse delta the update kept)."""
        if self._update is None:
            raise RuntimeUpdateError("no update to roll back")
        self._update.rollback()

    def call_with_rung(self, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """The output and the rung that produced it (read under the same lock)."""
        with self.runtime.reading() as rung:
            return self.module(*args, **kwargs), rung

    def stream(self, **kwargs: Any) -> Any:
        """A `StreamRunner` for continuous input; `buffer` comes from this model unless given."""
        from .stream import StreamRunner

        kwargs.setdefault("buffer", self.buffer)
        return StreamRunner(self.call_with_rung, **kwargs)

