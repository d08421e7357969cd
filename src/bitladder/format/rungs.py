"""The rung each tensor of a model stands at, and the lowest over all of them, without scanning every tensor.

A model may have tens of thousands of tensors (mixture-of-experts models), and the decoder and the runtime ask
for the lowest rung after every chunk; counting the tensors at each rung answers that in O(rungs).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RungTally(Generic[K]):
    """Rungs -1 (none yet) to `rungs - 1` for a fixed set of keys (tensor names or indices).

    >>> tally = RungTally(["a", "b"], rungs=2)
    >>> tally.set("a", 1); tally.lowest, tally.lowest_with({"b": 0})
    (-1, 0)
    >>> tally.set("b", 1); tally.lowest
    1
    """

    def __init__(self, keys: Iterable[K], rungs: int) -> None:
        self._rung: dict[K, int] = dict.fromkeys(keys, -1)
        self._count = [0] * (rungs + 1)  # tensors at each rung, rung r at r + 1
        self._count[0] = len(self._rung)
        self._lowest = -1 if self._rung else rungs - 1

    def __getitem__(self, key: K) -> int:
        return self._rung[key]

    def __contains__(self, key: object) -> bool:
        return key in self._rung

    def __len__(self) -> int:
        return len(self._rung)

    def as_dict(self) -> dict[K, int]:
        return dict(self._rung)

    @property
    def lowest(self) -> int:
        return self._lowest

    def set(self, key: K, rung: int) -> None:
        """Put `key` (one of the keys) at `rung`."""
        if not -1 <= rung < len(self._count) - 1:
            raise ValueError(f"rung {rung} outside -1..{len(self._count) - 2}")
        self._count[self._rung[key] + 1] -= 1
        self._count[rung + 1] += 1
        self._rung[key] = rung
        self._lowest = self._lowest_of(self._count)

    def update(self, rungs: Mapping[K, int]) -> None:
        for key, rung in rungs.items():
            self.set(key, rung)

    def lowest_with(self, rungs: Mapping[K, int]) -> int:
        """The lowest rung once `rungs` were set (nothing changes)."""
        count = list(self._count)
        for key, rung in rungs.items():
            count[self._rung[key] + 1] -= 1
            count[rung + 1] += 1
        return self._lowest_of(count)

    @staticmethod
    def _lowest_of(count: list[int]) -> int:
        return next((at - 1 for at, n in enumerate(count) if n), len(count) - 2)
