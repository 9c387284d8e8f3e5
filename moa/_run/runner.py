"""``Runner``: a run group (shared backends, resolved agents, rate limits, retry budgets, and
optionally a budget and a call cache) that runs a validated graph on one prompt, or streams it."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from pydantic import BaseModel

from moa._loops import PerLoop
from moa._run.engine import Execution, callable_name, checked
from moa._run.nodes import text_problem
from moa._run.typed import TypedOutput
from moa.calls.budget import Budget
from moa.calls.call import AgentRuntime, CallCache, own_rate_limit
from moa.calls.keys import check_agents
from moa.calls.limits import RateLimits, shared_rate_limits
from moa.calls.retry_budget import RetryBudgets
from moa.errors import RequestRefused, UserError
from moa.models.base import Message, Model, TokenCallback
from moa.models.registry import ModelRegistry
from moa.results import Done, RunInput, RunResult, Token
from moa.topology.graph import Graph
from moa.topology.spec import AgentSpec

if TYPE_CHECKING:
    from moa.otel import Telemetry

__all__ = [
    "CACHE_MAX",
    "Composite",
    "RunOptions",
    "Runnable",
    "Runner",
    "default_runner",
    "every_agent",
    "refuse_in_running_loop",
]


class Runnable(Protocol):
    """Anything with a validated graph and a name (a ``moa.Topology``)."""

    @property
    def graph(self) -> Graph: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    """A run's options as ``Runner.run`` took them, handed whole to a ``Composite``: one value
    instead of six keywords repeated at every level between the runner and the cascade's stages."""

    budget: Budget | None = None
    budget_usd: float | None = None
    deadline_s: float | None = None
    on_token: TokenCallback | None = None
    validate_output: Callable[[str], None] | None = None
    output_type: type[BaseModel] | Mapping[str, Any] | None = None


@runtime_checkable
class Composite(Protocol):
    """A target made of several graphs that runs them itself on a runner (a ``moa.cascade.Cascade``).

    It lives above this module, so the runner knows it only by this shape and hands it the run."""

    @property
    def name(self) -> str: ...

    def parts(self) -> Sequence[tuple[str, Graph]]:
        """(label, graph) of every graph it may run, for ``preflight``."""
        ...

    async def run_on(self, runner: Runner, prompt: RunInput, options: RunOptions) -> RunResult: ...


def _as_composite(target: Graph | Runnable) -> Composite | None:
    """``target`` if ``isinstance(target, Composite)``, else None: the same attribute test (members
    present, methods not None) without typing's walk of the protocol's classes on every call (~8 µs
    on Python 3.11), and a ``Graph`` at once."""
    if isinstance(target, Graph):
        return None
    if (
        getattr(target, "parts", None) is not None
        and getattr(target, "run_on", None) is not None
        and hasattr(target, "name")
    ):
        return cast(Composite, target)
    return None


def _output_check(
    validate_output: Callable[[str], None] | None, typed: TypedOutput | None, node: str
) -> Callable[[str], None] | None:
    """The output node's check: the caller's validator, then the typed output's, each named in the
    ``UserError`` its own bug becomes."""
    checks: list[Callable[[str], None]] = []
    if validate_output is not None:
        checks.append(checked(validate_output, f"validate_output `{callable_name(validate_output)}`", node))
    if typed is not None and typed.model is not None:
        # a pydantic model's own validators are the user's code too
        checks.append(checked(typed.validate, f"output_type `{typed.model.__name__}`", node))
    elif typed is not None:
        # a JSON Schema is checked by moa's own code: whatever it raises is about the reply
        checks.append(typed.validate)
    if len(checks) < 2:
        return checks[0] if checks else None
    first, second = checks

    def check(text: str) -> None:
        first(text)
        second(text)

    return check


#: the roles a chat input's messages may have (``developer`` is OpenAI's newer ``system``)
_ROLES = ("system", "developer", "user", "assistant")


