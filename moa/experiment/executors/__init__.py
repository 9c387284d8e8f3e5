"""Where the score phase runs: ``local`` (the driver's event loop) or Dask workers (``dask``, a
cluster on this machine, or ``tcp://HOST:PORT``, a running scheduler).

``names`` checks an executor's name, ``base`` holds the ``Executor`` seam and the local executor,
``worker`` what runs inside a worker, ``dask_executor`` the cluster side, ``opening`` picks one.
Dask is imported only by ``dask_executor``, when a Dask executor opens.
"""

from __future__ import annotations

from moa.experiment.executors.base import Executor, LocalExecutor, offloadable
from moa.experiment.executors.names import check_executor
from moa.experiment.executors.opening import open_executor

__all__ = ["Executor", "LocalExecutor", "check_executor", "offloadable", "open_executor"]
