"""Paired statistics for comparing a setup with a baseline over the same items.

Pure Python (stdlib ``math``, ``random``, ``statistics``): numpy is not a runtime dependency.
Every resampling function takes a ``seed`` so reports are reproducible.

Each costs O(n) in the items or less: the binomial tail of the exact tests is summed in log space
from its largest term, and the bootstrap of a mean draws how often each distinct value is picked
rather than every pick, so a summary of 100k items spends seconds, not hours, in here.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CI",
    "MAX_BOOTSTRAP_ROUNDS",
    "McNemarResult",
    "SignTestResult",
    "binom_two_sided",
    "bootstrap_ci",
    "check_bootstrap",
    "holm",
    "mcnemar",
    "multinomial_counts",
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
    _check_finite(values, "values")
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


def _check_finite(values: Sequence[float], name: str) -> None:
    """One line naming the first value that is NaN or infinite: it would turn every statistic of
    the sequence into nan (or a bound of ``nan``, a p-value counting it as a tie) without a word."""
    # a finite sum means finite values (a NaN or infinity would carry into it): one fast pass
    if math.isfinite(sum(values)):
        return
    for i, x in enumerate(values):
        if not math.isfinite(x):
            raise ValueError(f"{name}[{i}] is {x}: the statistics need finite numbers")


def check_bootstrap(confidence: float, rounds: int) -> None:
    """Refuse, by name, a confidence outside (0, 1) or fewer than one bootstrap round."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be positive")


#: the most bootstrap rounds an experiment may ask for (its file, and a store's manifest, are
#: refused past it): a summary's intervals at 10**12 rounds never finish
MAX_BOOTSTRAP_ROUNDS = 100_000

#: above this many values, nearly all distinct, the bootstrap of a mean is read from its normal
#: (Cornish–Fisher) form instead of resampled: see ``bootstrap_ci``
RESAMPLE_MAX = 5000


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, rounds: int = 2000, seed: int = 0
) -> CI:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    A round's mean depends only on how often each distinct value was drawn, so when the values
    take few distinct levels (scores of 0/1, judge verdicts, means over k samples, paired
    differences of those: at most one level per 16 values) a round draws those counts, a
    multinomial over the levels, instead of n values: O(levels x rounds), whatever n is. The
    interval has the same distribution as drawing values one by one, but not the same random
    stream, so a seed gives other bounds than moa 0.2 did (within the resampling noise).

    Values with many distinct levels are resampled one by one, as before, up to ``RESAMPLE_MAX``
    of them. Above that the bootstrap distribution of the mean is normal to well within the noise
    of a few thousand rounds, and the bounds are its Cornish–Fisher quantiles (the mean, the
    standard error of the resampled mean and its skewness), with no resampling and no seed.
    """
    if not values:
        raise ValueError("bootstrap of an empty sequence")
    _check_finite(values, "values")
    check_bootstrap(confidence, rounds)
    n = len(values)
    tail = (1 - confidence) / 2
    levels = Counter(values)
    if len(levels) * 16 <= n or n <= RESAMPLE_MAX:
        rng = random.Random(seed)
        if len(levels) * 16 <= n:
            means = _multinomial_means(sorted(levels.items()), n, rounds, rng)
        else:
            means = [math.fsum(rng.choices(values, k=n)) / n for _ in range(rounds)]
        low, high = percentile(means, tail * 100), percentile(means, 100 - tail * 100)
    else:
        low, high = _cornish_fisher(values, tail)
    return CI(estimate=math.fsum(values) / n, low=low, high=high, confidence=confidence)


def multinomial_counts(counts: Sequence[int], rng: random.Random) -> list[int]:
    """How often each of ``len(counts)`` groups is picked in ``sum(counts)`` draws with replacement,
    group ``g`` holding ``counts[g]`` of the values: one bootstrap resample of grouped values, in
    O(groups) rather than O(values)."""
    n = sum(counts)
    left, rest = n, n
    out = []
    for count in counts[:-1]:
        k = _binomial(left, count / rest, rng) if rest else 0
        out.append(k)
        left -= k
        rest -= count
    out.append(left)
    return out


def _multinomial_means(
    levels: Sequence[tuple[float, int]], n: int, rounds: int, rng: random.Random
) -> list[float]:
    """Each round's mean of n draws from ``levels`` ((value, count) pairs), its counts drawn as a
    chain of binomials: each level takes its share of the draws the levels before it left."""
    # a level's chance among itself and the levels after it
    head, last = [v for v, _ in levels[:-1]], levels[-1][0]
    shares = []
    rest = n
    for _, count in levels[:-1]:
        shares.append(count / rest)
        rest -= count
    means = []
    for _ in range(rounds):
        left = n
        parts = []
        for value, share in zip(head, shares, strict=True):
            k = _binomial(left, share, rng)
            parts.append(value * k)
            left -= k
        parts.append(last * left)
        means.append(math.fsum(parts) / n)
    return means


def _binomial(n: int, p: float, rng: random.Random) -> int:
    """One binomial(n, p) variate from ``rng.random()`` alone, so a seed gives the same draws on
    every Python version (``random.binomialvariate`` is 3.12+ and may change)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - _binomial(n, 1.0 - p, rng)
    if n * p < 10.0:
        # count successes by geometric skips between them: about n*p + 1 steps
        log_q = math.log1p(-p)
        x = y = 0
        while True:
            y += math.floor(math.log(1.0 - rng.random()) / log_q) + 1
            if y > n:
                return x
            x += 1
    return _btrs(n, p, rng)


