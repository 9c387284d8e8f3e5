"""Argument types shared by the ``moa`` commands, so a flag two commands take (``--budget-usd``)
accepts the same values in both and refuses the rest with the same line. Only the standard library:
``moa --help`` imports this."""

from __future__ import annotations

import argparse
import math

__all__ = ["seconds", "usd"]


def usd(text: str) -> float:
    """A budget in USD: a finite number >= 0. ``inf`` is refused, not read as "no cap": leaving the
    flag out is that, and an experiment file's ``budget_usd: .inf`` is refused too."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite amount in USD >= 0 (leave it out for no cap), got {text!r}"
        )
    return value


def seconds(text: str) -> float:
    """A time limit in seconds: a finite number > 0 (``0`` or ``nan`` were refused by the Python
    API's check, in a line naming ``deadline_s``, not the flag the user typed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds > 0 (leave it out for no limit), got {text!r}"
        )
    return value
