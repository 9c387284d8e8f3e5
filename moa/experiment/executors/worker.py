"""What runs inside a Dask worker process: an execution answer's program (``score_on_worker``), and a
pair of a setup whose models are all local (``run_pair``). Shipped by reference (module and name), so
a worker needs moa installed, as the driver does; nothing here imports Dask.

A pair travels as a ``PairTask``: the setup's validated topology (it pickles whole, stages and
judges of a cascade included), the item, its cache scope and the replies the driver's store holds
for that item in that scope. It comes back as a ``PairOutcome``: the result or the error, as
``run_item`` gives them, and the replies the run added to the cache, for the driver to store.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moa._run import Runner
from moa.calls.call import CachedReply
from moa.calls.limits import RateLimits
from moa.errors import MoAError, ProviderError, UserError
from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.types import Score
from moa.experiment.conversation import run_item
from moa.experiment.store.cache import cache_key
from moa.models.base import Model, ModelRequest
from moa.models.gguf import PREFIX
from moa.models.registry import ModelRegistry
from moa.results import RunResult

if TYPE_CHECKING:
    from moa.models.local import LocalModel
    from moa.topology.definition import Topology

__all__ = [
    "ForeignWorker",
    "LocalModels",
    "NotRetried",
    "PairOutcome",
    "PairTask",
    "moa_version",
    "run_pair",
    "run_pair_async",
    "score_on_worker",
]


def moa_version() -> str:
    """The moa this process runs: a worker must run the driver's (its tasks are the driver's
    classes, pickled), and one without moa cannot even load this function."""
    from moa import __version__

    return __version__


class ForeignWorker(RuntimeError):
    """A task landed on a worker whose moa is not the driver's: one that joined after the check at
    the executor's opening (a dead worker's replacement, a cluster scaled up)."""


def same_moa(driver: str) -> None:
    """Raise ``ForeignWorker`` unless this process runs the ``driver``'s moa. Each task checks
    before it runs: the check at opening saw only the workers there then, and a task run by
    another moa returns figures computed by other code, with nothing in them to tell."""
    from moa import __version__

    if __version__ != driver:
        from distributed import get_worker  # only ever called inside a Dask task

        raise ForeignWorker(
            f"Dask worker {get_worker().address} runs moa {__version__}, the driver {driver}; "
            "every worker needs the driver's version"
        )


@dataclass(frozen=True, slots=True)
class NotRetried:
    """A task's failure that would fail alike when run again, returned instead of raised: Dask
    retries a task that raises, and ran a compile stopped by its limits (``CompileLimitReached``)
    twice more before it was reported, minutes each with Go or Rust. The driver raises ``error``."""

    error: UserError


def score_on_worker(driver: str, answer: str, item: Item, limits: dict[str, Any]) -> Score | NotRetried:
    """Run the answer's program in the worker's sandbox, if the worker runs the ``driver``'s moa. A
    fresh loop per task: a worker thread has no loop of its own, and the program's run time dwarfs
    the loop's creation. A ``UserError`` (the configuration's or the item's: a compile limit) comes
    back as ``NotRetried``; anything else raises, and Dask runs the task again."""
    same_moa(driver)
    try:
        return asyncio.run(score_execution_async(answer, item, **limits))
    except UserError as e:
        return NotRetried(e)


@dataclass(frozen=True, slots=True)
class PairTask:
    """One (setup, item, sample) pair to run away from the store."""

    topology: Topology
    item: Item
    #: the cache scope of the setup's sample (``sample_scope``)
    scope: str
    #: the replies the store holds for this item in ``scope``, by key
    replies: Mapping[str, CachedReply]
    deadline_s: float | None = None


@dataclass(slots=True)
class PairOutcome:
    """What ``run_item`` gave (a result and its turns, or an error carrying its calls), and the
    replies it added to the call cache."""

    result: RunResult | None
    turns: list[str] | None
    error: MoAError | None
    new_replies: dict[str, CachedReply] = field(default_factory=dict)


class LocalModels:
    """The local models one worker process holds for its life: each made on first use (its weights
    load with its first call) and kept, for every later pair, until ``aclose`` frees the weights.

    They come from the process-wide ``resolve_local_model``, so a model is loaded once per process
    whatever asks for it, with that function's checks, errors and idea of a model's shape. Only
    ``n_threads`` differs: an agent that names none gets the worker's share of the machine, not the
    whole machine each worker process would otherwise claim."""

    def __init__(self, n_threads: int) -> None:
        self.n_threads = n_threads
        #: pairs run with these models
        self.runs = 0
        self._lock = threading.Lock()
        self._held: dict[int, LocalModel] = {}

    @property
    def held(self) -> list[str]:
        """The models handed out so far, one per file and shape: ``file n_ctx=2048 n_threads=1``."""
        with self._lock:
            models = list(self._held.values())
        return [f"{m.path.name} n_ctx={m.n_ctx} n_threads={m.n_threads}" for m in models]

    def get(self, model: str, params: Mapping[str, Any]) -> LocalModel:
        """The model for an agent's ``local/...`` string and ``params``."""
        from moa.models.local import resolve_local_model  # llama.cpp's wrapper: only where it runs

        shaped = params if "n_threads" in params else {**params, "n_threads": self.n_threads}
        found = resolve_local_model(model, shaped)
        with self._lock:
            self._held.setdefault(id(found), found)
        return found

    def count_run(self) -> None:
        with self._lock:
            self.runs += 1

    async def aclose(self, *, others: Sequence[LocalModels] = ()) -> None:
        """Free the weights of every model held here and not by ``others`` (the models of other
        experiments on the same worker, which may be decoding with them)."""
        with self._lock:
            models, self._held = list(self._held.values()), {}
        busy = {key for other in others for key in other._keys()}
        for m in models:
            if id(m) not in busy:
                await m.aclose()

    def _keys(self) -> set[int]:
        with self._lock:
            return set(self._held)


