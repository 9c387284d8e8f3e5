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


def test_star_design_with_a_setup_winning_every_item_reaches_the_maximum_likelihood() -> None:
    """Three setups judged against the baseline on 10,000 items, one winning them all: each rating
    is the closed form of its own games (400*log10((w + 1/4) / (n - w + 1/4)) over the anchor);
    the old minorization–maximization stopped 210 points short on the unbeaten one."""
    outcomes: list[Outcome] = []
    for name, won in (("s1", 10_000), ("s2", 6_000), ("s3", 3_000)):
        outcomes += [(name, "base", 1.0)] * won + [(name, "base", 0.0)] * (10_000 - won)
    ratings = fit_bradley_terry(outcomes, anchor="base")
    assert ratings["s1"] == pytest.approx(2840.82833942201, abs=1e-6)
    assert ratings["s2"] == pytest.approx(1070.432884690076, abs=1e-6)
    assert ratings["s3"] == pytest.approx(852.8175576656415, abs=1e-6)


def test_a_chain_of_near_certain_wins_matches_a_reference_fit() -> None:
    """a beats b, b beats c, c beats the baseline, each all but once in 1,000 games: the ratings of a
    reference maximum-likelihood fit (scipy BFGS on the same likelihood, prior included)."""
    outcomes: list[Outcome] = (
        [("a", "b", 1.0)] * 1000
        + [("a", "b", 0.0)]
        + [("b", "c", 1.0)] * 1000
        + [("c", "base", 1.0)] * 1000
        + [("c", "base", 0.0)] * 2
    )
    ratings = fit_bradley_terry(outcomes, anchor="base")
    assert ratings["a"] == pytest.approx(4505.741448190686, abs=1e-4)
    assert ratings["b"] == pytest.approx(3344.548888040529, abs=1e-4)
    assert ratings["c"] == pytest.approx(2024.2235312011626, abs=1e-4)


def test_without_prior_games_the_outcomes_alone_are_fitted() -> None:
    """prior_games=0 on a design where every player won and lost: the reference fit's ratings."""
    outcomes: list[Outcome] = [
        ("a", "base", 1.0),
        ("base", "a", 1.0),
        ("a", "base", 0.5),
        ("b", "a", 1.0),
        ("a", "b", 0.25),
        ("b", "base", 0.0),
    ] * 3
    ratings = fit_bradley_terry(outcomes, anchor="base", prior_games=0)
    assert ratings["a"] == pytest.approx(885.7687766949388, abs=1e-6)
    assert ratings["b"] == pytest.approx(983.4087727178072, abs=1e-6)


@pytest.mark.parametrize(
    ("outcomes", "culprit"),
    [
        ([("a", "base", 0.0)] * 3, "`a` has no finite rating with prior_games=0"),
        ([("a", "base", 1.0), ("a", "base", 0.0), ("c", "d", 1.0), ("d", "c", 1.0)], "`c`"),
    ],
)
def test_without_prior_games_an_infinite_rating_is_refused_by_name(
    outcomes: list[Outcome], culprit: str
) -> None:
    """A player who never won, or a group not connected to the anchor, has no finite maximum
    likelihood rating: a ValueError naming it, not a number (-3990, or any scale) printed as one."""
    with pytest.raises(ValueError, match=culprit):
        fit_bradley_terry(outcomes, anchor="base", prior_games=0)


def test_a_negative_prior_or_a_bootstrap_without_one_is_refused() -> None:
    """prior_games < 0 was silently read as 0; the bootstrap needs a prior, or a resample can leave a
    player unbeaten."""
    with pytest.raises(ValueError, match="prior_games=-1"):
        fit_bradley_terry([("a", "base", 1.0)], anchor="base", prior_games=-1)
    with pytest.raises(ValueError, match="prior_games=0"):
        bootstrap_ratings({"i": [("a", "base", 1.0)]}, anchor="base", prior_games=0)


@pytest.mark.parametrize(
    ("kw", "culprit"), [({"rounds": 0}, "rounds=0"), ({"confidence": 1.5}, "confidence=1.5")]
)
def test_a_bootstrap_without_rounds_or_with_a_confidence_past_one_is_refused_by_name(
    kw: dict[str, float], culprit: str
) -> None:
    """rounds=0 failed as 'percentile of an empty sequence', confidence=1.5 as 'q=-25.0 is outside
    [0, 100]': neither named the argument at fault, as stats.bootstrap_ci does."""
    with pytest.raises(ValueError, match=culprit):
        bootstrap_ratings({"i": [("a", "base", 1.0)]}, anchor="base", **kw)  # type: ignore[arg-type]
