"""Checks and help texts shared by the subcommands (`cli.py`, `delivery/commands.py`, `eval/commands.py`).

Checks raise `ValueError` with the option's name, which the command line reports as one line and exit 2.

>>> check_ladder("int8,,exact")   # doctest: +SKIP
ValueError: --ladder 'int8,,exact': empty rung name at position 2; rungs are int2..int8, bf16, fp16, exact
"""

from __future__ import annotations

from .codecs.ladder import Ladder

RUNG_NAMES = "int2..int8, bf16, fp16, exact"
LADDER_HELP = f"comma-separated rungs, least to most precise; rungs are {RUNG_NAMES}"


def check_ladder(text: str, option: str = "--ladder") -> str:
    """`text` if it is a valid ladder (no empty rung, known names, each more precise than the one before)."""
    for position, name in enumerate(text.split(","), 1):
        if not name.strip():
            raise ValueError(f"{option} {text!r}: empty rung name at position {position}; rungs are {RUNG_NAMES}")
    try:
        Ladder.parse(text)
    except ValueError as exc:
        raise ValueError(f"{option} {text!r}: {exc}") from None
    return text
