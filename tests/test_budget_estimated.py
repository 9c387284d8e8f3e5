"""A reply whose provider reported no usage is booked at moa's estimate (UTF-8 bytes / 4, or
litellm's tokenizer), which can be below the bill (CJK text, hidden reasoning tokens): the budget
keeps such an attempt's worst case, so the cap holds against any bill, while its record shows the
estimate, flagged ``usage_estimated``, with the worst case in ``cost_usd_max``. Over real loopback
HTTP, both transports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import moa
from moa.calls.attempt import prompt_token_bound, prompt_token_ceiling
from moa.results import CallRecord
from moa.topology.loader import load_data
from tests.rawhttp import http, raw_server

TRANSPORTS = ["litellm", "openai-http"]
#: about 1,000 tokens billed by a real tokenizer (a CJK character is a token or more); the bytes /
#: 4 estimate makes it 750
CJK = "答" * 1000


def _no_usage(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return http(200, {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]})


def _single(base: str, transport: str) -> moa.Topology:
    agent: dict[str, Any] = {
        "model": "openai/m",
        "api_base": base,
        "transport": transport,
        "max_tokens": 2000,
        "timeout_s": 30,
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 10.0, "output_per_mtok": 10.0},
    }
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cap_holds_against_the_bill_of_replies_without_usage(transport: str) -> None:
    """40 concurrent runs against a server that reports no usage, under a cap with room for five
    worst cases: no more requests reach it than the cap's worst cases cover, and what the budget
    spent is those worst cases. Before, each reply was booked at its estimate (a fifth of its hold)
    and every run was sent: 40 replies whose bill the cap did not bound."""
    async with raw_server(_no_usage(CJK)) as srv:
        t = _single(srv.base_url, transport)
        async with moa.Runner() as rt:
            (rec,) = (await t.run("q", runner=rt)).calls
            assert rec.messages is not None
            # the hold: the most prompt tokens a reply may report, and max_tokens, at $10 / M
            worst = (prompt_token_ceiling(prompt_token_bound(rec.messages)) + 2000) * 10e-6
            budget = moa.Budget(5.5 * worst)
            outcomes = await asyncio.gather(
                *(t.run("q", runner=rt, budget=budget) for _ in range(40)), return_exceptions=True
            )
        served = len(srv.arrivals) - 1
    ok = [o for o in outcomes if isinstance(o, moa.RunResult)]
    assert all(isinstance(o, (moa.RunResult, moa.BudgetExceeded)) for o in outcomes), outcomes
    assert served == len(ok) == 5  # each reply's bill, up to its worst case, fits the cap
    assert rec.usage_estimated and 0 < rec.cost_usd < worst  # the record shows the estimate
    assert rec.cost_usd_max == pytest.approx(worst)
    assert budget.spent_usd == pytest.approx(5 * worst) and budget.spent_usd <= budget.limit_usd
    assert sum(o.cost_usd_max for o in ok) == pytest.approx(budget.spent_usd)
    assert all(o.calls[0].usage_estimated and o.cost_usd < o.cost_usd_max for o in ok)


async def test_an_estimated_record_keeps_its_worst_case_through_json() -> None:
    """A record whose usage was estimated reads back from its JSON (the store, a trace) with the
    same ``cost_usd_max``: a resumed experiment's budget starts from what the live one counted."""
    async with raw_server(_no_usage(CJK)) as srv, moa.Runner() as rt:
        r = await _single(srv.base_url, "openai-http").run("q", runner=rt)
    (rec,) = r.calls
    back = CallRecord.from_dict(rec.to_dict())
    assert rec.cost_usd < rec.cost_usd_max
    assert back.cost_usd == rec.cost_usd and back.cost_usd_max == pytest.approx(rec.cost_usd_max)
