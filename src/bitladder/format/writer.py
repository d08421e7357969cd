"""Writing packages: chunks are spooled as they are encoded, then laid out rung by rung.

The writer is a small state machine: `add_tensor` / `add_chunk` while open, then one `finish`, after
which every call is refused. Chunks may arrive in any order (the encoder works tensor by tensor);
`finish` orders them rung-major, within a rung by the schedule.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from numpy.typing import NDArray

from ..codecs.ladder import Ladder
from ..codecs.plan import TensorPlan, plan_tensor
from ..codecs.states import TensorSpec
from ..errors import UsageError
from ..outputs import check_output, output_file
from .signing import SigningKey, sign_head
from .spec import ChunkEntry, Manifest, Parent, WeightsHasher, digest

Schedule = Callable[[Sequence[TensorSpec], Sequence[int]], list[int]]
"""Orders the tensors that have a chunk in one rung: (all tensors, indices in that rung) -> indices in order."""


def _source_order(tensors: Sequence[TensorSpec], indices: Sequence[int]) -> list[int]:
    return sorted(indices)


def _largest_first(tensors: Sequence[TensorSpec], indices: Sequence[int]) -> list[int]:
    return sorted(indices, key=lambda i: (-tensors[i].numel, i))


def _smallest_first(tensors: Sequence[TensorSpec], indices: Sequence[int]) -> list[int]:
    return sorted(indices, key=lambda i: (tensors[i].numel, i))


SCHEDULES: dict[str, Schedule] = {
    "source": _source_order,
    "largest-first": _largest_first,
    "smallest-first": _smallest_first,
}

PRIORITY_SCHEDULE = "rd"
"""The schedule that orders a rung's chunks by caller-given priorities (highest first), e.g. measured
quality gain per byte (`bitladder.eval.rd`). Only its name is recorded in the manifest; the order itself
is the file order of the chunks."""

Priorities = Mapping[tuple[str, int], float]
"""(tensor name, rung) -> priority; chunks without one count as 0, ties keep source order."""


def _by_priority(priorities: Priorities, rung: int) -> Schedule:
    def order(tensors: Sequence[TensorSpec], indices: Sequence[int]) -> list[int]:
        return sorted(indices, key=lambda i: (-priorities.get((tensors[i].name, rung), 0.0), i))

    return order


class PackageWriter:
    """Builds one package file.

    >>> import numpy as np, tempfile, pathlib
    >>> from bitladder.codecs.blocks import encode_tensor
    >>> ladder = Ladder.parse("int8,exact")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "w.blad"
    >>> writer = PackageWriter(out, "demo", "1", {}, ladder)
    >>> source = np.ones(4096, np.float32).view(np.uint32)
    >>> index, plan = writer.add_tensor(TensorSpec("w", "F32", (64, 64)), source)
    >>> for step, block, payload in encode_tensor(plan, source):
    ...     writer.add_chunk(index, step, block, payload)
    >>> len(writer.finish().chunks)
    2
    """

    def __init__(self, path: str | os.PathLike[str], model_id: str, model_version: str,
                 source: dict[str, Any], ladder: Ladder, schedule: str = "source",
                 priorities: Priorities | None = None, parent: Parent | None = None,
                 signing_key: SigningKey | None = None) -> None:
        """`parent` makes a delta package: what it updates (tensors added with `delta=True` specs are coded
        against the parent's values). `signing_key` signs the header (`format.signing`)."""
        self._signing_key = signing_key
        if schedule == PRIORITY_SCHEDULE and priorities is None:
            raise UsageError(f"schedule {PRIORITY_SCHEDULE!r} needs priorities")
        if schedule != PRIORITY_SCHEDULE and priorities is not None:
            raise UsageError(f"priorities given, but schedule is {schedule!r}, not {PRIORITY_SCHEDULE!r}")
        if schedule not in SCHEDULES and schedule != PRIORITY_SCHEDULE:
            raise UsageError(f"unknown schedule {schedule!r}; known: {', '.join([*SCHEDULES, PRIORITY_SCHEDULE])}")
        self._priorities = dict(priorities or {})
        self._path = Path(path)
        self._meta = (model_id, model_version, source, ladder, schedule)
        self._parent = parent
        self._weights = WeightsHasher()
        self.quality: tuple[float | None, ...] = ()
        self.allocation = ""  # what a target first rung was allocated by (`Manifest.allocation`)
        """Per rung SQNR measured by the encoder, recorded by `finish` (empty: not measured)."""
        self._tensors: list[TensorSpec] = []
        self._plans: list[TensorPlan] = []
        self._names: set[str] = set()
        self._chunks: list[ChunkEntry] = []  # offsets into the spool until `finish` lays them out
        check_output(self._path)  # before encoding anything; the spool's error would name only a temporary file
        # Open across calls until finish() or abort() closes it, so no context manager.
        self._spool: IO[bytes] | None = tempfile.TemporaryFile(dir=self._path.parent)  # noqa: SIM115
        self._spool_size = 0

    def _open_spool(self) -> IO[bytes]:
        if self._spool is None:
            raise ValueError(f"package {self._path} is already finished")
        return self._spool

    def add_tensor(self, spec: TensorSpec, storage: NDArray[Any]) -> tuple[int, TensorPlan]:
        """Register a tensor (in source order) with its exact values (storage dtype, for the weights digest);
        returns its index and the plan its chunks follow."""
        self._open_spool()
        if spec.name in self._names:
            raise ValueError(f"tensor {spec.name!r} added twice")
        if spec.delta and self._parent is None:
            raise ValueError(f"delta tensor {spec.name!r} in a package without a parent")
        self._weights.add(spec, storage)
        _, _, _, ladder, _ = self._meta
        self._names.add(spec.name)
        self._tensors.append(spec)
        self._plans.append(plan_tensor(spec, ladder))
        return len(self._tensors) - 1, self._plans[-1]

    def add_chunk(self, tensor: int, step: int, block: int, payload: bytes) -> None:
        """Spool the payload of block `block` of tensor `tensor` for its plan's step `step`."""
        spool = self._open_spool()
        if not 0 <= tensor < len(self._tensors):
            raise ValueError(f"unknown tensor index {tensor}")
        plan = self._plans[tensor]
        if not (0 <= step < len(plan.steps) and 0 <= block < plan.blocks):
            raise ValueError(f"tensor {tensor} has no step {step} / block {block}")
        spool.write(payload)
        rung, reaches = plan.steps[step].rung, plan.steps[step].reaches
        self._chunks.append(ChunkEntry(tensor, block, rung, reaches, step, self._spool_size, len(payload), digest(payload)))
        self._spool_size += len(payload)

    def _layout(self) -> tuple[Manifest, list[ChunkEntry]]:
        """The manifest (file offsets) and the spooled chunks in file order (spool offsets)."""
        model_id, model_version, source, ladder, schedule = self._meta
        by_rung: dict[int, dict[int, list[ChunkEntry]]] = {}
        for chunk in self._chunks:
            by_rung.setdefault(chunk.rung, {}).setdefault(chunk.tensor, []).append(chunk)
        ordered: list[ChunkEntry] = []
        for rung in sorted(by_rung):
            scheduler = _by_priority(self._priorities, rung) if schedule == PRIORITY_SCHEDULE else SCHEDULES[schedule]
            for tensor in scheduler(self._tensors, list(by_rung[rung])):
                ordered += sorted(by_rung[rung][tensor], key=lambda c: c.block)
        entries, offset = [], 0
        for chunk in ordered:
            entries.append(dataclasses.replace(chunk, offset=offset))
            offset += chunk.length
        manifest = Manifest(model_id, model_version, source, ladder, schedule, tuple(self._tensors), tuple(entries),
                            self._weights.digest(), self._parent, self.quality, self.allocation)
        return manifest, ordered

    def finish(self) -> Manifest:
        """Write the file (atomically: a temporary file, fsynced, then renamed; see `bitladder.outputs`)."""
        spool = self._open_spool()
        manifest, ordered = self._layout()
        try:
            with output_file(self._path) as out:
                head = manifest.encode()
                out.write(head if self._signing_key is None else sign_head(head, self._signing_key))
                for chunk in ordered:
                    spool.seek(chunk.offset)
                    _copy(spool, out, chunk.length)
        finally:
            spool.close()
            self._spool = None
        return manifest

    def abort(self) -> None:
        """Drop everything spooled so far; the target file is left untouched."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _copy(src: IO[bytes], dst: IO[bytes], length: int) -> None:
    remaining = length
    while remaining:
        block = src.read(min(remaining, 1 << 20))
        if not block:
            raise OSError("spool file shorter than expected")
        dst.write(block)
        remaining -= len(block)

