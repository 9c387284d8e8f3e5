"""What a setup's cost is compared in, and the comparisons made with it: the cost basis (USD, or
tokens when the baseline cost $0), the ratios to the baseline and the Pareto front.

Rules:

- The ratios to the baseline (cost, tokens, latency p50 and p95, $ and tokens per correct answer) are
  taken over the runs both stored, the same (item, sample) pairs, as the quality Δ is, the latency
  ratios over those pairs where both answered: an interrupted or over-budget experiment whose setup
  ran only some items is compared on those items, not its cheap first half against the baseline's
  whole dataset. A complete experiment gives the same ratios either way.
- The basis is ``tokens`` when the baseline's cost is $0 or unknown (every call local-compute or
  unpriced, every run failed before a priced reply, or no run stored): a ratio to $0 is undefined and
  every setup would tie at $0.
- Pareto (cost in the basis, per run, against quality, both over the runs every setup stored): a
  setup is dominated when another costs no more and scores no less, one of them strictly; so a setup
  that costs more for the same quality is off the front, and two setups equal in both stay on it. A
  setup without quality, or whose runs all failed, is never on the front and dominates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from moa.eval import stats
from moa.experiment.analysis.summary import SetupSummary
from moa.experiment.store.database import RunRow

__all__ = ["CostBasis", "all_failed", "cost_basis", "mark_pareto", "paired_ratios", "ratio"]

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


def paired_ratios(
    s: SetupSummary,
    mine: Mapping[str, Sequence[RunRow]],
    base: Mapping[str, Sequence[RunRow]],
    score: Callable[[RunRow], float | None],
) -> None:
    """Set the setup's ratios to the baseline (cost, tokens, latency p50 and p95, $ and tokens per
    correct answer), each side taken over the runs of the (item, sample) pairs both stored."""
    theirs = {(i, r.sample): r for i, rows in base.items() for r in rows}
    pairs = [(r, b) for i, rows in mine.items() for r in rows if (b := theirs.get((i, r.sample))) is not None]
    a_runs, b_runs = [r for r, _ in pairs], [b for _, b in pairs]
    # both sides count the same runs, so the ratio of sums is the ratio of the means per run
    s.cost_ratio = ratio(math.fsum(r.cost_usd for r in a_runs), math.fsum(r.cost_usd for r in b_runs))
    s.token_ratio = ratio(sum(r.tokens for r in a_runs), sum(r.tokens for r in b_runs))
    # over the pairs where both answered: a run that failed says nothing of how long an answer
    # takes, and leaving out only one side's failures compared medians of different items
    answered = [(r, b) for r, b in pairs if r.error is None and b.error is None]
    a_lat = [r.latency_s for r, _ in answered]
    b_lat = [b.latency_s for _, b in answered]
    if a_lat and b_lat:
        s.latency_ratio = ratio(stats.p50(a_lat), stats.p50(b_lat))
        s.latency_p95_ratio = ratio(stats.p95(a_lat), stats.p95(b_lat))
    a_usd, a_tokens = _per_correct(a_runs, score)
    b_usd, b_tokens = _per_correct(b_runs, score)
    s.cost_per_correct_ratio = ratio(a_usd, b_usd)
    s.tokens_per_correct_ratio = ratio(a_tokens, b_tokens)


def _per_correct(
    runs: Sequence[RunRow], score: Callable[[RunRow], float | None]
) -> tuple[float | None, float | None]:
    """USD and tokens per correct answer over the runs with a score (as ``cost_per_correct_usd``)."""
    scored = [(r, v) for r in runs if (v := score(r)) is not None]
    correct = math.fsum(v for _, v in scored)
    if correct <= 0:
        return None, None
    return math.fsum(r.cost_usd for r, _ in scored) / correct, sum(r.tokens for r, _ in scored) / correct


def mark_pareto(
    out: Sequence[SetupSummary], basis: CostBasis, runs: Mapping[str, Mapping[str, Sequence[RunRow]]]
) -> None:
    """Set ``pareto`` on every setup, comparing its cost per run in ``basis`` against its quality,
    both over ``runs`` (setup name -> item id -> runs): the runs every setup stored, so an
    interrupted setup's cheap first items are not set against another's whole dataset."""
    scored: list[tuple[SetupSummary, float, float]] = []
    for s in out:
        s.pareto = False
        mine = [r for rows in runs.get(s.name, {}).values() for r in rows]
        if s.quality is None or not mine or all(r.error is not None for r in mine) or all_failed(s):
            continue
        spent = math.fsum(r.cost_usd for r in mine) if basis == "usd" else sum(r.tokens for r in mine)
        scored.append((s, spent / len(mine), s.quality))
    front = stats.pareto_front([(c, q) for _, c, q in scored])
    for (s, _, _), on in zip(scored, front, strict=True):
        s.pareto = on
