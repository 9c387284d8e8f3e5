"""Wording shared by the human lines of ``moa`` (the CLI, a dry run's plan, the report's table
footer). No imports: ``moa --help`` loads it."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str) -> str:
    """``1 call``, ``2 calls``: a human line counts one thing as often as several (``1 calls``)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
