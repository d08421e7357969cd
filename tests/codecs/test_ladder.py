import pytest

from bitladder.codecs.ladder import ExactRung, HalfRung, IntRung, Ladder, Rung

LADDERS = ["int8,exact", "int4,int8,bf16,exact", "fp16,exact", "int2,int4,int8", "bf16", "exact"]


@pytest.mark.parametrize("text", LADDERS)
def test_ladder_round_trips_through_json(text):
    ladder = Ladder.parse(text, group_size=64, min_size=10)
    assert Ladder.from_json(ladder.to_json()) == ladder
    assert ",".join(ladder.names) == text


def test_rungs_are_frozen_configs():
    rung = IntRung(bits=8)
    with pytest.raises(AttributeError):
        rung.bits = 4  # type: ignore[misc]
    assert Rung.from_json({"kind": "half", "format": "fp16"}) == HalfRung("fp16")
    assert Rung.from_json({"kind": "exact"}) == ExactRung()


@pytest.mark.parametrize("text, message", [
    ("int8,int4", "more precise"),
    ("exact,int8", "more precise"),
    ("bf16,fp16", "more precise"),
    ("int9", "2..8"),
    ("int1", "2..8"),
    ("float8", "unknown rung"),
    ("", "at least one"),
    ("int5,int6,int7,int8", "int5 cannot nest above int6"),   # its cells would be int6's: it refines nothing
    ("int2,int3,int4,int5,int6,int7,int8,exact", "cannot nest"),
])
def test_bad_ladders_are_value_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Ladder.parse(text)


def test_bad_rung_json():
    with pytest.raises(ValueError):
        Rung.from_json({"kind": "int", "bits": 8, "colour": "red"})
    with pytest.raises(ValueError):
        Rung.from_json({"kind": "nope"})
    with pytest.raises(ValueError):
        IntRung(bits=8, group_size=-1)
