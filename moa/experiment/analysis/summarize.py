"""The numbers of an experiment: per setup quality with its CI, the paired difference to the baseline,
cost, tokens, latency and their ratios, Pareto marking, and a per-category breakdown.

Scoring rule: a run that ended in an error scores 0 (the setup did not answer), so a failing setup
shows its failures in its quality as well as in ``errors``. Pairs that were never run (an interrupted
or over-budget experiment) are left out: ``n`` counts the items with a stored run, and the paired
statistics use the items both the setup and the baseline have. With ``samples: k`` an item's score is
the mean over its samples, and cost, tokens and latency are per run (per sample).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from moa.eval import stats
from moa.experiment import quality
from moa.experiment.quality import JudgeSummary, run_score
from moa.experiment.store import RunRow

__all__ = ["CategorySummary", "JudgeSummary", "SetupSummary", "Summary", "baseline_problem", "summarize"]

#: item id -> the item's run, or its runs (one per sample)
RowsByItem = Mapping[str, RunRow | Sequence[RunRow]]


@dataclass(slots=True)
class CategorySummary:
    """One setup on the items of one category."""

    n: int
    quality: float | None
    delta_vs_baseline: float | None = None
    delta_ci95: list[float] | None = None


@dataclass(slots=True)
class SetupSummary:
    """One setup (the baseline included); the fields of ``summary.json``."""

    name: str
    is_baseline: bool
    n: int
    quality: float | None = None
    quality_ci95: list[float] | None = None
    delta_vs_baseline: float | None = None
    delta_ci95: list[float] | None = None
    #: ``mcnemar`` for binary scores, else ``sign``
    test: str | None = None
    p_value: float | None = None
    p_value_holm: float | None = None
    cost_usd: float = 0.0
    #: ``cost_usd`` plus the worst case of attempts sent whose usage is unknown (timeouts,
    #: cancellations after sending): what the provider may have billed at most
    cost_usd_max: float = 0.0
    #: attempts sent whose usage cannot be known
    unknown_usage_attempts: int = 0
    cost_per_item_usd: float | None = None
    cost_ratio: float | None = None
    tokens: int = 0
    tokens_per_item: float | None = None
    token_ratio: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_ratio: float | None = None
    latency_p95_ratio: float | None = None
    calls_per_item: float | None = None
    cost_per_correct_usd: float | None = None
    errors: int = 0
    #: the most frequent error messages: ``{"error": ..., "count": ...}``
    error_examples: list[dict[str, Any]] = field(default_factory=list)
    pareto: bool = False
    #: items needed to detect the observed difference at 80% power (None without a difference)
    power_n: int | None = None
    #: that, as a sentence for the report (``n=30 items; detecting a +0.050 difference ...``)
    power_note: str | None = None
    #: independent runs per item (the experiment's ``samples``)
    samples: int = 1
    #: pass@1..k (unbiased estimator) when the scores are binary: ``{"1": 0.4, "5": 0.8}``
    pass_at_k: dict[str, float] | None = None
    #: why scored runs did not pass, by kind: ``{"reason": "timeout after 10.0s", "count": 3}``
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)
    #: a pairwise judge's verdicts against the baseline (None for the baseline and other evaluators)
    judge: JudgeSummary | None = None
    #: Bradley–Terry rating from the judge's outcomes (baseline = 1000) and its bootstrap 95% CI
    bt_rating: float | None = None
    bt_ci95: list[float] | None = None
    #: pairs of this setup not run (yet): an interrupted or over-budget experiment
    missing: int = 0
    #: USD spent by a pairwise judge on this setup's answers (not part of ``cost_usd``)
    judge_cost_usd: float = 0.0
    categories: dict[str, CategorySummary] = field(default_factory=dict)


@dataclass(slots=True)
class Summary:
    """What an experiment found; ``to_dict()`` is ``summary.json``."""

    experiment: str
    baseline: str
    evaluator: dict[str, Any]
    n_items: int
    setups: list[SetupSummary]
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    scoring_rule: str = "a run that failed scores 0; pairs not run are left out"

    def setup(self, name: str) -> SetupSummary:
        for s in self.setups:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        setups = []
        for s in d["setups"]:
            cats = {k: CategorySummary(**v) for k, v in s.get("categories", {}).items()}
            judge = JudgeSummary(**s["judge"]) if s.get("judge") else None
            setups.append(SetupSummary(**{**s, "categories": cats, "judge": judge}))
        return cls(**{**d, "setups": setups})


def _ci(c: stats.CI) -> list[float]:
    return [c.low, c.high]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _runs(rows: RowsByItem, ids: Sequence[str], samples: int) -> dict[str, list[RunRow]]:
    """Item id -> the item's stored runs among the first ``samples`` samples."""
    out: dict[str, list[RunRow]] = {}
    for i in ids:
        r = rows.get(i)
        if r is None:
            continue
        runs = [r] if isinstance(r, RunRow) else [x for x in r if x.sample < samples]
        if runs:
            out[i] = runs
    return out


