"""``CallRecord`` <-> rows of the store's ``calls`` table, for runs and judge verdicts alike."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from moa.results import CallRecord

__all__ = ["INSERT_CALL", "call_rows"]

INSERT_CALL = (
    "INSERT INTO calls(run_id, judgment_id, seq, node, model, requested_model, prompt_tokens, "
    "completion_tokens, cost_usd, latency_s, attempts, error, started_s, priced, local, cached, "
    "attempt_log, cost_usd_max, usage_suspect) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def call_rows(
    calls: Iterable[CallRecord], run_id: int | None, judgment_id: int | None
) -> Iterator[tuple[Any, ...]]:
    for seq, c in enumerate(calls):
        yield (
            run_id,
            judgment_id,
            seq,
            c.node,
            c.model,
            c.requested_model or c.model,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.cost_usd,
            c.latency_s,
            c.attempts,
            c.error,
            c.started_s,
            int(c.priced),
            int(c.local),
            int(c.cached),
            json.dumps([a.to_dict() for a in c.attempt_log], separators=(",", ":")),
            c.cost_usd_max,
            int(c.usage_suspect),
        )
