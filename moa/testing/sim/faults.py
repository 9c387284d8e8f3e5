"""Injected faults: the plan a server draws them from, and the draw itself (seeded, so a run with
the same plan and the same requests in the same order meets the same faults)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from moa.errors import UserError
from moa.testing.sim.models import short_name

FAULT_KINDS = ("429", "500", "503", "reset", "malformed", "hang")
MALFORMED_KINDS = ("malformed_json", "no_choices")
"""What `malformed` turns into, picked at random; scripts and plans may name them directly."""
OUTCOMES = ("ok", *FAULT_KINDS, *MALFORMED_KINDS)
"""Every outcome a script may force."""


@dataclass(frozen=True)
class FaultPlan:
    """Random faults: each completion request gets one with probability `rate` (seeded)."""

    rate: float
    kinds: Sequence[str] = FAULT_KINDS
    retry_after_s: float | None = 0.2
    """Retry-After sent with 429; None sends none."""
    retry_after_http_date: bool = False
    """Send Retry-After as an HTTP date (whole seconds, rounded up) instead of seconds."""
    hang_s: float = 3600.0
    seed: int = 0
    models: Collection[str] | None = None
    """Only these models get faults; None means all."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"FaultPlan: rate={self.rate} is not within [0, 1]")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS + MALFORMED_KINDS]
        if unknown or not self.kinds:
            raise UserError(
                f"FaultPlan: kinds {unknown or '[]'} are not among {FAULT_KINDS + MALFORMED_KINDS}"
            )


def draw_fault(plan: FaultPlan | None, rng: random.Random, names: Collection[str]) -> str:
    """The outcome of one request under `plan`: "ok" or a fault kind (`malformed` already resolved).

    `names` are the names the request's model goes by (as requested, as resolved).
    """
    if plan is None or rng.random() >= plan.rate:
        return "ok"
    if plan.models is not None and not set(names) & {*plan.models, *map(short_name, plan.models)}:
        return "ok"
    kind = rng.choice(list(plan.kinds))
    if kind == "malformed":
        kind = rng.choice(MALFORMED_KINDS)
    return kind
