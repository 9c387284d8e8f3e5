"""Bradley–Terry fitting."""

from __future__ import annotations

import math
import random
import time

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


def test_grouped_bootstrap_matches_resampling_items_one_by_one() -> None:
    """1,600 items sharing 3 outcome sets (a judge's levels against the baseline) are resampled as
    multinomial counts of those sets: the bounds match drawing items one by one, within noise."""
    levels = [1.0] * 700 + [0.5] * 300 + [0.0] * 600
    by_item = {f"i{k}": [("s", "base", v)] for k, v in enumerate(levels)}
    fast = bootstrap_ratings(by_item, anchor="base", rounds=300, seed=5)["s"]
    rng = random.Random(11)
    items = list(by_item.values())
    slow = sorted(
        fit_bradley_terry([o for outs in rng.choices(items, k=len(items)) for o in outs], anchor="base")["s"]
        for _ in range(300)
    )
    # the one-by-one 2.5% and 97.5% points of 300 rounds
    assert fast.low == pytest.approx(slow[7], abs=12) and fast.high == pytest.approx(slow[292], abs=12)
    assert fast.low < fast.rating < fast.high and fast.high - fast.low > 20


def test_a_hundred_thousand_judged_items_rate_in_seconds() -> None:
    """100k items × 2 setups against the baseline, 1,000 rounds: grouped resampling takes a few seconds
    (drawing items one by one took minutes); the bound is generous for a busy machine."""
    rng = random.Random(1)
    by_item = {
        f"i{k}": [(s, "base", rng.choice((0.0, 0.25, 0.5, 0.75, 1.0))) for s in ("m", "n")]
        for k in range(100_000)
    }
    start = time.perf_counter()
    fitted = bootstrap_ratings(by_item, anchor="base", rounds=1000, seed=0)
    assert time.perf_counter() - start < 60
    assert fitted["m"].low <= fitted["m"].rating <= fitted["m"].high
