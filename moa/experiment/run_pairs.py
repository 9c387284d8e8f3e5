"""The answer phase: every (setup, item, sample) pair not stored yet runs through its setup's topology
(every turn of a multi-turn item, see ``conversation``), under one concurrency limit and one shared
budget, and is stored as it finishes.

Pairs stream through an ``asyncio.Semaphore``: a task is created only when a slot is free, so at most
``concurrency`` runs (and their results) exist at once whatever the number of items. A ``RunResult``
is written to the store and dropped. Stored pairs are skipped without a request; interrupted pairs
find their finished calls in the call cache (one scope per setup and sample).

With a Dask executor, the pairs of a setup whose models are all local (``executors.movable``) run on
the workers, in a second stream with its own limit (the workers' slots); the rest, API calls above
all, stay here. Either way this process alone writes the store: a pair sent away takes its item's
cached replies along and brings back the ones it added, stored here with its run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence

from moa._run import Runner
from moa._run.engine import watch_run
from moa.calls.budget import Budget
from moa.errors import BudgetExceeded, MoAError, ProviderError, StoreError, UserError
from moa.eval.datasets import Item
from moa.experiment.cancellation import cancel_and_drain
from moa.experiment.config import ExperimentSpec, Setup
from moa.experiment.conversation import run_item
from moa.experiment.executors.base import Executor, LocalExecutor, movable
from moa.experiment.executors.worker import PairTask
from moa.experiment.progress import Progress
from moa.experiment.store.cache import StoreCache, sample_scope
from moa.experiment.store.database import Store, item_hash
from moa.experiment.store.failures import writing
from moa.results import CallRecord, RunResult

__all__ = ["budget_stop", "run_pairs"]

#: the store cannot be written: raised by SQLite where the phase writes, or as ``StoreError`` out of
#: a run whose reply could not be cached
_STORE_FAILED = (sqlite3.Error, StoreError)


def budget_stop(limit_usd: float | None, e: BudgetExceeded) -> str:
    """Why the experiment stopped at its budget, and the least budget that lets the refused call
    through: calls are refused on their worst case (every token ``max_tokens`` allows, and the most
    prompt tokens a reply may report), not on what they would likely cost."""
    line = f"stopped at the budget of ${limit_usd}: {e}"
    if e.needed_usd is not None:
        least = (e.spent_usd or 0.0) + e.needed_usd
        line += (
            f"; calls are held at their worst case (the whole max_tokens, and the prompt's token "
            f"ceiling), so a budget_usd of at least "
            f"${least:.6f} is needed for that call (lower the agents' max_tokens to hold less)"
        )
    return line


async def run_pairs(
    spec: ExperimentSpec,
    store: Store,
    setups: Sequence[Setup],
    items: Sequence[Item],
    base_runner: Runner,
    budget: Budget | None,
    sem: asyncio.Semaphore,
    bar: Progress,
    executor: Executor | None = None,
) -> str | None:
    """Run and store the pairs still to do; returns why it stopped early (the budget), else None.

    A ``UserError`` (a missing API key and the like) stops the phase and is raised: every run would
    fail the same way. Any other failure is stored as the pair's error, and the phase goes on.

    The pairs of a setup ``movable`` to workers go to ``executor`` (at most its ``run_slots`` at
    once, besides the ``concurrency`` of the pairs run here); the rest run on this event loop."""
    where: Executor = executor or LocalExecutor()
    k = spec.samples
    moved = {
        s.name
        for s in setups
        if where.run_slots() and movable(s.topology, base_runner, (budget, base_runner.budget))
    }
    done = {s.name: store.finished(s.name, s.hash, with_errors=not spec.retry_errors) for s in setups}
    hashes = [item_hash(i) for i in items]
    todo = sum(
        1
        for i, h in zip(items, hashes, strict=True)
        for s in setups
        for j in range(k)
        if (i.id, h, j) not in done[s.name]
    )
    bar.start("runs", todo, store.spent_usd())
    tasks: set[asyncio.Task[None]] = set()
    fatal: list[BaseException] = []
    stopped: list[str] = []

    async def one(
        setup: Setup, item: Item, h: str, j: int, slots: asyncio.Semaphore, cache: StoreCache
    ) -> None:
        try:
            await pair(setup, item, h, j, cache)
        except _STORE_FAILED as e:
            # the store cannot be written (a full disk): every reply paid from now on would be lost,
            # so no pair starts and those in flight stop; what was committed is kept
            if not any(isinstance(f, _STORE_FAILED) for f in fatal):
                fatal.insert(0, e)
            for t in tasks:
                if t is not asyncio.current_task():
                    t.cancel()
        finally:
            slots.release()

    async def pair(setup: Setup, item: Item, h: str, j: int, cache: StoreCache) -> None:
        try:
            if setup.name in moved:
                result, turns = await _on_worker(
                    where, setup, item, cache, spec.deadline_s, (budget, base_runner.budget)
                )
            else:
                runner = base_runner.scoped(cache=cache, budget=base_runner.budget)
                # past a budget stop, a pair is run from its cached replies only: an empty budget
                # refuses its first priced call, and the pair stays to do
                spend = Budget(0.0) if stopped else budget
                with watch_run() as watch:
                    try:
                        result, turns = await run_item(
                            runner, setup.topology, item, budget=spend, deadline_s=spec.deadline_s
                        )
                    except asyncio.CancelledError:
                        # Ctrl-C stores nothing of the pair, but its calls cut off in flight may be
                        # billed: booked at their worst case, as the live budget counted them (the
                        # watch holds the run in flight: a conversation's earlier turns answered,
                        # their replies booked when cached)
                        store.book_unstored(watch.calls)
                        raise
        except _STORE_FAILED:
            raise  # the store's failure (a ``StoreError`` is a UserError too): not the pair's
        except BudgetExceeded as e:
            # not stored: the pair is still to do, and a larger budget resumes it; its failed calls
            # (a worker timed out before the refused call) were paid, or may have been, all the same
            store.book_unstored(e.calls)
            if not stopped:
                stopped.append(budget_stop(spec.budget_usd, e))
            return
        except UserError as e:  # a missing API key and the like: every run would fail the same way
            store.book_unstored(e.calls)
            fatal.append(e)
            return
        except MoAError as e:
            with _writing(store, setup, item, j):
                store.record_run(setup.name, setup.hash, item.id, h, None, e, sample=j)
            bar.advance(_paid_now(e.calls), replayed=_replayed(e.calls))
        except Exception as e:  # a backend bug must not lose the rest of the experiment
            err = ProviderError(f"{type(e).__name__}: {e}")
            with _writing(store, setup, item, j):
                store.record_run(setup.name, setup.hash, item.id, h, None, err, sample=j)
            bar.advance()
        else:
            with _writing(store, setup, item, j):
                store.record_run(setup.name, setup.hash, item.id, h, result, sample=j, turns=turns)
            bar.advance(_paid_now(result.calls), replayed=_replayed(result.calls))

    async def feed(remote: bool, slots: asyncio.Semaphore) -> None:
        pairs = (
            (item, h, setup, j)
            for item, h in zip(items, hashes, strict=True)
            for setup in setups
            if (setup.name in moved) == remote
            for j in range(k)
        )
        for item, h, setup, j in pairs:
            if (item.id, h, j) in done[setup.name]:
                continue
            # one cache per pair: its replies are noted as this item's, for a worker resuming it
            cache = StoreCache(
                store, sample_scope(setup.name, setup.hash, j, base=setup.cache_scope), item.id
            )
            await slots.acquire()
            if fatal or (stopped and remote):
                slots.release()
                break
            if stopped and not cache.has_replies():
                # the budget is spent: only pairs already paid for (a kill, an earlier stop left
                # them unstored) still go on, so their answers reach the report
                slots.release()
                continue
            t = asyncio.create_task(
                one(setup, item, h, j, slots, cache), name=f"moa-exp:{setup.name}:{item.id}:{j}"
            )
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    try:
        # two streams, so pairs waiting for a worker never hold the driver's slots, nor the reverse
        feeds = [feed(False, sem)]
        if moved:
            feeds.append(feed(True, asyncio.Semaphore(where.run_slots())))
        await asyncio.gather(*feeds)
        if tasks:
            # a pair stopped by another's store error ends cancelled: the phase is not
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        # Ctrl-C (cancellation) or an error: stop the runs in flight, keep every stored pair
        await cancel_and_drain(tasks)
        if not (fatal and isinstance(fatal[0], _STORE_FAILED)):  # it would fail alike, hiding it
            store.commit()
        bar.close()
    if fatal:
        raise fatal[0]
    return stopped[0] if stopped else None


def _replayed(calls: Sequence[CallRecord]) -> bool:
    """Whether a pair came whole from the call cache, at no time: the bar's pace leaves it out, or
    a resume's first pairs (those cut off before they were stored) made its ETA far too short."""
    return bool(calls) and all(c.cached for c in calls)


