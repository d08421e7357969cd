"""The sizes a PyTorch pickle declares, read without building anything: storages and tensor views.

`torch.load` allocates each storage at the size the pickle declares (legacy files) and grows a storage to fit a
tensor view's size and strides, before it reads a byte of data; a small file can so ask for terabytes. This
walks the pickle's opcodes with placeholder values (no global is imported, no callable called) and returns every
storage's declared bytes and every tensor view's extent, so the reader can refuse sizes larger than the file.
"""

from __future__ import annotations

import math
import pickletools
from dataclasses import dataclass
from typing import IO, Any

ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                 "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4,
                 "UInt16": 2, "UInt32": 4, "UInt64": 8, "Untyped": 1}
_REBUILDS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
MAX_OPS = 10_000_000


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Storage:
    key: object
    nbytes: int
    itemsize: int


@dataclass(frozen=True)
class _Call:
    func: object
    args: object


class _Mark:
    pass


_MARK = _Mark()
_CONSTANTS: dict[str, Any] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": {}, "EMPTY_LIST": [],
              "EMPTY_TUPLE": (), "EMPTY_SET": ()}


def _storage(pid: object) -> object:
    """A placeholder for a persistent id ('storage', <XStorage>, key, location, numel, ...)."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
        return None
    kind, numel = pid[1], pid[4]
    name = kind.name if isinstance(kind, _Global) else ""
    itemsize = ELEMENT_BYTES.get(name.removesuffix("Storage"), 1)
    if type(numel) is not int:
        return None  # torch refuses it itself
    return _Storage(pid[2], numel * itemsize, itemsize)


def _pop_mark(stack: list[Any]) -> list[Any]:
    for at in range(len(stack) - 1, -1, -1):
        if stack[at] is _MARK:
            items = stack[at + 1:]
            del stack[at:]
            return items
    raise ValueError("no MARK on the stack")


def _step(name: str, arg: Any, stack: list[Any], memo: dict[Any, Any], found: list[Any]) -> None:
    if name in _CONSTANTS:
        value = _CONSTANTS[name]
        stack.append(type(value)() if isinstance(value, (dict, list)) else value)
    elif name == "MARK":
        stack.append(_MARK)
    elif name in ("TUPLE", "LIST", "FROZENSET"):
        stack.append(tuple(_pop_mark(stack)))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        size = int(name[-1])
        items = tuple(stack[-size:])
        del stack[-size:]
        stack.append(items)
    elif name == "GLOBAL":
        module, _, attr = str(arg).partition(" ")
        stack.append(_Global(module, attr))
    elif name == "STACK_GLOBAL":
        attr, module = stack.pop(), stack.pop()
        stack.append(_Global(str(module), str(attr)))
    elif name in ("BINPERSID", "PERSID"):
        stack.append(_storage(stack.pop() if name == "BINPERSID" else arg))
    elif name in ("REDUCE", "NEWOBJ"):
        args, func = stack.pop(), stack.pop()
        call = _Call(func, args)
        found.append(call)
        stack.append(call)
    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("BINGET", "LONG_BINGET", "GET"):
        stack.append(memo.get(arg))
    elif name == "SETITEM":
        del stack[-2:]
    elif name in ("APPEND", "BUILD"):
        del stack[-1:]
    elif name in ("SETITEMS", "APPENDS", "ADDITEMS"):
        _pop_mark(stack)
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _pop_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name not in ("PROTO", "FRAME", "STOP"):
        stack.append(arg)  # a number, a string, bytes


def declared(handle: IO[bytes]) -> tuple[dict[object, int], list[tuple[object, int, int]]]:
    """The bytes each storage key declares, and (key, declared bytes, bytes reached) of each tensor view, of the
    pickle at the handle's position (read up to its STOP).

    Raises ValueError for a pickle that does not parse (torch.load then says why)."""
    stack: list[Any] = []
    memo: dict[Any, Any] = {}
    calls: list[_Call] = []
    for count, (op, arg, _) in enumerate(pickletools.genops(handle)):
        if count > MAX_OPS:
            raise ValueError(f"over {MAX_OPS} opcodes")
        try:
            _step(op.name, arg, stack, memo, calls)
        except IndexError as exc:
            raise ValueError(f"{op.name} on an empty stack") from exc
    storages: dict[object, int] = {}
    for value in [*memo.values(), *(c.args[0] for c in calls if isinstance(c.args, tuple) and c.args)]:
        if isinstance(value, _Storage):
            storages[value.key] = max(storages.get(value.key, 0), value.nbytes)
    views = []
    for call in calls:
        if isinstance(call.func, _Global) and call.func.name in _REBUILDS and isinstance(call.args, tuple):
            extent = _extent(call.args)
            if extent is not None:
                views.append((call.args[0].key, call.args[0].nbytes, extent))
    return storages, views


def _extent(args: tuple[Any, ...]) -> int | None:
    """Bytes from the storage's start that a view (storage, offset, size, stride, ...) reaches."""
    if len(args) < 4 or not isinstance(args[0], _Storage):
        return None
    offset, size, stride = args[1], args[2], args[3]
    numbers = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else ()
    if not numbers or not all(type(n) is int for n in numbers) or len(size) != len(stride):
        return None  # torch refuses it itself
    if math.prod(size) == 0:
        return 0
    reach = offset + 1 + sum((s - 1) * abs(st) for s, st in zip(size, stride, strict=True))
    return int(reach * args[0].itemsize)
