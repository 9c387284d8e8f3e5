"""Argument types shared by the ``moa`` commands, so a flag two commands take (``--budget-usd``)
accepts the same values in both and refuses the rest with the same line. Only the standard library:
``moa --help`` imports this."""

from __future__ import annotations

import argparse
import math

__all__ = ["seconds", "usd"]


def _finite(text: str, unit: str, *, zero_ok: bool) -> float:
    """``text`` as a finite number above zero (or at it, when ``zero_ok``); the refusal names the
    unit and says how to ask for no limit, which is leaving the flag out."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unit}, got {text!r}") from None
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        bound = ">= 0" if zero_ok else "> 0"
        raise argparse.ArgumentTypeError(
            f"must be a finite {unit.removeprefix('a ').removeprefix('an ')} {bound} "
            f"(leave it out for no {'cap' if zero_ok else 'limit'}), got {text!r}"
        )
    return value


def usd(text: str) -> float:
    """A budget in USD: a finite number >= 0. ``inf`` is refused, not read as "no cap": leaving the
    flag out is that, and an experiment file's ``budget_usd: .inf`` is refused too."""
    return _finite(text, "an amount in USD", zero_ok=True)


def seconds(text: str) -> float:
    """A time limit in seconds: a finite number > 0 (``0`` or ``nan`` were refused by the Python
    API's check, in a line naming ``deadline_s``, not the flag the user typed)."""
    return _finite(text, "a number of seconds", zero_ok=False)
