"""The analysis phase: from stored runs and scores to the numbers of ``summary.json``.

``summary`` holds the shape (``Summary``, ``SetupSummary``, ...), ``summarize`` computes it, ``costs``
picks the cost basis (USD, or tokens at a $0 baseline) and marks the Pareto front. The
statistics it uses (bootstrap, paired tests, power, Bradley–Terry) are ``moa.eval``'s: they are part
of the evaluation toolkit users call on their own scores too.
"""

from __future__ import annotations

from moa.experiment.analysis.summarize import summarize, summary_from_store
from moa.experiment.analysis.summary import (
    CategorySummary,
    JudgeSummary,
    SetupSummary,
    Summary,
    baseline_problem,
)

__all__ = [
    "CategorySummary",
    "JudgeSummary",
    "SetupSummary",
    "Summary",
    "baseline_problem",
    "summarize",
    "summary_from_store",
]
