"""Version updates of a running model: a delta package applied live, activated by a policy, and rolled back.

The model keeps serving its version while an update streams in. `ApplyMode.ATOMIC` decodes the whole update beside
the model (only the tensors it changes) and swaps them all in one write-locked step, so no forward pass sees part of
it; `ApplyMode.INCREMENTAL` swaps each changed tensor as it reaches a rung of the update (`rungs()` shows the mix). An
update that fails or is cancelled before it is complete leaves the model exactly on the old version (tensors that
incremental mode already swapped are taken back). Before a changed tensor's old values are let go, the update codes
them as an exact delta against the new ones (the core's delta codec, on this thread, off the forward path) and keeps
that: `rollback()` decodes it into the old version, bit-exact. What it keeps (`kept_bytes`) is about the size of the
update itself, not a copy of the old weights; incremental mode holds the old values of a tensor between its first
swap and its exact one.

>>> update = model.update("v1-to-v2.blad", activate="manual")          # doctest: +SKIP
>>> update.wait(UpdateState.READY); update.activate(); update.wait()   # doctest: +SKIP
>>> model.rollback()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import torch
from numpy.typing import NDArray

from ..codecs import native
from ..codecs.native import Block, NativeDtype
from ..codecs.states import TensorSpec, is_float
from ..errors import BitladderError, LineageError, UsageError
from ..format.reader import StreamDecoder, TensorUpdate
from ..format.signing import Trust, check_downgrade
from ..format.spec import Manifest
from .core import ApplyMode
from .errors import RuntimeUpdateError
from .feed import DEFAULT_PIECE, file_pieces

REVERSE_BLOCK = 1 << 18
"""Elements per block of the reverse delta a rollback decodes."""


class Activation(enum.StrEnum):
    """When an atomic update goes live once it has arrived whole."""

    NOW = "now"          # at once
    IDLE = "idle"        # once no forward pass has run for `idle_s` seconds
    AT = "at"            # at a given time (`at=`, a datetime or a time.time() value), not before
    MANUAL = "manual"    # when the caller calls `activate()`


class UpdateState(enum.Enum):
    STREAMING = "streaming"
    READY = "ready"          # arrived whole and verified, waiting for its activation
    ACTIVE = "active"
    FAILED = "failed"        # the model is on the old version
    CANCELLED = "cancelled"  # the model is on the old version
    ROLLED_BACK = "rolled back"


@dataclass(frozen=True)
class HeldVersion:
    """Which version a model holds: its manifest's id, version and exact weights digest."""

    model_id: str
    version: str
    weights: str


_NUMPY_OF: dict[torch.dtype, type[np.generic]] = {
    torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64, torch.int64: np.int64,
    torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_,
}


class ModelTensors:
    """The bridge between a module's tensors and the codec's storage arrays (exact copies, same dtype). `unused`
    are the package's tensors the module has no place for (the device keeps them, so that it holds the whole
    version a delta names as its parent)."""

    def __init__(self, targets: dict[str, torch.Tensor], unused: dict[str, NDArray[np.generic]]) -> None:
        self._targets = targets
        self.unused = dict(unused)

    def held(self) -> dict[str, NDArray[np.generic]]:
        """The module's tensors as numpy arrays in their package dtypes (bfloat16 via ml_dtypes), and the unused."""
        return {**self.unused, **{name: self.array(name) for name in self._targets}}

    def array(self, name: str) -> NDArray[np.generic]:
        """One module tensor as `held` gives it."""
        data = self._targets[name].detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:
            return data.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return data.numpy()

    def has(self, name: str) -> bool:
        return name in self._targets

    def tensor(self, name: str, bits: NDArray[Any]) -> torch.Tensor:
        """Storage bits of a tensor as a torch tensor shaped and typed like the module's."""
        target = self._targets[name]
        if target.dtype == torch.bfloat16:
            out = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
        elif target.dtype in _NUMPY_OF:
            out = torch.from_numpy(bits.copy().view(_NUMPY_OF[target.dtype]))
        else:
            raise RuntimeUpdateError(f"tensor {name!r}: the module holds {target.dtype}, which updates do not handle")
        return out.reshape(target.shape).to(target.device)


