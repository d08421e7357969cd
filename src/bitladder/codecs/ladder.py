"""The precision ladder: named rungs in delivery order, each a frozen config that round-trips as JSON.

A rung kind registers itself by subclassing `Rung` with `kind=...`, so adding one is adding a class.

>>> ladder = Ladder.parse("int4,int8,bf16,exact")
>>> [r.name for r in ladder.rungs]
['int4', 'int8', 'bf16', 'exact']
>>> Ladder.from_json(ladder.to_json()) == ladder
True
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

DEFAULT_LADDER = "int8,exact"
DEFAULT_MIN_SIZE = 4096
DEFAULT_BLOCK_SIZE = 1 << 18
"""Elements per block: 1 MiB of a float32 source (benchmarks/compression.py measured 2^16..2^20)."""
MAX_BLOCK_SIZE = 1 << 24


@dataclass(frozen=True)
class Rung:
    """One step of the ladder. Subclasses register under a `kind` name."""

    kinds: ClassVar[dict[str, type[Rung]]] = {}
    kind: ClassVar[str]

    def __init_subclass__(cls, kind: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = kind
        Rung.kinds[kind] = cls

    @property
    def name(self) -> str:
        return self.kind

    @property
    def precision(self) -> float:
        """Orders rungs: each rung of a ladder must be strictly more precise than the one before."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @staticmethod
    def from_json(data: Any) -> Rung:
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind not in Rung.kinds:
            raise ValueError(f"unknown rung {reprlib.repr(data)}")
        params = {k: v for k, v in data.items() if k != "kind"}
        try:
            return Rung.kinds[kind](**params)
        except TypeError as exc:
            raise ValueError(f"bad parameters for rung {reprlib.repr(data)}: {exc}") from exc

    @staticmethod
    def parse(text: str, group_size: int = 0) -> Rung:
        """`int4` .. `int8`, `bf16`, `fp16`, `exact`, `deltaN`, or a target for the first rung: `12%`, `30dB`."""
        text = text.strip().lower()
        if text.endswith("%") or text.endswith("db"):
            number = text[:-1] if text.endswith("%") else text[:-2]
            try:
                value = float(number)
            except ValueError:
                raise ValueError(f"bad target rung {text!r}: expected a number before % or dB") from None
            return TargetRung(percent=value) if text.endswith("%") else TargetRung(sqnr=value)
        if text.startswith("int") and text[3:].isdigit():
            return IntRung(bits=int(text[3:]), group_size=group_size)
        if text in ("bf16", "fp16"):
            return HalfRung(format=text)
        if text == "exact":
            return ExactRung()
        if text.startswith("delta") and text[5:].isdigit():
            return DeltaRung(bits=int(text[5:]))
        raise ValueError(f"unknown rung {text!r}: expected intN (N in 2..8), bf16, fp16, exact, deltaN (N in 1..24), "
                         "or a first-rung target such as 12% or 30dB")


@dataclass(frozen=True)
class IntRung(Rung, kind="int"):
    """Symmetric integer codes with one float32 scale per output channel (or per group of inputs)."""

    bits: int = 8
    group_size: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 2 <= self.bits <= 8:
            raise ValueError(f"int rung bits must be in 2..8, got {self.bits!r}")
        if not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or not 0 <= self.group_size < 2**40:
            raise ValueError(f"group_size must be a non-negative integer, got {self.group_size!r}")

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    @property
    def precision(self) -> float:
        return float(self.bits)

    @property
    def max_code(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "group_size": self.group_size}


