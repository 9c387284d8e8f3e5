"""Paired statistics for comparing a setup with a baseline over the same items.

Pure Python (stdlib ``math``, ``random``, ``statistics``): numpy is not a runtime dependency.
Every resampling function takes a ``seed`` so reports are reproducible.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "CI",
    "McNemarResult",
    "SignTestResult",
    "binom_two_sided",
    "bootstrap_ci",
    "holm",
    "mcnemar",
    "p50",
    "p95",
    "paired_bootstrap_ci",
    "pareto_front",
    "pass_at_k",
    "percentile",
    "power_n",
    "sign_test",
]


@dataclass(frozen=True, slots=True)
class CI:
    """A point estimate with a confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True, slots=True)
class McNemarResult:
    """Exact McNemar test: ``a_only`` items only A got right, ``b_only`` only B."""

    a_only: int
    b_only: int
    p_value: float


@dataclass(frozen=True, slots=True)
class SignTestResult:
    """Exact sign test on paired scores: ``wins`` where A > B, ``losses`` where A < B."""

    wins: int
    losses: int
    ties: int
    p_value: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default method)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} is outside [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def p50(values: Sequence[float]) -> float:
    """The median, linearly interpolated."""
    return percentile(values, 50)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, linearly interpolated."""
    return percentile(values, 95)


def _check_confidence(confidence: float, rounds: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be positive")


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, rounds: int = 2000, seed: int = 0
) -> CI:
    """Percentile-bootstrap confidence interval of the mean of ``values``."""
    if not values:
        raise ValueError("bootstrap of an empty sequence")
    _check_confidence(confidence, rounds)
    rng = random.Random(seed)
    n = len(values)
    means = [math.fsum(rng.choices(values, k=n)) / n for _ in range(rounds)]
    tail = (1 - confidence) / 2 * 100
    return CI(
        estimate=math.fsum(values) / n,
        low=percentile(means, tail),
        high=percentile(means, 100 - tail),
        confidence=confidence,
    )


def _paired(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    rounds: int = 2000,
    seed: int = 0,
) -> CI:
    """Bootstrap CI of ``mean(a - b)``, resampling items jointly so each pair stays together."""
    _paired(a, b)
    # resampling the per-item differences is exactly resampling the (a, b) pairs jointly
    return bootstrap_ci(
        [x - y for x, y in zip(a, b, strict=True)], confidence=confidence, rounds=rounds, seed=seed
    )


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (doubling the smaller
    tail, capped at 1)."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    # exact integers: the binomial coefficients overflow a float beyond n ~ 1000
    tail = Fraction(sum(math.comb(n, i) for i in range(low + 1)), 1 << n)
    return min(1.0, float(2 * tail))


def mcnemar(a: Sequence[float], b: Sequence[float]) -> McNemarResult:
    """Exact McNemar test on paired binary scores (0 or 1): a two-sided binomial test on the
    discordant pairs."""
    _paired(a, b)
    for x in (*a, *b):
        if x not in (0, 1):
            raise ValueError(f"McNemar needs binary scores, got {x}; use sign_test")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1)
    return McNemarResult(a_only, b_only, binom_two_sided(a_only, a_only + b_only))


def sign_test(a: Sequence[float], b: Sequence[float]) -> SignTestResult:
    """Exact sign test on paired scores; ties are dropped."""
    _paired(a, b)
    wins = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    return SignTestResult(wins, losses, len(a) - wins - losses, binom_two_sided(wins, wins + losses))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each ``(cost, quality)`` point, whether no other point dominates it (costs no more,
    is at least as good, and is strictly better in one). Identical points are all on the front."""
    return [
        not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for j, (c2, q2) in enumerate(points) if j != i)
        for i, (c, q) in enumerate(points)
    ]


def power_n(deltas: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Items needed to detect the observed mean paired difference with a two-sided paired test
    (normal approximation, using the observed standard deviation of the differences).

    ``None`` when the observed mean difference is 0 or there are fewer than two differences.
    With zero variance and a non-zero difference, 2 (the fewest a paired test can use).
    """
    if len(deltas) < 2:
        return None
    mean = statistics.fmean(deltas)
    if mean == 0:
        return None
    sd = statistics.stdev(deltas)
    z = statistics.NormalDist()
    needed = ((z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / mean) ** 2
    return max(2, math.ceil(needed - 1e-9))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)`` computed as a product,
    for ``n`` samples of which ``c`` passed."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss
