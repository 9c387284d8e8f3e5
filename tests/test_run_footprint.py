"""What a run in flight costs the process besides its call: the objects it keeps alive (each pass of
the cyclic collector walks them, hundreds of runs' worth at once) and the coroutine levels each
wake-up passes through. Counted, not timed, so a busy machine cannot move them."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path

import moa
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.results import Usage

HERE = Path(__file__).resolve().parent

#: runs held in flight at once: the per-run figures are their average
RUNS = 64


class Held:
    """A backend that reports sending, then waits until released: every run parks inside it."""

    local = False
    reports_send = True

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        self.requests.append(request)
        if request.before_send is not None:
            await request.before_send()
        if request.on_sent is not None:
            request.on_sent()
        self.entered += 1
        await self.release.wait()
        return ModelReply("Paris", Usage(10, 2))

    async def aclose(self) -> None:
        pass


def single(**agent: object) -> moa.Topology:
    return moa.Topology.model_validate(
        {"name": "single", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m", **agent}}}
    )


async def in_flight(topology: moa.Topology, model: Held) -> tuple[float, float]:
    """(tracked objects, coroutines) alive per run while ``RUNS`` runs wait on ``model``."""
    runner = moa.Runner(models={"fake/*": model})
    model.release.set()
    # warm up as many at once: what is made once (the agent resolved, tables grown) is not a run's
    await asyncio.gather(*(topology.run("warm up", runner=runner) for _ in range(RUNS)))
    model.release.clear()
    model.entered = 0
    gc.collect()
    before = gc.get_objects()
    base, base_coroutines = len(before), sum(1 for o in before if asyncio.iscoroutine(o))
    del before
    tasks = [
        asyncio.create_task(topology.run("what is the capital of france", runner=runner)) for _ in range(RUNS)
    ]
    while model.entered < RUNS:
        await asyncio.sleep(0)
    alive = gc.get_objects()
    objects = (len(alive) - base) / RUNS
    coroutines = (sum(1 for o in alive if asyncio.iscoroutine(o)) - base_coroutines) / RUNS
    del alive
    model.requests.clear()
    model.release.set()
    results = await asyncio.gather(*tasks)
    assert all(r.output == "Paris" for r in results)
    return objects, coroutines


#: measured in a fresh interpreter: a test runner's plugins add objects of their own to every task
_PROBE = (
    "import asyncio, json, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from test_run_footprint import Held, in_flight, single\n"
    "print(json.dumps(asyncio.run(in_flight(single(), Held()))))\n"
)


def test_a_run_in_flight_keeps_few_objects_alive() -> None:
    """A one-node run waiting on its model keeps at most 28 tracked objects alive, its backend's
    included (41 before: a closure, empty lists, a coroutine level per layer), and at most 7
    coroutines (13, then 9 before the runner, the fallback chain and the retry loop left a call's
    success path)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(HERE)],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    objects, coroutines = json.loads(out.stdout.splitlines()[-1])
    assert objects <= 28, f"{objects:.1f} tracked objects alive per run in flight"
    assert coroutines <= 7, f"{coroutines:.1f} coroutines alive per run in flight"


async def test_before_send_is_given_only_with_a_rate_limit() -> None:
    """The request carries ``before_send`` only when a rate-limit permit is there to renew."""
    free, limited = Held(), Held()
    free.release.set()
    limited.release.set()
    await single().run("q", runner=moa.Runner(models={"fake/*": free}))
    await single(rate_limit={"rpm": 6000}).run("q", runner=moa.Runner(models={"fake/*": limited}))
    assert free.requests[0].before_send is None
    assert limited.requests[0].before_send is not None
