"""Which rung to fetch, from what the device can take: a pure planner over a package's manifest.

A `Budget` says what the device and its link allow: bytes, memory, the float dtypes it computes in, a link rate
and a deadline. `choose` returns the highest rung whose cost fits all of them, as a `Choice` that says what it
costs and, in `reason`, which constraint bound and what the next rung would have cost.

Costs per rung `r`:
- bytes: header, manifest and every chunk through rung `r` (`data_start + manifest.rung_end(r)`), what a
  download that stops there fetches; with a rate, seconds = 8 · bytes / rate, and with a deadline,
  bytes ≤ rate · deadline / 8.
- memory: the tensors in their source dtypes (`manifest.tensor_bytes`), what the decoder holds at every rung.
- dtypes: the float dtypes the laddered tensors' values need at rung `r`, each tensor's source dtype once exact
  and at an int rung (int values are rounded to the source dtype), the 16-bit format at a bf16/fp16 rung of an
  F32 tensor (its values are then exact in that format: a device computing in it holds them without loss, and
  fetching further would be wasted on it). Tensors sent exact in the first rung (biases, norms: under the
  ladder's `min_size`) are the same at every rung, so they do not decide the rung; `reason` says when the device
  has to cast them. Integer tensors (ids, masks) are not float and do not count.

>>> choice = choose(manifest, Budget(max_bytes=30_000_000, link_rate_bps=20e6))     # doctest: +SKIP
>>> choice.name, choice.bytes, round(choice.seconds, 1), choice.quality_db           # doctest: +SKIP
('int8', 20913484, 8.4, 40.61)
>>> print("\\n".join(choice.reason))                                                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ..codecs.ladder import HalfRung
from ..codecs.plan import Codec
from ..errors import UsageError
from ..format.spec import Manifest
from .errors import BudgetError

FLOAT_DTYPES: Final = ("F64", "F32", "F16", "BF16")
_SIZE: Final = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`"50M"`, `"1.5GB"`, `"2GiB"`, `"300000"` -> bytes (k, M, G, T: powers of 1000; with i: of 1024).

    >>> parse_size("50M"), parse_size("2GiB"), parse_size("1024")
    (50000000, 2147483648, 1024)
    """
    match = _SIZE.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"size {text!r} is not like '50M', '1.5GB', '2GiB' or '300000' (bytes)")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * (1024 if match.group(3) else 1000) ** power)


def _positive(name: str, value: float | None, integer: bool = False) -> None:
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive {'integer' if integer else 'number'} or None, got {value!r}")