def _scores(runs: Mapping[str, Sequence[RunRow]]) -> dict[str, float]:
    """Item id -> mean score over the item's scored runs (errors as 0)."""
    out: dict[str, float] = {}
    for i, rows in runs.items():
        values = [v for r in rows if (v := run_score(r)) is not None]
        if values:
            out[i] = math.fsum(values) / len(values)
    return out


def _paired(
    s: Mapping[str, float], b: Mapping[str, float], ids: Sequence[str], rounds: int, seed: int
) -> tuple[list[float], list[float], stats.CI | None]:
    common = [i for i in ids if i in s and i in b]
    a_vals = [s[i] for i in common]
    b_vals = [b[i] for i in common]
    if not common:
        return a_vals, b_vals, None
    return a_vals, b_vals, stats.paired_bootstrap_ci(a_vals, b_vals, rounds=rounds, seed=seed)


def _setup_numbers(
    name: str,
    is_baseline: bool,
    runs: Mapping[str, Sequence[RunRow]],
    ids: Sequence[str],
    rounds: int,
    seed: int,
    samples: int,
) -> tuple[SetupSummary, dict[str, float]]:
    present = [r for i in ids for r in runs.get(i, ())]
    scores = _scores(runs)
    s = SetupSummary(
        name=name,
        is_baseline=is_baseline,
        n=len(scores),
        missing=len(ids) * samples - len(present),
        samples=samples,
    )
    s.cost_usd = sum(r.cost_usd for r in present)
    s.cost_usd_max = sum(r.cost_usd_max for r in present)
    s.unknown_usage_attempts = sum(r.unknown_usage_attempts for r in present)
    s.tokens = sum(r.tokens for r in present)
    s.errors = sum(1 for r in present if r.error is not None)
    counts = Counter(r.error for r in present if r.error is not None)
    s.error_examples = [{"error": e, "count": c} for e, c in counts.most_common(3)]
    if present:
        s.cost_per_item_usd = s.cost_usd / len(present)
        s.tokens_per_item = s.tokens / len(present)
        s.calls_per_item = sum(r.n_calls for r in present) / len(present)
        lat = [r.latency_s for r in present]
        s.latency_p50_s, s.latency_p95_s = stats.p50(lat), stats.p95(lat)
    if scores:
        values = list(scores.values())
        ci = stats.bootstrap_ci(values, rounds=rounds, seed=seed)
        s.quality, s.quality_ci95 = ci.estimate, _ci(ci)
        correct = math.fsum(v for r in present if (v := run_score(r)) is not None)
        s.cost_per_correct_usd = s.cost_usd / correct if correct > 0 else None
    return s, scores