@dataclass(frozen=True)
class TargetRung(Rung, kind="target"):
    """A first rung described by what it must achieve: at most `percent` % of the source's bytes (header and
    manifest included), or at least `sqnr` dB over the model. The encoder gives each tensor its own uniform step,
    an odd number of cells of the int rung after it (so its cells nest in that rung's), chosen by
    rate-distortion allocation (`codecs/allocation.py`); the manifest records each tensor's choice."""

    percent: float = 0.0
    sqnr: float = 0.0

    def __post_init__(self) -> None:
        for value in (self.percent, self.sqnr):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"target rung values must be finite numbers, got {value!r}")
        if (self.percent > 0) == (self.sqnr > 0) or self.percent < 0 or self.sqnr < 0:
            raise ValueError("a target rung sets exactly one of percent (size) or sqnr (dB), positive")
        if self.percent >= 100 or self.sqnr > 200:
            raise ValueError(f"target {self.name} is out of range (percent below 100, sqnr up to 200 dB)")

    @property
    def name(self) -> str:
        return f"{self.percent:g}%" if self.percent else f"{self.sqnr:g}dB"

    @property
    def precision(self) -> float:
        return 1.0  # below every int rung's: a target rung comes first

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "percent": self.percent, "sqnr": self.sqnr}


@dataclass(frozen=True)
class HalfRung(Rung, kind="half"):
    """The tensor rounded to a 16-bit float format (to nearest even)."""

    format: str = "bf16"

    def __post_init__(self) -> None:
        if self.format not in ("bf16", "fp16"):
            raise ValueError(f"half rung format must be bf16 or fp16, got {self.format!r}")

    @property
    def name(self) -> str:
        return self.format

    @property
    def precision(self) -> float:
        return 16.0

    @property
    def dtype(self) -> str:
        """The source dtype name this format equals."""
        return "BF16" if self.format == "bf16" else "F16"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "format": self.format}


@dataclass(frozen=True)
class ExactRung(Rung, kind="exact"):
    """The source bits."""

    @property
    def name(self) -> str:
        return "exact"

    @property
    def precision(self) -> float:
        return float("inf")


@dataclass(frozen=True)
class DeltaRung(Rung, kind="delta"):
    """A new version approximated from the old one it updates, to about `bits` bits of its own scale as an int rung
    of that many bits would (a change below that is left to the exact rung); only in a delta package, before exact."""

    bits: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 24:
            raise ValueError(f"delta rung bits must be in 1..24, got {self.bits!r}")

    @property
    def name(self) -> str:
        return f"delta{self.bits}"

    @property
    def precision(self) -> float:
        return float(self.bits)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits}


def int_factors(int_rungs: list[IntRung]) -> list[int]:
    """Cell widths of each int rung in codes of the finest: odd multiples of the next finer rung's, so that every
    coarse cell is a union of finer cells, and just wide enough that its codes span the finest rung's range.

    A rung whose width would equal the next finer one's refines nothing, and one wider than the finest range has no
    cell but zero: such ladders are refused (ValueError) rather than sent rungs that carry nothing."""
    top = int_rungs[-1].max_code
    factors = [1]
    for rung, finer in zip(reversed(int_rungs[:-1]), reversed(int_rungs[1:]), strict=True):
        factor = factors[0]
        while factor * (2 * rung.max_code + 1) < 2 * top + 1:
            factor += 2 * factors[0]
        if factor == factors[0] or factor > top:
            raise ValueError(f"{rung.name} cannot nest above {finer.name} on {int_rungs[-1].name}'s grid (its cells, "
                             f"odd multiples of {finer.name}'s, would be {factor} codes wide): drop one of them")
        factors.insert(0, factor)
    return factors


