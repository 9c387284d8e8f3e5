"""The quality extras computed per setup from its stored runs: a run's score, pass@k, the per-turn
scores of multi-turn items, a cascade's escalation, failure reasons, the judge's win/tie/loss and
Bradley–Terry ratings, and the power sentence. Shared by the summary (``summarize``) and the
per-language breakdown (``languages``).

Under a pairwise judge every run's score is the one the scoring phase stored (``score_answers``):
the baseline's 0.5 on every run, failed or not, and a failed setup run's 0 against a baseline run
that answered, 0.5 against one that failed too. Readers read it (``scorer``); none derives it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence

from moa.eval import stats
from moa.eval.bradley_terry import Outcome, bootstrap_ratings
from moa.eval.judge import INCONSISTENT, NO_VERDICT
from moa.experiment.analysis.summary import JudgeSummary
from moa.experiment.store.database import RunRow

__all__ = [
    "BT_ROUNDS_MAX",
    "RunScore",
    "bt_ratings",
    "failure_kind",
    "failure_reasons",
    "item_scores",
    "judge_summary",
    "pair_score",
    "pass_at_k",
    "power_sentence",
    "run_score",
    "scorer",
    "stage_numbers",
    "turn_scores",
]

#: a run's score, or ``None`` when it has none (yet)
RunScore = Callable[[RunRow], float | None]

#: Bradley–Terry refits per bootstrap (each is a full ML fit; a few hundred give stable 95% bounds)
BT_ROUNDS_MAX = 1000
_EPS = 1e-9


def stage_numbers(rows: Sequence[RunRow]) -> tuple[float | None, dict[str, float] | None]:
    """A cascade's escalation rate and the share of runs each stage answered (None, None when no
    run says which stage answered: not a cascade)."""
    stages = Counter(r.stage for r in rows if r.stage is not None)
    n = sum(stages.values())
    if not n:
        return None, None
    shares = {str(k): stages[k] / n for k in sorted(stages)}
    return sum(c for k, c in stages.items() if k > 1) / n, shares


def run_score(r: RunRow) -> float | None:
    """A run's score: 0 when the run failed, ``None`` when not scored yet."""
    return 0.0 if r.error is not None else r.score


def pair_score(r: RunRow) -> float | None:
    """A run's score under a pairwise judge: the stored one, failed run or not; ``None`` while the
    pair is not scored (its baseline run not stored yet, or its judgment not made)."""
    return r.score


def scorer(pairwise: bool) -> RunScore:
    """How the runs of an experiment score: ``pair_score`` under a pairwise judge, else ``run_score``."""
    return pair_score if pairwise else run_score


def item_scores(runs: Mapping[str, Sequence[RunRow]], score: RunScore = run_score) -> dict[str, float]:
    """Item id -> mean ``score`` over the item's runs that have one (items with none left out)."""
    out: dict[str, float] = {}
    for i, rows in runs.items():
        values = [v for r in rows if (v := score(r)) is not None]
        if values:
            out[i] = math.fsum(values) / len(values)
    return out


def pass_at_k(runs: Mapping[str, Sequence[RunRow]], samples: int) -> dict[str, float] | None:
    """pass@1..k (unbiased estimator, averaged over items) when every scored run is 0 or 1, else
    ``None``. pass@j uses the items with at least j scored samples."""
    per_item: list[tuple[int, int]] = []
    for rows in runs.values():
        values = [v for r in rows if (v := run_score(r)) is not None]
        if any(v not in (0.0, 1.0) for v in values):
            return None
        if values:
            per_item.append((len(values), int(sum(values))))
    if not per_item:
        return None
    out: dict[str, float] = {}
    for j in range(1, samples + 1):
        usable = [(n, c) for n, c in per_item if n >= j]
        if usable:
            out[str(j)] = math.fsum(stats.pass_at_k(n, c, j) for n, c in usable) / len(usable)
    return out


def turn_scores(rows: Sequence[RunRow]) -> list[float] | None:
    """Turn k's mean score over the runs scored turn by turn (multi-turn items under a judge), or
    ``None`` when no run was. A run that failed has no turn scores and is left out here."""
    per_turn: list[list[float]] = []
    for r in rows:
        values = r.turn_scores if r.error is None else None
        for k, v in enumerate(values or ()):
            if k == len(per_turn):
                per_turn.append([])
            per_turn[k].append(v)
    return [math.fsum(v) / len(v) for v in per_turn] or None


