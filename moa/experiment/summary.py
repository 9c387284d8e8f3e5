"""The numbers of an experiment: per setup quality with its CI, the paired difference to the baseline,
cost, tokens, latency and their ratios, Pareto marking, and a per-category breakdown.

Scoring rule: a run that ended in an error scores 0 (the setup did not answer), so a failing setup
shows its failures in its quality as well as in ``errors``. Pairs that were never run (an interrupted
or over-budget experiment) are left out: ``n`` counts the stored runs, and the paired statistics use
the items both the setup and the baseline have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from moa.eval import stats
from moa.experiment.store import RunRow

__all__ = ["CategorySummary", "SetupSummary", "Summary", "baseline_problem", "summarize"]


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
            setups.append(SetupSummary(**{**s, "categories": cats}))
        return cls(**{**d, "setups": setups})


def _ci(c: stats.CI) -> list[float]:
    return [c.low, c.high]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _scores(rows: Mapping[str, RunRow], ids: Sequence[str]) -> dict[str, float]:
    """Item id -> score for the items with a stored, scored run (errors as 0)."""
    out: dict[str, float] = {}
    for i in ids:
        r = rows.get(i)
        if r is None:
            continue
        if r.error is not None:
            out[i] = 0.0
        elif r.score is not None:
            out[i] = r.score
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
    rows: Mapping[str, RunRow],
    ids: Sequence[str],
    rounds: int,
    seed: int,
) -> tuple[SetupSummary, dict[str, float]]:
    present = [rows[i] for i in ids if i in rows]
    scores = _scores(rows, ids)
    s = SetupSummary(name=name, is_baseline=is_baseline, n=len(scores), missing=len(ids) - len(present))
    s.cost_usd = sum(r.cost_usd for r in present)
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
        correct = sum(values)
        s.cost_per_correct_usd = s.cost_usd / correct if correct > 0 else None
    return s, scores


def summarize(
    *,
    experiment: str,
    evaluator: dict[str, Any],
    setups: Sequence[tuple[str, bool, Mapping[str, RunRow]]],
    item_ids: Sequence[str],
    categories: Mapping[str, str | None],
    rounds: int = 2000,
    seed: int = 0,
    judge_costs: Mapping[str, float] | None = None,
) -> Summary:
    """The summary from stored rows: ``setups`` holds (name, is_baseline, item id -> row), baseline first."""
    base_name = next(name for name, is_base, _ in setups if is_base)
    out: list[SetupSummary] = []
    all_scores: dict[str, dict[str, float]] = {}
    for name, is_base, rows in setups:
        s, scores = _setup_numbers(name, is_base, rows, item_ids, rounds, seed)
        s.judge_cost_usd = (judge_costs or {}).get(name, 0.0)
        out.append(s)
        all_scores[name] = scores
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
    if base.errors == base.n:
        first = base.error_examples[0]["error"] if base.error_examples else "unknown error"
        return (
            f"baseline `{base.name}` has no quality: all {base.n} of its runs failed (first error: {first})"
        )
    return None