class _WorkerRegistry(ModelRegistry):
    """The registry of a pair run with ``LocalModels``: its ``local/...`` models come from them,
    loaded once per worker, instead of from the process-wide ``resolve_local_model``."""

    def __init__(self, models: LocalModels) -> None:
        super().__init__()
        self._local = models

    def backend(
        self, model: str, *, api_base: str | None, transport: str, params: Mapping[str, Any]
    ) -> Model:
        if model.startswith(PREFIX):
            return self._local.get(model, params)
        return super().backend(model, api_base=api_base, transport=transport, params=params)


class _ReplayCache:
    """The pair's call cache away from the store: the replies the driver sent, plus those this run
    adds (``new``), which go back to the driver to be stored."""

    def __init__(self, scope: str, replies: Mapping[str, CachedReply], item_id: str) -> None:
        self.scope = scope
        self.item_id = item_id
        self._replies = replies
        self.new: dict[str, CachedReply] = {}
        #: key -> the request's key before keys held the item (``replies`` holds this item's only)
        self._legacy: dict[str, str] = {}

    def key(self, node: str, request: ModelRequest) -> str:
        key = cache_key(self.scope, node, request, self.item_id)
        self._legacy[key] = cache_key(self.scope, node, request)
        return key

    def get(self, key: str) -> CachedReply | None:
        found = self.new.get(key) or self._replies.get(key)
        legacy = self._legacy.get(key)
        return found if found is not None or legacy is None else self._replies.get(legacy)

    def put(self, key: str, value: CachedReply) -> None:
        self.new[key] = value


async def run_pair_async(task: PairTask, models: LocalModels | None = None) -> PairOutcome:
    """Run ``task`` as the answer phase runs a pair, with ``models`` (None: the process-wide local
    models). Every failure comes back in the outcome: the driver stores it as the pair's error, or
    stops the experiment on a ``UserError``, as it would for a pair it ran itself."""
    cache = _ReplayCache(task.scope, task.replies, task.item.id)
    # a registry of its own, empty: a setup some rate limit holds never moves (``movable``), its
    # limiter being the driver's; one here would make this process a second, unlimited caller
    runner = Runner(cache=cache, rate_limits=RateLimits())
    if models is not None:
        runner.registry = _WorkerRegistry(models)
        models.count_run()
    result: RunResult | None = None
    turns: list[str] | None = None
    error: MoAError | None = None
    try:
        result, turns = await run_item(runner, task.topology, task.item, deadline_s=task.deadline_s)
    except MoAError as e:
        error = e
    except Exception as e:  # a backend bug: stored as the pair's error, as run_pairs does
        error = ProviderError(f"{type(e).__name__}: {e}")
    finally:
        await runner.aclose()
    return PairOutcome(result, turns, error, cache.new)


def run_pair(task: PairTask, models: LocalModels) -> PairOutcome:
    """``run_pair_async`` on a fresh loop: a worker thread has none of its own."""
    return asyncio.run(run_pair_async(task, models))
