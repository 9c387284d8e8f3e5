"""The answer phase: every (setup, item, sample) pair not stored yet runs through its setup's topology
(every turn of a multi-turn item, see ``conversation``), under one concurrency limit and one shared
budget, and is stored as it finishes.

Pairs stream through an ``asyncio.Semaphore``: a task is created only when a slot is free, so at most
``concurrency`` runs (and their results) exist at once whatever the number of items. A ``RunResult``
is written to the store and dropped. Stored pairs are skipped without a request; interrupted pairs
find their finished calls in the call cache (one scope per setup and sample).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from moa._run import Runner
from moa.calls.budget import Budget
from moa.errors import BudgetExceeded, MoAError, ProviderError, UserError
from moa.eval.datasets import Item
from moa.experiment.cancellation import cancel_and_drain
from moa.experiment.config import ExperimentSpec, Setup
from moa.experiment.conversation import run_item
from moa.experiment.progress import Progress
from moa.experiment.store.cache import StoreCache, sample_scope
from moa.experiment.store.database import Store, item_hash

__all__ = ["budget_stop", "run_pairs"]


def budget_stop(limit_usd: float | None, e: BudgetExceeded) -> str:
    """Why the experiment stopped at its budget, and the least budget that lets the refused call
    through: calls are refused on their worst case (every token ``max_tokens`` allows), not on
    what they would likely cost."""
    line = f"stopped at the budget of ${limit_usd}: {e}"
    if e.needed_usd is not None:
        least = (e.spent_usd or 0.0) + e.needed_usd
        line += (
            f"; calls are held at their worst case (the whole max_tokens), so a budget_usd of at least "
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
) -> str | None:
    """Run and store the pairs still to do; returns why it stopped early (the budget), else None.

    A ``UserError`` (a missing API key and the like) stops the phase and is raised: every run would
    fail the same way. Any other failure is stored as the pair's error, and the phase goes on."""
    k = spec.samples
    runners = {
        (s.name, j): base_runner.scoped(
            cache=StoreCache(store, sample_scope(s.name, s.hash, j)), budget=base_runner.budget
        )
        for s in setups
        for j in range(k)
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

    async def one(setup: Setup, item: Item, h: str, j: int) -> None:
        try:
            result, turns = await run_item(
                runners[setup.name, j], setup.topology, item, budget=budget, deadline_s=spec.deadline_s
            )
        except BudgetExceeded as e:
            # not stored: the pair is still to do, and a larger budget resumes it
            if not stopped:
                stopped.append(budget_stop(spec.budget_usd, e))
            return
        except UserError as e:  # a missing API key and the like: every run would fail the same way
            fatal.append(e)
            return
        except MoAError as e:
            store.record_run(setup.name, setup.hash, item.id, h, None, e, sample=j)
            bar.advance(sum(c.cost_usd for c in e.calls))
        except Exception as e:  # a backend bug must not lose the rest of the experiment
            err = ProviderError(f"{type(e).__name__}: {e}")
            store.record_run(setup.name, setup.hash, item.id, h, None, err, sample=j)
            bar.advance()
        else:
            store.record_run(setup.name, setup.hash, item.id, h, result, sample=j, turns=turns)
            bar.advance(result.cost_usd)
        finally:
            sem.release()

    try:
        pairs = (
            (item, h, setup, j)
            for item, h in zip(items, hashes, strict=True)
            for setup in setups
            for j in range(k)
        )
        for item, h, setup, j in pairs:
            if (item.id, h, j) in done[setup.name]:
                continue
            await sem.acquire()
            if stopped or fatal:
                sem.release()
                break
            t = asyncio.create_task(one(setup, item, h, j), name=f"moa-exp:{setup.name}:{item.id}:{j}")
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        # Ctrl-C (cancellation) or an error: stop the runs in flight, keep every stored pair
        await cancel_and_drain(tasks)
        store.commit()
        bar.close()
    if fatal:
        raise fatal[0]
    return stopped[0] if stopped else None
