"""The windows and the gate a ``Limiter`` is made of: a requests-per-period sliding log (``Rpm``), a
tokens-per-period sliding log (``Tokens``) and a cap on requests in flight (``Gate``).

They are shared across event loops (``topology.run_sync`` runs a fresh ``asyncio.run`` per call,
and users may run loops in several threads), so their state is loop-independent: ``time.monotonic``
stamps in a deque under a ``threading.Lock``, waits via ``asyncio.sleep``, and a concurrency gate that
wakes waiters on their own loop with ``call_soon_threadsafe``. No asyncio primitive is ever shared.

Requests per minute use ``asyncio_throttle.Throttler``'s sliding log (its state is loop-independent:
a deque of ``time.monotonic`` stamps), with two changes in a subclass: the check and the stamp happen
under a ``threading.Lock`` so loops in two threads cannot both pass, and a waiter sleeps until the
exact moment the oldest start leaves the window instead of polling every ``retry_interval``.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from asyncio_throttle.throttler import Throttler

__all__ = ["Gate", "Rpm", "Tokens"]


_E = TypeVar("_E")


def _find_recent(log: deque[_E], entry: _E, at: Callable[[_E], float]) -> int:
    """The index of ``entry`` in a log in time order (``at`` gives an entry's time), or -1, searching
    from its newest end, where a request's own entry is (those made after it are about the requests
    in flight): ``deque.remove`` searched from the oldest, O(window) per request, and under a high
    limit a one-minute window holds tens of thousands of entries. Stops at the first older entry:
    one already flushed out of the window is not there."""
    when = at(entry)
    for back, other in enumerate(reversed(log)):
        if other == entry:
            return len(log) - 1 - back
        if at(other) < when:
            return -1
    return -1


#: entries a settle looks at from the newest end before it bisects
_NEAR = 32


def _find_by_time(log: deque[_E], entry: _E, at: Callable[[_E], float]) -> int:
    """The index of ``entry`` in a log in time order, or -1, found by bisecting on its time: for an
    entry that may be far from the newest end (a reply settling its request's entry has the
    requests started while it was in flight after it). Each probe of a deque walks its blocks in C,
    so a window of 50,000 entries costs a few thousand steps, not a Python loop over every entry."""
    when = at(entry)
    # most replies come before many requests started after theirs: their entry is near the end,
    # where a deque's probes are cheapest
    for back in range(1, min(len(log), _NEAR) + 1):
        other = log[-back]
        if other == entry:
            return len(log) - back
        if at(other) < when:
            return -1
    index = bisect.bisect_left(log, when, key=at)
    while index < len(log) and at(log[index]) == when:
        if log[index] == entry:
            return index
        index += 1
    return -1


def _remove_recent(log: deque[_E], entry: _E, at: Callable[[_E], float]) -> bool:
    """Take ``entry`` out of a log in time order (see ``_find_recent``); False when it is not there."""
    index = _find_recent(log, entry, at)
    if index < 0:
        return False
    del log[index]
    return True


def _stamp_time(stamp: float) -> float:
    return stamp


def _entry_time(entry: tuple[float, int]) -> float:
    return entry[0]


class Rpm(Throttler):
    """asyncio-throttle's sliding log of request starts, made safe for loops in several threads (the
    check and the stamp happen under one lock) and woken at the exact moment the oldest start leaves
    the window instead of polling. Its state is loop-independent, so one instance serves every
    event loop of the process, and consecutive ``run_sync`` calls share one window.

    A fractional rpm becomes whole requests over a proportionally shorter window (90.5 per 60 s is
    90 per 59.67 s; 0.5 per 60 s is 1 per 120 s), so the average rate is exact and never zero.
    """

    def __init__(self, rpm: float, period_s: float) -> None:
        requests = max(1, math.floor(rpm))
        super().__init__(rate_limit=requests, period=period_s * requests / rpm)
        self._guard = threading.Lock()

    def retune(self, rpm: float, period_s: float) -> None:
        """Apply a new limit in place: requests already waiting in ``acquire`` read it on their next
        check (a new instance would leave them on the old, looser one)."""
        requests = max(1, math.floor(rpm))
        with self._guard:
            self.rate_limit, self.period = requests, period_s * requests / rpm

    async def acquire(self, replacing: float | None = None) -> float:
        """Wait for room in the window and stamp a start; returns the stamp. ``replacing``: a stamp
        of this request's, given back first (``renew``)."""
        while True:
            with self._guard:
                if replacing is not None:
                    # a stamp already flushed out of the window is simply gone
                    _remove_recent(self._task_logs, replacing, _stamp_time)
                    replacing = None
                self.flush()  # type: ignore[no-untyped-call]
                now = time.monotonic()
                if len(self._task_logs) < self.rate_limit:
                    # stamps are appended at "now" only, so the log stays in order for flush()
                    self._task_logs.append(now)
                    return now
                wait = self._task_logs[0] + self.period - now
            # A floor keeps many waiters from waking once per microsecond-apart expiry.
            await asyncio.sleep(max(wait, 1e-4))

    def remove(self, stamp: float) -> None:
        """Give a stamp back: its request will not be sent."""
        with self._guard:
            _remove_recent(self._task_logs, stamp, _stamp_time)

    def move(self, stamp: float) -> float:
        """Move a stamp to now without waiting: for a request already on its way out."""
        with self._guard:
            _remove_recent(self._task_logs, stamp, _stamp_time)
            now = time.monotonic()
            self._task_logs.append(now)
            return now


