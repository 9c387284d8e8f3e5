"""Bradley–Terry ratings from pairwise outcomes, on an Elo-like scale.

``rating = 400 * log10(strength / anchor_strength) + 1000``: the anchor player is fixed at 1000
and a 400-point gap means 10:1 odds. Ties count as half a win for each side.

A player who never lost (or never won) has no finite maximum-likelihood strength. To keep every
rating finite we add a prior: each player plays ``prior_games`` (default 0.5) virtual games
against the anchor, drawn (half a win each side). This shrinks ratings slightly toward the anchor
and vanishes in weight as real games accumulate.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from moa.eval.stats import multinomial_counts, percentile

__all__ = ["Outcome", "RatingCI", "bootstrap_ratings", "fit_bradley_terry"]

#: (player_i, player_j, score of player_i in [0, 1])
Outcome = tuple[str, str, float]


@dataclass(frozen=True, slots=True)
class RatingCI:
    """A player's fitted rating and its bootstrap interval."""

    rating: float
    low: float
    high: float


def fit_bradley_terry(
    outcomes: Sequence[Outcome],
    *,
    anchor: str,
    prior_games: float = 0.5,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> dict[str, float]:
    """Maximum-likelihood Bradley–Terry ratings (minorization–maximization, Hunter 2004)."""
    for i, j, s in outcomes:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"outcome score {s} for {i} vs {j} is outside [0, 1]")
    return _fit([(o, 1.0) for o in outcomes], anchor, prior_games, max_iter, tol)


def _fit(
    weighted: Sequence[tuple[Outcome, float]], anchor: str, prior_games: float, max_iter: int, tol: float
) -> dict[str, float]:
    """The fit from outcomes each counted ``weight`` times (a weight of k is k identical games)."""
    players = sorted({p for (i, j, _), _ in weighted for p in (i, j)} | {anchor})
    wins = dict.fromkeys(players, 0.0)
    games: dict[tuple[str, str], float] = {}

    def add(i: str, j: str, score_i: float, weight: float = 1.0) -> None:
        wins[i] += weight * score_i
        wins[j] += weight * (1.0 - score_i)
        key = (i, j) if i < j else (j, i)
        games[key] = games.get(key, 0.0) + weight

    for (i, j, s), weight in weighted:
        if i != j:
            add(i, j, s, weight)
    if prior_games > 0:
        for p in players:
            if p != anchor:
                add(p, anchor, 0.5, prior_games)
    opponents: dict[str, list[tuple[str, float]]] = {p: [] for p in players}
    for (i, j), n in games.items():
        opponents[i].append((j, n))
        opponents[j].append((i, n))

    strength = dict.fromkeys(players, 1.0)
    for _ in range(max_iter):
        new: dict[str, float] = {}
        for p in players:
            denom = math.fsum(n / (strength[p] + strength[q]) for q, n in opponents[p])
            # a player with no games, or (without prior) no wins, keeps a floor to stay finite
            new[p] = max(wins[p], 1e-12) / denom if denom > 0 else strength[p]
        scale = new[anchor]
        new = {p: v / scale for p, v in new.items()}
        change = max(abs(math.log(new[p] / strength[p])) for p in players)
        strength = new
        if change < tol:
            break
    return {p: 400.0 * math.log10(strength[p]) + 1000.0 for p in players}


def bootstrap_ratings(
    outcomes_by_item: Mapping[Hashable, Sequence[Outcome]],
    *,
    anchor: str,
    rounds: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    prior_games: float = 0.5,
) -> dict[str, RatingCI]:
    """Ratings with percentile-bootstrap intervals, resampling whole items (all outcomes of an
    item stay together).

    A fit depends only on how often each outcome was drawn, so when items share few distinct sets
    of outcomes (a judge's few score levels against one baseline: at most one set per 16 items) a
    round draws how often each set is picked (a multinomial) and fits the counts: O(sets) per round
    instead of O(items), so 100k items take seconds, not minutes. Same distribution, another random
    stream than drawing items one by one, which smaller or more varied inputs still do."""
    items = list(outcomes_by_item.values())
    if not items:
        raise ValueError("no outcomes to rate")
    point = fit_bradley_terry([o for outs in items for o in outs], anchor=anchor, prior_games=prior_games)
    rng = random.Random(seed)
    groups = Counter(tuple(sorted(outs)) for outs in items)
    grouped = len(groups) * 16 <= len(items)
    kinds = sorted(groups)
    counts = [groups[k] for k in kinds]
    samples: dict[str, list[float]] = {p: [] for p in point}
    for _ in range(rounds):
        if grouped:
            picked = multinomial_counts(counts, rng)
            weighted = [(o, float(k)) for outs, k in zip(kinds, picked, strict=True) if k for o in outs]
        else:
            weighted = [(o, 1.0) for outs in rng.choices(items, k=len(items)) for o in outs]
        fitted = _fit(weighted, anchor, prior_games, 10_000, 1e-8)
        for p in point:
            # a player absent from a resample sits at the anchor: its prior games only
            samples[p].append(fitted.get(p, 1000.0))
    tail = (1 - confidence) / 2 * 100
    return {
        p: RatingCI(point[p], percentile(samples[p], tail), percentile(samples[p], 100 - tail)) for p in point
    }
