"""The engine behind every adapter: load the first rung, then refine in a background thread.

An adapter (torch module, ONNX session) turns a decoded tensor into its own form (`prepare`, outside any
lock), may build something from a batch of them (`stage`, outside any lock, e.g. an ONNX session), and
swaps them in (`commit`, under the write lock, pointer moves only). Forward passes hold the read lock, so a
swap never happens inside one and a forward pass never sees a half-written tensor.

The background threads are daemons; `close()` stops and joins them, and `runtime.shutdown` closes every
runtime still refining at interpreter exit.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import TensorSpec
from ..delivery.choice import Budget, Choice
from ..errors import BitladderError, FormatError, UsageError
from ..format.reader import Placement, StreamDecoder, TensorUpdate
from ..format.rungs import RungTally
from ..format.signing import Trust, check_downgrade
from ..format.spec import Manifest
from . import shutdown
from .errors import ModelMismatchError, PackageMismatchError, RuntimeUpdateError
from .feed import DEFAULT_PIECE, BudgetedPieces, Source, open_source

log = logging.getLogger(__name__)

class ApplyMode(enum.StrEnum):
    """How refinements (and version updates) reach the model: each tensor as it arrives, or a whole rung at once."""

    INCREMENTAL = "incremental"
    ATOMIC = "atomic"
P = TypeVar("P")


class Adapter(Protocol[P]):
    """What the runtime needs from a model: its tensor names, and how to build and swap tensors.

    `stage` gets the batch and the lowest rung over all tensors once the batch is in. An adapter may also define
    `bind(manifest)`, called when the first manifest arrives (before `names`), and `storage(spec)`: memory of the
    tensor's (flat, in the package's storage dtype) that the first stream decodes into in place in incremental
    mode, or None; `prepare` of such a tensor then hands back the tensor that memory belongs to, and `stage` may
    return something empty (falsy) when a batch has nothing left to install: the runtime then takes no lock.
    """

    def names(self) -> Collection[str]: ...

    def check(self, spec: TensorSpec) -> None: ...

    def prepare(self, spec: TensorSpec, decoder: StreamDecoder) -> P: ...

    def nbytes(self, prepared: P) -> int: ...

    def stage(self, batch: dict[str, P], lowest: int) -> Any: ...

    def commit(self, staged: Any) -> Any:
        """Install `staged`; returns what it replaced, which the runtime frees after the swap's lock."""
        ...


