"""State kept per event loop, and forgotten when its loop ends: the one way moa does it.

A connection pool, a semaphore, a default runner belong to the loop they were made on, and
``run_sync`` (or a job queue's ``asyncio.run`` per job) makes a loop per call, so whatever is kept
per loop must go with its loop, or a long-lived process keeps every loop it ever ran. Not
weak-keyed: the values hold their loop (a session, a semaphore that was waited on), so a weak key
never let go.

A loop's end is noticed two ways, by the same table: ``asyncio.run`` (and pytest-asyncio) close
every live async generator before closing the loop, so a generator parked at its ``yield`` per loop
drops the loop's value then, and awaits ``on_end`` with it on that loop (closing a session on the
loop that owns its sockets); a loop closed without that (``loop.close()`` by hand) is found closed,
and its value dropped, when the next value is made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

V = TypeVar("V")


class PerLoop(Generic[V]):
    """A value per event loop (see the module docstring), with ``on_end`` awaited on the loop when
    it ends (or when ``close`` is awaited for it)."""

    __slots__ = ("_ends", "_on_end", "_values")

    def __init__(self, on_end: Callable[[V], Awaitable[None]] | None = None) -> None:
        self._values: dict[asyncio.AbstractEventLoop, V] = {}
        # each loop's parked generator, kept here: the loop holds its generators weakly, and one
        # collected early would run its end then
        self._ends: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._on_end = on_end

    def get(self, loop: asyncio.AbstractEventLoop) -> V | None:
        return self._values.get(loop)

    def __len__(self) -> int:
        return len(self._values)

    def set(self, loop: asyncio.AbstractEventLoop, value: V) -> V:
        """``value`` for ``loop``, the running one, until it ends; the values of loops found closed
        are dropped now. Not a coroutine (``default_runner`` is called outside one)."""
        for table in (self._values, self._ends):
            for ended in [x for x in table if x.is_closed()]:
                del table[ended]
        self._values[loop] = value
        if loop not in self._ends:
            end = self._ends[loop] = self._at_end(loop)
            # ``await end.__anext__()`` without the await: registers the generator with the running
            # loop and runs it to its yield, where it waits for the loop's end
            with contextlib.suppress(StopIteration):
                end.asend(None).send(None)
        return value

    async def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """End ``loop``'s value now (``on_end`` awaited), as its loop's end would."""
        end = self._ends.pop(loop, None)
        if end is not None:
            await end.aclose()
        value = self._values.pop(loop, None)
        if value is not None and self._on_end is not None:
            await self._on_end(value)

    def forget_all(self) -> dict[asyncio.AbstractEventLoop, V]:
        """Every loop's value, no longer kept (their loops' ends do nothing more)."""
        values, self._values = self._values, {}
        return values

    async def _at_end(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._ends.pop(loop, None)
            value = self._values.pop(loop, None)
            if value is not None and self._on_end is not None:
                await self._on_end(value)
