"""Checks and help texts shared by the subcommands (`cli.py`, `delivery/commands.py`, `eval/commands.py`).

Checks raise `ValueError` with the option's name, which the command line reports as one line and exit 2.

>>> check_ladder("int8,,exact")   # doctest: +SKIP
ValueError: --ladder 'int8,,exact': empty rung name at position 2; rungs are int2..int8, bf16, fp16, exact
"""

from __future__ import annotations

import argparse

from .codecs.ladder import Ladder
from .format.signing import Trust, load_trust

RUNG_NAMES = "int2..int8, bf16, fp16, exact"
LADDER_HELP = (f"comma-separated rungs, least to most precise; rungs are {RUNG_NAMES}, and a first rung may be a "
               "target: 12%%,int8,exact (at most 12 %% of the source) or 30dB,int8 (at least 30 dB SQNR)")


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


def add_trust(parser: argparse.ArgumentParser, what: str, downgrade: bool = False, note: str = "") -> None:
    """`--trust KEY.pub` (repeatable) and, for commands that write a model, `--allow-downgrade`."""
    parser.add_argument("--trust", action="append", metavar="KEY.pub",
                        help=f"{what} only packages signed by this key (repeat for several, e.g. during a key "
                             f"rotation); unsigned or otherwise signed ones are refused{note}")
    if downgrade:
        parser.add_argument("--allow-downgrade", action="store_true",
                            help="write an older version over an output that records a newer one of the same model")


def trust_of(args: argparse.Namespace) -> Trust | None:
    """The trust set of `--trust`, None when not given."""
    return load_trust(args.trust) if args.trust else None
