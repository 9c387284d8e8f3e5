"""People's blind A/B votes as numbers: each setup's wins, ties and losses in the votes, Bradley–Terry
ratings from them with bootstrap intervals (the baseline anchored at 1000, as the judge's), and how
often people and the evaluator agree on the same pairs.

Agreement compares directions, three classes: the setup better, a tie, the baseline better. The
evaluator's direction on a pair is the pairwise judge's score of the setup's run (above 0.5: better),
or, for a reference evaluator, the two runs' scores compared. Cohen's kappa corrects the share of
agreeing verdicts for the agreement two raters with these marginals would reach by chance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from moa.eval.bradley_terry import Outcome, bootstrap_ratings
from moa.experiment.analysis.summary import HumanSummary, Summary
from moa.experiment.store.database import RunRow, Store
from moa.experiment.store.votes import Vote, iter_votes

__all__ = ["add_human_votes", "cohen_kappa", "direction", "evaluator_scores", "human_summaries"]

#: bootstrap refits of the human ratings (each is a full ML fit)
BT_ROUNDS_MAX = 1000
_EPS = 1e-9

#: (item id, sample, setup) -> the evaluator's score of the setup's run against the baseline's
EvaluatorScores = Mapping[tuple[str, int, str], float]


def direction(score: float) -> int:
    """1 when a score in [0, 1] says better (above 0.5), -1 worse, 0 a tie."""
    return 1 if score > 0.5 + _EPS else -1 if score < 0.5 - _EPS else 0


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's kappa of two raters' classes over the same cases; None when undefined (no cases, or
    both raters put every case in the same one class, so chance agreement is already 1)."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs paired ratings, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    ca, cb = Counter(a), Counter(b)
    expected = math.fsum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected >= 1.0 - _EPS:
        return None
    return (observed - expected) / (1.0 - expected)


def _run_score(r: RunRow) -> float | None:
    return 0.0 if r.error is not None else r.score


def evaluator_scores(store: Store, manifest: Mapping[str, Any]) -> dict[tuple[str, int, str], float]:
    """The evaluator's view of each setup's run against the baseline's: the judge's score under a
    pairwise evaluator, else 1 / 0.5 / 0 from the two runs' scores (better, equal, worse)."""
    ev_id = manifest["evaluator_id"]
    base = next(s for s in manifest["setups"] if s["is_baseline"])
    out: dict[tuple[str, int, str], float] = {}
    if manifest.get("pairwise"):
        for s in manifest["setups"]:
            if s["is_baseline"]:
                continue
            for item_id, rows in store.run_rows(s["name"], s["hash"], ev_id).items():
                for r in rows:
                    if r.error is None and r.score is not None:
                        out[(item_id, r.sample, s["name"])] = r.score
        return out
    base_rows = store.run_rows(base["name"], base["hash"], ev_id)
    base_score = {(i, r.sample): _run_score(r) for i, rows in base_rows.items() for r in rows}
    for s in manifest["setups"]:
        if s["is_baseline"]:
            continue
        for item_id, rows in store.run_rows(s["name"], s["hash"], ev_id).items():
            for r in rows:
                mine, theirs = _run_score(r), base_score.get((item_id, r.sample))
                if mine is not None and theirs is not None:
                    d = mine - theirs
                    out[(item_id, r.sample, s["name"])] = 1.0 if d > _EPS else 0.0 if d < -_EPS else 0.5
    return out


def human_summaries(
    votes: Sequence[Vote],
    *,
    setups: Sequence[str],
    baseline: str,
    evaluator: EvaluatorScores,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[str, HumanSummary]:
    """Each setup's ``HumanSummary`` (only setups someone voted on) from ``votes`` on pairs of
    ``setups``; ratings resample whole items."""
    known = set(setups)
    used = [v for v in votes if v.setup in known and v.other_setup in known]
    if not used:
        return {}
    sides: dict[str, list[tuple[float, str]]] = {}
    by_item: dict[Hashable, list[Outcome]] = {}
    for v in used:
        sides.setdefault(v.setup, []).append((v.value, v.voter))
        sides.setdefault(v.other_setup, []).append((1.0 - v.value, v.voter))
        by_item.setdefault(v.item_id, []).append((v.setup, v.other_setup, v.value))
    fitted = bootstrap_ratings(by_item, anchor=baseline, rounds=min(rounds, BT_ROUNDS_MAX), seed=seed)
    out: dict[str, HumanSummary] = {}
    for name in setups:
        mine = sides.get(name)
        if not mine:
            continue
        dirs = [direction(value) for value, _ in mine]
        h = HumanSummary(
            votes=len(mine),
            voters=len({voter for _, voter in mine}),
            wins=dirs.count(1),
            ties=dirs.count(0),
            losses=dirs.count(-1),
        )
        fit = fitted.get(name)
        if fit is not None:
            h.bt_rating, h.bt_ci95 = fit.rating, [fit.low, fit.high]
        if name != baseline:
            people, machine = _paired_directions(used, name, baseline, evaluator)
            h.agreement_n = len(people)
            if people:
                h.agreement = sum(1 for x, y in zip(people, machine, strict=True) if x == y) / len(people)
                h.kappa = cohen_kappa(people, machine)
        out[name] = h
    return out


def _paired_directions(
    votes: Sequence[Vote], setup: str, baseline: str, evaluator: EvaluatorScores
) -> tuple[list[int], list[int]]:
    """People's and the evaluator's directions on the votes of ``setup`` against the baseline."""
    people: list[int] = []
    machine: list[int] = []
    for v in votes:
        if v.setup != setup or v.other_setup != baseline:
            continue
        score = evaluator.get((v.item_id, v.sample, setup))
        if score is not None:
            people.append(direction(v.value))
            machine.append(direction(score))
    return people, machine


def add_human_votes(summary: Summary, store: Store, manifest: Mapping[str, Any]) -> None:
    """Set each voted setup's ``human`` from the store's votes on the manifest's items."""
    items = set(manifest["item_ids"])
    samples = int(manifest.get("samples", 1))
    votes = [v for v in iter_votes(store) if v.item_id in items and v.sample < samples]
    if not votes:
        return
    found = human_summaries(
        votes,
        setups=[s.name for s in summary.setups],
        baseline=summary.baseline,
        evaluator=evaluator_scores(store, manifest),
        rounds=int(manifest.get("bootstrap_rounds", 2000)),
        seed=int(manifest.get("seed", 0)),
    )
    for s in summary.setups:
        s.human = found.get(s.name)
