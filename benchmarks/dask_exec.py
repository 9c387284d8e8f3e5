"""Execution scoring on Dask vs the local executor, on one machine: N sandboxed Python programs (a
HumanEval-sized answer and its tests each) scored through the experiment's executor seam, under the
experiment's default concurrency, by the local executor and by a loopback ``LocalCluster`` of worker
processes. On one machine Dask cannot be faster (the same cores run the same programs); the ratio
is what it costs: target <= 1.2x. The scheduling overhead per task is timed apart, with no-op tasks
through the same path, and the cluster's start-up is shown but not counted.

    python benchmarks/dask_exec.py [--programs 2000] [--workers 2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import table, verdict

from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.experiment.executors import LocalExecutor
from moa.experiment.executors.dask_executor import DaskExecutor

TARGET = 1.2
PROMPT = "def add(a, b):\n    '''Return a + b.'''\n"
ANSWER = "```python\ndef add(a, b):\n    return a + b\n```"
TEST = "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n    assert f(0, 0) == 0\n"


def _items(n: int) -> list[Item]:
    return [Item(id=str(i), input=PROMPT, test=TEST, entry_point="add") for i in range(n)]


async def _all(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Seconds to run ``one(0..n-1)`` with ``concurrency`` in flight, as ``score_all`` does."""
    sem = asyncio.Semaphore(concurrency)

    async def slot(i: int) -> None:
        async with sem:
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(n)))
    return time.perf_counter() - t0


async def _scored(executor: LocalExecutor | DaskExecutor, items: list[Item], concurrency: int) -> float:
    evaluator = ExecutionEvaluator()

    async def one(i: int) -> None:
        score = await executor.score(evaluator, items[i], ANSWER)
        if score.value != 1.0:
            raise RuntimeError(f"program {i}: {score.detail}")

    return await _all(len(items), concurrency, one)


def _noop() -> None:
    return None


async def main(n: int, workers: int, threads: int, concurrency: int) -> None:
    items = _items(n)
    load_before = os.getloadavg()
    local = LocalExecutor()
    t0 = time.perf_counter()
    dask = await DaskExecutor.open("dask", n_workers=workers, threads_per_worker=threads)
    startup_s = time.perf_counter() - t0
    try:
        slots = max(concurrency, dask.slots_for(ExecutionEvaluator()))
        warm = items[: 2 * workers]
        await _scored(local, warm, concurrency)
        await _scored(dask, warm, slots)
        # halves in the order local, dask, dask, local: a drift in the machine's load hits both alike
        half = [items[: n // 2], items[n // 2 :]]
        local_s = await _scored(local, half[0], concurrency)
        dask_s = await _scored(dask, half[0], slots)
        dask_s += await _scored(dask, half[1], slots)
        local_s += await _scored(local, half[1], concurrency)
        # the scheduling alone: no-op tasks through the same client, many in flight and one at a time
        client = dask._client
        noop_s = await _all(n, slots, lambda i: _await(client.submit(_noop, pure=False)))
        trips = 50
        trip_s = await _all(trips, 1, lambda i: _await(client.submit(_noop, pure=False)))
    finally:
        await dask.aclose()
    load_after = os.getloadavg()
    ratio = dask_s / local_s
    print(
        f"\n{n:,} sandboxed Python programs, concurrency {concurrency} (dask: {slots} in flight on "
        f"{workers} worker processes of {threads} thread(s)); {os.cpu_count()} cores; cluster start-up "
        f"{startup_s:.1f} s (not counted)\n"
    )
    print(
        table(
            ["executor", "workers", "wall s", "programs/s", "ratio vs local", "target"],
            [
                ["local", 1, local_s, n / local_s, 1.0, "-"],
                [
                    "dask (LocalCluster)",
                    workers,
                    dask_s,
                    n / dask_s,
                    ratio,
                    f"<= {TARGET:g}x: {verdict(ratio <= TARGET)}",
                ],
            ],
        )
    )
    print()
    print(
        table(
            ["scheduling overhead", "ms per task"],
            [
                [f"no-op tasks, {slots} in flight (wall / tasks)", 1000 * noop_s / n],
                ["no-op task round trip, one at a time (submit -> result)", 1000 * trip_s / trips],
                ["(dask wall - local wall) / programs", 1000 * (dask_s - local_s) / n],
            ],
        )
    )
    print(
        f"\nload average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}; after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )


async def _await(future: object) -> object:
    return await future  # type: ignore[misc]


if __name__ == "__main__":  # worker processes re-import this file: nothing may run on import
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--programs", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--concurrency", type=int, default=8, help="the experiment's (default 8)")
    a = p.parse_args()
    asyncio.run(main(a.programs, a.workers, a.threads, a.concurrency))
