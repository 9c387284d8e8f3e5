"""What an evaluator is and what it returns: ``Score``, the ``Evaluator`` and ``PairwiseEvaluator``
protocols, ``PairScore`` and the judge's ``Judgment``.

They live at the bottom of ``moa.eval`` and import nothing from the experiment that consumes them
(as Inspect AI's ``Score`` lives in a scorer module that never imports its engine): the evaluators
produce these values, the experiment stores and summarises them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from moa.results import CallRecord

if TYPE_CHECKING:
    from moa._run import Runner
    from moa.eval.datasets import Item

__all__ = [
    "NO_TARGET",
    "ConversationEvaluator",
    "Evaluator",
    "Judgment",
    "PairScore",
    "PairwiseEvaluator",
    "Score",
]

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


@dataclass(frozen=True, slots=True)
class Judgment:
    """One verdict of a pairwise judge, as the experiment stores it: the setup's answer was in
    ``position`` (``"a"``: shown first), the judge's ``verdict`` token (``"A>B"``) or the ``error``
    that left it without one, the setup's ``value`` from that verdict, and the judge's calls."""

    position: str
    verdict: str | None
    value: float | None
    detail: str | None
    error: str | None
    calls: Sequence[CallRecord]
    #: the turn judged (1-based) of a multi-turn item; 0 for a single-turn item
    turn: int = 0

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)


@dataclass(frozen=True, slots=True)
class PairScore:
    """A pairwise evaluator's result for one (setup answer, baseline answer) pair: the setup's score
    against the baseline and the verdicts it rests on (e.g. both orders of a judge)."""

    score: Score
    judgments: Sequence[Judgment] = ()
    #: a multi-turn item's score per turn (``score`` is their mean); empty for a single turn
    turn_scores: Sequence[float] = ()


@runtime_checkable
class PairwiseEvaluator(Protocol):
    """Scores a setup's answer against the baseline's answer on the same item.

    ``runner`` carries the experiment's call cache and shared budget, so the evaluator's model calls
    are costed, cached and stored like any other call."""

    name: str

    async def score_pair(
        self, item: Item, answer: str, baseline_answer: str, *, runner: Runner
    ) -> PairScore: ...


@runtime_checkable
class ConversationEvaluator(Protocol):
    """A pairwise evaluator that judges multi-turn items turn by turn: turn k is judged on the
    conversation up to it (both setups' own earlier answers), as MT-Bench's pairwise judge does.
    A pairwise evaluator without it sees only the last turn's answers."""

    async def score_conversation(
        self, item: Item, answers: Sequence[str], baseline_answers: Sequence[str], *, runner: Runner
    ) -> PairScore: ...
