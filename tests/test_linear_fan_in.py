"""Fan-in with many inputs: readiness by counting keeps quorum, order, cancellation and errors as
they were when a node re-waited on its remaining inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import moa
from moa.errors import ProviderError, QuorumNotReached
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.results import RunResult, Usage

K = 300


class Gate:
    """Workers wait until the test releases them, in batches of its choosing (a batch settles in one
    event-loop turn); an exception released to a worker is raised by its call."""

    local = False

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[str | BaseException]] = {}

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        fut: asyncio.Future[str | BaseException] = asyncio.get_running_loop().create_future()
        self.waiting[request.model.removeprefix("gate/")] = fut
        out = await fut
        if isinstance(out, BaseException):
            raise out
        return ModelReply(out, Usage(1, 1), request.model)

    async def release(self, batches: Sequence[Sequence[str]], fail: frozenset[str] = frozenset()) -> None:
        for batch in batches:
            for w in batch:
                fut = self.waiting.pop(w)
                if not fut.done():
                    fut.set_result(ProviderError(f"{w} broke", node=w) if w in fail else f"answer {w}")
            for _ in range(4):  # let the batch settle and the fan-in look at it
                await asyncio.sleep(0)

    async def until_waiting(self, n: int) -> None:
        for _ in range(10_000):
            if len(self.waiting) >= n:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"only {len(self.waiting)} of {n} workers started")

    async def aclose(self) -> None:
        return None


def workers(k: int = K) -> list[str]:
    return [f"w{i:03d}" for i in range(k)]


def fan_in(inputs: Sequence[str], **node: Any) -> moa.Topology:
    """Workers defined in id order, one fan-in node reading ``inputs`` in the order given."""
    agents = {w: {"model": f"gate/{w}", "retry": {"max_attempts": 1}} for w in sorted(inputs)}
    nodes = [{"id": w, "agent": w} for w in sorted(inputs)]
    nodes.append({"id": "vote", "reduce": "first", "inputs": list(inputs), **node})
    return moa.Topology.model_validate({"name": "fan-in", "agents": agents, "nodes": nodes})


async def run_with(
    t: moa.Topology, gate: Gate, batches: Sequence[Sequence[str]], fail: frozenset[str] = frozenset()
) -> RunResult:
    async with moa.Runner(models={"gate/*": gate}) as runner:
        task = asyncio.create_task(t.run("q", runner=runner))
        await gate.until_waiting(len(t.graph.nodes) - 1)
        await gate.release(batches, fail)
        return await asyncio.wait_for(task, 30)


async def test_many_inputs_all_read_in_input_order() -> None:
    """300 inputs arriving one per turn in reverse, read by a fan-in that waits for all: refs in
    input order (a majority tie goes to the earliest listed, not the first to arrive)."""
    ws = workers()
    r = await run_with(fan_in(ws, reduce="majority"), Gate(), [[w] for w in reversed(ws)])
    assert r.output == f"answer {ws[0]}"
    assert r.nodes["vote"].used_inputs == ws


async def test_first_takes_the_first_answer_and_cancels_the_rest() -> None:
    """`reduce: first` without a quorum is the first answer to arrive: the other 299 are
    cancelled, not waited for (it waited for all, and any one failing failed it)."""
    ws = workers()
    r = await run_with(fan_in(ws), Gate(), [[ws[42]]], frozenset({ws[0]}))
    assert r.output == f"answer {ws[42]}" and r.nodes["vote"].used_inputs == [ws[42]]


async def test_inputs_settling_in_one_turn_are_taken_in_input_order() -> None:
    """A batch that settles together counts as arriving in the fan-in's input order."""
    ws = workers(10)
    listed = list(reversed(ws))  # the fan-in lists its inputs in reverse of their definition
    r = await run_with(
        fan_in(listed), Gate(), [[ws[2], ws[5], ws[7]], [w for w in ws if w not in (ws[2], ws[5], ws[7])]]
    )
    assert r.output == f"answer {ws[7]}"  # of the first batch, the one listed first


async def test_quorum_of_many_goes_on_and_cancels_the_stragglers() -> None:
    """Quorum 50 of 300: the node runs on the first 50 answers and the other 250 are cancelled."""
    ws = workers()
    first = ws[100:150]
    r = await run_with(fan_in(ws, quorum=50), Gate(), [[w] for w in first])
    assert r.nodes["vote"].used_inputs == first
    assert r.output == f"answer {first[0]}"
    statuses = {w: r.nodes[w].status for w in ws}
    assert [w for w, s in statuses.items() if s == "ok"] == first
    assert all(s == "cancelled" for w, s in statuses.items() if w not in first)


async def test_quorum_wait_keeps_every_straggler() -> None:
    """``on_quorum: wait`` reads all 300 inputs; stragglers follow the quorum in input order."""
    ws = workers()
    early = ws[200:210]
    gate = Gate()
    t = fan_in(ws, quorum=10, on_quorum="wait")
    r = await run_with(t, gate, [[w] for w in early] + [[w] for w in reversed(ws) if w not in early])
    assert r.nodes["vote"].used_inputs == ws
    assert r.output == f"answer {early[0]}"


async def test_a_batch_past_the_quorum_is_read_whole() -> None:
    """Answers that arrive together past the quorum are all read, as before."""
    ws = workers(20)
    r = await run_with(fan_in(ws, quorum=3), Gate(), [[ws[0]], ws[5:10]])
    assert r.nodes["vote"].used_inputs == [ws[0], *ws[5:10]]


async def test_quorum_not_reached_with_many_failures() -> None:
    """Quorum 250 of 300 with 60 failures: QuorumNotReached counting the answers, every call kept."""
    ws = workers()
    broken = frozenset(ws[:60])
    with pytest.raises(QuorumNotReached) as info:
        await run_with(fan_in(ws, quorum=250), Gate(), [[w] for w in ws], broken)
    err = info.value
    # one failure per turn: the 51st leaves 249 possible answers, fewer than 250
    assert (err.needed, err.answered, len(err.errors)) == (250, 0, 51)
    assert str(err).endswith("first failure: node `w000`, model `gate/w000`: w000 broke")
    assert {c.node for c in err.calls if c.error} >= set(ws[:51])


async def test_one_failure_without_quorum_fails_with_its_error() -> None:
    """Without a quorum one failing input of 300 fails the run with that input's own error."""
    ws = workers()
    with pytest.raises(ProviderError, match="w123 broke"):
        await run_with(fan_in(ws, reduce="majority"), Gate(), [[w] for w in ws[100:130]], frozenset({"w123"}))


async def test_cancelling_the_run_cancels_every_waiting_input() -> None:
    """A run cancelled while its fan-in waits on 300 inputs ends with every task cancelled."""
    ws = workers()
    gate = Gate()
    async with moa.Runner(models={"gate/*": gate}) as runner:
        task = asyncio.create_task(fan_in(ws, reduce="majority").run("q", runner=runner))
        await gate.until_waiting(K)
        await gate.release([[w] for w in ws[:5]])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert all(f.cancelled() for f in gate.waiting.values())
