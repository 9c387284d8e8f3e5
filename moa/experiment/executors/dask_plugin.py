"""The worker side of runs on Dask: a ``WorkerPlugin`` that holds a worker's local models for the
worker's life, and the task that runs one pair with them. Imports ``distributed``: only
``DaskExecutor.open`` imports this module, once the extra is known to be installed.

The models themselves come from the process-wide ``resolve_local_model`` cache (one load per file
and shape in a process, with its checks and errors); the plugin adds what that cache cannot know:
it is installed on every worker, those that join later included (a dead worker's replacement), it
gives the models a worker's share of the cores (``n_threads``: the worker's threads, not every core
of the machine, which each of N worker processes would claim), it counts what it ran, and removing
it (``DaskExecutor.aclose``) frees the weights on a cluster that outlives the experiment, unless
another experiment's plugin on the worker holds them too.
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin, get_worker

from moa.errors import UserError
from moa.experiment.executors.worker import LocalModels, PairOutcome, PairTask, run_pair, same_moa

__all__ = ["LocalModelsPlugin", "held_models", "run_pair_task"]


class LocalModelsPlugin(WorkerPlugin):
    """Holds one worker's ``LocalModels`` from the worker's start to its close (or the plugin's
    removal). ``n_threads`` (None: the worker's own threads) is what a model that names none gets."""

    def __init__(self, n_threads: int | None = None) -> None:
        self.n_threads = n_threads
        self.models: LocalModels | None = None

    def setup(self, worker: Any) -> None:
        self.models = LocalModels(self.n_threads or worker.state.nthreads)

    async def teardown(self, worker: Any) -> None:
        models, self.models = self.models, None
        if models is not None:
            # the loaded models are the process's: another experiment's plugin may hold them too
            others = [
                p.models
                for p in worker.plugins.values()
                if isinstance(p, LocalModelsPlugin) and p is not self and p.models is not None
            ]
            await models.aclose(others=others)


def _models(plugin: str) -> LocalModels:
    found = get_worker().plugins.get(plugin)
    models = getattr(found, "models", None)
    if not isinstance(models, LocalModels):
        # raised, so Dask runs the pair again (elsewhere) rather than the driver storing an error
        raise RuntimeError(f"worker plugin `{plugin}` is not installed on this worker")
    return models


def run_pair_task(driver: str, plugin: str, task: PairTask) -> PairOutcome:
    """Run ``task`` on this worker with the local models of the plugin named ``plugin``, if the
    worker runs the ``driver``'s moa."""
    same_moa(driver)
    outcome = run_pair(task, _models(plugin))
    if isinstance(outcome.error, UserError):
        # the same experiment runs on the driver: the problem is this worker's (no llama.cpp, no file).
        # Named in place: a new UserError lost the error's class (a refusal's field) and the calls
        # made before it, which the driver books
        error = outcome.error
        error.message = f"Dask worker {get_worker().address}: {error.message}"
        error.args = (error.message,)
    return outcome


def held_models(plugin: str, dask_worker: Any) -> dict[str, Any]:
    """For ``Client.run``: the pairs this worker ran and the models it holds (for tests and the
    benchmark: a model loads once per worker, not once per pair)."""
    models = dask_worker.plugins[plugin].models
    return {"runs": models.runs, "held": models.held}
