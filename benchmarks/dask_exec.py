"""Dask vs the local executor, on one machine, in two phases through the experiment's executor seam.

Programs: N sandboxed Python programs (a HumanEval-sized answer and its tests each), under the
experiment's default concurrency, scored by the local executor and by a loopback ``LocalCluster`` of
worker processes. On one machine Dask cannot be faster (the same cores run the same programs); the
ratio is what it costs: target <= 1.2x. The scheduling overhead per task is timed apart, with no-op
tasks through the same path, and the cluster's start-up is shown but not counted.

Local runs: N pairs of a one-call ``local/smollm2-135m`` setup (temperature 0, distinct prompts),
run as the answer phase runs them: on the driver (one loaded model; its calls take turns, each with
llama.cpp's ``n_threads`` = every core) and on the workers (one model per worker, loaded once, with
the worker's one thread; the driver keeps two pairs per worker in flight). Same answers either way;
the ratio is the speed-up (>= 1 expected: one decoding per core instead of one spread over all
cores, which pays llama.cpp's per-token synchronisation between threads). A third row runs the
driver with ``n_threads=1``, to separate the two effects.

    python benchmarks/dask_exec.py [--phase both|programs|local] [--programs 2000] [--pairs 40]
                                   [--workers 2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import table, verdict

from moa._run import Runner
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.experiment.conversation import run_item
from moa.experiment.executors import LocalExecutor
from moa.experiment.executors.dask_executor import DaskExecutor
from moa.experiment.executors.worker import PairTask
from moa.topology.definition import Topology
from moa.topology.loader import load_data

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


async def programs(n: int, workers: int, threads: int, concurrency: int) -> None:
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


def _smol(n_threads: int | None = None) -> Topology:
    params = {} if n_threads is None else {"params": {"n_threads": n_threads}}
    agent = {"model": "local/smollm2-135m", "temperature": 0, "max_tokens": 32, **params}
    return load_data({"name": "smol", "kind": "single", "agent": "a", "agents": {"a": agent}})


def _pairs(n: int) -> list[Item]:
    return [Item(id=str(i), input=f"Write one sentence about the number {i}.") for i in range(n)]


async def _on_driver(topology: Topology, items: list[Item], concurrency: int) -> tuple[float, list[str]]:
    answers = [""] * len(items)
    async with Runner() as runner:

        async def one(i: int) -> None:
            result, _ = await run_item(runner, topology, items[i])
            answers[i] = result.output

        return await _all(len(items), concurrency, one), answers


async def _on_workers(dask: DaskExecutor, topology: Topology, items: list[Item]) -> tuple[float, list[str]]:
    answers = [""] * len(items)

    async def one(i: int) -> None:
        outcome = await dask.run_pair(PairTask(topology, items[i], "bench", {}))
        if outcome.result is None:
            raise RuntimeError(f"pair {i}: {outcome.error}")
        answers[i] = outcome.result.output

    return await _all(len(items), dask.run_slots(), one), answers


async def local_runs(n: int, workers: int, concurrency: int) -> None:
    from moa.experiment.executors.dask_plugin import held_models

    items = _pairs(n)
    smol, smol_1 = _smol(), _smol(1)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    dask = await DaskExecutor.open("dask", n_workers=workers, threads_per_worker=1)
    startup_s = time.perf_counter() - t0
    try:
        warm = _pairs(2 * workers)  # every model loaded before the clock starts
        await _on_driver(smol, warm, concurrency)
        await _on_driver(smol_1, warm, concurrency)
        await _on_workers(dask, smol, warm)
        half = [items[: n // 2], items[n // 2 :]]
        driver_s = one_s = dask_s = 0.0
        answers: dict[str, list[str]] = {"driver": [], "driver1": [], "dask": []}
        # halves in the order driver, workers, workers, driver: a drift in load hits both alike
        for part, order in (
            (half[0], ("driver", "driver1", "dask")),
            (half[1], ("dask", "driver1", "driver")),
        ):
            for where in order:
                if where == "dask":
                    s, a = await _on_workers(dask, smol, part)
                    dask_s += s
                elif where == "driver":
                    s, a = await _on_driver(smol, part, concurrency)
                    driver_s += s
                else:
                    s, a = await _on_driver(smol_1, part, concurrency)
                    one_s += s
                answers[where] += a
        assert dask.plugin is not None
        held = await dask._client.run(held_models, dask.plugin)
    finally:
        await dask.aclose()
    load_after = os.getloadavg()
    # each list holds the first half then the second: item order for all three
    same = answers["dask"] == answers["driver"] == answers["driver1"]
    cores = os.cpu_count() or 1
    print(
        f"\n{n} pairs of a one-call local/smollm2-135m setup (max_tokens 32, temperature 0); {cores} cores; "
        f"cluster start-up {startup_s:.1f} s and model loads (warm-up) not counted\n"
    )
    print(
        table(
            ["where the pairs run", "llama.cpp threads", "wall s", "pairs/s", "ratio vs driver"],
            [
                [f"driver (local executor), concurrency {concurrency}", cores, driver_s, n / driver_s, 1.0],
                ["driver, n_threads: 1 in the agent's params", 1, one_s, n / one_s, driver_s / one_s],
                [
                    f"{workers} Dask workers, {dask.run_slots()} pairs in flight",
                    f"1 per worker x {workers}",
                    dask_s,
                    n / dask_s,
                    driver_s / dask_s,
                ],
            ],
        )
    )
    print(f"\nsame answers on the workers as on the driver: {same}")
    print("models each worker loaded (once) and the pairs it ran:")
    for address, state in sorted(held.items()):
        print(
            f"  {address}: {state['runs']} pairs, {len(state['held'])} model(s): {', '.join(state['held'])}"
        )
    print(
        f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}; after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )


async def main(phase: str, n: int, pairs: int, workers: int, threads: int, concurrency: int) -> None:
    if phase in ("both", "programs"):
        await programs(n, workers, threads, concurrency)
    if phase in ("both", "local"):
        await local_runs(pairs, workers, concurrency)


if __name__ == "__main__":  # worker processes re-import this file: nothing may run on import
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=["both", "programs", "local"], default="both")
    p.add_argument("--programs", type=int, default=2000)
    p.add_argument("--pairs", type=int, default=40, help="local-model pairs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--concurrency", type=int, default=8, help="the experiment's (default 8)")
    a = p.parse_args()
    asyncio.run(main(a.phase, a.programs, a.pairs, a.workers, a.threads, a.concurrency))
