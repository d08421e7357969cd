"""What a decoder holds for one tensor: its current values (in the source dtype) and, for int ladders, its scales.

Nothing else: the cell each value lies in at its block's rung is derived from the value itself, so a tensor being
refined costs what the tensor costs (plus a scale per row). Blocks move up independently; a block's chunk is
decoded into a block-sized buffer and copied in only once it decoded whole, so a bad chunk changes nothing.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ChunkIntegrityError, DecoderStateError
from . import native
from .entropy import pack_planes, unpack_planes
from .floatbits import MAGNITUDE, to_f32
from .plan import Codec, Step, TensorPlan

_PLANE_LENGTH = struct.Struct("<I")


def _encode_planes(source: NDArray[Any], level: int) -> bytes:
    """Byte planes, each a zstd frame, behind their u32 lengths."""
    frames = pack_planes(source, level)
    return b"".join(_PLANE_LENGTH.pack(len(f)) for f in frames) + b"".join(frames)


def _decode_planes(payload: memoryview, storage: np.dtype[Any], count: int) -> NDArray[Any]:
    width = storage.itemsize
    if len(payload) < 4 * width:
        raise ChunkIntegrityError(f"planes payload of {len(payload)} bytes is shorter than its {width} lengths")
    lengths = [_PLANE_LENGTH.unpack_from(payload, 4 * i)[0] for i in range(width)]
    if 4 * width + sum(lengths) != len(payload):
        raise ChunkIntegrityError(f"plane lengths {lengths} do not add up to the {len(payload)}-byte payload")
    frames, at = [], 4 * width
    for length in lengths:
        frames.append(payload[at:at + length])
        at += length
    return unpack_planes(frames, storage, count)


def _payload_args(step: Step) -> tuple[str, int, int]:
    """The core's codec kind and its two integer arguments for a step."""
    if step.codec is Codec.INT:
        return "int", step.factor, 0
    if step.codec is Codec.INT_INT:
        return "intint", step.coarse, step.factor
    if step.codec is Codec.HALF:
        return "half", 0, 0
    refine = step.codec.refine
    if refine is None:
        raise ValueError(f"codec {step.codec.value} has no native kind")
    return "refine", int(refine), 0


ESCAPED_FRACTION = 1e-4
"""Under one scale per tensor, the share of largest magnitudes left beyond the top cell (sent exact in the first
rung as escapes, 64 bits each: 0.006 bits per weight), so that a few outliers do not widen every cell."""


def tensor_scales(plan: TensorPlan, source: NDArray[Any]) -> NDArray[np.uint16]:
    """The scale of each row of a planned tensor: from the row's peak, or (`plan.one_scale`) one for all rows from
    the tensor's largest finite magnitudes but its `ESCAPED_FRACTION`."""
    whole = plan.whole()
    if not plan.one_scale:
        return native.scales(whole, source)
    sign_off, non_finite = (source.dtype.type(v) for v in MAGNITUDE[plan.spec.dtype])
    magnitudes = source & sign_off
    finite = magnitudes[magnitudes < non_finite]
    peak = source.dtype.type(0)
    if finite.size:
        rank = finite.size - 1 - int(finite.size * ESCAPED_FRACTION)
        peak = np.partition(finite, rank)[rank]
    one = native.scales(native.Block(whole.dtype, whole.inner, whole.max_code, 0, 1, 1), np.array([peak]))
    return np.full(whole.rows, one[0], np.uint16)


def encode_tensor(plan: TensorPlan, source: NDArray[Any], level: int = 1,
                  parent: NDArray[Any] | None = None) -> Iterator[tuple[int, int, bytes]]:
    """The chunk payloads of one tensor as (step index, block, payload), block by block; `source` is flat, in the
    storage dtype, and so is `parent`, the old version a delta tensor is coded against. Pure: the payloads depend
    on nothing but the arguments."""
    if plan.needs_parent != (parent is not None):
        raise ValueError(f"tensor {plan.spec.name!r}: a parent is given exactly for delta tensors")
    scales = tensor_scales(plan, source) if plan.scaled else None
    for block_index in range(plan.blocks):
        block = plan.block(block_index)
        part = source[block.begin:block.begin + block.count]
        held = None if parent is None else parent[block.begin:block.begin + block.count]
        approximate: bytes | None = None  # the block's approximate delta chunk, once coded (not when empty)
        for step_index, step in enumerate(plan.steps):
            if step.codec is Codec.PLANES:
                yield step_index, block_index, _encode_planes(part, level)
                continue
            if step.codec is Codec.XOR_PLANES:  # an unchanged block is empty
                change = part ^ held
                yield step_index, block_index, _encode_planes(change, level) if change.any() else b""
                continue
            if step.codec is Codec.DELTA:
                assert held is not None  # checked above: delta tensors have a parent
                payload = native.delta_encode(block, part, held, step.factor, approximate)
                approximate = None
                if step.factor:  # an approximation: the next step refines what the decoder makes of it
                    approximation = np.empty_like(part)
                    native.delta_decode(block, payload, held, approximation)
                    held, approximate = approximation, payload or None
                yield step_index, block_index, payload
                continue
            kind, a, c = _payload_args(step)
            yield step_index, block_index, native.encode(kind, block, part, scales, a, c)


_local = threading.local()


