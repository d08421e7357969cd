"""RungTally keeps the lowest rung without scanning: it must always equal the minimum over every key."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitladder.format.rungs import RungTally


@given(keys=st.integers(0, 8), rungs=st.integers(1, 5), moves=st.lists(st.tuples(st.integers(0, 7), st.integers(-1, 4))))
def test_lowest_is_the_minimum_after_any_moves(keys, rungs, moves):
    tally = RungTally(range(keys), rungs)
    model = dict.fromkeys(range(keys), -1)
    for key, rung in moves:
        if key >= keys or rung >= rungs:
            continue
        what_if = tally.lowest_with({key: rung})
        tally.set(key, rung)
        model[key] = rung
        assert what_if == tally.lowest == min(model.values())
    assert tally.as_dict() == model
    assert tally.lowest == min(model.values(), default=rungs - 1)


def test_rungs_outside_the_ladder_and_unknown_keys_are_refused():
    tally = RungTally(["a"], rungs=2)
    with pytest.raises(ValueError, match="outside"):
        tally.set("a", 2)
    with pytest.raises(KeyError):
        tally.set("b", 0)
    assert tally["a"] == -1 and "a" in tally and len(tally) == 1