def _paid_now(calls: Sequence[CallRecord]) -> float:
    """What a pair's calls cost this time: a replayed reply was paid, and counted, before."""
    return sum(c.cost_usd for c in calls if not c.cached)


async def _on_worker(
    executor: Executor,
    setup: Setup,
    item: Item,
    cache: StoreCache,
    deadline_s: float | None,
    budgets: tuple[Budget | None, ...],
) -> tuple[RunResult, list[str] | None]:
    """Run a pair of a movable setup on ``executor``, as ``run_item`` would here: its cached replies
    go along, the replies it adds are stored here, its cost is booked on the budgets (a local call
    costs nothing, but the accounts stay one), and its error is raised here."""
    task = PairTask(setup.topology, item, cache.scope, cache.replies(), deadline_s)
    outcome = await executor.run_pair(task)
    for key, reply in outcome.new_replies.items():
        cache.put(key, reply)
    calls = (
        outcome.result.calls if outcome.result is not None else (outcome.error.calls if outcome.error else [])
    )
    cost = sum(c.cost_usd for c in calls)
    for b in dict.fromkeys(b for b in budgets if b is not None):
        b.settle(b.reserve(0.0), cost)
    if outcome.error is not None or outcome.result is None:
        raise outcome.error or ProviderError("the worker sent back neither a result nor an error")
    return outcome.result, outcome.turns


def _writing(store: Store, setup: Setup, item: Item, sample: int) -> contextlib.AbstractContextManager[None]:
    """A pair's run stored: a failure names it (``writing``)."""
    at = f", sample {sample}" if sample else ""
    return writing(store.path, store.conn, f"storing the run of setup `{setup.name}`, item `{item.id}`{at}")