def failure_kind(detail: str) -> str:
    """A score detail cut to its kind, so reasons can be counted: ``tests failed: AssertionError``,
    ``timeout after 10.0s``, ``blocked: sandbox: os.fork is refused``, ``memory limit (512 MB)``,
    ``syntax error``."""
    text = detail.split("; output truncated")[0].strip()
    parts = text.split(": ")
    # kinds whose next part is a line number or a message: counted together
    whole = ("syntax error", "the answer's code does not parse", "the answer's code does not compile")
    keep = {"blocked": 3, **dict.fromkeys(whole, 1)}.get(parts[0], 2)
    kind = ": ".join(parts[:keep])
    return kind if len(kind) <= 80 else kind[:77] + "..."


def failure_reasons(rows: Sequence[RunRow], top: int = 5) -> list[dict[str, object]]:
    """The most frequent reasons (score details, by kind) of the scored runs that did not pass."""
    counts = Counter(
        failure_kind(r.detail)
        for r in rows
        if r.error is None and r.score is not None and r.score < 1 and r.detail
    )
    return [{"reason": k, "count": c} for k, c in counts.most_common(top)]


def judge_summary(
    scores: Mapping[str, float], runs: Mapping[str, Sequence[RunRow]], *, rounds: int, seed: int
) -> JudgeSummary | None:
    """Win/tie/loss of a setup against the baseline from its per-item judge scores (items), and its
    judged runs forced to a tie by a missing verdict or disagreeing orders (runs: see JudgeSummary)."""
    values = list(scores.values())
    if not values:
        return None
    details = [r.detail or "" for rows in runs.values() for r in rows if r.error is None]
    wins = sum(1 for v in values if v > 0.5 + _EPS)
    losses = sum(1 for v in values if v < 0.5 - _EPS)
    ci = stats.bootstrap_ci(values, rounds=rounds, seed=seed)
    return JudgeSummary(
        wins=wins,
        ties=len(values) - wins - losses,
        losses=losses,
        win_rate=wins / len(values),
        score=ci.estimate,
        score_ci95=[ci.low, ci.high],
        # anywhere in the detail: a multi-turn run's starts with its first turn's ("turn 1: ...")
        no_verdict=sum(1 for d in details if NO_VERDICT in d),
        inconsistent=sum(1 for d in details if INCONSISTENT in d),
    )


def bt_ratings(
    runs_by_setup: Mapping[str, Mapping[str, Sequence[RunRow]]],
    *,
    baseline: str,
    rounds: int,
    seed: int,
) -> dict[str, tuple[float, list[float]]]:
    """Bradley–Terry rating and 95% CI per setup (the baseline anchored at 1000) from each judged
    run against the baseline's run on the same item and sample (its stored pairwise score): a star
    design, which identifies every rating through the baseline. Resampling keeps an item's outcomes
    together."""
    by_item: dict[Hashable, list[Outcome]] = {}
    for name, runs in runs_by_setup.items():
        if name == baseline:
            continue
        for item_id, rows in runs.items():
            for r in rows:
                v = pair_score(r)
                if v is not None:
                    by_item.setdefault(item_id, []).append((name, baseline, v))
    if not by_item:
        return {}
    fitted = bootstrap_ratings(by_item, anchor=baseline, rounds=min(rounds, BT_ROUNDS_MAX), seed=seed)
    return {p: (ci.rating, [ci.low, ci.high]) for p, ci in fitted.items()}


def power_sentence(n: int, delta: float | None, needed: int | None) -> str:
    """One sentence on whether ``n`` paired items can tell the observed difference from noise."""
    if delta is None:
        return f"n={n} items; no paired difference to assess"
    if n < 2:
        # the spread of the differences, which the sample size rests on, needs two of them
        return f"n={n} item; a {delta:+.3f} difference from one item cannot be told from noise"
    if needed is None and abs(delta) > _EPS:
        # the paired test (sign, or McNemar's: the same test) reads directions only, not sizes
        return (
            f"n={n} items; a {delta:+.3f} difference, but as many items better as worse, so no number "
            "of items makes the paired test detect it"
        )
    if needed is None:
        return f"n={n} items; no difference observed ({delta:+.3f}), so no sample size can be given"
    head = f"n={n} items; detecting a {delta:+.3f} difference at 80% power needs ~{needed} items"
    if needed > n:
        return f"{head} — this result may be noise"
    return f"{head} — enough items for a difference of this size"
