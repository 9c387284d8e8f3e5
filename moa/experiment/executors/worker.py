"""What runs inside a Dask worker process. Shipped by reference (module and name), so a worker
needs moa installed, as the driver does; nothing here imports Dask."""

from __future__ import annotations

import asyncio
from typing import Any

from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.types import Score

__all__ = ["score_on_worker"]


def score_on_worker(answer: str, item: Item, limits: dict[str, Any]) -> Score:
    """Run the answer's program in the worker's sandbox. A fresh loop per task: a worker thread has
    no loop of its own, and the program's run time dwarfs the loop's creation."""
    return asyncio.run(score_execution_async(answer, item, **limits))
