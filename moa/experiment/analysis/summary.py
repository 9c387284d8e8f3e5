"""What an experiment found, in the shape of ``summary.json``: a ``Summary`` with one ``SetupSummary``
per setup (the baseline first), its per-category ``CategorySummary``, under a pairwise judge its
``JudgeSummary`` and, with people's votes, its ``HumanSummary``. ``summarize`` computes them; the
report and the command line read them.

The field names and their order are the keys of ``summary.json``: scripts rely on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_CATEGORIES",
    "CategorySummary",
    "HumanSummary",
    "JudgeSummary",
    "LanguageSummary",
    "SetupSummary",
    "Summary",
    "baseline_problem",
]

#: more categories (or languages) than this and their breakdown is left out, with a note: a dataset
#: whose `category` is unique per row made a table as long as the dataset and a bootstrap per row
MAX_CATEGORIES = 200

# summary.json is read back by ``Summary.from_dict``: a key this moa does not write is refused, not
# dropped. Fields are assigned as the numbers are computed, so assignment is not re-validated.
_CONFIG = ConfigDict(extra="forbid")


class CategorySummary(BaseModel):
    """One setup on the items of one category."""

    model_config = _CONFIG

    n: int
    quality: float | None
    delta_vs_baseline: float | None = None
    delta_ci95: list[float] | None = None


class LanguageSummary(BaseModel):
    """One setup on the items of one language (items naming a ``language``)."""

    model_config = _CONFIG

    n: int
    quality: float | None
    delta_vs_baseline: float | None = None
    delta_ci95: list[float] | None = None
    pass_at_k: dict[str, float] | None = None
    bt_rating: float | None = None
    bt_ci95: list[float] | None = None


class JudgeSummary(BaseModel):
    """A setup against the baseline under a pairwise judge. ``wins``, ``ties`` and ``losses`` count
    items (each scored by the mean over its samples); ``no_verdict`` and ``inconsistent`` count judged
    runs (one per sample), since a forced tie on one sample need not make its item a tie."""

    model_config = _CONFIG

    wins: int
    ties: int
    losses: int
    win_rate: float
    """wins / items judged"""
    score: float
    """The mean judge score: 1 = always much better, 0.5 = parity, 0 = always much worse."""
    score_ci95: list[float]
    no_verdict: int = 0
    """Judged runs scored as a tie because a judgment had no valid verdict (after its retries); for a
    multi-turn item, runs with a turn so tied."""
    inconsistent: int = 0
    """Judged runs whose two orders disagreed in direction (a position-biased judge): ties."""


class HumanSummary(BaseModel):
    """People's blind A/B votes on a setup's answers (``moa view --vote``), counted from its side."""

    model_config = _CONFIG

    votes: int
    """Votes on pairs this setup was part of (against the baseline or another setup)."""
    voters: int
    wins: int
    ties: int
    losses: int
    bt_rating: float | None = None
    """Bradley–Terry rating from the votes, the baseline anchored at 1000 (as the judge's)."""
    bt_ci95: list[float] | None = None
    """The rating's bootstrap 95% interval (items resampled)."""
    agreement: float | None = None
    """Share of votes against the baseline whose direction (better, tie, worse) is the evaluator's on
    the same pair: the judge's verdict, or the two answers' scores compared. None without such votes."""
    agreement_n: int = 0
    """The votes ``agreement`` counts."""
    kappa: float | None = None
    """Cohen's kappa of those directions (1 = always agree, 0 = as often as chance); None when one
    class holds every verdict of both sides (kappa is undefined)."""


class SetupSummary(BaseModel):
    """One setup (the baseline included)."""

    model_config = _CONFIG

    name: str
    is_baseline: bool
    n: int
    """Items with a score (at least one scored run)."""
    runs: int = 0
    """Stored runs, every sample counted, failed or not, scored or not: what ``errors`` is out of.
    Derived, never set: the ``Summary`` holding this setup makes it items × samples − ``missing``
    (written to summary.json for scripts; a value read back from it is recomputed)."""
    quality: float | None = None
    quality_ci95: list[float] | None = None
    delta_vs_baseline: float | None = None
    delta_ci95: list[float] | None = None
    delta_n: int | None = None
    """Items the quality Δ, its CI, the p-value and the power figure rest on: those the setup and the
    baseline both have a score on, among the runs every setup stored."""
    test: str | None = None
    """``mcnemar`` for binary scores, else ``sign``."""
    p_value: float | None = None
    p_value_holm: float | None = None
    cost_usd: float = 0.0
    cost_usd_max: float = 0.0
    """``cost_usd`` plus the worst case of attempts sent whose usage is unknown (timeouts,
    cancellations after sending): what the provider may have billed at most."""
    unknown_usage_attempts: int = 0
    """Attempts sent whose usage cannot be known."""
    usage_estimated_calls: int = 0
    """Calls whose provider reported no usage: their tokens (and the cost from them) are moa's count
    of the text sent and received, not the provider's bill."""
    cost_per_item_usd: float | None = None
    cost_ratio: float | None = None
    """Cost over the baseline's, both over the runs both stored (same item and sample): the ×-columns
    are paired like the quality Δ (``latency_ratio``, ``token_ratio`` and the per-correct ratios too)."""
    tokens: int = 0
    tokens_per_item: float | None = None
    token_ratio: float | None = None
    latency_p50_s: float | None = None
    """Median wall time of the runs that answered (failed runs left out; None when none answered)."""
    latency_p95_s: float | None = None
    latency_ratio: float | None = None
    latency_p95_ratio: float | None = None
    calls_per_item: float | None = None
    cost_per_correct_usd: float | None = None
    """USD spent per correct answer (a run's score counts as its fraction of a correct answer), over
    the runs with a score, failed ones included: a run not scored yet counts neither way."""
    tokens_per_correct: float | None = None
    """Tokens spent per correct answer, over the same runs."""
    cost_per_correct_ratio: float | None = None
    """$ per correct answer over the baseline's, both over the runs both stored: "is it worth it" in
    one number (None at $0)."""
    tokens_per_correct_ratio: float | None = None
    """``tokens_per_correct`` over the baseline's: the same on the token basis."""
    errors: int = 0
    error_examples: list[dict[str, Any]] = Field(default_factory=list)
    """The most frequent error messages: ``{"error": ..., "count": ...}``."""
    pareto: bool = False
    """On the cost-quality front (cost in the summary's ``cost_basis``): no other setup costs no more
    and scores no less, one of them strictly. A setup without quality, or whose runs all failed, never is."""
    power_n: int | None = None
    """Items needed to detect the observed difference at 80% power with the exact sign test (McNemar's
    on 0/1 scores), at the observed shares of better, tied and worse items (None without a
    difference, or with as many items better as worse)."""
    power_note: str | None = None
    """That, as a sentence for the report (``n=30 items; detecting a +0.050 difference ...``)."""
    samples: int = 1
    """Independent runs per item (the experiment's ``samples``)."""
    pass_at_k: dict[str, float] | None = None
    """pass@1..k (unbiased estimator) when the scores are binary: ``{"1": 0.4, "5": 0.8}``."""
    turn_scores: list[float] | None = None
    """Multi-turn items (MT-Bench) under a judge: the mean score of turn 1, 2, ... (each turn judged on
    the conversation up to it); ``quality`` is their mean per item. Runs that failed are left out."""
    failure_reasons: list[dict[str, Any]] = Field(default_factory=list)
    """Why scored runs did not pass, by kind: ``{"reason": "timeout after 10.0s", "count": 3}``."""
    judge: JudgeSummary | None = None
    """A pairwise judge's verdicts against the baseline (None for the baseline and other evaluators)."""
    bt_rating: float | None = None
    """Bradley–Terry rating from the judge's outcomes, the baseline anchored at 1000."""
    bt_ci95: list[float] | None = None
    """The rating's bootstrap 95% interval."""
    missing: int = 0
    """Pairs of this setup not run (yet): an interrupted or over-budget experiment."""
    judge_cost_usd: float = 0.0
    """USD spent by a pairwise judge on this setup's answers (not part of ``cost_usd``)."""
    categories: dict[str, CategorySummary] = Field(default_factory=dict)
    languages: dict[str, LanguageSummary] = Field(default_factory=dict)
    """Per language of the items (code items naming one): quality, Δ with its CI, pass@k and, under
    a judge, the Bradley–Terry rating on that language's items only."""
    human: HumanSummary | None = None
    """People's A/B votes (None when nobody voted on this setup's answers)."""
    escalation_rate: float | None = None
    """A cascade: the share of its answered runs that a later stage than the first answered (None
    for a setup that is not a cascade)."""
    stage_shares: dict[str, float] | None = None
    """A cascade: the share of its answered runs each stage answered, by 1-based stage number."""


class Summary(BaseModel):
    """What an experiment found; ``to_dict()`` is ``summary.json``."""

    model_config = _CONFIG

    experiment: str
    baseline: str
    evaluator: dict[str, Any]
    n_items: int
    setups: list[SetupSummary]
    complete: bool = True
    notes: list[str] = Field(default_factory=list)
    scoring_rule: str = "a run that failed scores 0; pairs not run are left out"
    compared_items: int | None = None
    """Items the table, its Pareto stars and the plot rest on: those of the (item, sample) runs every
    setup with a stored run stored (all the items of a complete experiment). None in a summary.json
    written before it was counted."""
    cost_basis: Literal["usd", "tokens"] = "usd"
    """What "cost" means in the ratios, the Pareto front and the per-correct figures: ``usd``, or
    ``tokens`` when the baseline cost $0 (every call local-compute or unpriced, or every run failed
    before a priced reply) or has no stored run, where USD says nothing."""
    executor: str = "local"
    """Where local-model runs and execution scoring ran: ``local``, ``dask`` or the Dask scheduler's
    address."""
    workers: int = 1
    """The processes that ran them (the Dask workers; 1 for the local executor)."""

    @model_validator(mode="after")
    def _count_runs(self) -> Summary:
        # derived in this one place, so it cannot disagree with ``missing``: every (item, sample)
        # pair of a setup not missing has exactly one stored run (a changed item is refused)
        for s in self.setups:
            s.runs = self.n_items * s.samples - s.missing
        return self

    def setup(self, name: str) -> SetupSummary:
        for s in self.setups:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``'s content."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        """A summary read back from ``summary.json``."""
        return cls.model_validate(d)


def baseline_problem(summary: Summary) -> str | None:
    """One line when the baseline has no quality to compare with: no run stored, every stored run
    failed, or none of its stored runs scored yet."""
    base = summary.setup(summary.baseline)
    if base.runs == 0:
        return f"baseline `{base.name}` has no quality: none of its runs is stored"
    if base.errors >= base.runs:
        first = base.error_examples[0]["error"] if base.error_examples else "unknown error"
        return (
            f"baseline `{base.name}` has no quality: all {base.runs} of its stored runs failed "
            f"(first error: {first})"
        )
    if base.n == 0 and summary.compared_items == 0:
        # the setups stored runs on other items than the baseline's (an interrupted experiment):
        # nothing is compared yet, which the note on runs not run says, but the baseline is fine
        return None
    if base.n == 0:
        return f"baseline `{base.name}` has no quality: none of its {base.runs} stored runs is scored yet"
    return None