def _split_input(prompt: RunInput) -> tuple[str, Sequence[Message]]:
    """The prompt and the chat history before it, or ``RequestRefused`` naming what is wrong: an
    empty prompt (every agent would be paid to answer nothing), a message that is not text (a
    ``None`` or a list of parts would fail the run at its first node, as that node's failure)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RequestRefused("empty (every agent would be paid to answer nothing)", field="prompt")
        if not prompt.isascii() and (problem := text_problem(prompt)):
            raise RequestRefused(problem, field="prompt")
        return prompt, ()
    if isinstance(prompt, Mapping):
        raise RequestRefused(
            "is one message: pass a list of messages (or the prompt as a string)", field="prompt"
        )
    if isinstance(prompt, bytes | bytearray) or not isinstance(prompt, Iterable):
        raise RequestRefused(
            f"must be a string or a list of messages, not {type(prompt).__name__}", field="prompt"
        )
    msgs = list(prompt)
    for i, m in enumerate(msgs):
        if not isinstance(m, Mapping):
            raise RequestRefused(
                f"message {i} is a {type(m).__name__}, not a mapping of `role` and `content`", field="prompt"
            )
        role = m.get("role")
        if role not in _ROLES:
            raise RequestRefused(
                f"message {i} has role {role!r}, not one of {', '.join(_ROLES)}", field="prompt"
            )
        content = m.get("content")
        if not isinstance(content, str):
            raise RequestRefused(
                f"message {i} ({role}) has content {type(content).__name__}, not text", field="prompt"
            )
        if problem := text_problem(content):
            raise RequestRefused(f"message {i} ({role}) {problem}", field="prompt")
    if not msgs or msgs[-1]["role"] != "user":
        raise RequestRefused("the last message of a chat input must be the user's turn", field="prompt")
    if not msgs[-1]["content"].strip():
        raise RequestRefused(
            f"message {len(msgs) - 1} (user) is empty (every agent would be paid to answer nothing)",
            field="prompt",
        )
    return msgs[-1]["content"], msgs[:-1]


#: the resolved agents and preflight-checked graphs a runner keeps: an application building a
#: topology per request on one shared runner kept every one it ever ran (12 KB a run, unbounded).
#: One pushed out is resolved again on its next use, to the same shared limiters and retry budgets.
CACHE_MAX = 1024


def _keep(cache: dict[int, Any], key: int, value: Any) -> None:
    """``cache[key] = value``, the oldest entry pushed out when the cache is full."""
    if key not in cache and len(cache) >= CACHE_MAX:
        del cache[next(iter(cache))]
    cache[key] = value


def refuse_in_running_loop(what: str, instead: str) -> None:
    """A sync helper (``run_sync``, ``Experiment.run``) called inside a running event loop (async
    code, Jupyter): a ``UserError`` naming the way there. ``asyncio.run`` refused with a
    RuntimeError and left the coroutine made for it never awaited."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop running: the case the helper is for
    raise UserError(
        f"{what} was called inside a running event loop (async code, Jupyter): use `{instead}` there"
    )


def _check_run_arguments(budget: object, deadline_s: object) -> None:
    """Refuse, in one line, a ``budget`` that is not a ``Budget`` (``budget=5.0`` failed every call
    with an AttributeError, reported as the nodes' failure) and a ``deadline_s`` that is not a
    number of seconds > 0 (a string raised a bare TypeError)."""
    if budget is not None and not isinstance(budget, Budget):
        hint = f" (a cap in USD: moa.Budget({budget!r}))" if isinstance(budget, int | float) else ""
        raise UserError(f"budget must be a moa.Budget, not {type(budget).__name__}{hint}")
    if deadline_s is not None and (
        isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float) or not deadline_s > 0
    ):
        raise UserError(f"deadline_s must be a number of seconds > 0 (got {deadline_s!r})")


def every_agent(target: Graph | Runnable) -> list[tuple[str, AgentSpec]]:
    """Every agent a run of ``target`` may call, as ``(label, spec)``, once per graph it is used in:
    the label names the agent (``agent `a```), after the part of a composite it belongs to (``stage
    2 (topology `p`): agent `a```). The one walk behind the checks up front (``preflight``, ``moa
    validate``, ``moa serve``), so they see what a run calls, a cascade's stage files and judges
    included, and name it alike."""
    composite = _as_composite(target)
    if composite is not None:
        parts = composite.parts()
    else:
        parts = [("", target if isinstance(target, Graph) else target.graph)]
    out: list[tuple[str, AgentSpec]] = []
    for where, graph in parts:
        used: dict[str, AgentSpec] = {}
        for n in graph.nodes.values():
            if n.agent is not None:
                used.setdefault(n.spec.agent or n.id, n.agent)
        out += [(f"{where}: agent `{name}`" if where else f"agent `{name}`", a) for name, a in used.items()]
    return out