@dataclass(frozen=True)
class Update:
    """A swap: `tensor` reached `rung` (`tensor` is None when the whole model reached `rung`).

    `at` is `time.monotonic()` when the swap ended; `seconds` is how long it held the write lock.
    """

    tensor: str | None
    rung: int
    at: float
    seconds: float


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers, so swaps are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class ProgressiveRuntime(Generic[P]):
    """Serve a model while its package streams in. Adapters wrap this; see `runtime.torch.ProgressiveModel`.

    With `trust`, every stream (the first and each `resume`) must be signed by one of its keys: a refused one
    raises its `TrustError` before any tensor reaches the model. A stream of an older version than the one the
    model holds is a `DowngradeError` unless `allow_downgrade`.

    With `budget` (`bitladder.Budget`), the stream stops after the highest rung that fits it (`choice` says which
    and why, `BudgetError` if none does); `wait()` then waits for that rung.
    """

    def __init__(self, adapter: Adapter[P], source: Source, *, apply: ApplyMode | str = ApplyMode.INCREMENTAL,
                 on_update: Callable[[Update], None] | None = None, piece_size: int = DEFAULT_PIECE,
                 model_id: str | None = None, model_version: str | None = None, trust: Trust | None = None,
                 allow_downgrade: bool = False, budget: Budget | None = None) -> None:
        if apply not in tuple(ApplyMode):
            raise UsageError(f"apply must be one of {', '.join(repr(m.value) for m in ApplyMode)}, got {apply!r}")
        self._adapter = adapter
        self._apply = ApplyMode(apply)
        self._on_update = on_update
        self._piece_size = piece_size
        self._expect = (model_id, model_version)
        self._trust = trust
        self._allow_downgrade = allow_downgrade
        self._budget = budget
        self._budgeted: BudgetedPieces | None = None
        self._lock = RWLock()
        self._cond = threading.Condition()
        self._applied: RungTally[str] = RungTally((), 0)  # sized when the first manifest arrives
        self._first_reaches: dict[str, int] = {}  # the rung each tensor's first chunk reaches
        # Atomic mode: tensors prepared for the next swap, their bytes, and each tensor's rung counting them.
        self._cache: dict[str, tuple[P, int]] = {}
        self._cached_bytes = 0
        self._cached_or_applied: RungTally[str] = RungTally((), 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        # Incremental mode: the stream thread hands prepared tensors to a swap thread, so that reading and
        # decoding never wait for a forward pass to end (a stalled reader would stall the download too).
        self._outbox: dict[str, tuple[P, int]] = {}
        self._outbox_cond = threading.Condition()
        self._feeding_done = False
        self._swapper: threading.Thread | None = None
        self.manifest: Manifest | None = None
        self.unused: dict[str, NDArray[np.generic]] = {}
        """The package's tensors the model has no place for, once the stream is complete (a version update
        is checked against the whole package, these included)."""
        self.error: BitladderError | None = None
        self.swaps: list[tuple[str | None, float]] = []
        """Seconds each swap held the write lock, with its tensor (None: a whole-model swap). A tensor refined in
        place is installed block by block instead: `block_writes`."""
        self.block_writes: list[float] = []
        self.cache_peak_bytes = 0
        self._start(source, first=True)

    # -- public state ---------------------------------------------------------------------------

    @property
    def rung(self) -> int:
        """The lowest rung applied over all the model's tensors."""
        return self._applied.lowest

    def rungs(self) -> dict[str, int]:
        """The rung applied to each of the model's tensors."""
        return self._applied.as_dict()

    @property
    def running(self) -> bool:
        """Whether the background thread is still consuming the stream."""
        return self._running

    @property
    def choice(self) -> Choice | None:
        """The rung the budget chose, and why (None without a budget)."""
        return None if self._budgeted is None else self._budgeted.choice

    def rung_index(self, rung: int | str | None) -> int:
        """The position of `rung` (a name such as `"int8"`, a position, or None: the last); `UsageError` if the
        package has no such rung."""
        assert self.manifest is not None  # the constructor returns only once the manifest has arrived
        return self.manifest.rung_index(rung)

    def wait(self, rung: int | str | None = None, timeout: float | None = None) -> bool:
        """Block until every tensor is at `rung` (a name or position; default: the last, or the one a budget
        chose); False on timeout.

        Raises `UsageError` for a rung the package does not have, the stream's error (or `RuntimeUpdateError`
        if it ended early) when `rung` cannot come.
        """
        assert self.manifest is not None
        top = len(self.manifest.ladder.rungs) - 1
        target = self.rung_index(rung if rung is not None or self.choice is None else self.choice.rung)
        # At the last rung, also wait for the stream threads to end, so that a caller may exit right after.
        with self._cond:
            self._cond.wait_for(lambda: (self.rung >= target and (target < top or not self._running))
                                or not self._running, timeout)
            if self.rung >= target:
                return True
            if self._running:
                return False
        if self.error is not None:
            raise self.error
        raise RuntimeUpdateError(f"stream ended at rung {self.rung}; rung {target} will not arrive")

    def replace(self, staged: Any) -> None:
        """Swap staged tensors in (a version update's), under the write lock: between two forward passes."""
        with self._lock.write():
            retired = self._adapter.commit(staged)
        del retired

    @contextmanager
    def reading(self) -> Iterator[int]:
        """Hold the read lock (no swap can start) and yield the rung the model is at."""
        with self._lock.read():
            yield self.rung

    def resume(self, source: Source) -> None:
        """Continue refining from another stream of the same package (after an error or a cut)."""
        self.close(timeout=5.0)
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeUpdateError("the previous stream is still being consumed (its source blocks)")
        self.error = None
        self._start(source, first=False)

    def close(self, timeout: float | None = 1.0) -> None:
        """Stop consuming the stream after the piece in hand and join the background threads, waiting up to
        `timeout` seconds for each (the model keeps serving its current rung). Safe to call twice.

        A source that blocks (an HTTP read, a `PieceQueue` nobody feeds) keeps its thread until it returns.
        """
        self._stop.set()
        with self._outbox_cond:
            self._outbox_cond.notify_all()  # a swapper waiting for work sees the stop
        for thread in (self._thread, self._swapper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            shutdown.unregister(self)

    # -- opening a stream -----------------------------------------------------------------------

    def _start(self, source: Source, first: bool) -> None:
        decoder, pieces = open_source(source, self._piece_size, self._trust, self._budget)
        storage = getattr(self._adapter, "storage", None)
        if first and storage is not None and self._apply is ApplyMode.INCREMENTAL:
            # Refine in the model's own memory, a block at a time between forward passes. Not on a resumed
            # stream: it decodes its first rung again, which must not reach tensors already beyond it.
            decoder.place(Placement(storage, self._block_write))
        if self._budget is not None:
            pieces = self._budgeted = BudgetedPieces(pieces, decoder, self._budget)
        self._stop.clear()
        updates, error = self._read_first_rung(decoder, pieces)
        if first:
            self._load_first_rung(decoder)
        else:
            self._apply_updates(decoder, updates)
        if error is not None:  # the first rung verified, a later chunk in the same bytes did not
            self.error = error
            log.error("refinement stopped at rung %d, model keeps serving it: %s", self.rung, error)
            return
        self._running = True
        self._feeding_done = False
        if self._apply is ApplyMode.INCREMENTAL:
            self._swapper = threading.Thread(target=self._swap_outbox, daemon=True, name="bitladder-swap")
            self._swapper.start()
        self._thread = threading.Thread(target=self._consume, args=(decoder, pieces), daemon=True,
                                        name="bitladder-refine")
        shutdown.register(self)
        self._thread.start()

    def _read_first_rung(self, decoder: StreamDecoder,
                         pieces: Iterator[bytes]) -> tuple[list[TensorUpdate], FormatError | None]:
        """Feed until every tensor has a rung; a bad chunk after that is returned, not raised."""
        updates: list[TensorUpdate] = []
        waiting: list[str] | None = None  # the model's tensors still without a rung, the next due last

        def arrived() -> bool:
            nonlocal waiting
            if decoder.manifest is None:
                return False
            if self.manifest is not decoder.manifest:
                self._accept_manifest(decoder.manifest)
            if waiting is None:
                waiting = sorted(self._adapter.names(), key=decoder.manifest.positions.__getitem__, reverse=True)
            while waiting and decoder.rung_of(waiting[-1]) >= 0:  # each check stops at the first one missing
                waiting.pop()
            return not waiting

        while not arrived():
            piece = next(pieces, None)
            if piece is None:
                decoder.close()  # raises TruncatedError when the package is incomplete
                raise RuntimeUpdateError("the decoder holds a complete package without the model's tensors")
            fed = decoder.feed(piece)
            updates += fed.updates
            if fed.error is not None:
                if not arrived():
                    raise fed.error
                return updates, fed.error
        return updates, None

    def _accept_manifest(self, manifest: Manifest) -> None:
        if self.manifest is not None:
            if manifest.model_id == self.manifest.model_id:
                check_downgrade(manifest.model_id, self.manifest.model_version, manifest.model_version,
                                self._allow_downgrade, "runtime")
            _same_package(self.manifest, manifest)
        else:
            want_id, want_version = self._expect
            if (want_id is not None and manifest.model_id != want_id) or \
                    (want_version is not None and manifest.model_version != want_version):
                raise PackageMismatchError(f"package is {manifest.model_id!r} version {manifest.model_version!r}, "
                                           f"expected {want_id!r} version {want_version!r}")
            bind = getattr(self._adapter, "bind", None)
            if bind is not None:
                bind(manifest)
            self._check_tensors(manifest)
            rungs = len(manifest.ladder.rungs)
            self._applied = RungTally(self._adapter.names(), rungs)
            self._cached_or_applied = RungTally(self._adapter.names(), rungs)
        self.manifest = manifest
        self._first_reaches = {manifest.tensors[c.tensor].name: c.reaches for c in manifest.chunks if c.rung == 0}

    def _check_tensors(self, manifest: Manifest) -> None:
        specs = manifest.specs
        missing = [name for name in self._adapter.names() if name not in specs]
        if missing:
            raise ModelMismatchError(f"package {manifest.model_id!r} lacks {len(missing)} tensors the model needs, "
                                     f"e.g. {missing[:3]}")
        needed = set(self._adapter.names())
        extra = [name for name in specs if name not in needed]
        if extra:
            log.warning("ignoring %d package tensors the model does not have: %s", len(extra), extra[:5])
        for name in needed:
            self._adapter.check(specs[name])

    def _load_first_rung(self, decoder: StreamDecoder) -> None:
        assert self.manifest is not None
        specs = self.manifest.specs
        batch = {name: self._adapter.prepare(specs[name], decoder) for name in self._adapter.names()}
        rungs = {name: decoder.rung_of(name) for name in batch}
        self._swap(self._adapter.stage(batch, self._applied.lowest_with(rungs)), rungs, per_tensor=False)

    # -- the background thread ------------------------------------------------------------------

    def _consume(self, decoder: StreamDecoder, pieces: Iterator[bytes]) -> None:
        try:
            for piece in pieces:
                if self._stop.is_set():
                    return
                fed = decoder.feed(piece)
                self._apply_updates(decoder, fed.updates)  # what verified before an error is kept
                fed.raise_for_error()
            if not self._stop.is_set() and not (self._budgeted is not None and self._budgeted.partial):
                decoder.close()
                assert self.manifest is not None
                needed = set(self._adapter.names())
                self.unused = {spec.name: decoder.tensor(spec.name) for spec in self.manifest.tensors
                               if spec.name not in needed}
        except FormatError as exc:
            self.error = exc
            log.error("refinement stopped at rung %d, model keeps serving it: %s", self.rung, exc)
        except BitladderError as exc:  # e.g. a tensor the module cannot take
            self.error = exc
            log.error("refinement stopped: %s", exc)
        finally:
            with self._outbox_cond:
                self._feeding_done = True
                self._outbox_cond.notify_all()
            if self._swapper is not None:
                self._swapper.join()  # what verified is swapped in before the stream counts as ended
                self._swapper = None
            with self._cond:
                self._running = False
                self._drop_cache()
                self._cond.notify_all()

    def _swap_outbox(self) -> None:
        """Swap in everything the stream thread prepared, at each chance between two forward passes."""
        while True:
            with self._outbox_cond:
                self._outbox_cond.wait_for(lambda: bool(self._outbox) or self._feeding_done or self._stop.is_set())
                if not self._outbox or self._stop.is_set():
                    return
                ready, self._outbox = self._outbox, {}
            reached = {name: rung for name, (_, rung) in ready.items()}
            try:
                staged = self._adapter.stage({name: prepared for name, (prepared, _) in ready.items()},
                                             self._applied.lowest_with(reached))
                self._swap(staged, reached, per_tensor=True)
            except BitladderError as exc:
                self.error = exc
                self._stop.set()
                log.error("refinement stopped: %s", exc)
                return

    def _hand_over(self, name: str, prepared: P, reaches: int) -> None:
        if self._swapper is None:  # no stream thread yet: refinements that came with the first rung's bytes
            staged = self._adapter.stage({name: prepared}, self._applied.lowest_with({name: reaches}))
            self._swap(staged, {name: reaches}, per_tensor=True)
            return
        with self._outbox_cond:
            self._outbox[name] = (prepared, reaches)
            self._outbox_cond.notify_all()

    def _apply_updates(self, decoder: StreamDecoder, updates: Iterable[TensorUpdate]) -> None:
        latest: dict[str, int] = {}
        for update in updates:
            if update.name in self._applied and update.reaches > self._applied[update.name]:
                latest[update.name] = update.reaches
        if not latest:
            return
        assert self.manifest is not None
        specs = self.manifest.specs
        top = len(self.manifest.ladder.rungs) - 1
        if self._apply is ApplyMode.INCREMENTAL:
            for name, reaches in latest.items():
                prepared = self._adapter.prepare(specs[name], decoder)
                _release_final(decoder, name, reaches, top)
                self._hand_over(name, prepared, reaches)
            return
        for name, reaches in latest.items():
            if name in self._cache:
                self._cached_bytes -= self._adapter.nbytes(self._cache[name][0])
            self._cache[name] = (self._adapter.prepare(specs[name], decoder), reaches)
            self._cached_bytes += self._adapter.nbytes(self._cache[name][0])
            self._cached_or_applied.set(name, reaches)
            _release_final(decoder, name, reaches, top)
        self.cache_peak_bytes = max(self.cache_peak_bytes, self._cached_bytes)
        if self._cached_or_applied.lowest > self.rung:  # the cache completes a rung: swap it all in
            batch = {name: prepared for name, (prepared, _) in self._cache.items()}
            reached = {name: rung for name, (_, rung) in self._cache.items()}
            self._cache.clear()
            self._cached_bytes = 0
            self._swap(self._adapter.stage(batch, self._applied.lowest_with(reached)), reached, per_tensor=False)

    def _drop_cache(self) -> None:
        """Forget what atomic mode cached for a swap that will not come (the stream ended or failed)."""
        for name in self._cache:
            self._cached_or_applied.set(name, self._applied[name])
        self._cache.clear()
        self._cached_bytes = 0

    @contextmanager
    def _block_write(self) -> Iterator[None]:
        """The write lock around one block refined in place (what a forward pass may wait for)."""
        with self._lock.write():
            start = time.perf_counter()
            yield
            self.block_writes.append(time.perf_counter() - start)

    def _swap(self, staged: Any, reached: dict[str, int], per_tensor: bool) -> None:
        before = self.rung
        retired, seconds = None, 0.0
        if staged:
            with self._lock.write():
                start = time.perf_counter()  # time held, not time waiting for a forward pass to end
                retired = self._adapter.commit(staged)
                self._applied.update(reached)
                seconds = time.perf_counter() - start
        else:  # the tensors were refined in place, each block under the lock as it came: nothing to install
            self._applied.update(reached)
        for name, rung in reached.items():  # a tensor swapped in incremental mode, or the first rung
            if rung > self._cached_or_applied[name]:
                self._cached_or_applied.set(name, rung)
        del retired  # freeing the replaced tensors or session takes time: not while inference waits
        at = time.monotonic()
        # A whole-model swap says only the rung all tensors reached; a tensor already refined beyond it (its
        # refinement came with the bytes of that rung) says so itself.
        events = [Update(name, rung, at, seconds) for name, rung in reached.items()
                  if per_tensor or rung > max(self.rung, self._first_reaches.get(name, rung))]
        if staged:
            self.swaps.append((next(iter(reached)) if per_tensor else None, seconds))
        # A tensor whose rungs k and k+1 both arrived before the swapper ran swaps once, straight to k+1:
        # the model still reached every rung in between (at that moment), and says so.
        events += [Update(None, rung, at, seconds) for rung in range(before + 1, self.rung + 1)]
        with self._cond:
            self._cond.notify_all()
        if self._on_update is not None:
            for event in events:
                self._on_update(event)


def _release_final(decoder: StreamDecoder, name: str, reaches: int, top: int) -> None:
    """Drop the decoder's copy of a tensor at its last rung: the adapter holds it (or shares its memory)."""
    if reaches == top:
        decoder.release(name)


def _same_package(old: Manifest, new: Manifest) -> None:
    if (old.model_id, old.model_version) != (new.model_id, new.model_version):
        raise PackageMismatchError(f"updates from {new.model_id!r} version {new.model_version!r} refused: the "
                                   f"model runs {old.model_id!r} version {old.model_version!r}")
    if old.tensors != new.tensors or old.ladder != new.ladder:
        raise PackageMismatchError(f"package {new.model_id!r} version {new.model_version!r} has other tensors "
                                   "or another ladder than the one the model runs")


class RuntimeFacade:
    """What every progressive model (torch module, ONNX session) exposes of its runtime."""

    runtime: ProgressiveRuntime[Any]

    @property
    def rung(self) -> int:
        """The lowest rung over all tensors."""
        return self.runtime.rung

    def rungs(self) -> dict[str, int]:
        return self.runtime.rungs()

    @property
    def choice(self) -> Choice | None:
        """The rung a `budget` chose, and why (None without one)."""
        return self.runtime.choice

    def wait(self, rung: int | str | None = None, timeout: float | None = None) -> bool:
        """Block until every tensor reached `rung` (a name such as `"int8"` or a position; default: the last);
        False on timeout. A rung the package does not have is a `UsageError`."""
        return self.runtime.wait(rung, timeout)

    @property
    def error(self) -> Exception | None:
        """Why refinement stopped, if it did; the model keeps serving its last good rung."""
        return self.runtime.error

    def resume(self, source: Source) -> None:
        """Continue refining from another copy of the stream."""
        self.runtime.resume(source)

    def close(self) -> None:
        self.runtime.close()
