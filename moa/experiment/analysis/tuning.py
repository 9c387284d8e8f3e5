"""What tuning a cascade found, in the shape of ``tune.json``, and the numbers behind it: each setting
of stage 1's threshold on the dev and held-out items, and for each target share of the mixture's
gain over the single model the cheapest setting reaching it on dev (RouteLLM's cost-to-performance
threshold), judged on the held-out items with bootstrap intervals.

The mixture is the cascade always escalating; its cost alone ("always-MoA") is the later stages'
without stage 1's. Choosing on dev and reporting on the rest keeps the choice from grading itself.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moa.cascade.tune import ItemTrace, Setting, outcome, outcome_cost_max
from moa.eval.stats import bootstrap_ci, paired_bootstrap_ci

__all__ = ["SHARES", "Choice", "SettingRow", "SplitStats", "TuneResult", "analyse", "split_items"]

#: the shares of the mixture's gain a setting is chosen for
SHARES = (0.5, 0.8, 0.95)
# dev qualities are means of the same floats summed in another order: equal within this
_EPS = 1e-12

_CONFIG = ConfigDict(extra="forbid", frozen=True)
#: an interval: a tune.json with another length (damaged, hand-edited) is refused when read, not
#: an IndexError in the report
_Interval = Annotated[list[float], Field(min_length=2, max_length=2)]


class SplitStats(BaseModel):
    """A setting on one split's items: means per item."""

    model_config = _CONFIG

    quality: float
    cost_usd: float
    escalation_rate: float
    #: ``cost_usd`` with the worst case of every attempt whose usage is unknown (a call cut off by
    #: its timeout may still be billed); None in a tune.json written before it was recorded
    cost_usd_max: float | None = None


class SettingRow(BaseModel):
    """One setting of stage 1's threshold."""

    model_config = _CONFIG

    label: str
    #: ``k`` or the judge's threshold; None for always escalating
    value: float | None
    #: the setting the cascade is written with
    current: bool
    dev: SplitStats
    test: SplitStats


class Choice(BaseModel):
    """The cheapest setting on dev reaching ``share`` of the mixture's gain, judged on held-out items."""

    model_config = _CONFIG

    share: float
    #: the quality ``share`` of the gain means on dev
    target_quality: float
    label: str
    value: float | None
    #: False when no setting reached the target on dev (the best on dev is chosen instead)
    reached: bool
    quality: float
    quality_ci95: _Interval
    #: quality minus always escalating's, paired per item
    delta_vs_mixture: float
    delta_vs_mixture_ci95: _Interval
    cost_usd: float
    #: 1 - cost / always-MoA's cost (None when always-MoA costs nothing)
    cost_saving: float | None
    cost_saving_ci95: _Interval | None
    escalation_rate: float
    #: the share of the held-out gain reached (None when the mixture gains nothing there)
    gain_share: float | None
    #: ``cost_usd`` as a bound, as ``SplitStats.cost_usd_max``
    cost_usd_max: float | None = None


class TuneResult(BaseModel):
    """``tune.json``."""

    model_config = _CONFIG

    setup: str
    setup_hash: str
    baseline: str
    #: stage 1 and its rule, as the report names them
    stage: str
    current: str
    dev_fraction: float
    seed: int
    dev_items: int
    test_items: int
    single_quality: dict[str, float]
    mixture_quality: dict[str, float]
    #: always-MoA's cost per held-out item: the later stages alone, without stage 1
    mixture_cost_usd: float
    settings: list[SettingRow]
    choices: list[Choice]
    notes: list[str]
    #: ``mixture_cost_usd`` as a bound, as ``SplitStats.cost_usd_max``
    mixture_cost_usd_max: float | None = None
    #: what the tuning's own calls (the stages the comparison's runs never reached) have cost, over
    #: every run of it on this store; not in any setup's cost
    paid_usd: float = 0.0
    #: ``paid_usd`` as a bound: with the worst case of every attempt of the tuning's that was sent and
    #: cut off (a timeout, a budget stop, Ctrl-C), which the provider may bill; None in a tune.json
    #: written before it was recorded
    paid_usd_max: float | None = None

    @field_validator("single_quality", "mixture_quality")
    @classmethod
    def _both_splits(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"dev", "test"}:
            raise ValueError(f"holds {sorted(v)}, not the splits `dev` and `test`")
        return v