def _btrs(n: int, p: float, rng: random.Random) -> int:
    """Hörmann's transformed rejection with squeeze (BTRS, 1993) for n*p >= 10, p <= 0.5: a
    constant expected number of uniforms per variate, whatever n is."""
    spq = math.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    lpq = math.log(p / (1.0 - p))
    m = math.floor((n + 1) * p)
    h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        if us <= 0.0:
            continue
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v *= alpha / (a / (us * us) + b)
        if v > 0.0 and math.log(v) <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return k


def _cornish_fisher(values: Sequence[float], tail: float) -> tuple[float, float]:
    """The ``tail`` and ``1 - tail`` quantiles of the bootstrap distribution of the mean, from its
    first three cumulants: mean, variance sd^2/n and skewness g/sqrt(n) (sd and g of the values
    themselves, divisor n, as resampling sees them)."""
    n = len(values)
    mean = math.fsum(values) / n
    m2 = math.fsum((x - mean) ** 2 for x in values) / n
    if m2 == 0.0:
        return mean, mean
    m3 = math.fsum((x - mean) ** 3 for x in values) / n
    se = math.sqrt(m2 / n)
    skew = m3 / m2**1.5 / math.sqrt(n)
    z = statistics.NormalDist().inv_cdf(1 - tail)
    # Cornish–Fisher: q = z + (z^2 - 1) * skew / 6, for the lower (-z) and upper (+z) quantile
    shift = (z * z - 1) * skew / 6
    return mean + se * (-z + shift), mean + se * (z + shift)


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
    _check_finite(a, "a")
    _check_finite(b, "b")
    # resampling the per-item differences is exactly resampling the (a, b) pairs jointly
    return bootstrap_ci(
        [x - y for x, y in zip(a, b, strict=True)], confidence=confidence, rounds=rounds, seed=seed
    )


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (doubling the smaller
    tail, capped at 1).

    The tail is summed in log space from its largest term down: the largest term comes from Loader's
    saddle-point form (accurate to a few ulps at any n, where ``lgamma`` differences lose ~n ulps),
    each next one is the last times ``i / (n - i + 1)``, and the sum stops once what is left cannot
    change it. O(n) at worst, about sqrt(n) terms in practice; the result agrees with exact integer
    arithmetic to about 1e-13 relative."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    if low == 0:
        return min(1.0, math.ldexp(1.0, 1 - n))
    # terms relative to the largest, P(low): sum while the geometric bound on the rest still counts
    total, term = 1.0, 1.0
    for i in range(low, 0, -1):
        ratio = i / (n - i + 1)
        term *= ratio
        total += term
        if term * ratio < (1.0 - ratio) * total * 2**-60:
            break
    return min(1.0, math.exp(math.log(2.0) + _log_half_binomial_pmf(low, n) + math.log(total)))


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _log_half_binomial_pmf(x: int, n: int) -> float:
    """log P(X = x) for X ~ binomial(n, 1/2), 0 < x < n, by Loader's saddle-point form (2000): the
    Stirling remainders and the deviance ``bd0`` carry the terms that cancel in lgamma differences."""
    half = n / 2
    log_c = _stirlerr(n) - _stirlerr(x) - _stirlerr(n - x) - _bd0(x, half) - _bd0(n - x, half)
    return log_c + 0.5 * math.log(n / (x * (n - x))) - _HALF_LOG_2PI


