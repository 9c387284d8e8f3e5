"""The evaluator contract: ``Score`` and the ``Evaluator`` protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from moa.eval.datasets import Item

__all__ = ["NO_TARGET", "Evaluator", "Score"]

#: ``Score.detail`` of a reference evaluator given an item without a target
NO_TARGET = "item has no target"


@dataclass(frozen=True, slots=True)
class Score:
    """An answer's score in [0, 1] and, when useful, why."""

    value: float
    detail: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and 0.0 <= self.value <= 1.0):
            raise ValueError(f"score {self.value} is outside [0, 1]")


@runtime_checkable
class Evaluator(Protocol):
    """Scores one answer to one item; async because execution and judges wait on I/O."""

    name: str

    async def score(self, item: Item, answer: str) -> Score: ...
