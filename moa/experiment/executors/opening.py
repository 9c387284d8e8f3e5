"""``open_executor``: the executor an experiment names, opened (a cluster started or attached)."""

from __future__ import annotations

from moa.errors import UserError
from moa.experiment.executors.base import Executor, LocalExecutor
from moa.experiment.executors.names import check_executor

__all__ = ["open_executor"]


async def open_executor(name: str) -> Executor:
    """``local``, ``dask`` or ``tcp://HOST:PORT``; one-line ``UserError`` when it cannot open."""
    try:
        check_executor(name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if name == "local":
        return LocalExecutor()
    # lazy: the local executor never imports Dask
    from moa.experiment.executors.dask_executor import DaskExecutor

    return await DaskExecutor.open(name)
