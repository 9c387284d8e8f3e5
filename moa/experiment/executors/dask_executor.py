"""Dask workers: a ``LocalCluster`` on loopback (``dask``) or a running scheduler (``tcp://HOST:PORT``).
Two kinds of work move, both CPU-bound and independent: the sandboxed programs of execution scoring,
and the pairs of setups whose models are all local (``movable``), each worker loading a model once
and keeping it (``dask_plugin.LocalModelsPlugin``). API calls stay on the driver's event loop, where
one process drives thousands of them a second and the rate limits, the budget and the call cache
are single objects; and the driver alone writes the store (a moved pair takes its cached replies
along and brings its new ones back), so resume behaves as with the local executor.

A worker that dies loses its running task only: the scheduler hands it to another worker, and a
task that raises is retried ``RETRIES`` times before the driver records it as a failure (retried
by the next run); one that would fail alike again (a compile stopped by its limits) comes back at once. A connection to the scheduler that drops is waited for (``CONNECT_TIMEOUT_S``)
and the tasks Dask cancelled with it are sent again. A scheduler that goes away takes every task
with it: that is no pair's failure, so it is raised as one ``UserError`` naming the scheduler (the
answer phase stops, the pairs stored are kept, a re-run resumes), never stored as each pair's
error. ``distributed`` is the optional ``dask`` extra, imported when an executor opens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import uuid
from typing import Any

from moa.errors import UserError
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.eval.types import Evaluator, Score
from moa.experiment.executors.base import offloadable, worker_limits
from moa.experiment.executors.worker import (
    ForeignWorker,
    NotRetried,
    PairOutcome,
    PairTask,
    moa_version,
    score_on_worker,
)

__all__ = ["CONNECT_TIMEOUT_S", "INSTALL", "RETRIES", "DaskExecutor", "machine_cores", "require_distributed"]

#: how long a scheduler address may take to answer (a wrong address should fail fast, not hang),
#: and how long a lost connection to it may take to come back
CONNECT_TIMEOUT_S = 5.0
#: resubmissions of a scoring that raised on a worker (a worker's death is rescheduled apart from
#: these); a ``UserError`` is not raised there but returned (``NotRetried``): it would fail alike
RETRIES = 2
#: sandboxed programs (or local-model pairs) a ``dask`` cluster's worker runs at once (one worker per core)
THREADS_PER_WORKER = 1
INSTALL = "pip install 'moa-sdk[dask]'"
# how often a reconnecting client is looked at
_RECONNECT_POLL_S = 0.05
# the reason Dask gives the futures it cancels when the client loses its scheduler
_CONNECTION_LOST = "scheduler-connection-lost"


class _ConnectionLost(Exception):
    """A task's future was cancelled because the client lost its scheduler: sent again once the
    client is back."""


def _scheduler_id(client: Any) -> str | None:
    # the client refreshes the identity when it reconnects
    found = client.scheduler_info().get("id")
    return found if isinstance(found, str) else None


def machine_cores() -> int:
    """Cores this process may use: a ``dask`` cluster has one single-threaded worker per core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UserError(f"the dask executor needs the `dask` extra: {INSTALL}") from None
    return distributed


async def _started(client: Any) -> Any:
    return await client


def _driver_version() -> str:
    from moa import __version__

    return __version__


async def _check_workers(client: Any, target: str) -> None:
    """``UserError`` naming the first worker that cannot run moa or runs another version than the
    driver's: each of its tasks would fail (or unpickle into other classes), and every pair it ran
    was stored as an error, one by one, instead of the experiment stopping before any call."""
    from moa import __version__

    found: dict[str, Any] = await client.run(moa_version, on_error="return")
    for address, version in sorted(found.items()):
        if isinstance(version, BaseException):
            why = " ".join(f"{type(version).__name__}: {version}".split())
            raise UserError(
                f"executor `{target}`: Dask worker {address} cannot run moa ({why}); every worker "
                f"needs moa {__version__} installed, as the driver has"
            )
        if version != __version__:
            raise UserError(
                f"executor `{target}`: Dask worker {address} runs moa {version}, the driver "
                f"{__version__}; every worker needs the driver's version"
            )


