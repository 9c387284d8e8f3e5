"""A stored run as the scoring phase and the summary read it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunRow"]


@dataclass(frozen=True, slots=True)
class RunRow:
    """A stored run as the scoring phase and the summary read it."""

    run_id: int
    setup: str
    item_id: str
    answer: str | None
    error: str | None
    cost_usd: float
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    n_calls: int
    #: which of the experiment's ``samples`` independent runs of this (setup, item) pair
    sample: int = 0
    #: ``cost_usd`` plus the worst case of attempts whose usage is unknown
    cost_usd_max: float = 0.0
    #: attempts sent whose usage cannot be known (timeouts, cancellations after sending)
    unknown_usage_attempts: int = 0
    #: a multi-turn item's answers, one per turn (``answer`` is the last); None otherwise
    turn_answers: list[str] | None = None
    #: a cascade's run: the stage (1-based) that answered; None for a plain topology or a failed run
    stage: int | None = None
    score: float | None = None
    detail: str | None = None
    #: the score of each turn of a multi-turn item, when the evaluator gives them (else None)
    turn_scores: list[float] | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
