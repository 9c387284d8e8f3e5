"""The execution of one validated graph on one prompt.

Every node is a task in one ``asyncio.TaskGroup``; a node starts as soon as its inputs allow (all of
them, or ``quorum`` of them), so independent calls overlap and a run takes about as long as its
critical path (a one-node graph has nothing to overlap: its node runs in the run's own task). Node
outcomes live in futures, so a failed worker under a quorum does not tear the run down, while a
failure nothing tolerates reaches the output and ends the run. Whatever happens, the error raised
carries every ``CallRecord`` made (``error.calls``) and the nodes computed.

A node waiting on its inputs does not re-wait on the ones still missing (O(k^2) for k inputs):
each input, as it settles, is put in the inbox of every node reading it, and the node counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from moa import log
from moa._run.nodes import kind_of
from moa.calls.budget import Budget
from moa.calls.call import AgentRuntime, CallCache, build_call_context
from moa.errors import (
    BudgetExceeded,
    MoAError,
    ProviderError,
    QuorumNotReached,
    StoreError,
    TimedOut,
    UserError,
)
from moa.models.base import Message, TokenCallback
from moa.results import (
    CallRecord,
    NodeResult,
    RunResult,
    Usage,
    build_node_result,
    build_run_result,
    new_run_id,
)
from moa.scrub import scrubbed_failure
from moa.topology.graph import Graph, GraphNode
from moa.topology.spec import AgentSpec

__all__ = [
    "LOCAL_COST_NOTE",
    "Execution",
    "RunGroup",
    "RunWatch",
    "checked",
    "claim_watch",
    "log_cancelled",
    "release_watch",
    "stamp_failure",
    "watch_run",
]

LOCAL_COST_NOTE = (
    "local-compute figure: the embedded model's calls are priced at 0 USD unless its agent sets `pricing`"
)


def _totals(calls: Sequence[CallRecord]) -> dict[str, Any]:
    return {
        "calls": len(calls),
        "cost_usd": sum(c.cost_usd for c in calls),
        "cost_usd_max": sum(c.cost_usd_max for c in calls),
    }


def stamp_failure(
    error: MoAError,
    *,
    run_id: str,
    calls: Sequence[CallRecord],
    nodes: dict[str, NodeResult],
    logger: Any,
    event: str,
    topology: str,
) -> MoAError:
    """``error`` carrying the failed run's id, every call it made and its nodes, logged as ``event``:
    the one way a run, or a cascade of runs, hands its account to the error it raises."""
    error.run_id = run_id
    error.calls = list(calls)
    error.nodes = nodes
    if logger is not None:
        logger.error(event, topology=topology, error=str(error), **_totals(calls))
    return error


def _node_bug(e: Exception, node: str) -> ProviderError:
    """A node's own code failing with something not moa's (a cache of the user's, a callback): its
    text never went through a backend's scrubbing, and reaches the error, ``run.failed`` and
    ``moa serve``'s log, so the keys in the environment are masked as a backend's error's are."""
    return ProviderError(scrubbed_failure(e), node=node)


def _worst_case(cost_usd: float, cost_usd_max: float) -> dict[str, float]:
    return {"cost_usd_max": cost_usd_max} if cost_usd_max > cost_usd else {}


def log_cancelled(logger: Any, event: str, topology: str, calls: Sequence[CallRecord]) -> None:
    """A run cancelled by its caller raises no error of moa's to carry its calls: what they cost (the
    worst case of those cut off in flight included) goes to the log instead of vanishing."""
    if logger is not None:
        logger.warning(event, topology=topology, **_totals(calls))


@dataclass(slots=True)
class RunWatch:
    """What the caller of a run learns of it while it is in flight: its id and its calls so far
    (the run's own list, each call's record in once it ends, a call cut off by a cancellation
    included). A run cancelled by its caller raises no error to carry its calls: through this, the
    caller (a cascade running a stage, serve a request whose client left) can still account for
    them. The first run, or cascade, started under ``watch_run`` claims it."""

    run_id: str | None = None
    calls: Sequence[CallRecord] = ()


_WATCH: ContextVar[RunWatch | None] = ContextVar("moa_run_watch", default=None)


@contextlib.contextmanager
def watch_run() -> Iterator[RunWatch]:
    """A ``RunWatch`` claimed by the run (or cascade) started in this block."""
    watch = RunWatch()
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def release_watch() -> None:
    """Let the next run started here claim the watch the last one claimed: a conversation's next
    turn, whose calls a Ctrl-C cuts off in flight while the first turn's are long settled."""
    watch = _WATCH.get()
    if watch is not None:
        watch.run_id, watch.calls = None, ()


def claim_watch(run_id: str, calls: Sequence[CallRecord]) -> None:
    """A run (or cascade) starting: tell its caller, if it watches, the run's id and calls."""
    watch = _WATCH.get()
    if watch is not None and watch.run_id is None:
        watch.run_id, watch.calls = run_id, calls


def checked(check: Callable[[str], None], what: str, node: str) -> Callable[[str], None]:
    """``check`` (an answer's validator) with its own bugs turned into a ``UserError`` naming ``what``
    and the node. A validator that crashes (a ``KeyError`` in the user's code) says nothing about the
    reply: as a model failure it would be retried and paid again, and escalated by a cascade. Its
    ``MoAError`` (a ``MalformedReply`` rejecting the answer) passes through."""

    def run_check(text: str) -> None:
        try:
            check(text)
        except MoAError:
            raise
        except Exception as e:
            raise UserError(f"node `{node}`: {what} raised {type(e).__name__}: {e}") from e

    return run_check


def callable_name(fn: object) -> str:
    """How a user's function is named in a message: its qualified name, else its type's."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def answer_nodes(graph: Graph) -> frozenset[str]:
    """The agent nodes whose reply can become ``graph``'s output (see ``Execution.answers``)."""
    if graph.nodes[graph.output].agent is not None:
        return frozenset((graph.output,))
    found: set[str] = set()
    seen: set[str] = set()
    stack = [graph.output]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        gn = graph.nodes[nid]
        if gn.agent is None:
            stack.extend(gn.inputs)
        else:
            found.add(nid)
    return frozenset(found)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Inbox:
    """The inputs of one waiting node that have settled and that it has not looked at yet.

    The engine puts an input here the moment its future settles, and the node is woken one loop
    turn later, as ``asyncio.wait`` would wake it; whatever settled by the time it runs is its next
    batch. So each input is handled once, in O(1), however many inputs the node has."""

    __slots__ = ("arrived", "closed", "loop", "wake", "want")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.arrived: list[str] = []
        self.wake: asyncio.Future[None] | None = None
        #: how many settled inputs wake the node
        self.want = 1
        self.closed = False

    def put(self, nid: str) -> None:
        if self.closed:
            return
        self.arrived.append(nid)
        if len(self.arrived) == self.want and self.wake is not None:
            self.loop.call_soon(_wake, self.wake)

    async def take(self, at_least: int = 1) -> list[str]:
        """The inputs settled since the last take, once there are ``at_least`` of them."""
        self.want = at_least
        self.wake = self.loop.create_future()
        if len(self.arrived) >= at_least:
            # already there: still yield for a turn, as asyncio.wait on a settled future does, so
            # inputs settling in the same turn are taken in the same batch
            self.loop.call_soon(_wake, self.wake)
        try:
            await self.wake
        finally:
            self.wake = None
        batch, self.arrived = self.arrived, []
        return batch


#: (input node id, its output), in input order or in arrival order
Refs = Sequence[tuple[str, str]]

#: the references of a node that reads no input
_NO_REFS: Refs = ()


class RunGroup(Protocol):
    """What an execution needs of its ``Runner``: resolved agents and the call cache."""

    cache: CallCache | None

    def runtime(self, agent: AgentSpec) -> AgentRuntime: ...


class Execution:
    """One run of one graph: a task per node, started as soon as its inputs allow."""

    # slots: with hundreds of runs in flight, every object a run keeps alive is walked by each of
    # the collector's passes (a __dict__ is one more)
    __slots__ = (
        "answers",
        "ctx",
        "futures",
        "graph",
        "history",
        "name",
        "on_token",
        "output_instruction",
        "plans",
        "prompt",
        "readers",
        "results",
        "run_id",
        "runner",
        "tasks",
        "validate_output",
        "vote_key",
        "waiting",
    )

    def __init__(
        self,
        runner: RunGroup,
        graph: Graph,
        name: str,
        prompt: str,
        history: Sequence[Message],
        budgets: tuple[Budget, ...],
        on_token: TokenCallback | None,
        validate_output: Callable[[str], None] | None,
    ) -> None:
        self.runner, self.graph, self.name = runner, graph, name
        self.prompt, self.history = prompt, history
        self.on_token = on_token
        self.validate_output = validate_output
        #: appended to the prompt of each node in ``answers`` (typed output: the JSON Schema)
        self.output_instruction: str | None = None
        #: typed output: what a ``majority`` over checked replies compares (their parsed values)
        self.vote_key: Callable[[str], str] | None = None
        #: the agent nodes whose reply can become the run's output: the output node, or under a
        #: reduce output (which returns one of its inputs' replies as it is) the agent nodes
        #: feeding it. Each is told the output schema and its reply checked as the output is.
        self.answers = answer_nodes(graph)
        #: names this run in log events, the RunResult, serve's reply and OpenTelemetry spans: 16 hex
        #: digits, random (a uuid4's hex cut to 16 costs four times as much to make)
        self.run_id = new_run_id()
        self.ctx = build_call_context(
            time.perf_counter(),
            budgets,
            runner.cache,
            log.for_run(self.run_id),
            getattr(runner, "telemetry", None),
        )
        claim_watch(self.run_id, self.ctx.calls)
        loop = asyncio.get_running_loop()
        # one pass, not three comprehensions (each a function called per run)
        self.futures: dict[str, asyncio.Future[str]] = {}
        self.results: dict[str, NodeResult] = {}
        self.waiting: dict[str, int] = {}
        for nid in graph.order:
            self.futures[nid] = loop.create_future()
            self.results[nid] = build_node_result(nid)
            self.waiting[nid] = len(graph.nodes[nid].consumers)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.plans: dict[str, list[str]] = {}
        #: input id -> the inboxes of the nodes waiting for it to settle
        self.readers: dict[str, list[_Inbox]] = {}

    def run(self, deadline_s: float | None) -> Coroutine[Any, Any, RunResult]:
        """The run, to await. Not a coroutine itself: untraced, the run is ``_run`` with no level
        between (each level is one more object per run in flight, and each wake-up passes it)."""
        tel = self.ctx.telemetry
        if tel is None:
            return self._run(deadline_s)
        # node tasks are created inside the span, so their spans (and their calls') are its children
        traced: Coroutine[Any, Any, RunResult] = tel.traced(
            self.name, self.run_id, self._run(deadline_s), self.ctx.calls
        )
        return traced

    async def _run(self, deadline_s: float | None) -> RunResult:
        if deadline_s is not None:
            # a retry whose wait would end past this is not waited for (its fallbacks get the time)
            self.ctx.deadline = asyncio.get_running_loop().time() + deadline_s
        lg = self.ctx.logger
        if lg is not None:
            lg.info("run.start", topology=self.name, nodes=len(self.graph.order))
        out = self.futures[self.graph.output]
        try:
            if len(self.graph.order) > 1:
                timed_out = await self._all(out, deadline_s)
            elif deadline_s is None:
                # a one-node graph with no deadline: the node is the run, in the run's own task
                await self._node(self.graph.nodes[self.graph.output])
                timed_out = False
            else:
                timed_out = await self._alone(self.graph.nodes[self.graph.output], deadline_s)
        except asyncio.CancelledError:
            # the node tasks have stopped by now, each call's record in
            log_cancelled(lg, "run.cancelled", self.name, self.ctx.calls)
            raise
        if timed_out:
            raise self._fail(TimedOut(f"run of `{self.name}` passed its deadline of {deadline_s}s"))
        if out.cancelled():
            raise self._fail(ProviderError(f"output node `{self.graph.output}` was cancelled"))
        exc = out.exception()
        if exc is not None:
            raise self._fail(exc if isinstance(exc, MoAError) else ProviderError(str(exc)))
        result = self._result(out.result())
        if lg is not None and lg.info_on:  # not built for a logger that writes warnings only
            lg.info(
                "run.end",
                topology=self.name,
                cost_usd=result.cost_usd,
                latency_s=round(result.latency_s, 4),
                calls=len(result.calls),
                **result.usage.to_dict(),
                # calls cut off in flight (a quorum's stragglers) may be billed up to this, as
                # run.failed and run.cancelled say
                **_worst_case(result.cost_usd, result.cost_usd_max),
            )
        return result

    async def _all(self, out: asyncio.Future[str], deadline_s: float | None) -> bool:
        """Every node in a task of its own, until the output settles; True if the deadline passed."""
        timed_out = False
        async with asyncio.TaskGroup() as tg:
            for nid in self.graph.order:
                task = tg.create_task(self._node(self.graph.nodes[nid]), name=f"moa:{nid}")
                # a task cancelled before its first step never runs its handler: settle its future here
                task.add_done_callback(functools.partial(self._settle_unsettled, nid))
                self.tasks[nid] = task
            try:
                async with asyncio.timeout(deadline_s):
                    await asyncio.wait([out])
            except TimeoutError:
                timed_out = True
            finally:
                for t in self.tasks.values():
                    t.cancel()
        return timed_out

    async def _alone(self, gn: GraphNode, deadline_s: float) -> bool:
        """A one-node graph under a deadline: the node runs in the run's own task; True if the
        deadline passed.

        Nothing could overlap it, so a task of its own would buy nothing but a loop turn to start it
        and another to wake the run. Cancelled (by the deadline or by the caller), the node settles
        its future as cancelled and re-raises, as its task would; its failures land in its future."""
        try:
            async with asyncio.timeout(deadline_s) as cm:
                await self._node(gn)
        except TimeoutError:
            return True
        # a backend that swallowed the deadline's cancellation still leaves the run late
        return cm.expired()

    def _fail(self, error: MoAError) -> MoAError:
        return stamp_failure(
            error,
            run_id=self.run_id,
            calls=self.ctx.calls,
            nodes=self._finish_nodes(),
            logger=self.ctx.logger,
            event="run.failed",
            topology=self.name,
        )

    def _finish_nodes(self) -> dict[str, NodeResult]:
        results = self.results
        for res in results.values():
            res.call_latency_s = 0.0
        for c in self.ctx.calls:
            node = results.get(c.node)
            if node is not None:
                node.call_latency_s += c.latency_s
        return results

    def _result(self, output: str) -> RunResult:
        calls = self.ctx.calls
        nodes = self._finish_nodes()
        if len(calls) == 1:  # one call (every single-agent run): its usage is the run's, shared
            c = calls[0]
            usage, cost, local = c.usage, c.cost_usd, c.local
            unpriced = [] if c.priced else [c.model]
        else:
            usage, cost, unpriced, local = _summed(calls)
        if len(nodes) == 1:
            # one node: its calls' latency is the whole critical path
            critical = next(iter(nodes.values())).call_latency_s
        else:
            durations = {nid: r.call_latency_s for nid, r in nodes.items()}
            used = {nid: r.used_inputs for nid, r in nodes.items()}
            critical = self.graph.critical_path_s(durations, used)
        # not the constructor: by keyword it cost a run about 9k instructions
        return build_run_result(
            output,
            self.name,
            usage,
            cost,
            time.perf_counter() - self.ctx.t0,
            critical,
            calls,
            nodes,
            unpriced,
            LOCAL_COST_NOTE if local else None,
            self.run_id,
            _finish_reason(calls, self.graph.output),
        )

    async def _node(self, gn: GraphNode) -> None:
        res = self.results[gn.id]
        fut = self.futures[gn.id]
        try:
            if gn.inputs or gn.spec.instruction_from is not None:
                refs, arrival, instruction = await self._inputs(gn)
            else:
                refs, arrival, instruction = _NO_REFS, _NO_REFS, None
            res.started_s = time.perf_counter() - self.ctx.t0
            res.status = "running"
            tel = self.ctx.telemetry
            if tel is None:
                output = await kind_of(gn).execute(self, gn, refs, arrival, instruction)
            else:
                with tel.node_span(gn.id, gn.agent.model if gn.agent is not None else None):
                    output = await kind_of(gn).execute(self, gn, refs, arrival, instruction)
        except asyncio.CancelledError:
            res.status = "cancelled"
            res.ended_s = time.perf_counter() - self.ctx.t0
            fut.cancel()
            self._settled(gn.id)
            raise
        except Exception as e:
            err = e if isinstance(e, MoAError) else _node_bug(e, gn.id)
            res.status, res.error = "failed", str(err)
            res.ended_s = time.perf_counter() - self.ctx.t0
            fut.set_exception(err)
            fut.exception()  # mark retrieved: consumers or the run report it
            self._settled(gn.id)
            return
        res.status, res.output = "ok", output
        res.ended_s = time.perf_counter() - self.ctx.t0
        fut.set_result(output)
        self._settled(gn.id)

    def _settle_unsettled(self, nid: str, _task: asyncio.Task[None]) -> None:
        fut = self.futures[nid]
        if not fut.done():
            fut.cancel()
            self._settled(nid)

    def _settled(self, nid: str) -> None:
        """``nid``'s future has just settled: tell the nodes waiting for it."""
        for inbox in self.readers.pop(nid, ()):
            inbox.put(nid)

    def _listen(self, gn: GraphNode) -> _Inbox:
        """An inbox for ``gn``'s inputs, holding (in input order) those already settled."""
        inbox = _Inbox(asyncio.get_running_loop())
        for i in gn.inputs:
            if self.futures[i].done():
                inbox.arrived.append(i)
            else:
                self.readers.setdefault(i, []).append(inbox)
        return inbox

    async def _inputs(self, gn: GraphNode) -> tuple[Refs, Refs, str | None]:
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
            got, arrival = await self._gather(gn)
            res.used_inputs.extend(i for i in gn.inputs if i in got)
            return [(i, got[i]) for i in gn.inputs if i in got], [(i, got[i]) for i in arrival], instruction
        finally:
            self._release(gn)

    async def _gather(self, gn: GraphNode) -> tuple[dict[str, str], list[str]]:
        """The inputs' answers (by id, and the ids in arrival order) once ``needed`` answered, or the
        error: the first failure without a quorum, ``QuorumNotReached`` when too many failed."""
        got: dict[str, str] = {}
        arrival: list[str] = []
        errors: list[MoAError] = []
        taken: set[str] = set()
        inbox = self._listen(gn)
        unsettled = len(gn.inputs)
        position: dict[str, int] | None = None
        try:
            while unsettled and len(got) < gn.needed:
                batch = await inbox.take()
                if len(batch) > 1:
                    # answers that finished together are taken in input order, so ties break the
                    # same way every run
                    if position is None:
                        position = {i: k for k, i in enumerate(gn.inputs)}
                    batch.sort(key=position.__getitem__)
                for i in batch:
                    self._collect(self.futures[i], i, got, arrival, errors)
                taken.update(batch)
                unsettled -= len(batch)
                if len(got) + unsettled < gn.needed:
                    if gn.spec.quorum is None:
                        raise errors[0]
                    # the budget refused the calls the quorum needed: say so, not "no quorum"
                    refused = next((e for e in errors if isinstance(e, BudgetExceeded)), None)
                    if refused is not None:
                        raise refused
                    ids = [i for i in gn.inputs if i in taken and i not in got]
                    failed = ", ".join(f"`{i}`" for i in ids[:5]) + (
                        f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                    )
                    raise QuorumNotReached(
                        f"node `{gn.id}` needs {gn.needed} of its {len(gn.inputs)} inputs but only "
                        f"{len(got)} answered; failed: {failed}; first failure: {errors[0]}",
                        node=gn.id,
                        needed=gn.needed,
                        answered=len(got),
                        errors=errors,
                    )
            if unsettled and gn.spec.on_quorum == "wait":
                await inbox.take(at_least=unsettled)
                # the stragglers are taken in input order
                for i in gn.inputs:
                    if i not in taken:
                        self._collect(self.futures[i], i, got, arrival, errors)
        finally:
            inbox.closed = True
        return got, arrival

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
        elif isinstance(exc, StoreError):
            # the store could not keep a reply paid for: no quorum absorbs it, as going on would
            # pay for more replies it cannot keep
            raise exc
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


def _summed(calls: Sequence[CallRecord]) -> tuple[Usage, float, list[str], bool]:
    """The calls' usage and cost added up, the models without a price, and whether any was local."""
    prompt_tokens = completion_tokens = cached_tokens = cache_write_tokens = write_1h_tokens = 0
    cost = 0.0
    unpriced: set[str] = set()
    local = False
    for c in calls:
        u = c.usage
        prompt_tokens += u.prompt_tokens
        completion_tokens += u.completion_tokens
        cached_tokens += u.cached_tokens
        cache_write_tokens += u.cache_write_tokens
        write_1h_tokens += u.cache_write_1h_tokens
        cost += c.cost_usd
        if not c.priced:
            unpriced.add(c.model)
        local = local or c.local
    usage = Usage(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, write_1h_tokens)
    return usage, cost, sorted(unpriced), local


def _finish_reason(calls: list[CallRecord], output: str) -> str | None:
    """The finish reason of the output node's answering call (its last without an error)."""
    for c in reversed(calls):
        if c.node == output and c.error is None:
            return c.finish_reason
    return None
