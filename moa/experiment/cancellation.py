"""Stopping a phase's tasks (the runs of the answer phase, the scorings of the score phase) on Ctrl-C
or an error: each task that stops records what it finished before the store commits."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

__all__ = ["cancel_and_drain"]


async def cancel_and_drain(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel the tasks still running and wait until they have stopped (Ctrl-C or an error), so
    each can record what it finished before the store commits."""
    pending = list(tasks)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
