"""Statistics against hand-computed values."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from moa.eval.stats import (
    bootstrap_ci,
    holm,
    mcnemar,
    multinomial_counts,
    p50,
    p95,
    paired_bootstrap_ci,
    pareto_front,
    pass_at_k,
    percentile,
    power_n,
    sign_test,
)


def test_mcnemar_small_table() -> None:
    """1 vs 5 discordant pairs gives p = 2 * 7/64."""
    a = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    b = [1, 0, 1, 1, 1, 1, 1, 1, 0, 1]
    result = mcnemar(a, b)
    assert (result.a_only, result.b_only) == (1, 5)
    assert result.p_value == pytest.approx(14 / 64)


def test_mcnemar_no_discordant_pairs_is_one() -> None:
    """Identical results give p = 1."""
    assert mcnemar([1, 0], [1, 0]).p_value == 1.0


def test_mcnemar_rejects_non_binary() -> None:
    """Non-binary scores are refused (use the sign test)."""
    with pytest.raises(ValueError, match="binary"):
        mcnemar([0.5], [1])


def test_sign_test_drops_ties() -> None:
    """8 wins, 2 losses and 3 ties gives p = 2 * 56/1024."""
    a = [0.9] * 8 + [0.1] * 2 + [0.5] * 3
    b = [0.2] * 8 + [0.8] * 2 + [0.5] * 3
    result = sign_test(a, b)
    assert (result.wins, result.losses, result.ties) == (8, 2, 3)
    assert result.p_value == pytest.approx(112 / 1024)


def test_binomial_p_value_large_n_does_not_overflow() -> None:
    """A sign test over thousands of pairs stays finite."""
    result = sign_test([1.0] * 1500 + [0.0] * 1500, [0.0] * 1500 + [1.0] * 1500)
    assert 0.9 < result.p_value <= 1.0


def test_holm_known_example() -> None:
    """Holm adjusts [.01, .04, .03, .005] to [.03, .06, .06, .02]."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one() -> None:
    """Adjusted p-values never exceed 1."""
    assert holm([0.6, 0.9]) == [1.0, 1.0]


def test_percentiles_interpolate_linearly() -> None:
    """p50 and p95 of 1..4 are 2.5 and 3.85."""
    assert p50([4, 1, 3, 2]) == 2.5
    assert p95([1, 2, 3, 4]) == pytest.approx(3.85)
    assert percentile([7], 95) == 7


def test_pass_at_k_known_values() -> None:
    """pass@1 and pass@3 of 2 correct in 5 are 0.4 and 0.9."""
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 4, 3) == 1.0


def test_pass_at_k_rejects_bad_counts() -> None:
    """c > n is refused."""
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_bootstrap_ci_contains_mean_and_is_reproducible() -> None:
    """The interval brackets the mean and the same seed gives the same interval."""
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    ci = bootstrap_ci(values, seed=7)
    assert ci.low <= ci.estimate == 0.7 <= ci.high
    assert ci.low < ci.high
    assert bootstrap_ci(values, seed=7) == ci


def test_paired_bootstrap_ci_of_difference() -> None:
    """The paired interval is centred on the mean difference."""
    a = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    b = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    ci = paired_bootstrap_ci(a, b, rounds=500, seed=1)
    assert ci.estimate == pytest.approx(0.5)
    assert ci.low <= 0.5 <= ci.high


def test_pareto_front_with_ties() -> None:
    """Dominated points are off the front; identical points both stay on it."""
    points = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (1.0, 0.5)]
    assert pareto_front(points) == [True, True, False, False, True]


def test_power_n_sizes_the_exact_sign_test_the_report_runs() -> None:
    """Items for 80% power of the exact two-sided sign test at the observed better/tied/worse shares.
    Reference: the smallest n with sum_N binom.pmf(N, n, untied) * P(binomtest(W, N).pvalue <= 0.05),
    W ~ binom(N, better / untied), summed with scipy 1.17.1 (scipy.stats.binom, scipy.stats.binomtest):
    half better, half tied -> 15 (power 0.849 there, 0.788 at 14); 3 better, 1 worse, 6 tied -> 84
    (0.8030; 0.7973 at 83); 2 better, 1 worse, 1 tied -> 99 (0.8006; 0.7966 at 98). The normal
    approximation of a paired z-test said 11 for the first."""
    assert power_n([1, 0, 1, 0]) == 15
    assert power_n([1, 1, 1, -1, 0, 0, 0, 0, 0, 0]) == 84
    assert power_n([1, 1, -1, 0]) == 99
    # the sign test reads directions: sizes of the differences change nothing
    assert power_n([0.5, 0, 0.25, 0]) == 15