def split_items(ids: Sequence[str], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``ids`` cut into dev (``dev_fraction`` of them, rounded) and held-out, each in the order of a
    keyed hash of ``seed`` and the item's id. A shuffle of the list re-dealt every item when the
    dataset's rows were reordered or one was added, so a setting chosen on dev was judged on other
    items than before; ranked by the hash, reordering changes nothing, and an added item moves at
    most one other across the cut."""
    order = sorted(ids, key=lambda i: (_rank(seed, i), i))
    n_dev = round(len(order) * dev_fraction)
    return order[:n_dev], order[n_dev:]


def _rank(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{item_id}".encode("utf-8", "surrogatepass")).digest()


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _stats(setting: Setting, traces: Sequence[ItemTrace]) -> SplitStats:
    rows = [outcome(setting, t) for t in traces]
    return SplitStats(
        quality=_mean([q for q, _, _ in rows]),
        cost_usd=_mean([c for _, c, _ in rows]),
        escalation_rate=_mean([1.0 if e else 0.0 for _, _, e in rows]),
        cost_usd_max=_mean([outcome_cost_max(setting, t) for t in traces]),
    )


def _saving_ci(
    costs: Sequence[float], mixture: Sequence[float], rounds: int, seed: int
) -> list[float] | None:
    """Percentile bootstrap of 1 - sum(costs)/sum(mixture), resampling items (a ratio of means)."""
    if math.fsum(mixture) <= 0:
        return None
    rng = random.Random(seed)
    n = len(costs)
    values = []
    for _ in range(rounds):
        picks = rng.choices(range(n), k=n)
        m = math.fsum(mixture[i] for i in picks)
        if m > 0:
            values.append(1 - math.fsum(costs[i] for i in picks) / m)
    values.sort()
    lo, hi = values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]
    return [lo, hi]


def _choose(
    settings: Sequence[Setting], dev: Mapping[Setting, SplitStats], target: float
) -> tuple[Setting, bool]:
    """The cheapest setting on dev reaching ``target`` (ties: the one escalating least), else the
    best on dev."""
    reaching = [s for s in settings if dev[s].quality >= target - _EPS]
    if reaching:
        return min(reaching, key=lambda s: dev[s].cost_usd), True
    return max(settings, key=lambda s: dev[s].quality), False


def _judged(
    share: float,
    target: float,
    setting: Setting,
    reached: bool,
    test: Sequence[ItemTrace],
    single: float,
    rounds: int,
    seed: int,
) -> Choice:
    rows = [outcome(setting, t) for t in test]
    quality = [q for q, _, _ in rows]
    costs = [c for _, c, _ in rows]
    ci = bootstrap_ci(quality, rounds=rounds, seed=seed)
    always = [t.escalated_quality for t in test]
    delta = paired_bootstrap_ci(quality, always, rounds=rounds, seed=seed)
    moa_cost = [t.mixture_cost for t in test]
    gain = _mean(always) - single
    total_moa = math.fsum(moa_cost)
    return Choice(
        share=share,
        target_quality=target,
        label=setting.label,
        value=None if setting.always_escalates else setting.value,
        reached=reached,
        quality=ci.estimate,
        quality_ci95=[ci.low, ci.high],
        delta_vs_mixture=delta.estimate,
        delta_vs_mixture_ci95=[delta.low, delta.high],
        cost_usd=_mean(costs),
        cost_saving=1 - math.fsum(costs) / total_moa if total_moa > 0 else None,
        cost_saving_ci95=_saving_ci(costs, moa_cost, rounds, seed),
        escalation_rate=_mean([1.0 if e else 0.0 for _, _, e in rows]),
        gain_share=(ci.estimate - single) / gain if abs(gain) > _EPS else None,
        cost_usd_max=_mean([outcome_cost_max(setting, t) for t in test]),
    )


def analyse(
    *,
    settings: Sequence[Setting],
    current: Setting,
    dev: Sequence[tuple[ItemTrace, float]],
    test: Sequence[tuple[ItemTrace, float]],
    rounds: int,
    header: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> TuneResult:
    """Every setting on both splits and one choice per share in ``SHARES``; ``dev`` and ``test``
    pair each item's trace with the single model's score on it. ``header`` holds the fields that
    say what was tuned (``setup``, ``setup_hash``, ``baseline``, ``stage``, ``dev_fraction``,
    ``seed``) and, optionally, what tuning paid (``paid_usd``); ``seed`` also seeds the bootstrap."""
    seed = int(header["seed"])
    dev_t, test_t = [t for t, _ in dev], [t for t, _ in test]
    single = {"dev": _mean([s for _, s in dev]), "test": _mean([s for _, s in test])}
    mixture = {
        "dev": _mean([t.escalated_quality for t in dev_t]),
        "test": _mean([t.escalated_quality for t in test_t]),
    }
    # by setting, not label: two settings of one label shared (and mixed up) their dev numbers
    on_dev = {s: _stats(s, dev_t) for s in settings}
    rows = [
        SettingRow(
            label=s.label,
            value=None if s.always_escalates else s.value,
            current=s == current,
            dev=on_dev[s],
            test=_stats(s, test_t),
        )
        for s in settings
    ]
    out_notes = list(notes)
    gain = mixture["dev"] - single["dev"]
    if gain <= 0:
        out_notes.append(
            f"on dev the mixture ({mixture['dev']:.3f}) is no better than the single model "
            f"({single['dev']:.3f}): the targets are at or below the single model's quality"
        )
    choices = []
    for share in SHARES:
        target = single["dev"] + share * gain
        setting, reached = _choose(settings, on_dev, target)
        choices.append(_judged(share, target, setting, reached, test_t, single["test"], rounds, seed))
    return TuneResult(
        **header,
        current=current.label,
        dev_items=len(dev),
        test_items=len(test),
        single_quality=single,
        mixture_quality=mixture,
        mixture_cost_usd=_mean([t.mixture_cost for t in test_t]),
        mixture_cost_usd_max=_mean([t.mixture_cost_max for t in test_t]),
        settings=rows,
        choices=choices,
        notes=out_notes,
    )