def _register_limits(limits: RateLimits, agents: Sequence[tuple[str, AgentSpec]]) -> None:
    """Every agent's own ``rate_limit`` given to its endpoint's limiter before any agent is
    resolved: an agent of that endpoint without one shares it, whichever a run meets first."""
    for _, a in agents:
        if (limit := own_rate_limit(a)) is not None:
            for model in (a.model, *a.fallbacks):
                limits.register(model, a.api_base, limit)


async def _parsed(run: Coroutine[Any, Any, RunResult], typed: TypedOutput) -> RunResult:
    """The run's result, with its output parsed as ``typed``."""
    result = await run
    result.parsed = typed.parse(result.output)
    return result


class Runner:
    """A run group: shared backends (one litellm module, pooled HTTP clients, loaded local weights),
    resolved agents, rate limits and retry budgets, and optionally a ``Budget`` and a call cache
    shared by its runs.

    ``models`` maps model strings (or globs such as ``"sim/*"``) to ``Model`` instances that answer
    instead of the real provider: the way to plug in ``moa.testing`` fakes or a custom backend.
    ``rate_limits`` is the limiter registry; by default the process-wide one that
    ``moa.set_rate_limit`` configures, so limits hold across runners."""

    def __init__(
        self,
        *,
        models: Mapping[str, Model] | None = None,
        budget: Budget | None = None,
        cache: CallCache | None = None,
        rate_limits: RateLimits | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        _check_run_arguments(budget, None)
        self.registry = ModelRegistry(models)
        self.budget = budget
        self.cache = cache
        self.rate_limits = rate_limits if rate_limits is not None else shared_rate_limits()
        #: OpenTelemetry spans and metrics (``moa.otel.Telemetry``); None: off, at no cost
        self.telemetry = telemetry
        #: one retry budget per endpoint, shared by every run of this runner (and its scoped runners)
        self.retry_budgets = RetryBudgets()
        self._agents: dict[int, tuple[AgentSpec, AgentRuntime, int]] = {}
        self._checked: dict[int, Graph] = {}

    def preflight(self, target: Graph | Runnable, *, source: str | None = None) -> None:
        """Refuse, before any call, a graph whose models name an unknown provider or lack their API
        key (``moa.calls.keys``): one ``UserError``, one line per problem across every graph of
        ``target`` (each stage of a cascade, its judges), each naming the stage and agent. It also
        gives each agent's ``rate_limit`` to its endpoint's limiter, which the agents of that
        endpoint without one share. ``run`` does it once per target; an application or an
        experiment may call it up front."""
        if isinstance(target, Graph) and self._checked.get(id(target)) is target:
            return  # every run of a graph after its first (``run`` passes the graph)
        composite = _as_composite(target)
        if composite is not None:
            graphs = [g for _, g in composite.parts()]
            label = source or composite.name
        else:
            graphs = [target if isinstance(target, Graph) else target.graph]
            label = source or (target.name if not isinstance(target, Graph) else "graph")
        if all(self._checked.get(id(g)) is g for g in graphs):
            return
        answered = self.registry.override_for
        agents = every_agent(target)
        check_agents(agents, source=label, answered=lambda m: answered(m) is not None)
        _register_limits(self.rate_limits, agents)
        for g in graphs:
            _keep(self._checked, id(g), g)

    def runtime(self, agent: AgentSpec) -> AgentRuntime:
        """The agent resolved once per run group (identity-keyed: topologies are immutable)."""
        hit = self._agents.get(id(agent))
        # resolved before another agent's limit made a limiter its endpoint shares (another
        # topology served by the same runner): resolved again, to that limiter
        if hit is not None and hit[0] is agent and hit[2] == self.rate_limits.version:
            return hit[1]
        rt = AgentRuntime.resolve(
            agent,
            lambda model: self.registry.backend(
                model, api_base=agent.api_base, transport=agent.transport, params=agent.params
            ),
            lambda model: self.registry.override_for(model) is None,
            self.retry_budgets.for_endpoint,
            self.rate_limits.limiter_for,
        )
        _keep(self._agents, id(agent), (agent, rt, self.rate_limits.version))
        return rt

    def run(
        self,
        target: Graph | Runnable,
        prompt: RunInput,
        *,
        name: str | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
        on_token: TokenCallback | None = None,
        validate_output: Callable[[str], None] | None = None,
        output_type: type[BaseModel] | Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, RunResult]:
        """Run a validated graph (or a ``Topology``) on ``prompt``: ``await runner.run(...)``; raises a
        ``MoAError`` carrying every call made.

        ``validate_output`` checks the answer the way plans are checked: a ``MalformedReply`` it
        raises is retried like any malformed reply of the output node (and never cached).
        ``output_type`` (a pydantic model, or a JSON Schema) asks the output node for JSON matching
        it, checks the reply the same way, and puts the parsed value in ``RunResult.parsed``.

        Not a coroutine function itself: it checks its arguments and the graph, then returns the run
        to await, so that a caller awaiting it (``Topology.run``) adds no level between: each level
        is one more object per run in flight, and each wake-up passes it. A wrong argument is
        therefore raised at the call, which ``await runner.run(...)`` does not tell apart."""
        _check_run_arguments(budget, deadline_s)
        typed = TypedOutput(output_type) if output_type is not None else None
        composite = _as_composite(target)
        if composite is not None:
            self.preflight(target, source=name)
            # the cascade checks its stages' answers itself, each stage's run through here (the
            # schema was read above: one it cannot check is refused before any call)
            options = RunOptions(budget, budget_usd, deadline_s, on_token, validate_output, output_type)
            return composite.run_on(self, prompt, options)
        graph = target if isinstance(target, Graph) else target.graph
        label = name or (target.name if not isinstance(target, Graph) else "graph")
        self.preflight(graph, source=label)
        budgets = self._budgets(budget, budget_usd)
        text, history = _split_input(prompt)
        check = _output_check(validate_output, typed, graph.output)
        ex = Execution(self, graph, label, text, history, budgets, on_token, check)
        if typed is None:
            return ex.run(deadline_s)
        ex.output_instruction = typed.instruction()
        ex.vote_key = typed.key
        return _parsed(ex.run(deadline_s), typed)

    def _budgets(self, budget: Budget | None, budget_usd: float | None) -> tuple[Budget, ...]:
        """The budgets a run charges: the runner's, the run's and one of ``budget_usd``."""
        if budget is None and budget_usd is None:
            return () if self.budget is None else (self.budget,)
        # by identity: the runner's own budget passed again for the run must be charged once
        given = (self.budget, budget, Budget(budget_usd) if budget_usd is not None else None)
        return tuple({id(b): b for b in given if b is not None}.values())

    async def stream(
        self,
        target: Graph | Runnable,
        prompt: RunInput,
        *,
        name: str | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[Token | Done]:
        """Yield the output node's tokens as they decode (after the nodes it reads have finished),
        then ``Done(result)``. Errors are raised from the iterator; closing it cancels the run."""
        graph = target if isinstance(target, Graph) else target.graph
        queue: asyncio.Queue[Token | None] = asyncio.Queue()
        output = graph.output

        def on_token(text: str) -> None:
            queue.put_nowait(Token(output, text))

        task = asyncio.create_task(
            self.run(
                target,
                prompt,
                name=name,
                budget=budget,
                budget_usd=budget_usd,
                deadline_s=deadline_s,
                on_token=on_token,
            )
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
            yield Done(await task)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def scoped(self, *, cache: CallCache | None = None, budget: Budget | None = None) -> Runner:
        """A runner sharing this one's backends, resolved agents, rate limits and retry budgets, with
        its own call cache and budget (an experiment gives each setup its own cache scope). Close
        only the original."""
        r = Runner(budget=budget, cache=cache, rate_limits=self.rate_limits, telemetry=self.telemetry)
        r.registry, r._agents, r.retry_budgets = self.registry, self._agents, self.retry_budgets
        return r

    def sibling(self, *, cache: CallCache | None = None, budget: Budget | None = None) -> Runner:
        """Deprecated name of ``scoped``."""
        warnings.warn("Runner.sibling() is now Runner.scoped()", DeprecationWarning, stacklevel=2)
        return self.scoped(cache=cache, budget=budget)

    async def aclose(self) -> None:
        await self.registry.aclose()
        self._agents.clear()

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


#: each loop's default runner, forgotten when the loop ends (the runner's backends close their own
#: clients then): its clients hold the loop, so a weak key never let go (a loop, its runner and
#: sessions kept per ``asyncio.run``)
_default_runners: PerLoop[Runner] = PerLoop()


def default_runner() -> Runner:
    """The runner ``topology.run`` uses when given none: one per event loop, made on first use."""
    loop = asyncio.get_running_loop()
    r = _default_runners.get(loop)
    return r if r is not None else _default_runners.set(loop, Runner())
