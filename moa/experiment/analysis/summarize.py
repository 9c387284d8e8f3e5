"""The numbers of an experiment, computed from its stored runs: per setup quality with its CI, the paired
difference to the baseline and its test, cost, tokens, latency and their ratios, Pareto marking, a
per-category breakdown, and the quality extras: pass@k over samples, counts of failure reasons, a
pairwise judge's win/tie/loss, Bradley–Terry ratings, and the power sentence that says when a
difference may be noise.

Scoring rule: a run that ended in an error scores 0 (the setup did not answer), so a failing setup
shows its failures in its quality as well as in ``errors``. Pairs that were never run (an interrupted
or over-budget experiment) are left out: ``n`` counts the items with a stored run, and the paired
statistics use the items both the setup and the baseline have. With ``samples: k`` an item's score is
the mean over its samples, and cost, tokens and latency are per run (per sample). Latency (p50, p95)
counts the runs that answered only, and its ratios the pairs both answered: a run that failed fast
would make a failing setup look quick; a setup none of whose runs answered has no latency.

Under a pairwise judge the setups' scores are already relative to the baseline, so the baseline
scores 0.5 on every run, failed or not, and Δ is the judge score minus 0.5: scoring the baseline's
failed run 0 as well would count its failure twice. Those scores are stored by the scoring phase
(``score_answers``), failed runs' included, and read as they are (``scorer``).

An unfinished experiment (stopped by Ctrl-C, a deadline or the budget) is compared on the runs every
setup stored: each (item, sample) pair that every setup with a stored run has stored. Every figure
that compares setups (quality and its CI, Δ, the p-value and power, the ratios, the per-correct
figures, latency, the Pareto front, the categories, the judge's counts and ratings) is taken over
those runs, so the table's rows, its stars and the plot rest on the same items
(``Summary.compared_items`` says how many); what was spent (``cost_usd``, tokens, errors, calls per
item) counts every stored run. A complete experiment compares every run either way.

Cost basis, the ratios to the baseline (over the runs both stored) and the Pareto rule: see ``costs``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from moa.errors import UserError
from moa.eval import stats
from moa.experiment.analysis.costs import cost_basis, mark_pareto, paired_ratios
from moa.experiment.analysis.extras import (
    RunScore,
    bt_ratings,
    failure_kind,
    failure_reasons,
    item_scores,
    judge_summary,
    pass_at_k,
    power_sentence,
    run_score,
    scorer,
    stage_numbers,
    turn_scores,
)
from moa.experiment.analysis.languages import add_languages
from moa.experiment.analysis.summary import (
    MAX_CATEGORIES,
    CategorySummary,
    SetupSummary,
    Summary,
    baseline_problem,
)
from moa.experiment.analysis.votes import add_human_votes
from moa.experiment.store.checks import edited
from moa.experiment.store.database import RunRow, Store

__all__ = [
    "bt_ratings",
    "failure_kind",
    "failure_reasons",
    "judge_summary",
    "pass_at_k",
    "power_sentence",
    "run_score",
    "summarize",
    "summary_from_store",
]

#: the footer's scoring rule under a pairwise judge (``Summary.scoring_rule``)
PAIRWISE_RULE = (
    "the baseline scores 0.5 (parity) on every run; a setup run that failed scores 0 against a baseline "
    "run that answered and 0.5 against one that failed too; pairs not run are left out"
)

#: item id -> the item's run, or its runs (one per sample)
RowsByItem = Mapping[str, RunRow | Sequence[RunRow]]


def _ci(c: stats.CI) -> list[float]:
    return [c.low, c.high]


def _bad_number(r: RunRow) -> str | None:
    """What is wrong with a stored run's numbers, or None: a score outside [0, 1], a cost, time or
    token count that is negative or not finite. Only a damaged or hand-edited store holds one (moa
    checks each before storing it), and it would print as a quality of 5.0, a cost ratio of inf,
    or end the report in a traceback from the statistics."""
    if r.score is not None and not (math.isfinite(r.score) and 0.0 <= r.score <= 1.0):
        return f"score {r.score} is outside [0, 1]"
    for name, v in (("cost_usd", r.cost_usd), ("cost_usd_max", r.cost_usd_max), ("latency_s", r.latency_s)):
        if not (math.isfinite(v) and v >= 0.0):
            return f"{name} {v} is not a finite number >= 0"
    for name, n in (("prompt_tokens", r.prompt_tokens), ("completion_tokens", r.completion_tokens)):
        if n < 0:
            return f"{name} {n} is negative"
    return None


def _runs(name: str, rows: RowsByItem, ids: Sequence[str], samples: int) -> dict[str, list[RunRow]]:
    """Item id -> the item's stored runs among the first ``samples`` samples; ``UserError`` naming
    the first run whose numbers cannot be right (see ``_bad_number``)."""
    out: dict[str, list[RunRow]] = {}
    for i in ids:
        r = rows.get(i)
        if r is None:
            continue
        runs = [r] if isinstance(r, RunRow) else [x for x in r if x.sample < samples]
        for x in runs:
            if (problem := _bad_number(x)) is not None:
                raise UserError(f"setup `{name}`, item `{i}`, sample {x.sample} (run {x.run_id}): {problem}")
        if runs:
            out[i] = runs
    return out


def _compared(
    runs: Mapping[str, Mapping[str, Sequence[RunRow]]],
) -> tuple[dict[str, dict[str, list[RunRow]]], int]:
    """Each setup's runs among the (item, sample) pairs that every setup with a stored run stored, and
    how many items those pairs cover. A setup with no stored run (not started) narrows nothing."""
    keys = [{(i, r.sample) for i, rows in by_item.items() for r in rows} for by_item in runs.values()]
    stored = [k for k in keys if k]
    common = set.intersection(*stored) if stored else set()
    covered = len({i for i, _ in common})
    if all(k == common for k in stored):
        return {
            name: {i: list(rows) for i, rows in by_item.items()} for name, by_item in runs.items()
        }, covered
    out: dict[str, dict[str, list[RunRow]]] = {}
    for name, by_item in runs.items():
        kept = {i: [r for r in rows if (i, r.sample) in common] for i, rows in by_item.items()}
        out[name] = {i: rows for i, rows in kept.items() if rows}
    return out, covered


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
    compared: Mapping[str, Sequence[RunRow]],
    ids: Sequence[str],
    rounds: int,
    seed: int,
    samples: int,
    score: RunScore,
) -> tuple[SetupSummary, dict[str, float]]:
    """What the setup spent, over all its ``runs``, and how it did, over its ``compared`` runs (the
    pairs every setup stored)."""
    present = [r for i in ids for r in runs.get(i, ())]
    shared = [r for i in ids for r in compared.get(i, ())]
    scores = item_scores(compared, score)
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
    # a run that failed fast (a refused key, a 400) says nothing of how long an answer takes
    lat = [r.latency_s for r in shared if r.error is None]
    if lat:
        s.latency_p50_s, s.latency_p95_s = stats.p50(lat), stats.p95(lat)
    if scores:
        values = list(scores.values())
        ci = stats.bootstrap_ci(values, rounds=rounds, seed=seed)
        s.quality, s.quality_ci95 = ci.estimate, _ci(ci)
        # over the runs with a score, as quality: a run not scored yet (a judge call that failed)
        # is neither right nor wrong, and counting its cost would inflate the price of a right answer
        scored = [(r, v) for r in shared if (v := score(r)) is not None]
        correct = math.fsum(v for _, v in scored)
        if correct > 0:
            s.cost_per_correct_usd = sum(r.cost_usd for r, _ in scored) / correct
            s.tokens_per_correct = sum(r.tokens for r, _ in scored) / correct
    s.turn_scores = turn_scores(present)
    s.escalation_rate, s.stage_shares = stage_numbers(present)
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
    usage_estimated_calls: Mapping[str, int] | None = None,
) -> Summary:
    """The summary from stored rows: ``setups`` holds (name, is_baseline, item id -> run or runs),
    the baseline flagged, first in the summary wherever it was passed. ``pairwise``: the scores are
    a judge's verdicts against the baseline."""
    # the ratios and the report's row order take the baseline from the flag, not from the position
    setups = sorted(setups, key=lambda s: not s[1])
    if not setups or not setups[0][1]:
        raise ValueError("summarize needs one setup flagged as the baseline")
    base_name = setups[0][0]
    out: list[SetupSummary] = []
    all_scores: dict[str, dict[str, float]] = {}
    stored = {name: _runs(name, rows, item_ids, samples) for name, _, rows in setups}
    all_runs, compared_items = _compared(stored)
    for name, is_base, _ in setups:
        runs = all_runs[name]
        s, scores = _setup_numbers(
            name, is_base, stored[name], runs, item_ids, rounds, seed, samples, scorer(pairwise)
        )
        s.judge_cost_usd = (judge_costs or {}).get(name, 0.0)
        s.usage_estimated_calls = (usage_estimated_calls or {}).get(name, 0)
        if pairwise:
            s.judge = None if is_base else judge_summary(scores, runs, rounds=rounds, seed=seed)
        else:
            s.pass_at_k = pass_at_k(runs, samples)
            s.failure_reasons = failure_reasons([r for rs in stored[name].values() for r in rs])
        out.append(s)
        all_scores[name] = scores
    if pairwise:
        ratings = bt_ratings(all_runs, baseline=base_name, rounds=rounds, seed=seed)
        for s in out:
            fit = ratings.get(s.name)
            if fit is not None:
                s.bt_rating, s.bt_ci95 = fit
    base = out[0]
    base_scores = all_scores[base_name]
    raw_p: list[tuple[SetupSummary, float]] = []
    for s in out:
        paired_ratios(s, all_runs[s.name], all_runs[base_name], scorer(pairwise))
        if s.is_baseline:
            continue
        a, b, ci = _paired(all_scores[s.name], base_scores, item_ids, rounds, seed)
        if ci is None:
            continue
        s.delta_vs_baseline, s.delta_ci95, s.delta_n = ci.estimate, _ci(ci), len(a)
        if all(x in (0.0, 1.0) for x in (*a, *b)):
            s.test, s.p_value = "mcnemar", stats.mcnemar(a, b).p_value
        else:
            s.test, s.p_value = "sign", stats.sign_test(a, b).p_value
        s.power_n = stats.power_n([x - y for x, y in zip(a, b, strict=True)])
        s.power_note = power_sentence(len(a), s.delta_vs_baseline, s.power_n)
        raw_p.append((s, s.p_value))
    for s, adj in zip((s for s, _ in raw_p), stats.holm([p for _, p in raw_p]), strict=True):
        s.p_value_holm = adj
    # the Summary derives each setup's ``runs``, which the Pareto marking reads
    summary = Summary(
        experiment=experiment,
        baseline=base_name,
        evaluator=dict(evaluator),
        n_items=len(item_ids),
        setups=out,
        cost_basis=cost_basis(base),
        compared_items=compared_items,
    )
    mark_pareto(out, summary.cost_basis, {s.name: all_runs[s.name] for s in out})
    too_many = _categories(out, all_scores, base_name, item_ids, categories, rounds, seed)
    if pairwise:
        summary.scoring_rule = PAIRWISE_RULE
    if too_many:
        summary.notes.append(too_many)
    missing = sum(s.missing for s in out)
    if missing:
        summary.complete = False
        # with samples, ``missing`` counts runs: one (setup, item) pair holds ``samples`` of them
        unit = "(setup, item, sample) runs" if samples > 1 else "(setup, item) pairs"
        summary.notes.append(
            f"{missing} {unit} have not been run yet: re-run with the same --out to finish. Until then "
            f"the table, its Pareto stars and the plot compare only the runs every setup stored, covering "
            f"{compared_items} of the {len(item_ids)} items, while cost USD, tokens and errors count "
            "every stored run"
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
) -> str | None:
    """Fill each setup's ``categories``; a note instead when there are more than ``MAX_CATEGORIES``."""
    by_cat: dict[str, list[str]] = {}
    for i in item_ids:
        c = categories.get(i)
        if c is not None:
            by_cat.setdefault(c, []).append(i)
    if len(by_cat) > MAX_CATEGORIES:
        return (
            f"the items have {len(by_cat)} categories, more than {MAX_CATEGORIES}: the per-category "
            "breakdown is left out"
        )
    for cat in sorted(by_cat):
        ids = by_cat[cat]
        base = {i: v for i in ids if (v := all_scores[base_name].get(i)) is not None}
        for s in out:
            mine = {i: v for i in ids if (v := all_scores[s.name].get(i)) is not None}
            cs = CategorySummary(n=len(mine), quality=sum(mine.values()) / len(mine) if mine else None)
            if not s.is_baseline:
                _, _, ci = _paired(mine, base, ids, rounds, seed)
                if ci is not None:
                    cs.delta_vs_baseline, cs.delta_ci95 = ci.estimate, _ci(ci)
            s.categories[cat] = cs
    return None


