"""Execution scoring on Dask workers: a ``LocalCluster`` on loopback (``dask``) or a running scheduler
(``tcp://HOST:PORT``). Only the sandboxed programs move: they are CPU-bound and independent. Model
calls stay on the driver's event loop, where one process drives thousands of API calls a second and
the rate limits, the budget and the call cache are single objects; and the driver alone writes the
store, so resume behaves as with the local executor.

A worker that dies loses its running task only: the scheduler hands it to another worker, and a
scoring that raises is retried ``RETRIES`` times before the driver records it as a failure (retried
by the next run). ``distributed`` is the optional ``dask`` extra, imported when an executor opens.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from moa.errors import UserError
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator
from moa.eval.types import Evaluator, Score
from moa.experiment.executors.base import offloadable, worker_limits
from moa.experiment.executors.worker import score_on_worker

__all__ = ["CONNECT_TIMEOUT_S", "INSTALL", "RETRIES", "DaskExecutor", "machine_cores"]

#: how long a scheduler address may take to answer: a wrong address should fail fast, not hang
CONNECT_TIMEOUT_S = 5.0
#: resubmissions of a scoring that raised on a worker (a worker's death is rescheduled apart from these)
RETRIES = 2
#: sandboxed programs a ``dask`` cluster's worker runs at once (one worker per core)
THREADS_PER_WORKER = 1
INSTALL = "pip install 'moa-sdk[dask]'"


def machine_cores() -> int:
    """Cores this process may use: a ``dask`` cluster has one single-threaded worker per core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UserError(f"the dask executor needs the `dask` extra: {INSTALL}") from None
    return distributed


async def _started(client: Any) -> Any:
    return await client


class DaskExecutor:
    """Scores execution answers on a Dask cluster; other evaluators score on the driver."""

    def __init__(self, name: str, client: Any, cluster: Any, nthreads: dict[str, int]) -> None:
        self.name = name
        self._client = client
        self._cluster = cluster
        self.workers = len(nthreads)
        self._threads = sum(nthreads.values())

    @classmethod
    async def open(
        cls, target: str, *, n_workers: int | None = None, threads_per_worker: int = THREADS_PER_WORKER
    ) -> DaskExecutor:
        """Start a loopback cluster (``dask``: ``n_workers``, by default one per core) or attach to
        the scheduler at ``target``."""
        distributed = _distributed()
        if target == "dask":
            cluster = await distributed.LocalCluster(
                n_workers=n_workers or machine_cores(),
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
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
        return cls(target, client, cluster, nthreads)

    def slots_for(self, evaluator: object) -> int:
        # twice the threads: each worker has its next program queued while one runs
        return 2 * self._threads if offloadable(evaluator) else 0

    async def score(self, evaluator: Evaluator, item: Item, answer: str) -> Score:
        if not (isinstance(evaluator, ExecutionEvaluator) and offloadable(evaluator, item)):
            return await evaluator.score(item, answer)
        future = self._client.submit(
            score_on_worker, answer, item, worker_limits(evaluator), retries=RETRIES, pure=False
        )
        score: Score = await future
        return score

    async def aclose(self) -> None:
        try:
            await self._client.close()
        finally:
            if self._cluster is not None:
                await self._cluster.close()