@dataclass(frozen=True)
class Budget:
    """What a device and its link allow; None: no limit. `dtypes`: the float dtypes the device computes in
    (names as in safetensors: F32, F16, BF16, F64), None: any.

    >>> Budget(max_bytes=50_000_000, dtypes={"f16", "BF16"}, link_rate_bps=20e6, deadline_s=10).dtypes
    frozenset({'BF16', 'F16'})
    """

    max_bytes: int | None = None
    max_memory: int | None = None
    dtypes: frozenset[str] | None = None
    link_rate_bps: float | None = None
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        _positive("max_bytes", self.max_bytes, integer=True)
        _positive("max_memory", self.max_memory, integer=True)
        _positive("link_rate_bps", self.link_rate_bps)
        _positive("deadline_s", self.deadline_s)
        if self.deadline_s is not None and self.link_rate_bps is None:
            raise UsageError(f"a deadline ({self.deadline_s} s) needs a link rate to turn it into bytes "
                             "(link_rate_bps, --link-rate)")
        if self.dtypes is not None:
            if isinstance(self.dtypes, str) or not isinstance(self.dtypes, Iterable):
                raise UsageError(f"dtypes must be a set of names such as {{'F16', 'BF16'}}, not {self.dtypes!r}")
            names = frozenset(str(name).upper() for name in self.dtypes)
            unknown = sorted(names - set(FLOAT_DTYPES))
            if unknown or not names:
                raise UsageError(f"dtypes {sorted(self.dtypes)!r}: give one or more of {', '.join(FLOAT_DTYPES)}"
                                 + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
            object.__setattr__(self, "dtypes", names)

    @property
    def byte_limit(self) -> float | None:
        """The fewest bytes any limit allows: `max_bytes`, and what the link carries by the deadline."""
        limits = [float(self.max_bytes)] if self.max_bytes is not None else []
        if self.deadline_s is not None and self.link_rate_bps is not None:
            limits.append(self.link_rate_bps * self.deadline_s / 8)
        return min(limits, default=None)


@dataclass(frozen=True)
class RungCost:
    """What fetching and holding a package up to one rung costs."""

    rung: int
    name: str
    bytes: int
    memory: int
    dtypes: frozenset[str]
    quality_db: float | None

    def seconds(self, rate: float | None) -> float | None:
        return None if rate is None else 8 * self.bytes / rate


@dataclass(frozen=True)
class Choice:
    """The rung chosen for a budget: what it costs, and why (`reason`, one sentence a line)."""

    rung: int
    name: str
    bytes: int
    seconds: float | None
    """8 · bytes / link rate; None without a rate."""
    memory: int
    dtypes: frozenset[str]
    quality_db: float | None
    """SQNR measured at encode time (None: exact, or not measured)."""
    reason: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line: the rung, its bytes, seconds and quality."""
        parts = [f"{self.bytes:,} bytes"]
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        parts.append("exact" if self.quality_db is None and self.name == "exact" else
                     f"SQNR {self.quality_db:.1f} dB" if self.quality_db is not None else "quality not measured")
        return f"rung {self.name} ({', '.join(parts)})"


def rung_costs(manifest: Manifest, data_start: int | None = None) -> list[RungCost]:
    """Each rung's cost; `data_start` is the header and manifest size (default: that of `manifest.encode()`)."""
    start = len(manifest.encode()) if data_start is None else data_start
    quality = manifest.quality or (None,) * len(manifest.ladder.rungs)
    return [RungCost(index, rung.name, start + manifest.rung_end(index), manifest.tensor_bytes,
                     _held_dtypes(manifest, index), quality[index])
            for index, rung in enumerate(manifest.ladder.rungs)]


def _held_dtypes(manifest: Manifest, rung: int) -> frozenset[str]:
    """The float dtypes the laddered tensors' values need at `rung` (all float tensors' if none is laddered)."""
    needed = set()
    floats = [(spec, plan) for spec, plan in zip(manifest.tensors, manifest.plans, strict=True)
              if spec.dtype in FLOAT_DTYPES]
    for spec, plan in [(spec, plan) for spec, plan in floats if plan.laddered] or floats:
        held = [step for step in plan.steps if step.rung <= rung]
        half = manifest.ladder.rungs[held[-1].rung] if held else None
        if held and held[-1].codec in (Codec.HALF, Codec.INT_HALF) and isinstance(half, HalfRung):
            needed.add(half.dtype)
        else:
            needed.add(spec.dtype)
    return frozenset(needed)


def _misses(cost: RungCost, budget: Budget) -> list[str]:
    """Why `cost` does not fit `budget` (empty: it fits)."""
    misses = []
    if budget.max_bytes is not None and cost.bytes > budget.max_bytes:
        misses.append(f"{cost.bytes:,} bytes > max_bytes {budget.max_bytes:,}")
    rate, deadline = budget.link_rate_bps, budget.deadline_s
    seconds = cost.seconds(rate)
    if seconds is not None and deadline is not None and rate is not None and seconds > deadline:
        misses.append(f"{seconds:.1f} s at {rate / 1e6:g} Mbit/s > deadline {deadline:g} s")
    if budget.max_memory is not None and cost.memory > budget.max_memory:
        misses.append(f"{cost.memory:,} bytes of tensors in memory > max_memory {budget.max_memory:,}")
    if budget.dtypes is not None and not cost.dtypes <= budget.dtypes:
        misses.append(f"its values need {', '.join(sorted(cost.dtypes - budget.dtypes))}, which the device "
                      f"does not support (it supports {', '.join(sorted(budget.dtypes))})")
    return misses


def choose(manifest: Manifest, budget: Budget, data_start: int | None = None) -> Choice:
    """The highest rung of `manifest` that fits `budget` (see the module doc for the costs); `BudgetError`,
    naming what each rung would need, when none does.

    >>> choose(manifest, Budget(max_bytes=30_000_000)).name        # doctest: +SKIP
    'int8'
    """
    if not isinstance(budget, Budget):
        raise UsageError(f"budget must be a bitladder Budget, not {type(budget).__name__}")
    costs = rung_costs(manifest, data_start)
    misses = [_misses(cost, budget) for cost in costs]
    fitting = [cost for cost, missed in zip(costs, misses, strict=True) if not missed]
    if not fitting:
        halves = sorted({"F16": "fp16", "BF16": "bf16"}[d] for d in budget.dtypes or () if d in ("F16", "BF16"))
        only_dtypes = all(len(missed) == 1 and "support" in missed[0] for missed in misses)
        hint = (f" (a package with a {' or '.join(halves)} rung would fit, e.g. --ladder int8,{halves[0]},exact)"
                if only_dtypes and halves else "")
        raise BudgetError(f"no rung of {manifest.model_id!r} version {manifest.model_version!r} fits the budget{hint}: "
                          + "; ".join(f"rung {cost.name}: {', '.join(missed)}"
                                      for cost, missed in zip(costs, misses, strict=True)))
    chosen = fitting[-1]
    return Choice(chosen.rung, chosen.name, chosen.bytes, chosen.seconds(budget.link_rate_bps), chosen.memory,
                  chosen.dtypes, chosen.quality_db, tuple(_reasons(manifest, costs, misses, chosen, budget)))


def _reasons(manifest: Manifest, costs: list[RungCost], misses: list[list[str]], chosen: RungCost,
             budget: Budget) -> list[str]:
    top = len(costs) - 1
    lines = [f"rung {chosen.name} ({chosen.rung + 1} of {top + 1}) is the highest that fits: {chosen.bytes:,} bytes"
             + (f", {seconds:.1f} s at {budget.link_rate_bps / 1e6:g} Mbit/s"
                if (seconds := chosen.seconds(budget.link_rate_bps)) is not None and budget.link_rate_bps else "")
             + f", {chosen.memory:,} bytes of tensors, values in {', '.join(sorted(chosen.dtypes)) or 'no float dtype'}"]
    if chosen.rung == top:
        lines.append("it is the last rung: the whole package fits")
    else:
        following = costs[chosen.rung + 1]
        lines.append(f"rung {following.name} would have taken {following.bytes:,} bytes"
                     + (f" ({seconds:.1f} s)" if (seconds := following.seconds(budget.link_rate_bps)) is not None
                        else "")
                     + (f", quality {following.quality_db:.1f} dB" if following.quality_db is not None else "")
                     + f"; bound by: {'; '.join(misses[chosen.rung + 1])}")
    skipped = [cost.name for cost, missed in zip(costs[:chosen.rung], misses[:chosen.rung], strict=True) if missed]
    if skipped:
        lines.append(f"lower rungs {', '.join(skipped)} do not fit either (the device cannot hold their values); "
                     "they arrive on the way as part of the package's prefix")
    exact = [spec for spec, plan in zip(manifest.tensors, manifest.plans, strict=True)
             if spec.dtype in FLOAT_DTYPES and not plan.laddered and any(p.laddered for p in manifest.plans)]
    cast = sorted({spec.dtype for spec in exact} - budget.dtypes) if budget.dtypes is not None else []
    if cast:
        lines.append(f"{sum(s.dtype in cast for s in exact)} small tensors sent exact ({', '.join(cast)}: biases, "
                     f"norms) are cast by the device to {', '.join(sorted(budget.dtypes or ()))} at any rung")
    limit = budget.byte_limit
    if limit is not None:
        lines.append(f"uses {100 * chosen.bytes / limit:.0f} % of the byte budget ({limit:,.0f} bytes)")
    return lines
