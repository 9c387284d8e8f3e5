"""Where local-model runs and execution scoring happen: ``local`` (the driver's event loop) or Dask
workers (``dask``, a cluster on this machine, or ``tcp://HOST:PORT``, a running scheduler).

``names`` checks an executor's name, ``base`` holds the ``Executor`` seam, the local executor and
what may move (``movable``, ``offloadable``), ``worker`` what runs inside a worker, ``dask_executor``
the cluster side and ``dask_plugin`` the workers' local models, ``opening`` picks one. Dask is
imported only when a Dask executor opens.
"""

from __future__ import annotations

from moa.experiment.executors.base import Executor, LocalExecutor, movable, offloadable
from moa.experiment.executors.names import check_executor
from moa.experiment.executors.opening import open_executor

__all__ = ["Executor", "LocalExecutor", "check_executor", "movable", "offloadable", "open_executor"]
