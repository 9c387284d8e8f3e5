"""Hard budget caps. Before each call the worst case (prompt tokens + ``max_tokens`` at the model's
price) is reserved; a call whose reservation would pass the cap is not made. After the call the
reservation is replaced by the real cost, so spend never passes the cap.

A call whose worst case does not fit only because other calls' holds fill the cap waits for them to
settle (``hold``): a hold is a bound, and most settle far below it, so refusing then stopped an
experiment of 64 concurrent runs with 0.6% of its cap spent. A call that what is already *spent*
leaves no room for is refused at once: no settling can make room. The wait is not cut at the
waiting call's ``timeout_s``, which times a request that has left: the holds in its way settle as
their calls end, each under its own ``timeout_s``, and the run's ``deadline_s`` cancels the wait
with everything else in the run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from moa.errors import BudgetExceeded, UserError

__all__ = ["Budget", "Reservation", "hold_all", "try_hold_all", "wait_for_room"]


@dataclass(slots=True)
class Reservation:
    """A worst-case amount held for one call until it is settled."""

    amount: float
    settled: bool = False


class Budget:
    """A cap in USD, shareable across runs (and threads) of an experiment."""

    def __init__(self, limit_usd: float) -> None:
        # a string (a cap read from the environment) or None failed with a bare TypeError
        number = isinstance(limit_usd, int | float) and not isinstance(limit_usd, bool)
        if not (number and limit_usd >= 0):
            raise UserError(f"budget must be a non-negative number of USD (got {limit_usd!r})")
        self.limit_usd = float(limit_usd)
        self._spent = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()
        #: calls waiting for holds to settle, each woken on its own loop (a budget may be shared by
        #: threads, each with an event loop)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def spent_usd(self) -> float:
        return self._spent

    @property
    def reserved_usd(self) -> float:
        return self._reserved

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.limit_usd - self._spent - self._reserved)

    def reserve(self, amount: float, *, node: str = "", model: str = "") -> Reservation:
        """Hold ``amount`` or raise ``BudgetExceeded`` without holding anything."""
        with self._lock:
            if self._spent + self._reserved + amount > self.limit_usd + 1e-12:
                raise self._refusal(amount, node, model, "")
            self._reserved += amount
        return Reservation(amount)

    def try_hold(
        self, amount: float, loop: asyncio.AbstractEventLoop, *, node: str = "", model: str = ""
    ) -> Reservation | asyncio.Future[None]:
        """Hold ``amount`` if it fits now. If only other holds are in the way (settling may make
        room): a future on ``loop`` that the next settle completes, registered under the same lock
        as the check, so no settle between the two is missed (``forget`` it once awaited). If what
        is spent already leaves no room: ``BudgetExceeded``."""
        with self._lock:
            if self._spent + self._reserved + amount <= self.limit_usd + 1e-12:
                self._reserved += amount
                return Reservation(amount)
            if self._spent + amount > self.limit_usd + 1e-12:
                raise self._refusal(amount, node, model, "")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
            return waiter

    def forget(self, waiter: asyncio.Future[None]) -> None:
        """Drop a waiter ``try_hold`` gave (awaited, or given up on)."""
        with self._lock:
            self._waiters = [w for w in self._waiters if w[1] is not waiter]

    def refuse_out_of_reach(self, amount: float, *, node: str, model: str, why: str) -> None:
        """Raise ``BudgetExceeded`` (its message ending with ``why``) if what is spent already leaves
        no room for ``amount``: no hold settling can make room, so waiting to try is pointless."""
        with self._lock:
            if self._spent + amount > self.limit_usd + 1e-12:
                raise self._refusal(amount, node, model, why)

    def _refusal(self, amount: float, node: str, model: str, why: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"node `{node}`, model `{model}`: the call's worst case ${amount:.6f} would pass the "
            f"budget of ${self.limit_usd:.6f} (spent ${self._spent:.6f}, held ${self._reserved:.6f}){why}",
            node=node,
            model=model,
            needed_usd=amount,
            spent_usd=self._spent,
        )

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release the hold and book the real cost (idempotent)."""
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._reserved -= reservation.amount
            self._spent += actual_usd
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
                loop.call_soon_threadsafe(_wake, waiter)

    def __repr__(self) -> str:
        return f"Budget(limit_usd={self.limit_usd}, spent_usd={self._spent:.6f})"


def try_hold_all(
    budgets: Sequence[Budget],
    amount: float,
    loop: asyncio.AbstractEventLoop,
    *,
    node: str = "",
    model: str = "",
) -> list[tuple[Budget, Reservation]] | tuple[Budget, asyncio.Future[None]]:
    """Hold ``amount`` on every budget now; or, when other calls' holds fill one, release what it
    held (a call never holds one budget while it waits on another) and give that budget with the
    future its next settle completes (``wait_for_room``). ``BudgetExceeded`` when what one has spent
    leaves no room."""
    held: list[tuple[Budget, Reservation]] = []
    try:
        for b in budgets:
            got = b.try_hold(amount, loop, node=node, model=model)
            if not isinstance(got, Reservation):
                _release(held)
                return b, got
            held.append((b, got))
    except BaseException:
        _release(held)
        raise
    return held


async def wait_for_room(blocked: tuple[Budget, asyncio.Future[None]]) -> None:
    """Wait for the next settle on the budget ``try_hold_all`` was blocked by. Not bounded here: the
    holds in the way settle as their calls end (each under its own ``timeout_s``), and a run's
    deadline cancels the wait."""
    budget, waiter = blocked
    try:
        await waiter
    finally:
        budget.forget(waiter)


async def hold_all(
    budgets: Sequence[Budget], amount: float, *, node: str = "", model: str = ""
) -> list[tuple[Budget, Reservation]]:
    """Hold ``amount`` on every budget, waiting while other calls' holds fill one (see the module
    docstring); ``BudgetExceeded`` at once when what one has spent leaves no room. A wait releases
    what it held first: a call never holds one budget while it waits on another."""
    loop = asyncio.get_running_loop()
    while True:
        got = try_hold_all(budgets, amount, loop, node=node, model=model)
        if isinstance(got, list):
            return got
        await wait_for_room(got)


def _release(held: Sequence[tuple[Budget, Reservation]]) -> None:
    for b, r in held:
        b.settle(r, 0.0)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
