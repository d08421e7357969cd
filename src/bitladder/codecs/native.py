"""The typed face of the native core (`bitladder._native`, built from `_core/`): status codes become errors.

The C kernels do every per-element step; this module only names dtypes and kinds and maps failures. A failure
decoding bad bytes is a `ChunkIntegrityError`; a failure that can only come from a wrong call is a `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from .. import _native  # type: ignore[attr-defined]
from ..errors import ChunkIntegrityError


class NativeDtype(IntEnum):
    """Float dtypes of the core (`enum bl_dtype`)."""

    NONE = -1
    F32 = 0
    F16 = 1
    BF16 = 2

    @classmethod
    def of(cls, name: str | None) -> NativeDtype:
        return cls.NONE if name is None else cls[name]


class Refine(IntEnum):
    """Refinements from one rung's cells to the patterns inside them (`enum bl_refine`)."""

    INT_TO_EXACT = 0
    INT_TO_HALF = 1
    HALF_TO_EXACT = 2


class KernelPath(IntEnum):
    """Kernel builds the dispatcher chooses from; every path gives the same bits."""

    SCALAR = 0
    AVX2 = 1
    AVX512 = 2


_STATUS = {
    -1: "payload ends before a field it must hold",
    -2: "a field is out of range or the entropy stream does not close",
    -3: "inconsistent arguments",
    -4: "output buffer too small",
    -5: "out of memory",
    -6: "a scale outside the valid range",
    -7: "bytes left over after the last field",
}


@dataclass(frozen=True)
class Block:
    """One block of one tensor, as the core sees it."""

    dtype: NativeDtype
    inner: NativeDtype
    max_code: int
    begin: int
    count: int
    columns: int

    @property
    def args(self) -> tuple[int, int, int, int, int, int]:
        return (int(self.dtype), int(self.inner), self.max_code, self.begin, self.count, self.columns)

    @property
    def first_row(self) -> int:
        return self.begin // self.columns

    @property
    def rows(self) -> int:
        return 0 if self.count == 0 else (self.begin + self.count - 1) // self.columns - self.first_row + 1


def _fail(status: int, what: str) -> None:
    if status == 0:
        return
    message = f"{what}: {_STATUS.get(status, f'status {status}')}"
    if status in (-3, -4):
        raise ValueError(message)
    if status == -5:
        raise MemoryError(message)
    raise ChunkIntegrityError(message)


def scales(block: Block, source: NDArray[np.generic]) -> NDArray[np.uint16]:
    """One bf16 scale per row of a whole tensor (`block` spans it)."""
    out = np.zeros(block.rows, np.uint16)
    _fail(_native.scales(source, out, *block.args), "scales")
    return out


_EMPTY = np.zeros(0, np.uint16)


def encode(kind: str, block: Block, source: NDArray[np.generic], scale_rows: NDArray[np.uint16] | None,
           a: int = 0, c: int = 0) -> bytes:
    """One chunk payload: kind `int` (a = factor), `intint` (a, c = coarse, fine), `refine` (a = Refine), `half`."""
    result = _native.encode(kind, source, _EMPTY if scale_rows is None else scale_rows, a, c, *block.args)
    if isinstance(result, int):
        _fail(result, f"encoding a {kind} chunk")
    return bytes(result)


def decode(kind: str, block: Block, payload: bytes | memoryview, scale_rows: NDArray[np.uint16] | None,
           held: NDArray[np.generic] | None, out: NDArray[np.generic], a: int = 0, c: int = 0) -> None:
    """Decode a chunk payload into `out` (kind `int` also writes the block's scales into `scale_rows`)."""
    status = _native.decode(kind, payload, _EMPTY if scale_rows is None else scale_rows,
                            _EMPTY if held is None else held, out, a, c, *block.args)
    _fail(status, f"{kind} chunk")


_DELTA_ALONE = 0x7FFF


def delta_encode(block: Block, source: NDArray[np.generic], held: NDArray[np.generic], bits: int,
                 after: bytes | None = None) -> bytes:
    """A delta chunk taking `held` towards `source` (same storage dtype): to about `bits` bits of the new values'
    scale, or exactly with `bits` = 0; `after` is the approximate chunk that made `held`, if any (its step sets
    the exact chunk's contexts)."""
    approximate = after is not None and len(after) >= 3 and after[0] == 1  # an exact or empty chunk sets nothing
    step = int.from_bytes(after[1:3], "little", signed=True) if approximate and after else _DELTA_ALONE
    result = _native.delta_encode(source, held, bits, step, *block.args)
    if isinstance(result, int):
        _fail(result, "encoding a delta chunk")
    return bytes(result)


def delta_decode(block: Block, payload: bytes | memoryview, held: NDArray[np.generic], out: NDArray[np.generic]) -> None:
    """Apply a delta chunk to `held` into `out`."""
    _fail(_native.delta_decode(payload, held, out, *block.args), "delta chunk")


def kernel_path(path: KernelPath | None = None) -> KernelPath:
    """The kernel path in use, after switching to `path` (tests run every path the CPU has)."""
    return KernelPath(_native.path(-1 if path is None else int(path)))


def available_paths() -> list[KernelPath]:
    return [p for p in KernelPath if _native.path_available(int(p))]
