"""Sweeping a cascade's first accept rule offline: the settings its threshold can take, and what each
would have done on an item, read from one ``record_stages`` run (no model call per setting).

At a setting an item answers at stage 1 when the rule holds there; otherwise it takes the escalated
path: the later stages with their rules as written, the last always answering. Every setting of
``settings_for`` escalates on a superset of the items the one before it does, so their costs never
fall along the list, on any set of items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from moa.cascade.execute import StageRecord
from moa.cascade.rules import Agree, Judge
from moa.cascade.stages import Stage
from moa.errors import UserError

__all__ = [
    "ALWAYS",
    "ItemTrace",
    "Setting",
    "current_setting",
    "describe",
    "outcome",
    "outcome_cost_max",
    "settings_for",
    "trace",
]

ALWAYS = "always escalate"
#: a judge's thresholds: 0 accepts every readable rating, 1 only certainty
JUDGE_GRID = tuple(round(i * 0.05, 2) for i in range(21))


@dataclass(frozen=True, slots=True)
class Setting:
    """One value of the rule's threshold."""

    label: str
    #: ``k`` of an ``agree`` rule or a judge's threshold; ``math.inf`` never holds (always escalate)
    value: float

    @property
    def always_escalates(self) -> bool:
        return math.isinf(self.value)


def _rule_of(name: str, stage: Stage) -> Agree | Judge:
    rule = stage.rule
    if isinstance(rule, Agree | Judge):
        return rule
    kind = "no" if rule is None else f"a `{type(rule).__name__.lower()}`"
    raise UserError(
        f"cascade `{name}`: stage 1 has {kind} accept rule, which has no threshold to sweep; "
        "tuning needs an `agree` or `judge` rule"
    )


def settings_for(name: str, stages: Sequence[Stage]) -> list[Setting]:
    """Stage 1's settings from the least escalation to the most, ending with always escalating;
    ``UserError`` for a cascade whose first rule has no threshold."""
    if len(stages) < 2:
        raise UserError(f"cascade `{name}` has one stage: there is nothing to escalate to")
    first = stages[0]
    rule = _rule_of(name, first)
    if isinstance(rule, Agree):
        n = len(first.samples) or 1
        out = [Setting(f"agree: {k}", k) for k in range(1, n + 1)]
    else:
        grid = sorted({*JUDGE_GRID, rule.threshold})
        out = [Setting(f"judge >= {_shown(t)}", t) for t in grid]
    return [*out, Setting(ALWAYS, math.inf)]


def _shown(t: float) -> str:
    """``t`` short where that is exact: a written 0.1 * 3 (0.30000000000000004) shown as 0.3 took
    the label of the grid's 0.3, and the two rows of the report could not be told apart."""
    short = f"{t:g}"
    return short if float(short) == t else repr(t)


def describe(name: str, stages: Sequence[Stage]) -> str:
    """Stage 1 and its rule, for reports: ``agent `mini` x2, `agree` on last_number``."""
    rule = _rule_of(name, stages[0])
    what = f"`agree` on {rule.vote_on}" if isinstance(rule, Agree) else "`judge`"
    return f"{stages[0].what}, {what}"


def current_setting(name: str, stages: Sequence[Stage]) -> Setting:
    """The setting the cascade is written with."""
    rule = _rule_of(name, stages[0])
    value = rule.k if isinstance(rule, Agree) else rule.threshold
    return next(s for s in settings_for(name, stages) if s.value == value)


@dataclass(frozen=True, slots=True)
class ItemTrace:
    """What one item's record tells every setting."""

    #: stage 1's measure: agreeing samples or the rater's confidence (None: failed or unread)
    measure: float | None
    first_quality: float
    first_cost: float
    #: the escalated path: the score of the stage that answers after stage 1, and the cost of every
    #: stage run up to it, stage 1 included
    escalated_quality: float
    escalated_cost: float
    #: the later stages alone, without a stage 1 (running the mixture for every item)
    mixture_cost: float
    #: the three costs above as bounds: with the worst case of every attempt whose usage is unknown
    #: (``StageRecord.cost_usd_max``)
    first_cost_max: float
    escalated_cost_max: float
    mixture_cost_max: float
    #: the stage that answers after stage 1 failed: escalating, the cascade ends in an error there
    escalated_failed: bool = False


def trace(records: Sequence[StageRecord], scores: Sequence[float]) -> ItemTrace:
    """``records`` of every stage (``record_stages``) and their answers' scores (0 for a failed
    stage) as an ``ItemTrace``."""
    if len(records) < 2 or len(scores) != len(records):
        raise ValueError(
            f"a trace needs 2+ stage records and a score each (got {len(records)}, {len(scores)})"
        )
    first = records[0]
    measure = first.agreeing if first.agreeing is not None else first.confidence
    if first.answer is None:
        measure = None
    later = later_max = 0.0
    quality = 0.0
    failed = False
    for i in range(1, len(records)):
        later += records[i].cost_usd
        later_max += records[i].cost_usd_max
        quality, failed = scores[i], records[i].answer is None
        if records[i].accepted:
            break
    return ItemTrace(
        measure=None if measure is None else float(measure),
        first_quality=scores[0],
        first_cost=first.cost_usd,
        escalated_quality=quality,
        escalated_cost=first.cost_usd + later,
        mixture_cost=later,
        first_cost_max=first.cost_usd_max,
        escalated_cost_max=first.cost_usd_max + later_max,
        mixture_cost_max=later_max,
        escalated_failed=failed,
    )


def outcome(setting: Setting, t: ItemTrace) -> tuple[float, float, bool]:
    """The item's quality, cost and whether it escalated, at ``setting``."""
    holds = not setting.always_escalates and t.measure is not None and t.measure >= setting.value
    if holds:
        return t.first_quality, t.first_cost, False
    return t.escalated_quality, t.escalated_cost, True


def outcome_cost_max(setting: Setting, t: ItemTrace) -> float:
    """The item's cost at ``setting`` as a bound: ``outcome``'s cost with the worst case of every
    attempt whose usage is unknown."""
    return t.escalated_cost_max if outcome(setting, t)[2] else t.first_cost_max