class Tokens:
    """A sliding log of (start time, tokens) for a tokens-per-period limit.

    A request asking for more tokens than ``tpm`` waits until the window is empty and then proceeds
    alone, rather than waiting forever.
    """

    def __init__(self, tpm: int, period_s: float) -> None:
        self._lock = threading.Lock()
        self._log: deque[tuple[float, int]] = deque()
        # the log's token sum, kept as entries come and go: summed per request, a busy window (a
        # high tpm over a minute holds thousands of entries) cost O(entries) on every call
        self._used = 0
        self._tpm = tpm
        self._period = period_s

    def retune(self, tpm: int, period_s: float) -> None:
        """Apply a new limit in place, for the requests already waiting too (see ``Rpm.retune``)."""
        with self._lock:
            self._tpm, self._period = tpm, period_s

    def _try_reserve(self, tokens: int, now: float) -> float:
        """Reserve and return 0, or return how long to wait before trying again. Hold the lock.
        Entries are appended at "now" only, so the log stays in time order."""
        while self._log and self._log[0][0] <= now - self._period:
            self._used -= self._log.popleft()[1]
        used = self._used
        need = min(tokens, self._tpm)
        if used + need > self._tpm:
            freed = 0
            for t, n in self._log:
                freed += n
                if used - freed + need <= self._tpm:
                    return max(t + self._period - now, 1e-4)
        self._log.append((now, tokens))
        self._used += tokens
        return 0.0

    def _discard(self, entry: tuple[float, int]) -> None:
        """Take an entry out of the log if it is still there. Hold the lock."""
        if _remove_recent(self._log, entry, _entry_time):
            self._used -= entry[1]

    async def reserve(
        self, tokens: int, replacing: tuple[float, int] | None = None
    ) -> tuple[float, int] | None:
        """Wait for room and log ``tokens``; returns the entry logged. ``replacing``: an entry of
        this request's, given back first (``renew``)."""
        if tokens <= 0:
            return None
        while True:
            with self._lock:
                if replacing is not None:
                    self._discard(replacing)
                    replacing = None
                now = time.monotonic()
                wait = self._try_reserve(tokens, now)
            if wait <= 0:
                return (now, tokens)
            await asyncio.sleep(wait)

    def remove(self, entry: tuple[float, int]) -> None:
        """Give an entry back: its request will not be sent."""
        with self._lock:
            self._discard(entry)

    def settle(self, entry: tuple[float, int], tokens: int) -> tuple[float, int]:
        """Count ``tokens`` for an entry instead of what it reserved, at the same time in the window:
        the reply said what the request really used. Returns the entry now logged (one already
        out of the window is left out: its period is over)."""
        with self._lock:
            index = _find_by_time(self._log, entry, _entry_time)
            if index < 0:
                return entry
            settled = (entry[0], tokens)
            self._log[index] = settled
            self._used += tokens - entry[1]
            return settled

    def move(self, entry: tuple[float, int]) -> tuple[float, int]:
        """Move an entry to now without waiting: for a request already on its way out."""
        with self._lock:
            self._discard(entry)
            moved = (time.monotonic(), entry[1])
            self._log.append(moved)
            self._used += moved[1]
            return moved


class Gate:
    """A counting semaphore usable from any event loop in any thread.

    A released slot is handed straight to the oldest waiter, whose future is resolved on its own
    loop; a waiter cancelled while the hand-over is in flight passes the slot on.
    """

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def set_capacity(self, capacity: int) -> None:
        with self._lock:
            self._capacity = capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_use < self._capacity and not self._waiters:
                self._in_use += 1
                return
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut)
            self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            with self._lock:
                queued = entry in self._waiters
                if queued:
                    self._waiters.remove(entry)
            if not queued and fut.done() and not fut.cancelled():
                self.release()  # the slot reached us just as we were cancelled
            # when fut was cancelled before the hand-over ran, _hand_over sees it and passes it on
            raise

    def release(self) -> None:
        with self._lock:
            # after a tighten() lowered the capacity, surplus slots retire instead of moving on
            while self._waiters and self._in_use <= self._capacity:
                loop, fut = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, fut)
                except RuntimeError:  # that loop has closed; its waiter is gone
                    continue
                return  # the slot moves to the waiter: in_use is unchanged
            self._in_use -= 1

    def _hand_over(self, fut: asyncio.Future[None]) -> None:
        if fut.done():
            self.release()
        else:
            fut.set_result(None)
