"""Bradley–Terry fitting."""

from __future__ import annotations

import math
import random

import pytest

from moa.eval.bradley_terry import Outcome, bootstrap_ratings, fit_bradley_terry


def _synthetic(strengths: dict[str, float], games: int, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    names = sorted(strengths)
    out: list[Outcome] = []
    for _ in range(games):
        i, j = rng.sample(names, 2)
        p = strengths[i] / (strengths[i] + strengths[j])
        out.append((i, j, 1.0 if rng.random() < p else 0.0))
    return out


def test_recovers_known_ranking_with_anchor() -> None:
    """Ratings follow the true strengths and the anchor sits at 1000."""
    true = {"base": 1.0, "mid": 3.0, "top": 10.0, "weak": 0.3}
    ratings = fit_bradley_terry(_synthetic(true, 4000, seed=3), anchor="base")
    assert ratings["base"] == pytest.approx(1000.0)
    assert sorted(ratings, key=ratings.__getitem__) == ["weak", "base", "mid", "top"]
    # 400*log10(10) = 400 above the anchor, within sampling noise
    assert ratings["top"] == pytest.approx(1400, abs=60)


def test_two_players_closed_form() -> None:
    """3 wins of 4 (plus the tie prior) gives 400*log10(3.25/1.25) over the anchor."""
    outcomes: list[Outcome] = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]
    ratings = fit_bradley_terry(outcomes, anchor="b")
    assert ratings["a"] == pytest.approx(1000 + 400 * math.log10(3.25 / 1.25), abs=1e-6)


def test_ties_are_half_wins() -> None:
    """Only ties means equal ratings."""
    ratings = fit_bradley_terry([("a", "b", 0.5)] * 5, anchor="a")
    assert ratings["b"] == pytest.approx(1000.0)


def test_undefeated_player_stays_finite() -> None:
    """A player who never lost gets a finite, highest rating."""
    ratings = fit_bradley_terry([("x", "base", 1.0)] * 20 + [("y", "base", 0.5)] * 4, anchor="base")
    assert math.isfinite(ratings["x"]) and ratings["x"] > ratings["y"] > 900


def test_bootstrap_ratings_reproducible_and_bracketing() -> None:
    """Intervals bracket the point rating and repeat under a seed."""
    outs = _synthetic({"base": 1.0, "s": 3.0}, 200, seed=1)
    by_item = {f"item{k}": [o] for k, o in enumerate(outs)}
    first = bootstrap_ratings(by_item, anchor="base", rounds=50, seed=2)
    assert first == bootstrap_ratings(by_item, anchor="base", rounds=50, seed=2)
    assert first["s"].low <= first["s"].rating <= first["s"].high
    assert first["base"].rating == pytest.approx(1000.0)
