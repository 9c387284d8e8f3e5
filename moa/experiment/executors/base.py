"""The executor seam of the score phase: an ``Executor`` scores one answer, here (``LocalExecutor``)
or on a Dask worker (``moa.experiment.executors.dask_executor``). Whatever scores, the driver stores
the score, so resume, the store and the summary do not depend on the executor."""

from __future__ import annotations

from typing import Any, Protocol

from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.eval.languages.names import canonical_language
from moa.eval.types import Evaluator, Score

__all__ = ["Executor", "LocalExecutor", "offloadable", "worker_limits"]


class Executor(Protocol):
    """Where an evaluator's ``score`` runs."""

    #: ``local``, ``dask`` or the scheduler's address, as written in ``summary.json``
    name: str
    #: processes that score (1 for the local executor)
    workers: int

    def slots_for(self, evaluator: object) -> int:
        """Scorings worth keeping in flight for ``evaluator`` (0: the experiment's concurrency)."""
        ...

    async def score(self, evaluator: Evaluator, item: Item, answer: str) -> Score:
        """``evaluator.score(item, answer)``, wherever this executor runs it."""
        ...

    async def aclose(self) -> None:
        """Release the workers (a cluster this executor started is shut down)."""
        ...


class LocalExecutor:
    """Every score on the driver's event loop: the sandbox's programs are its subprocesses."""

    name = "local"
    workers = 1

    def slots_for(self, evaluator: object) -> int:
        return 0

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