@dataclass(frozen=True)
class Ladder:
    """Rungs in delivery order, plus the size under which a tensor is sent exact in the first rung."""

    rungs: tuple[Rung, ...] = field(default_factory=lambda: Ladder.parse(DEFAULT_LADDER).rungs)
    min_size: int = DEFAULT_MIN_SIZE
    block_size: int = DEFAULT_BLOCK_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.rungs, tuple) or not self.rungs or not all(isinstance(r, Rung) for r in self.rungs):
            raise ValueError("a ladder needs a tuple of at least one rung")
        for before, after in zip(self.rungs, self.rungs[1:], strict=False):
            if after.precision <= before.precision:
                raise ValueError(f"rung {after.name} must be more precise than {before.name}, which precedes it")
        groups = {r.group_size for r in self.rungs if isinstance(r, IntRung)}
        if len(groups) > 1:  # the int rungs' cells nest only when they share their scale rows
            raise ValueError(f"int rungs of one ladder share one group size, got {sorted(groups)}")
        deltas = [r for r in self.rungs if isinstance(r, DeltaRung)]
        if deltas and (len(self.rungs) != 2 or self.rungs[0] is not deltas[0] or not isinstance(self.rungs[1], ExactRung)):
            raise ValueError("a delta rung comes alone before exact: deltaN,exact (or exact alone)")
        targets = [r for r in self.rungs if isinstance(r, TargetRung)]
        if targets and (len(targets) > 1 or self.rungs[0] is not targets[0] or len(self.rungs) < 2
                        or not isinstance(self.rungs[1], IntRung) or self.rungs[2:] not in ((), (ExactRung(),))):
            raise ValueError("a target rung comes first, then the int rung whose cells it groups, then exact or "
                             "nothing: e.g. 12%,int8,exact")
        if targets and self.rungs[1].group_size:  # type: ignore[attr-defined]
            raise ValueError("a target rung gives each tensor one step: group_size does not apply")
        int_rungs = [r for r in self.rungs if isinstance(r, IntRung)]
        if int_rungs:
            int_factors(int_rungs)
        if not isinstance(self.min_size, int) or isinstance(self.min_size, bool) or not 0 <= self.min_size < 2**40:
            raise ValueError(f"min_size must be an integer in [0, 2**40), got {self.min_size!r}")
        if (not isinstance(self.block_size, int) or isinstance(self.block_size, bool)
                or not 1 <= self.block_size <= MAX_BLOCK_SIZE):
            raise ValueError(f"block_size must be an integer in [1, {MAX_BLOCK_SIZE}], got {self.block_size!r}")

    @classmethod
    def parse(cls, text: str, group_size: int = 0, min_size: int = DEFAULT_MIN_SIZE,
              block_size: int = DEFAULT_BLOCK_SIZE) -> Ladder:
        """A ladder from a comma-separated list such as `int8,exact`."""
        names = [part for part in text.split(",") if part.strip()]
        return cls(rungs=tuple(Rung.parse(name, group_size) for name in names), min_size=min_size,
                   block_size=block_size)

    @property
    def names(self) -> list[str]:
        return [rung.name for rung in self.rungs]

    def index(self, name: str) -> int:
        """Position of the rung called `name`."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no rung named {name!r} in ladder {','.join(self.names)}") from None

    @property
    def delta(self) -> DeltaRung | None:
        """The approximate rung of a delta ladder, if this is one."""
        return self.rungs[0] if isinstance(self.rungs[0], DeltaRung) else None

    @property
    def target(self) -> TargetRung | None:
        """The first rung's target, if this ladder's first rung is allocated per tensor."""
        return self.rungs[0] if isinstance(self.rungs[0], TargetRung) else None

    @property
    def is_lossless(self) -> bool:
        return isinstance(self.rungs[-1], ExactRung)

    def to_json(self) -> dict[str, Any]:
        return {"rungs": [rung.to_json() for rung in self.rungs], "min_size": self.min_size,
                "block_size": self.block_size}

    @classmethod
    def from_json(cls, data: Any) -> Ladder:
        if not isinstance(data, dict) or set(data) != {"rungs", "min_size", "block_size"} or not isinstance(data["rungs"], list):
            raise ValueError("ladder must be an object with exactly rungs (a list), min_size and block_size")
        if len(data["rungs"]) > 16:
            raise ValueError(f"{len(data['rungs'])} rungs exceed the limit of 16")
        return cls(rungs=tuple(Rung.from_json(r) for r in data["rungs"]), min_size=data["min_size"],
                   block_size=data["block_size"])