def _stirlerr(n: int) -> float:
    """log(n!) - log(sqrt(2 pi n) (n/e)^n), the remainder of Stirling's formula."""
    if n <= 15:
        return math.log(math.factorial(n)) - (n + 0.5) * math.log(n) + n - _HALF_LOG_2PI
    nn = float(n) * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _bd0(x: float, np: float) -> float:
    """``x log(x/np) + np - x`` without its cancellation when x is near np (Loader's series)."""
    if abs(x - np) < 0.1 * (x + np):
        v = (x - np) / (x + np)
        s = (x - np) * v
        ej = 2 * x * v
        v2 = v * v
        j = 1
        while True:
            ej *= v2
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
            j += 1
    return x * math.log(x / np) + np - x


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
    _check_finite(a, "a")
    _check_finite(b, "b")
    wins = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    return SignTestResult(wins, losses, len(a) - wins - losses, binom_two_sided(wins, wins + losses))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given."""
    _check_finite(p_values, "p_values")
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


#: a mean paired difference this small relative to the largest difference is rounding, not signal:
#: each difference carries a relative error near 2**-53, and ``fmean`` sums them exactly
_NOISE = 1e-9


#: up to this many items the sign test's power is summed exactly; past it, its normal approximation
_EXACT_POWER_MAX = 400


def power_n(deltas: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Items needed for the test the report runs on these paired differences, the exact two-sided
    sign test (McNemar's exact test on 0/1 scores is the same test), to reject at level ``alpha``
    with probability ``power``, were every item better, tied and worse as often as in ``deltas``.

    The exact power at n items is the sum over the number N of untied items (binomial(n, share of
    untied)) of the chance that the better ones among N fall in the test's rejection region. The
    fewest n up to ``_EXACT_POWER_MAX`` where it reaches ``power`` is the answer (discreteness can
    make a few n past it fall short again); above, the normal approximation to the same test
    (Connor 1987, McNemar's sample size): ``n = (z_a/2 sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2`` with
    ``psi`` the share of untied items and ``d`` the better share minus the worse, continuity-corrected
    to ``n/4 (1 + sqrt(1 + 4 / (n |d|)))^2`` (the root of ``n |d| - 1 = sqrt(n) root``). The exact test
    cannot reject on fewer than 6 untied items at alpha 0.05 (2 * 2^-5 > 0.05), so that is the
    least it answers for a setup better on every item.

    ``None`` when the observed mean difference is 0, as many items are better as worse (no number
    of items makes the sign test see a direction), or there are fewer than two differences.

    A mean within rounding of 0 counts as 0: differences of item means (``samples: 3`` gives
    thirds) that cancel exactly in arithmetic leave ~1e-17 in floats, which asked for ~1e33 items.
    """
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise ValueError(f"power_n: {name}={value} must be in (0, 1)")
    _check_finite(deltas, "deltas")
    if len(deltas) < 2:
        return None
    mean = statistics.fmean(deltas)
    if abs(mean) <= _NOISE * max(abs(d) for d in deltas):
        return None
    # counted as ``sign_test`` counts them, so this sizes the p-value printed beside it
    up = sum(1 for d in deltas if d > 0) / len(deltas)
    down = sum(1 for d in deltas if d < 0) / len(deltas)
    if up == down:
        return None
    untied = up + down
    reject = [0.0]
    for n in range(1, _EXACT_POWER_MAX + 1):
        reject.append(_sign_test_rejects(n, up / untied, alpha))
        if _mixed(reject, untied) >= power:
            return n
    z = statistics.NormalDist()
    d = abs(up - down)
    root = z.inv_cdf(1 - alpha / 2) * math.sqrt(untied) + z.inv_cdf(power) * math.sqrt(untied - d * d)
    needed = root * root / (d * d)
    # McNemar's continuity correction (|b - c| - 1): the shift n*d must clear the bound by one more
    # item; without it the exact test's power fell to 0.76-0.79 at the figure given
    needed *= (1 + math.sqrt(1 + 4 / (needed * d))) ** 2 / 4
    return max(_EXACT_POWER_MAX + 1, math.ceil(needed - 1e-9))


def _sign_test_rejects(n: int, share: float, alpha: float) -> float:
    """The chance that the exact two-sided sign test on ``n`` untied pairs rejects at ``alpha`` when
    each pair favours A with probability ``share``."""
    # the fewest A-wins past n/2 whose p-value is at most alpha (the region is symmetric)
    c = n // 2 + 1
    while c <= n and binom_two_sided(c, n) > alpha:
        c += 1
    if c > n:
        return 0.0
    return _binomial_tail(n, share, c) + _binomial_tail(n, 1.0 - share, c)


def _binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ binomial(n, p), summed term by term in log space."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq, lg = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return math.fsum(
        math.exp(lg - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
        for i in range(k, n + 1)
    )


def _mixed(reject: Sequence[float], untied: float) -> float:
    """The power at n = len(reject) - 1 items: ``reject[N]`` weighted by the chance that N of the n
    items are untied (binomial(n, untied))."""
    n = len(reject) - 1
    if untied >= 1.0:
        return reject[n]
    lp, lq, lg = math.log(untied), math.log1p(-untied), math.lgamma(n + 1)
    return math.fsum(
        r * math.exp(lg - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
        for k, r in enumerate(reject)
        if r > 0.0
    )


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
