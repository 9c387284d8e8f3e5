"""What a setup's cost is compared in, and the comparisons made with it: the cost basis (USD, or
tokens when the baseline cost $0), the per-correct-answer ratios and the Pareto front.

Rules:

- The basis is ``tokens`` when the baseline's cost is $0 or unknown (every call local-compute or
  unpriced, every run failed before a priced reply, or no run stored): a ratio to $0 is undefined and
  every setup would tie at $0.
- Pareto (cost in the basis, per item, against quality): a setup is dominated when another costs no
  more and scores no less, one of them strictly; so a setup that costs more for the same quality is off
  the front, and two setups equal in both stay on it. A setup without quality, or whose runs all
  failed, is never on the front and dominates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from moa.eval import stats
from moa.experiment.analysis.summary import SetupSummary

__all__ = ["CostBasis", "all_failed", "cost_basis", "mark_pareto", "per_correct_ratios", "ratio"]

CostBasis = Literal["usd", "tokens"]


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is unknown or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def cost_basis(base: SetupSummary) -> CostBasis:
    """``usd`` when the baseline cost something, else ``tokens``."""
    return "usd" if base.cost_per_item_usd else "tokens"


def all_failed(s: SetupSummary) -> bool:
    """Whether every stored run of the setup ended in an error."""
    return s.runs > 0 and s.errors >= s.runs


def per_correct_ratios(out: Sequence[SetupSummary], base: SetupSummary) -> None:
    """Set each setup's $ and tokens per correct answer over the baseline's."""
    for s in out:
        s.cost_per_correct_ratio = ratio(s.cost_per_correct_usd, base.cost_per_correct_usd)
        s.tokens_per_correct_ratio = ratio(s.tokens_per_correct, base.tokens_per_correct)


def mark_pareto(out: Sequence[SetupSummary], basis: CostBasis) -> None:
    """Set ``pareto`` on every setup, comparing cost per item in ``basis`` against quality."""
    scored: list[tuple[SetupSummary, float, float]] = []
    for s in out:
        s.pareto = False
        cost = s.cost_per_item_usd if basis == "usd" else s.tokens_per_item
        if s.quality is None or cost is None or all_failed(s):
            continue
        scored.append((s, cost, s.quality))
    front = stats.pareto_front([(c, q) for _, c, q in scored])
    for (s, _, _), on in zip(scored, front, strict=True):
        s.pareto = on
