"""The command line every benchmark with run modes shares: ``--quick`` / ``--tiny`` and a
comma-separated subset of its stages, read back the same way everywhere."""

from __future__ import annotations

import argparse
from collections.abc import Iterable


def add_mode_arguments(parser: argparse.ArgumentParser, *, quick: str, tiny: str) -> None:
    """``--quick`` and ``--tiny`` (at most one; neither is the full run), with each benchmark's
    own ``help`` saying what the mode cuts; :func:`mode_of` reads the choice back."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help=quick)
    group.add_argument("--tiny", action="store_true", help=tiny)


def mode_of(args: argparse.Namespace) -> str:
    """``"tiny"``, ``"quick"`` or ``"full"``: the mode :func:`add_mode_arguments` parsed."""
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def parse_subset(text: str | None, known: Iterable[str], what: str) -> tuple[str, ...] | None:
    """The names in a comma-separated ``text`` (None when it is not given: run them all); a
    name not in ``known`` ends the program with a message naming it."""
    if not text:
        return None
    chosen = tuple(x.strip() for x in text.split(","))
    unknown = set(chosen) - set(known)
    if unknown:
        raise SystemExit(f"unknown {what}(s): {', '.join(sorted(unknown))}")
    return chosen
