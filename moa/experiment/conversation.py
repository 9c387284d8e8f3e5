"""Multi-turn items (MT-Bench's ``turns``): every turn runs in order through the setup's topology,
turn k with the earlier user turns and the setup's *own* earlier answers as chat history, and the
turns' results become one stored run.

The stored run's answer is the last turn's; ``turns`` holds every turn's answer. Its calls are all
the turns' calls (their ``started_s`` counted from the first turn's start), and its cost, tokens,
latency and critical path are the sums over turns: the turns of a conversation cannot overlap. A turn
that fails fails the run, and the error carries the calls of every turn made so far, so nothing paid
for is lost from the record. A ``deadline_s`` is the whole item's (one setup on one item), shared by
its turns: each turn gets what the turns before it left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from moa._run import Runner
from moa._run.engine import release_watch
from moa.cascade.context import item_scope
from moa.errors import MoAError, TimedOut
from moa.eval.datasets import Item
from moa.results import CallRecord, RunResult, Usage

__all__ = ["is_multi_turn", "run_item"]


def is_multi_turn(item: Item) -> bool:
    """Whether ``item`` has more than one user turn."""
    return item.turns is not None and len(item.turns) > 1


async def run_item(
    runner: Runner, topology: Any, item: Item, **kwargs: Any
) -> tuple[RunResult, list[str] | None]:
    """Run ``item`` through ``topology``: one run for a single turn; for a multi-turn item every turn
    in order, merged into one result. Returns the result and each turn's answer (None for one turn)."""
    # a cascade's `tests` rule checks answers against the item, which Runner.run does not carry
    with item_scope(item):
        return await _run_turns(runner, topology, item, **kwargs)


async def _run_turns(
    runner: Runner, topology: Any, item: Item, **kwargs: Any
) -> tuple[RunResult, list[str] | None]:
    if not is_multi_turn(item):
        return await runner.run(topology, item.input, **kwargs), None
    assert item.turns is not None
    deadline_s: float | None = kwargs.pop("deadline_s", None)
    t0 = time.perf_counter()
    history: list[dict[str, str]] = []
    results: list[RunResult] = []
    offset = 0.0
    calls: list[CallRecord] = []
    for k, question in enumerate(item.turns, 1):
        history.append({"role": "user", "content": question})
        # one deadline for the item: given whole to every turn, a conversation of n turns could
        # run n times as long as the experiment's `deadline_s` allows one run
        left = deadline_s
        if deadline_s is not None and k > 1:
            # to the millisecond: the run's TimedOut names it
            left = round(deadline_s - (time.perf_counter() - t0), 3)
        if left is not None and left <= 0:
            late = TimedOut(f"item `{item.id}` passed its deadline of {deadline_s}s before turn {k}")
            late.calls = calls
            raise late
        # a caller watching the item (the answer phase, for a Ctrl-C) watches the turn in flight
        release_watch()
        try:
            result = await runner.run(topology, list(history), deadline_s=left, **kwargs)
        except MoAError as e:
            # the earlier turns' calls were made and paid for: the error keeps them
            e.calls[:] = calls + _shifted(e.calls, offset)
            spent = deadline_s is not None and time.perf_counter() - t0 >= deadline_s
            if k > 1 and spent and isinstance(e, TimedOut):
                # the run's message names what was left of the deadline as if it were the whole
                e.message += f" (turn {k}: the item's turns share its deadline of {deadline_s}s)"
            raise
        calls.extend(_shifted(result.calls, offset))
        offset += result.latency_s
        results.append(result)
        history.append({"role": "assistant", "content": result.output})
    return _merge(results, calls), [r.output for r in results]


def _shifted(calls: Sequence[CallRecord], offset: float) -> list[CallRecord]:
    return [dataclasses.replace(c, started_s=c.started_s + offset) for c in calls]


def _merge(results: Sequence[RunResult], calls: list[CallRecord]) -> RunResult:
    last = results[-1]
    notes = {r.cost_note for r in results if r.cost_note}
    return RunResult(
        output=last.output,
        topology=last.topology,
        usage=sum((r.usage for r in results), Usage()),
        cost_usd=sum(r.cost_usd for r in results),
        latency_s=sum(r.latency_s for r in results),
        critical_path_s=sum(r.critical_path_s for r in results),
        calls=calls,
        nodes=last.nodes,
        unpriced_models=sorted({m for r in results for m in r.unpriced_models}),
        cost_note="; ".join(sorted(notes)) or None,
        run_id=last.run_id,
        stage=last.stage,  # a cascade: the stage that answered the last turn
        stages_run=max((r.stages_run for r in results if r.stages_run is not None), default=None),
    )
