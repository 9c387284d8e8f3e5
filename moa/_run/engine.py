"""The execution of one validated graph on one prompt.

Every node is a task in one ``asyncio.TaskGroup``; a node starts as soon as its inputs allow (all of
them, or ``quorum`` of them), so independent calls overlap and a run takes about as long as its
critical path. Node outcomes live in futures, so a failed worker under a quorum does not tear the
run down, while a failure nothing tolerates reaches the output and ends the run. Whatever happens,
the error raised carries every ``CallRecord`` made (``error.calls``) and the nodes computed.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Protocol

from moa import log
from moa._run.nodes import kind_of
from moa.calls.budget import Budget
from moa.calls.call import AgentRuntime, CallCache, CallContext
from moa.errors import MoAError, ProviderError, QuorumNotReached, TimedOut
from moa.models.base import Message, TokenCallback
from moa.results import NodeResult, RunResult, Usage
from moa.topology.graph import Graph, GraphNode
from moa.topology.spec import AgentSpec

__all__ = ["LOCAL_COST_NOTE", "Execution", "RunGroup"]

LOCAL_COST_NOTE = (
    "local-compute figure: the embedded model's calls are priced at 0 USD unless its agent sets `pricing`"
)


def _settle(fut: asyncio.Future[str], _task: asyncio.Task[None]) -> None:
    if not fut.done():
        fut.cancel()


class RunGroup(Protocol):
    """What an execution needs of its ``Runner``: resolved agents and the call cache."""

    cache: CallCache | None

    def runtime(self, agent: AgentSpec) -> AgentRuntime: ...


class Execution:
    """One run of one graph: a task per node, started as soon as its inputs allow."""

    def __init__(
        self,
        runner: RunGroup,
        graph: Graph,
        name: str,
        prompt: str,
        history: list[Message],
        budgets: tuple[Budget, ...],
        on_token: TokenCallback | None,
        validate_output: Callable[[str], None] | None,
    ) -> None:
        self.runner, self.graph, self.name = runner, graph, name
        self.prompt, self.history = prompt, history
        self.on_token = on_token
        self.validate_output = validate_output
        self.ctx = CallContext(
            t0=time.perf_counter(), budgets=budgets, cache=runner.cache, logger=log.logger()
        )
        loop = asyncio.get_running_loop()
        self.futures: dict[str, asyncio.Future[str]] = {nid: loop.create_future() for nid in graph.order}
        self.results = {nid: NodeResult(id=nid) for nid in graph.order}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.plans: dict[str, list[str]] = {}
        self.waiting = {nid: len(graph.nodes[nid].consumers) for nid in graph.order}

    async def run(self, deadline_s: float | None) -> RunResult:
        lg = self.ctx.logger
        if lg is not None:
            lg.info("run.start", topology=self.name, nodes=len(self.graph.order))
        out = self.futures[self.graph.output]
        timed_out = False
        async with asyncio.TaskGroup() as tg:
            for nid in self.graph.order:
                task = tg.create_task(self._node(self.graph.nodes[nid]), name=f"moa:{nid}")
                # a task cancelled before its first step never runs its handler: settle its future here
                task.add_done_callback(functools.partial(_settle, self.futures[nid]))
                self.tasks[nid] = task
            try:
                async with asyncio.timeout(deadline_s):
                    await asyncio.wait([out])
            except TimeoutError:
                timed_out = True
            finally:
                for t in self.tasks.values():
                    t.cancel()
        if timed_out:
            raise self._fail(TimedOut(f"run of `{self.name}` passed its deadline of {deadline_s}s"))
        if out.cancelled():
            raise self._fail(ProviderError(f"output node `{self.graph.output}` was cancelled"))
        exc = out.exception()
        if exc is not None:
            raise self._fail(exc if isinstance(exc, MoAError) else ProviderError(str(exc)))
        result = self._result(out.result())
        if lg is not None:
            lg.info(
                "run.end",
                topology=self.name,
                cost_usd=result.cost_usd,
                latency_s=round(result.latency_s, 4),
                calls=len(result.calls),
                **result.usage.to_dict(),
            )
        return result

    def _fail(self, error: MoAError) -> MoAError:
        error.calls = list(self.ctx.calls)
        error.nodes = self._finish_nodes()
        if self.ctx.logger is not None:
            self.ctx.logger.error("run.failed", topology=self.name, error=str(error), calls=len(error.calls))
        return error

    def _finish_nodes(self) -> dict[str, NodeResult]:
        per_node: dict[str, float] = {}
        for c in self.ctx.calls:
            per_node[c.node] = per_node.get(c.node, 0.0) + c.latency_s
        for nid, res in self.results.items():
            res.call_latency_s = per_node.get(nid, 0.0)
        return self.results

    def _result(self, output: str) -> RunResult:
        calls = self.ctx.calls
        nodes = self._finish_nodes()
        usage = Usage()
        cost = 0.0
        unpriced: set[str] = set()
        local = False
        for c in calls:
            usage = usage + c.usage
            cost += c.cost_usd
            if not c.priced:
                unpriced.add(c.model)
            local = local or c.local
        durations = {nid: r.call_latency_s for nid, r in nodes.items()}
        used = {nid: r.used_inputs for nid, r in nodes.items()}
        return RunResult(
            output=output,
            topology=self.name,
            usage=usage,
            cost_usd=cost,
            latency_s=time.perf_counter() - self.ctx.t0,
            critical_path_s=self.graph.critical_path_s(durations, used),
            calls=calls,
            nodes=nodes,
            unpriced_models=sorted(unpriced),
            cost_note=LOCAL_COST_NOTE if local else None,
        )

    async def _node(self, gn: GraphNode) -> None:
        res = self.results[gn.id]
        fut = self.futures[gn.id]
        try:
            refs, arrival, instruction = await self._inputs(gn)
            res.started_s = time.perf_counter() - self.ctx.t0
            res.status = "running"
            output = await kind_of(gn).execute(self, gn, refs, arrival, instruction)
        except asyncio.CancelledError:
            res.status = "cancelled"
            res.ended_s = time.perf_counter() - self.ctx.t0
            fut.cancel()
            raise
        except Exception as e:
            err = e if isinstance(e, MoAError) else ProviderError(f"{type(e).__name__}: {e}", node=gn.id)
            res.status, res.error = "failed", str(err)
            res.ended_s = time.perf_counter() - self.ctx.t0
            fut.set_exception(err)
            fut.exception()  # mark retrieved: consumers or the run report it
            return
        res.status, res.output = "ok", output
        res.ended_s = time.perf_counter() - self.ctx.t0
        fut.set_result(output)

    async def _inputs(self, gn: GraphNode) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str | None]:
        """Wait for what the node reads. Returns (references in input order, in arrival order, instruction)."""
        res = self.results[gn.id]
        instruction = None
        try:
            src = gn.spec.instruction_from
            if src is not None:
                fut = self.futures[src]
                await asyncio.wait([fut])
                if fut.cancelled():
                    raise ProviderError(f"node `{gn.id}`: its plan `{src}` was cancelled", node=gn.id)
                exc = fut.exception()
                if exc is not None:
                    raise exc
                assert gn.instruction_index is not None
                instruction = self.plans[src][gn.instruction_index]
                res.used_inputs.append(src)
            if not gn.inputs:
                return [], [], instruction
            got: dict[str, str] = {}
            arrival: list[str] = []
            errors: list[MoAError] = []
            pending = {self.futures[i]: i for i in gn.inputs}
            while pending and len(got) < gn.needed:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # answers that finished together are taken in input order, so ties break the same way every run
                for i in [i for f, i in pending.items() if f in done]:
                    self._collect(self.futures[i], i, got, arrival, errors)
                    del pending[self.futures[i]]
                if len(got) + len(pending) < gn.needed:
                    if gn.spec.quorum is None:
                        raise errors[0]
                    raise QuorumNotReached(
                        f"node `{gn.id}` needs {gn.needed} of its {len(gn.inputs)} inputs but only "
                        f"{len(got)} answered; first failure: {errors[0]}",
                        node=gn.id,
                        needed=gn.needed,
                        answered=len(got),
                        errors=errors,
                    )
            if pending and gn.spec.on_quorum == "wait":
                await asyncio.wait(pending)
                for f, i in pending.items():
                    self._collect(f, i, got, arrival, errors)
            res.used_inputs.extend(i for i in gn.inputs if i in got)
            return [(i, got[i]) for i in gn.inputs if i in got], [(i, got[i]) for i in arrival], instruction
        finally:
            self._release(gn)

    @staticmethod
    def _collect(
        f: asyncio.Future[str], i: str, got: dict[str, str], arrival: list[str], errors: list[MoAError]
    ) -> None:
        if f.cancelled():
            errors.append(ProviderError(f"input `{i}` was cancelled", node=i))
            return
        exc = f.exception()
        if exc is None:
            got[i] = f.result()
            arrival.append(i)
        else:
            errors.append(exc if isinstance(exc, MoAError) else ProviderError(str(exc), node=i))

    def _release(self, gn: GraphNode) -> None:
        """This node reads its inputs no more: cancel any input nobody else waits for (quorum stragglers)."""
        for i in gn.inputs:
            self.waiting[i] -= 1
            if self.waiting[i] == 0 and not self.futures[i].done():
                task = self.tasks.get(i)
                if task is not None:
                    task.cancel()
