"""The O(n) statistics agree with the exact and resampling versions they replace."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest

from moa.eval import stats
from moa.eval.stats import binom_two_sided, bootstrap_ci, mcnemar, paired_bootstrap_ci, sign_test


def exact_two_sided(k: int, n: int) -> float:
    """The previous implementation: exact integers, O(n^2) digits."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = Fraction(sum(math.comb(n, i) for i in range(low + 1)), 1 << n)
    return min(1.0, float(2 * tail))


def resampled_ci(
    values: list[float], rounds: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    """The previous bootstrap: n values drawn per round."""
    rng = random.Random(seed)
    n = len(values)
    means = [math.fsum(rng.choices(values, k=n)) / n for _ in range(rounds)]
    tail = (1 - confidence) / 2 * 100
    return stats.percentile(means, tail), stats.percentile(means, 100 - tail)


def test_binomial_tail_equals_exact_integers_on_a_grid() -> None:
    """Every k for n <= 120, and a sample of k up to n = 1,000, within 1e-12 relative."""
    grid = [(k, n) for n in range(121) for k in range(n + 1)]
    grid += [(k, n) for n in (255, 256, 499, 500, 999, 1000) for k in range(0, n + 1, 3)]
    for k, n in grid:
        expected = exact_two_sided(k, n)
        assert binom_two_sided(k, n) == pytest.approx(expected, rel=1e-12, abs=0), (k, n)


def test_binomial_tail_is_finite_and_ordered_at_a_million_flips() -> None:
    """Far beyond what exact integers can afford, p stays in [0, 1] and falls as k moves off n/2."""
    n = 1_000_000
    ps = [binom_two_sided(k, n) for k in (500_000, 499_500, 499_000, 498_000, 490_000, 480_000)]
    assert ps[0] == 1.0 and all(b < a for a, b in itertools.pairwise(ps))
    # one standard deviation (500) out: the normal tail's 0.3178; 40 out: below the smallest float
    assert ps[1] == pytest.approx(0.3178, abs=1e-3) and ps[-1] == 0.0


def test_mcnemar_and_sign_test_use_the_same_tail() -> None:
    """McNemar on 0/1 pairs and the sign test on scores give the exact p of their counts."""
    rng = random.Random(5)
    a = [float(rng.random() < 0.6) for _ in range(700)]
    b = [float(rng.random() < 0.5) for _ in range(700)]
    m = mcnemar(a, b)
    assert m.p_value == pytest.approx(exact_two_sided(m.a_only, m.a_only + m.b_only), rel=1e-12)
    x = [rng.random() for _ in range(500)]
    y = [rng.random() for _ in range(500)]
    s = sign_test(x, y)
    assert s.p_value == pytest.approx(exact_two_sided(s.wins, s.wins + s.losses), rel=1e-12)


def test_binomial_sampler_matches_the_binomial_distribution() -> None:
    """Mean and variance of the sampler's draws match n*p and n*p*(1-p) (both of its algorithms)."""
    rng = random.Random(11)
    for n, p in ((7, 0.3), (200, 0.02), (1000, 0.3), (100_000, 0.5), (50, 0.9)):
        draws = [stats._binomial(n, p, rng) for _ in range(20_000)]
        mean = math.fsum(draws) / len(draws)
        var = math.fsum((d - mean) ** 2 for d in draws) / (len(draws) - 1)
        sd = math.sqrt(n * p * (1 - p))
        assert abs(mean - n * p) < 5 * sd / math.sqrt(len(draws)), (n, p, mean)
        assert var == pytest.approx(n * p * (1 - p), rel=0.05), (n, p, var)
        assert all(0 <= d <= n for d in draws)


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    """The same seed gives the same interval; another seed, another one."""
    rng = random.Random(2)
    values = [float(rng.random() < 0.7) for _ in range(5000)]
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values, seed=4) != bootstrap_ci(values, seed=5)


@pytest.mark.parametrize("n", [64, 400, 3000])
def test_counts_bootstrap_is_close_to_the_resampled_one_on_binary_scores(n: int) -> None:
    """On 0/1 scores the multinomial bootstrap gives the old interval within resampling noise."""
    rng = random.Random(n)
    values = [float(rng.random() < 0.6) for _ in range(n)]
    old = resampled_ci(values, 2000, 0)
    new = bootstrap_ci(values)
    width = old[1] - old[0]
    assert new.estimate == pytest.approx(math.fsum(values) / n)
    assert abs(new.low - old[0]) < 0.1 * width and abs(new.high - old[1]) < 0.1 * width


def test_paired_bootstrap_on_differences_of_binary_scores() -> None:
    """Paired differences (-1, 0, 1) of a known sample: close to the old interval."""
    rng = random.Random(9)
    a = [float(rng.random() < 0.65) for _ in range(1000)]
    b = [float(rng.random() < 0.55) for _ in range(1000)]
    old = resampled_ci([x - y for x, y in zip(a, b, strict=True)], 2000, 0)
    new = paired_bootstrap_ci(a, b)
    width = old[1] - old[0]
    assert abs(new.low - old[0]) < 0.1 * width and abs(new.high - old[1]) < 0.1 * width


def test_few_values_with_many_levels_are_resampled_as_before() -> None:
    """Below RESAMPLE_MAX, values with many distinct levels give exactly the old interval."""
    rng = random.Random(3)
    values = [rng.random() for _ in range(300)]
    old = resampled_ci(values, 500, 7)
    new = bootstrap_ci(values, rounds=500, seed=7)
    assert (new.low, new.high) == old


def test_many_distinct_values_use_the_cornish_fisher_bounds() -> None:
    """Above RESAMPLE_MAX distinct values, the bounds match a resampled bootstrap of skewed data."""
    rng = random.Random(8)
    values = [rng.expovariate(1.0) for _ in range(stats.RESAMPLE_MAX + 1000)]
    old = resampled_ci(values, 400, 1)
    new = bootstrap_ci(values)
    width = old[1] - old[0]
    assert abs(new.low - old[0]) < 0.15 * width and abs(new.high - old[1]) < 0.15 * width
    # the mean of exponential draws is right-skewed: the upper bound sits further from the mean
    assert new.high - new.estimate > new.estimate - new.low


def test_constant_values_give_a_point_interval() -> None:
    """No spread, no interval, on either path."""
    assert bootstrap_ci([0.5] * 10) == stats.CI(0.5, 0.5, 0.5, 0.95)
    many = [0.25] * (stats.RESAMPLE_MAX + 5)
    ci = bootstrap_ci(many)
    assert (ci.low, ci.high) == (0.25, 0.25)