def test_power_n_never_says_fewer_items_than_the_exact_test_can_reject_on() -> None:
    """Better on every item: the exact test needs 6 untied items to reach p <= 0.05 (2 * 2^-5 =
    0.0625 > 0.05; scipy.stats.binomtest(6, 6).pvalue = 0.03125), so 6 items, not the 2 the
    zero-variance normal formula gave while the report's own p-value was 0.0625 at 5 items."""
    assert power_n([1.0] * 5) == 6
    assert power_n([0.2, 0.2]) == 6
    assert power_n([-1.0] * 3) == 6


def test_power_n_past_the_exact_range_uses_the_sign_test_normal_approximation() -> None:
    """55 better, 45 worse: past 400 items, Connor's formula (1.96 + 0.8416 sqrt(0.99))^2 / 0.01 =
    782.5, continuity-corrected: 782.5 / 4 (1 + sqrt(1 + 4 / 78.25))^2 = 802.4 -> 803. The exact
    power there, summed with scipy 1.17.1 as above, is 0.806 (at 783, uncorrected, 0.789; the first n
    reaching 0.8 exactly is 786)."""
    assert power_n([1.0] * 55 + [-1.0] * 45) == 803
    assert power_n([-1.0] * 55 + [1.0] * 45) == 803


def test_power_n_none_without_difference() -> None:
    """No observed difference, or as many items better as worse (the sign test sees no direction
    whatever the sizes), means no sample size."""
    assert power_n([1, -1, 0]) is None
    assert power_n([2, -1, 0]) is None


def test_power_n_reads_rounding_as_no_difference() -> None:
    """Item means in thirds whose differences cancel exactly (Δ = 0) leave ~1e-17 in floats: no
    sample size, not ~1e33 items."""
    assert power_n([0.0 - 1 / 3, 1.0 - 2 / 3]) is None
    assert power_n([1e-6, 0, 1e-6, 0]) == power_n([1, 0, 1, 0]) == 15  # small but real: its figure


def test_multinomial_counts_sum_to_the_draws_and_follow_the_shares() -> None:
    """Counts over groups of 700, 300 and 0 values: they add up to 1,000, the empty group is never
    picked, and the first group's share averages 0.7."""
    rng = random.Random(4)
    draws = [multinomial_counts([700, 300, 0], rng) for _ in range(400)]
    assert all(sum(d) == 1000 and d[2] == 0 for d in draws)
    assert sum(d[0] for d in draws) / (400 * 1000) == pytest.approx(0.7, abs=0.005)


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        (lambda: bootstrap_ci([0.5, float("nan"), 1.0]), r"values\[1\] is nan"),
        (lambda: bootstrap_ci([float("inf"), 1.0]), r"values\[0\] is inf"),
        (lambda: paired_bootstrap_ci([1.0, 0.0], [0.0, float("nan")]), r"b\[1\] is nan"),
        (lambda: sign_test([1.0, float("-inf")], [0.0, 0.0]), r"a\[1\] is -inf"),
        (lambda: power_n([1.0, float("nan"), 1.0]), r"deltas\[1\] is nan"),
        (lambda: percentile([3.0, float("nan")], 50), r"values\[1\] is nan"),
        (lambda: holm([0.01, float("nan")]), r"p_values\[1\] is nan"),
        (lambda: power_n([1.0, 0.0], alpha=0.0), r"alpha=0.0 must be in \(0, 1\)"),
        (lambda: power_n([1.0, 0.0], power=1.0), r"power=1.0 must be in \(0, 1\)"),
    ],
)
def test_a_nan_or_infinite_input_is_refused_by_name(call: Callable[[], object], culprit: str) -> None:
    """A NaN or infinity among a user's scores is one line naming its position, not a CI of
    (inf, [1.0, nan]), a NaN counted as a tie, or an item count computed from the other values; a
    power or alpha outside (0, 1) is named too (power=1 gave 73 items, alpha=0 a StatisticsError)."""
    with pytest.raises(ValueError, match=culprit):
        call()


def test_finite_values_whose_sum_overflows_are_still_accepted() -> None:
    """The fast finiteness check (a finite sum) falls back to the values themselves: two values near
    the float maximum, whose sum overflows, are finite and tested as usual."""
    assert sign_test([1e308, 1e308], [0.0, 0.0]).p_value == pytest.approx(0.5)