class DaskExecutor:
    """Scores execution answers and runs local-model pairs on a Dask cluster; other evaluators
    score, and other setups run, on the driver."""

    def __init__(
        self, name: str, client: Any, cluster: Any, nthreads: dict[str, int], plugin: str | None = None
    ) -> None:
        self.name = name
        self._client = client
        self._cluster = cluster
        self.workers = len(nthreads)
        self._threads = sum(nthreads.values())
        #: the name of the workers' ``LocalModelsPlugin`` (None until it is installed)
        self.plugin = plugin
        self._scheduler_id = _scheduler_id(client)
        self._installing = asyncio.Lock()

    @classmethod
    async def open(
        cls, target: str, *, n_workers: int | None = None, threads_per_worker: int = THREADS_PER_WORKER
    ) -> DaskExecutor:
        """Start a loopback cluster (``dask``: ``n_workers``, by default one per core) or attach to
        the scheduler at ``target``."""
        distributed = require_distributed()
        if target == "dask":
            cluster = await distributed.LocalCluster(
                n_workers=n_workers or machine_cores(),
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                # its HTTP server (metrics, health) still starts: on 8787 by default, and when that port is
                # taken (another cluster) it moved with a warning; an ephemeral loopback port never clashes
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": False},
                silence_logs=logging.ERROR,
                asynchronous=True,
            )
            try:
                client = await distributed.Client(cluster, asynchronous=True)
            except BaseException:
                await cluster.close()
                raise
        else:
            cluster = None
            client = distributed.Client(target, asynchronous=True, timeout=CONNECT_TIMEOUT_S)
            try:
                # Dask's own timeout covers the TCP connect, not the handshake: a port that accepts
                # and never speaks would hang without this one
                await asyncio.wait_for(_started(client), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                await client.close()
                raise UserError(
                    f"executor `{target}`: no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s"
                ) from None
            except Exception as e:
                # another server answered (the dashboard's HTTP port, 8787, for the scheduler's
                # 8786): Dask read its reply as a frame length and raised MemoryError or ValueError
                # out of numpy, a 60-line traceback
                await client.close()
                why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
                raise UserError(
                    f"executor `{target}`: what answered there is not a Dask scheduler ({why})"
                ) from None
        try:
            # tasks sent to a scheduler without workers would wait for ever
            await client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            nthreads: dict[str, int] = dict(await client.nthreads())
        except (OSError, TimeoutError):
            await client.close()
            if cluster is not None:
                await cluster.close()
            raise UserError(
                f"executor `{target}`: the scheduler has no worker after {CONNECT_TIMEOUT_S:g} s"
            ) from None
        try:
            await _check_workers(client, target)
        except BaseException:
            await client.close()
            if cluster is not None:
                await cluster.close()
            raise
        return cls(target, client, cluster, nthreads)

    async def _plugin(self) -> str:
        """Install the local models' plugin on every worker, present and future, on first use: an
        experiment without local setups leaves the workers as it found them."""
        async with self._installing:
            if self.plugin is None:
                from moa.experiment.executors.dask_plugin import LocalModelsPlugin

                # one per executor: two experiments on one cluster neither share nor free each other's
                name = f"moa-local-models-{uuid.uuid4().hex[:12]}"
                await self._client.register_plugin(LocalModelsPlugin(), name=name)
                self.plugin = name
            return self.plugin

    def slots_for(self, evaluator: object) -> int:
        # twice the threads: each worker has its next program queued while one runs
        return 2 * self._threads if offloadable(evaluator) else 0

    def run_slots(self) -> int:
        # as for programs: a pair running on each thread and the next one queued
        return 2 * self._threads

    def _gone(self, why: str) -> UserError:
        return UserError(
            f"executor `{self.name}`: the Dask scheduler is gone ({why}); what finished is stored, "
            "re-run to resume"
        )

    async def _connected(self) -> None:
        """Return once the client is connected; ``UserError`` when it has lost its scheduler, or
        has not reached it again within ``CONNECT_TIMEOUT_S`` (a client that lost its scheduler
        accepts tasks and never answers: the experiment hung)."""
        client = self._client
        deadline = asyncio.get_running_loop().time() + CONNECT_TIMEOUT_S
        # Dask reconnects by itself: a blip of the network is no reason to stop the experiment
        while client.status == "connecting" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(_RECONNECT_POLL_S)
        if client.status == "connecting":
            raise self._gone(f"unreachable for {CONNECT_TIMEOUT_S:g} s")
        if client.status != "running":
            raise self._gone(f"client {client.status}")
        if _scheduler_id(client) != self._scheduler_id:
            # a restarted scheduler forgot the workers' plugin and every task sent to it
            raise self._gone("restarted")

    async def _submit(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on a worker; sent again when the client lost its connection while
        it ran and got it back (Dask cancels every future of a client that loses its scheduler)."""
        while True:
            await self._connected()
            future = self._client.submit(function, *args, retries=RETRIES, pure=False)
            try:
                return await self._result(future)
            except _ConnectionLost:
                continue

    async def _result(self, future: Any) -> Any:
        try:
            return await future
        except concurrent.futures.CancelledError as e:
            if getattr(e, "reason", None) == _CONNECTION_LOST:
                raise _ConnectionLost from None
            # Dask cancelled the task, not Ctrl-C (that is asyncio's CancelledError, passed on)
            raise self._gone(" ".join(str(e).split())) from None
        except ForeignWorker as e:
            raise UserError(f"executor `{self.name}`: {e}") from None
        except Exception:
            # a worker that joined after the opening's check without moa, or with a moa older than
            # the task's signature, fails the task before it starts: named, not each pair's error
            await self._check_late_joiners()
            raise

    async def _check_late_joiners(self) -> None:
        try:
            await _check_workers(self._client, self.name)
        except UserError:
            raise
        except Exception:
            pass  # the check itself failed (the scheduler going away): the task's error stands

    async def run_pair(self, task: PairTask) -> PairOutcome:
        from moa.experiment.executors.dask_plugin import run_pair_task

        await self._connected()
        plugin = await self._plugin()
        outcome: PairOutcome = await self._submit(run_pair_task, _driver_version(), plugin, task)
        return outcome

    async def score(self, evaluator: Evaluator, item: Item, answer: str) -> Score:
        if not (isinstance(evaluator, ExecutionEvaluator) and offloadable(evaluator, item)):
            return await evaluator.score(item, answer)
        score: Score | NotRetried = await self._submit(
            score_on_worker, _driver_version(), answer, item, worker_limits(evaluator)
        )
        if isinstance(score, NotRetried):
            raise score.error
        return score

    async def aclose(self) -> None:
        try:
            if self.plugin is not None and self._cluster is None:
                # an attached cluster outlives the experiment: its workers free the models now
                await self._client.unregister_worker_plugin(self.plugin)
        except (OSError, TimeoutError):
            pass  # the scheduler is gone, and the workers with it
        try:
            await self._client.close()
        finally:
            if self._cluster is not None:
                await self._cluster.close()