def _pieces(source: str | os.PathLike[str] | bytes | Iterable[bytes], trust: Trust | None) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return iter([bytes(source)])
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        from ..delivery.client import open_url

        return open_url(source, trust=trust)
    if isinstance(source, (str, os.PathLike)):
        return file_pieces(source, DEFAULT_PIECE)
    return iter(source)


class VersionUpdate:
    """One update of a running model to a new version (see the module docstring); made by `ProgressiveModel.update`.

    Swaps go through `swap(changes)`, which the model runs under its write lock; `idle_for()` says how long no
    forward pass has run.
    """

    def __init__(self, held: HeldVersion, tensors: ModelTensors, source: str | os.PathLike[str] | bytes | Iterable[bytes],
                 swap: Callable[[dict[str, torch.Tensor]], None], idle_for: Callable[[], float], *,
                 apply: ApplyMode | str = ApplyMode.ATOMIC, activate: Activation | str = Activation.NOW,
                 at: dt.datetime | float | None = None, idle_s: float = 0.5, trust: Trust | None = None,
                 allow_downgrade: bool = False) -> None:
        try:
            apply, activate = ApplyMode(apply), Activation(activate)
        except ValueError:
            raise UsageError(f"apply must be one of {[m.value for m in ApplyMode]} and activate one of "
                             f"{[a.value for a in Activation]}, got {apply!r}, {activate!r}") from None
        if apply is ApplyMode.INCREMENTAL and activate is not Activation.NOW:
            raise UsageError(f"an incremental update goes live as it arrives: activate={activate.value!r} needs "
                             "apply=ApplyMode.ATOMIC")
        if (activate is Activation.AT) != (at is not None):
            raise UsageError("at= is given exactly with activate=Activation.AT")
        self.previous = held
        """The version the model held before this update (and holds again after a failure or rollback)."""
        self._tensors, self._swap, self._idle_for = tensors, swap, idle_for
        self.apply, self.activation, self._idle_s, self._trust = apply, activate, idle_s, trust
        self._allow_downgrade = allow_downgrade
        self._at = at.timestamp() if isinstance(at, dt.datetime) else at
        self._cond = threading.Condition()
        self._activate_now = False
        self._cancel = False
        self.state = UpdateState.STREAMING
        self.error: BitladderError | None = None
        self.manifest: Manifest | None = None
        self._old: dict[str, NDArray[Any]] = {}        # old values of tensors swapped but not yet exact
        self._reverse: dict[str, list[bytes]] = {}     # per tensor, exact delta blocks from the new values to the old
        self._rungs: dict[str, str] = {}
        self._unused_before: dict[str, NDArray[np.generic]] = {}
        self.activated_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(_pieces(source, trust),), daemon=True,
                                        name="bitladder-update")
        self._thread.start()

    # -- public ---------------------------------------------------------------------------------------------

    def rungs(self) -> dict[str, str]:
        """Per changed tensor, what the model holds of it: "old", or the update's rung name."""
        with self._cond:
            return dict(self._rungs)

    def wait(self, state: UpdateState = UpdateState.ACTIVE, timeout: float | None = None) -> bool:
        """Block until the update reaches `state` (or ends otherwise); raises its error if it failed."""
        ended = {UpdateState.ACTIVE, UpdateState.FAILED, UpdateState.CANCELLED, UpdateState.ROLLED_BACK}
        with self._cond:
            self._cond.wait_for(lambda: self.state is state or self.state in ended, timeout)
            if self.state is UpdateState.FAILED and self.error is not None:
                raise self.error
            return self.state is state

    def activate(self) -> None:
        """Go live now (MANUAL activation, or earlier than an IDLE / AT policy would)."""
        with self._cond:
            self._activate_now = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Abandon the update before it is active; the model stays on (or returns to) the old version."""
        with self._cond:
            self._cancel = True
            self._cond.notify_all()
        self._thread.join()

    def rollback(self) -> None:
        """Return an active update to the old version, bit-exact, from the reverse delta it kept."""
        with self._cond:
            if self.state is not UpdateState.ACTIVE:
                raise RuntimeUpdateError(f"only an active update can be rolled back; this one is {self.state.value}")
        self._restore()
        self._tensors.unused = self._unused_before
        with self._cond:
            self.state = UpdateState.ROLLED_BACK
            self._cond.notify_all()

    @property
    def version(self) -> HeldVersion | None:
        """The version the update brings (once its manifest has arrived)."""
        m = self.manifest
        return None if m is None else HeldVersion(m.model_id, m.model_version, m.weights)

    @property
    def kept_bytes(self) -> int:
        """What the update keeps for a rollback: the reverse delta, and old values of tensors not yet exact."""
        return sum(len(p) for blocks in self._reverse.values() for p in blocks) + sum(a.nbytes for a in self._old.values())

    # -- the update thread ----------------------------------------------------------------------------------

    def _run(self, pieces: Iterator[bytes]) -> None:
        decoder = StreamDecoder(trust=self._trust, parent=self._tensors.held())
        try:
            for piece in pieces:
                if self._cancel:
                    raise _Cancelled
                fed = decoder.feed(piece)
                if self.manifest is None and decoder.manifest is not None:
                    self._accept(decoder.manifest)
                if self.apply is ApplyMode.INCREMENTAL:
                    self._swap_incremental(decoder, fed.updates)
                fed.raise_for_error()
            decoder.close()
            self._ready(decoder)
        except _Cancelled:
            self._revert(UpdateState.CANCELLED, None)
        except BitladderError as exc:
            self._revert(UpdateState.FAILED, exc)
        except Exception as exc:  # a defect must still end the update (waiters would hang) and restore the model
            failure = RuntimeUpdateError(f"the update stopped on an internal error: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            self._revert(UpdateState.FAILED, failure)

    def _accept(self, manifest: Manifest) -> None:
        held = self.previous
        if manifest.parent is None:
            raise RuntimeUpdateError(f"{manifest.model_id!r} version {manifest.model_version!r} is a full package, "
                                     "not an update: open a new ProgressiveModel on it instead")
        if (manifest.parent.model_id, manifest.parent.version, manifest.parent.weights) != (
                held.model_id, held.version, held.weights):
            raise LineageError(f"update to {manifest.model_id!r} version {manifest.model_version!r} applies to "
                               f"{manifest.parent.describe()}; the model holds {held.model_id!r} version {held.version!r}")
        check_downgrade(manifest.model_id, held.version, manifest.model_version, self._allow_downgrade, "update")
        self.manifest = manifest
        changed = {manifest.tensors[c.tensor].name for c in manifest.chunks if c.length}
        with self._cond:
            self._rungs = dict.fromkeys(sorted(changed), "old")

    def _swap_incremental(self, decoder: StreamDecoder, updates: tuple[TensorUpdate, ...]) -> None:
        manifest = self.manifest
        assert manifest is not None
        ready = [u for u in updates if u.name in self._rungs and self._tensors.has(u.name)]
        if not ready:
            return
        for update in ready:  # the old values of a tensor's first swap, until its exact one
            if update.name not in self._old:
                self._old[update.name] = self._storage(update.name, self._tensors.array(update.name)).copy()
        self._swap({u.name: self._tensors.tensor(u.name, decoder.tensor(u.name, raw=True)) for u in ready})
        top = len(manifest.ladder.rungs) - 1
        for update in ready:
            if update.reaches == top:
                self._reverse[update.name] = self._reverse_delta(update.name, self._old.pop(update.name),
                                                                 decoder.tensor(update.name, raw=True))
        with self._cond:
            for update in ready:
                self._rungs[update.name] = manifest.ladder.names[update.reaches]

    def _ready(self, decoder: StreamDecoder) -> None:
        assert self.manifest is not None
        self._unused_before = dict(self._tensors.unused)
        unused = {name: decoder.tensor(name) for name in self._tensors.unused}
        if self.apply is ApplyMode.ATOMIC:
            names = [name for name in self._rungs if self._tensors.has(name)]
            reverse = {name: self._reverse_delta(name, self._storage(name, self._tensors.array(name)),
                                                 decoder.tensor(name, raw=True))
                       for name in names}  # coded while the model still holds the old values; kept once swapped
            changes = {name: self._tensors.tensor(name, decoder.tensor(name, raw=True)) for name in names}
            with self._cond:
                self.state = UpdateState.READY
                self._cond.notify_all()
                while not self._due():
                    if self._cancel:
                        raise _Cancelled
                    self._cond.wait(0.05)
            self._swap(changes)
            self._reverse = reverse
        self._tensors.unused = unused
        top = self.manifest.ladder.names[-1]
        with self._cond:
            self._rungs = dict.fromkeys(self._rungs, top)
            self.state = UpdateState.ACTIVE
            self.activated_at = time.time()
            self._cond.notify_all()

    def _due(self) -> bool:
        if self._activate_now or self.activation is Activation.NOW:
            return True
        if self.activation is Activation.IDLE:
            return self._idle_for() >= self._idle_s
        if self.activation is Activation.AT:
            return self._at is not None and time.time() >= self._at
        return False

    def _revert(self, state: UpdateState, error: BitladderError | None) -> None:
        """The update did not go live: take back what incremental mode swapped, then record why."""
        self._restore()
        with self._cond:
            self._rungs = dict.fromkeys(self._rungs, "old")
            self.state, self.error = state, error
            self._cond.notify_all()

    def _spec(self, name: str) -> TensorSpec:
        assert self.manifest is not None
        return self.manifest.specs[name]

    def _storage(self, name: str, array: NDArray[Any]) -> NDArray[Any]:
        return np.ascontiguousarray(array).reshape(-1).view(self._spec(name).storage)

    def _blocks(self, name: str) -> list[Block]:
        spec = self._spec(name)
        dtype = NativeDtype[spec.dtype]
        return [Block(dtype, NativeDtype.NONE, 1, begin, min(REVERSE_BLOCK, spec.numel - begin), 1)
                for begin in range(0, spec.numel, REVERSE_BLOCK)]

    def _reverse_delta(self, name: str, old: NDArray[Any], new: NDArray[Any]) -> list[bytes]:
        """Exact delta blocks that take the tensor's new values back to `old` (a non-float tensor keeps `old`)."""
        if not is_float(self._spec(name).dtype):
            return [old.tobytes()]
        new = new.reshape(-1)
        return [native.delta_encode(block, old[block.begin:block.begin + block.count],
                                    new[block.begin:block.begin + block.count], 0) for block in self._blocks(name)]

    def _restore(self) -> None:
        """One swap puts back the old values of every tensor this update changed in the model."""
        old = dict(self._old)
        for name, payloads in self._reverse.items():
            spec = self._spec(name)
            if not is_float(spec.dtype):
                old[name] = np.frombuffer(payloads[0], spec.storage).copy()
                continue
            current = self._storage(name, self._tensors.array(name))
            values = np.empty_like(current)
            for block, payload in zip(self._blocks(name), payloads, strict=True):
                part = slice(block.begin, block.begin + block.count)
                native.delta_decode(block, payload, current[part], values[part])
            old[name] = values
        if old:
            self._swap({name: self._tensors.tensor(name, values) for name, values in old.items()})
        self._old.clear()
        self._reverse.clear()


class _Cancelled(Exception):
    pass