def _scratch(count: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """A block-sized buffer of this thread's, reused from chunk to chunk (fresh pages cost more than decoding)."""
    buffer: NDArray[np.uint8] | None = getattr(_local, "buffer", None)
    nbytes = count * dtype.itemsize
    if buffer is None or buffer.size < nbytes:
        buffer = _local.buffer = np.empty(nbytes, np.uint8)
    return buffer[:nbytes].view(dtype)


class TensorState:
    """A tensor as the decoder holds it: values in the storage dtype, scales, and each block's rung (-1: none).

    Values and scales are allocated when the tensor's first block has decoded, not before: a manifest alone (it
    may declare a tensor of 2**40 elements behind a few kilobytes of empty chunks) reserves nothing. A delta
    tensor starts from `parent`, the old version's values (flat, storage dtype; copied at the first chunk).

    `storage` (flat, storage dtype) makes the caller's memory the values instead, e.g. a live model's parameter:
    each block is written there once its chunk decoded whole (blocks not yet decoded keep what the memory held),
    inside `guard()` when given (a lock that keeps readers out while a block is written)."""

    def __init__(self, plan: TensorPlan, parent: NDArray[Any] | None = None, *, storage: NDArray[Any] | None = None,
                 guard: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        if plan.needs_parent != (parent is not None):
            raise ValueError(f"tensor {plan.spec.name!r}: a parent is given exactly for delta tensors")
        for given, what in ((parent, "parent values"), (storage, "storage")):
            if given is not None and (given.dtype != plan.spec.storage or given.shape != (plan.spec.numel,)):
                raise ValueError(f"tensor {plan.spec.name!r}: {what} are {given.dtype}{given.shape}, "
                                 f"not {plan.spec.storage}({plan.spec.numel},)")
        if parent is not None and storage is not None:
            raise ValueError(f"tensor {plan.spec.name!r}: a delta tensor starts from its parent, not from storage")
        if storage is not None and not storage.flags.writeable:
            raise ValueError(f"tensor {plan.spec.name!r}: storage is read-only")
        self.plan = plan
        self._parent = parent
        self._data: NDArray[Any] | None = storage
        self._guard = guard or nullcontext
        self._scales: NDArray[np.uint16] | None = None
        self._allocating = threading.Lock()  # blocks of one tensor may decode on several threads
        self.block_steps: NDArray[np.int16] = np.full(plan.blocks, -1, np.int16)

    @property
    def data(self) -> NDArray[Any]:
        if self._data is None:
            with self._allocating:
                if self._data is None:
                    self._data = (np.zeros(self.plan.spec.numel, self.plan.spec.storage) if self._parent is None
                                  else self._parent.copy())
                    self._parent = None
        return self._data

    @property
    def scales(self) -> NDArray[np.uint16]:
        if self._scales is None:
            with self._allocating:
                if self._scales is None:
                    self._scales = np.zeros(self.plan.rows if self.plan.scaled else 0, np.uint16)
        return self._scales

    @property
    def rung(self) -> int:
        """The rung every block has reached (-1 until each has its first)."""
        lowest = int(self.block_steps.min())
        return -1 if lowest < 0 else self.plan.steps[lowest].reaches

    def apply(self, step_index: int, block_index: int, payload: memoryview) -> None:
        """Decode one chunk into its block; raises ChunkIntegrityError and changes nothing if it does not decode."""
        if not 0 <= block_index < self.plan.blocks or not 0 <= step_index < len(self.plan.steps):
            raise ChunkIntegrityError(f"block {block_index} / step {step_index} out of range")
        if self.block_steps[block_index] != step_index - 1:
            raise DecoderStateError(f"block {block_index} is at step {self.block_steps[block_index]}, "
                                    f"not ready for step {step_index}")
        step = self.plan.steps[step_index]
        block = self.plan.block(block_index)
        if step.codec is Codec.PLANES:
            decoded = _decode_planes(payload, self.plan.spec.storage, block.count)
        elif step.codec is Codec.XOR_PLANES:  # a delta tensor's values exist: they are its parent's
            held = self._held(block)
            decoded = held.copy() if not payload else _decode_planes(payload, self.plan.spec.storage, block.count) ^ held
        elif step.codec is Codec.DELTA:
            decoded = _scratch(block.count, self.plan.spec.storage)
            native.delta_decode(block, payload, self._held(block), decoded)
        else:
            decoded = self._decode(step, block, payload)
        # Only now, the chunk decoded whole, is the tensor touched (and, at a full tensor's first block, allocated).
        held = self._held(block)
        with self._guard():
            held[:] = decoded
        self.block_steps[block_index] = step_index

    def _held(self, block: native.Block) -> NDArray[Any]:
        return self.data[block.begin:block.begin + block.count]

    def _decode(self, step: Step, block: native.Block, payload: memoryview) -> NDArray[Any]:
        """Decode into scratch memory (this thread's), which `apply` copies into the block."""
        kind, a, c = _payload_args(step)
        out = _scratch(block.count, self.plan.spec.storage)
        if kind == "int":
            rows = np.zeros(block.rows, np.uint16)
            native.decode(kind, block, payload, rows, None, out, a, c)
            known = self.scales[block.first_row:block.first_row + block.rows]
            if known.any():  # a row that straddles two blocks has one scale
                clash = (known != 0) & (known != rows)
                if clash.any():
                    raise ChunkIntegrityError(f"scale of row {block.first_row + int(np.argmax(clash))} differs "
                                              "between blocks")
            known[:] = rows
        elif kind == "half":
            native.decode(kind, block, payload, None, None, out, a, c)
        else:  # a refinement: the block's values (and the scales) exist, its earlier step decoded
            native.decode(kind, block, payload, self.scales, self._held(block), out, a, c)
        return out

    def bits(self) -> NDArray[Any]:
        """The tensor as it stands, flat, in the storage dtype (for floats: the bit view)."""
        return self.data

    def values(self) -> NDArray[np.float32]:
        """A float tensor's values at its blocks' rungs, widened to float32 (a copy), flat."""
        return np.array(to_f32(self.data, self.plan.spec.dtype), dtype=np.float32, copy=True)
