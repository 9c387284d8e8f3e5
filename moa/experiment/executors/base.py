"""The executor seam of the answer and score phases: an ``Executor`` runs a pair of a setup whose
models are all local (``run_pair``) and scores one answer (``score``), here (``LocalExecutor``) or on
a Dask worker (``moa.experiment.executors.dask_executor``). Whatever runs or scores, the driver
stores the result, so resume, the call cache, the store and the summary do not depend on the
executor. ``movable`` and ``offloadable`` say what a worker may take."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from moa._run import Runner
from moa._run.runner import Composite
from moa.calls.budget import Budget
from moa.calls.call import own_rate_limit
from moa.cascade.rules import Custom
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.eval.languages.names import canonical_language
from moa.eval.types import Evaluator, Score
from moa.experiment.executors.worker import PairOutcome, PairTask, run_pair_async
from moa.models.gguf import PREFIX
from moa.topology.definition import Topology
from moa.topology.spec import AgentSpec

__all__ = ["Executor", "LocalExecutor", "movable", "offloadable", "worker_limits"]


class Executor(Protocol):
    """Where an evaluator's ``score`` runs."""

    #: ``local``, ``dask`` or the scheduler's address, as written in ``summary.json``
    name: str
    #: processes that score (1 for the local executor)
    workers: int

    def slots_for(self, evaluator: object) -> int:
        """Scorings worth keeping in flight for ``evaluator`` (0: the experiment's concurrency)."""
        ...

    def run_slots(self) -> int:
        """Pairs worth keeping in flight on workers (0: every pair runs on the driver)."""
        ...

    async def run_pair(self, task: PairTask) -> PairOutcome:
        """``task`` run wherever this executor runs a ``movable`` setup's pairs."""
        ...

    async def score(self, evaluator: Evaluator, item: Item, answer: str) -> Score:
        """``evaluator.score(item, answer)``, wherever this executor runs it."""
        ...

    async def aclose(self) -> None:
        """Release the workers (a cluster this executor started is shut down)."""
        ...


class LocalExecutor:
    """Every run and score on the driver's event loop: the sandbox's programs are its subprocesses."""

    name = "local"
    workers = 1

    def slots_for(self, evaluator: object) -> int:
        return 0

    def run_slots(self) -> int:
        return 0

    async def run_pair(self, task: PairTask) -> PairOutcome:
        return await run_pair_async(task)

    async def score(self, evaluator: Evaluator, item: Item, answer: str) -> Score:
        return await evaluator.score(item, answer)

    async def aclose(self) -> None:
        return None


def offloadable(evaluator: object, item: Item | None = None) -> bool:
    """Whether a worker can score ``item`` in the driver's stead: the execution evaluator itself (a
    subclass may depend on driver state), and not an HTML page, whose screenshot belongs in the
    driver's output folder."""
    if type(evaluator) is not ExecutionEvaluator:
        return False
    if item is None or not item.language:
        return True
    return canonical_language(item.language) != "html"


def worker_limits(evaluator: ExecutionEvaluator) -> dict[str, Any]:
    """The sandbox limits ``score_execution_async`` takes, as ``ExecutionEvaluator.score`` passes them."""
    return evaluator.config.model_dump(exclude={"name"})


def _agents(topology: Topology) -> Iterator[AgentSpec]:
    graphs = [g for _, g in topology.parts()] if isinstance(topology, Composite) else [topology.graph]
    for graph in graphs:
        for node in graph.nodes.values():
            if node.agent is not None:
                yield node.agent


def movable(topology: Topology, runner: Runner, budgets: tuple[Budget | None, ...] = ()) -> bool:
    """Whether a worker can run this setup's pairs in the driver's stead: every model it may call
    (every node, every stage and judge of a cascade, every fallback) is a ``local/...`` model the
    worker loads itself, and nothing in it needs the driver's objects: a backend the runner was
    given, a Python rule, a rate limit, or a priced call under a budget (its worst case is held
    on the driver's ``Budget`` before the call is made).

    A rate limit is any that holds one of its models here: the agent's own, or one in the runner's
    registry (``moa.set_rate_limit``'s process-wide one by default, for the model, its provider or
    its ``api_base``, or a limiter another agent's limit made for that endpoint). A limited
    endpoint is called from one process, the driver, so its limit holds in total; its limiter's
    windows are live objects of this process that no worker could share."""
    if isinstance(topology, Composite) and any(
        isinstance(s.rule, Custom) for s in getattr(topology, "stage_list", ())
    ):
        return False
    priced_matters = any(b is not None for b in budgets)
    for agent in _agents(topology):
        models = [agent.model, *agent.fallbacks]
        if not all(m.startswith(PREFIX) and runner.registry.override_for(m) is None for m in models):
            return False
        own = own_rate_limit(agent)
        if any(runner.rate_limits.applies(m, agent.api_base, own) for m in models):
            return False
        if priced_matters and agent.pricing is not None:
            return False
    return True