def summarize(
    *,
    experiment: str,
    evaluator: dict[str, Any],
    setups: Sequence[tuple[str, bool, RowsByItem]],
    item_ids: Sequence[str],
    categories: Mapping[str, str | None],
    rounds: int = 2000,
    seed: int = 0,
    judge_costs: Mapping[str, float] | None = None,
    samples: int = 1,
    pairwise: bool = False,
) -> Summary:
    """The summary from stored rows: ``setups`` holds (name, is_baseline, item id -> run or runs),
    baseline first. ``pairwise``: the scores are a judge's verdicts against the baseline."""
    base_name = next(name for name, is_base, _ in setups if is_base)
    out: list[SetupSummary] = []
    all_scores: dict[str, dict[str, float]] = {}
    all_runs: dict[str, dict[str, list[RunRow]]] = {}
    for name, is_base, rows in setups:
        runs = _runs(rows, item_ids, samples)
        s, scores = _setup_numbers(name, is_base, runs, item_ids, rounds, seed, samples)
        s.judge_cost_usd = (judge_costs or {}).get(name, 0.0)
        if pairwise:
            s.judge = None if is_base else quality.judge_summary(scores, runs, rounds=rounds, seed=seed)
        else:
            s.pass_at_k = quality.pass_at_k(runs, samples)
            s.failure_reasons = quality.failure_reasons([r for rs in runs.values() for r in rs])
        out.append(s)
        all_scores[name] = scores
        all_runs[name] = runs
    if pairwise:
        ratings = quality.bt_ratings(all_runs, baseline=base_name, rounds=rounds, seed=seed)
        for s in out:
            fit = ratings.get(s.name)
            if fit is not None:
                s.bt_rating, s.bt_ci95 = fit
    base = out[0]
    base_scores = all_scores[base_name]
    raw_p: list[tuple[SetupSummary, float]] = []
    for s in out:
        s.cost_ratio = _ratio(s.cost_per_item_usd, base.cost_per_item_usd)
        s.token_ratio = _ratio(s.tokens_per_item, base.tokens_per_item)
        s.latency_ratio = _ratio(s.latency_p50_s, base.latency_p50_s)
        s.latency_p95_ratio = _ratio(s.latency_p95_s, base.latency_p95_s)
        if s.is_baseline:
            continue
        a, b, ci = _paired(all_scores[s.name], base_scores, item_ids, rounds, seed)
        if ci is None:
            continue
        s.delta_vs_baseline, s.delta_ci95 = ci.estimate, _ci(ci)
        if all(x in (0.0, 1.0) for x in (*a, *b)):
            s.test, s.p_value = "mcnemar", stats.mcnemar(a, b).p_value
        else:
            s.test, s.p_value = "sign", stats.sign_test(a, b).p_value
        s.power_n = stats.power_n([x - y for x, y in zip(a, b, strict=True)])
        s.power_note = quality.power_sentence(len(a), s.delta_vs_baseline, s.power_n)
        raw_p.append((s, s.p_value))
    for s, adj in zip((s for s, _ in raw_p), stats.holm([p for _, p in raw_p]), strict=True):
        s.p_value_holm = adj
    scored = [s for s in out if s.quality is not None and s.cost_per_item_usd is not None]
    front = stats.pareto_front([(s.cost_per_item_usd or 0.0, s.quality or 0.0) for s in scored])
    for s, on in zip(scored, front, strict=True):
        s.pareto = on
    _categories(out, all_scores, base_name, item_ids, categories, rounds, seed)
    summary = Summary(
        experiment=experiment,
        baseline=base_name,
        evaluator=dict(evaluator),
        n_items=len(item_ids),
        setups=out,
    )
    missing = sum(s.missing for s in out)
    if missing:
        summary.complete = False
        summary.notes.append(
            f"{missing} (setup, item) pairs have not been run yet: re-run with the same --out to finish"
        )
    problem = baseline_problem(summary)
    if problem:
        summary.notes.append(problem)
    return summary


def _categories(
    out: Sequence[SetupSummary],
    all_scores: Mapping[str, Mapping[str, float]],
    base_name: str,
    item_ids: Sequence[str],
    categories: Mapping[str, str | None],
    rounds: int,
    seed: int,
) -> None:
    names = sorted({c for i in item_ids if (c := categories.get(i)) is not None})
    if not names:
        return
    for cat in names:
        ids = [i for i in item_ids if categories.get(i) == cat]
        base = {i: v for i, v in all_scores[base_name].items() if categories.get(i) == cat}
        for s in out:
            mine = {i: v for i, v in all_scores[s.name].items() if categories.get(i) == cat}
            cs = CategorySummary(n=len(mine), quality=sum(mine.values()) / len(mine) if mine else None)
            if not s.is_baseline:
                _, _, ci = _paired(mine, base, ids, rounds, seed)
                if ci is not None:
                    cs.delta_vs_baseline, cs.delta_ci95 = ci.estimate, _ci(ci)
            s.categories[cat] = cs


def baseline_problem(summary: Summary) -> str | None:
    """One line when the baseline has no quality to compare with (no run, or every run failed)."""
    base = summary.setup(summary.baseline)
    if base.n == 0:
        return f"baseline `{base.name}` has no quality: none of its runs is stored"
    if base.errors >= base.n * base.samples:
        first = base.error_examples[0]["error"] if base.error_examples else "unknown error"
        return f"baseline `{base.name}` has no quality: all {base.errors} of its runs failed (first error: {first})"
    return None