def summary_from_store(
    store: Store, manifest: dict[str, Any], *, left_out: list[str] | None = None
) -> Summary:
    """The summary of the manifest's setups and items, from stored runs and scores only.

    A run whose numbers cannot be right (a damaged or edited store: see ``_bad_number``) is a
    ``UserError`` naming it; with ``left_out`` (the viewer, which shows a damaged store rather than
    none of it) it is left out of the summary instead and named in that list."""
    ev_id = manifest["evaluator_id"]
    rows = [
        (s["name"], bool(s["is_baseline"]), store.run_rows(s["name"], s["hash"], ev_id))
        for s in manifest["setups"]
    ]
    judge = {s["name"]: store.judge_cost(ev_id, s["name"], s["hash"]) for s in manifest["setups"]}
    for name, _, by_item in rows:
        for item_id, runs in list(by_item.items()):
            kept = []
            for r in runs:
                problem = _bad_number(r)
                if problem is None:
                    kept.append(r)
                    continue
                where = f"setup `{name}`, item `{r.item_id}`, sample {r.sample} (run {r.run_id}): {problem}"
                if left_out is None:
                    raise UserError(edited(store.path, where, run=True))
                left_out.append(where)
            if not kept:
                del by_item[item_id]
            elif len(kept) != len(runs):
                by_item[item_id] = kept
    summary = summarize(
        experiment=manifest["experiment"],
        evaluator=manifest["evaluator"],
        setups=rows,
        item_ids=manifest["item_ids"],
        categories=store.item_categories(),
        rounds=int(manifest.get("bootstrap_rounds", 2000)),
        seed=int(manifest.get("seed", 0)),
        judge_costs=judge,
        samples=int(manifest.get("samples", 1)),
        usage_estimated_calls={
            s["name"]: store.usage_estimated_calls(s["name"], s["hash"]) for s in manifest["setups"]
        },
        pairwise=bool(manifest.get("pairwise", False)),
    )
    earlier = store.other_judges_cost(ev_id)
    if earlier > 0:  # paid, so it stays in what the report says judging cost
        summary.notes.append(
            f"earlier judges (an edited judge's verdicts, kept under their own evaluator id) paid "
            f"${earlier:.6f}, in no setup's judge_cost_usd"
        )
    add_human_votes(summary, store, manifest)
    # on the runs the table compares, as the categories are
    samples = int(manifest.get("samples", 1))
    stored = {name: _runs(name, by_item, manifest["item_ids"], samples) for name, _, by_item in rows}
    add_languages(summary, store, manifest, _compared(stored)[0])
    return summary
