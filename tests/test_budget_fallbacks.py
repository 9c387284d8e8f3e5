"""A hard budget with fallbacks, over real HTTP against a loopback server: a primary whose worst case
the budget refuses gives way to a cheaper fallback whose worst case fits, and the cap stays hard."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any

import pytest

import moa
from moa.calls.attempt import CallPlan, prompt_token_bound
from moa.calls.pricing import price_for
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load_data

TRANSPORTS = ["litellm", "openai-http"]
PROMPT = "hi"
#: the fallback, priced from the price map (a fallback takes no `pricing` of the agent's)
CHEAP = "openai/gpt-4o-mini"


def _cheap_worst_case() -> float:
    """What an attempt at the cheap fallback holds (its dearest service tier included)."""
    price = price_for(CHEAP)
    messages = [{"role": "user", "content": PROMPT}]
    plan = CallPlan("answer", messages, 100, prompt_token_bound(messages), None, None)
    tiers = [price.for_service_tier(name or None) for name, _ in price.service_tiers]
    return max(plan.worst_case(p) for p in [price, *tiers])


def _single(base: str, transport: str, per_mtok: float, **extra: Any) -> moa.Topology:
    agent = {
        "model": "openai/big",
        "api_base": base,
        "transport": transport,
        "max_tokens": 100,
        "timeout_s": 20.0,
        "fallbacks": [CHEAP],
        "pricing": {"input_per_mtok": per_mtok, "output_per_mtok": per_mtok},
        "retry": {"max_attempts": 3, "backoff_base_s": 0.0},
        **extra,
    }
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


def _sent(srv: SimServer) -> list[tuple[str, str]]:
    return [(model, kind) for _, model, kind in srv.stats.request_log]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_primary_the_budget_refuses_gives_way_to_a_cheaper_fallback(transport: str) -> None:
    """The primary's worst case (~$1) does not fit a $0.01 budget, the fallback's does: the fallback
    answers, the primary's record keeps its refusal at $0 with no attempt, and the server saw one
    request, the fallback's. Before, the run failed with BudgetExceeded and the fallback was never
    tried."""
    assert _cheap_worst_case() < 0.01
    async with SimServer(default=SimModel()) as srv:
        t = _single(srv.base_url, transport, per_mtok=1000.0)
        budget = moa.Budget(0.01)
        async with moa.Runner(budget=budget) as rt:
            r = await t.run(PROMPT, runner=rt)
        sent = _sent(srv)
    assert r.output.startswith("answer from gpt-4o-mini")
    assert sent == [("gpt-4o-mini", "ok")]
    primary, fallback = r.calls
    assert primary.model == "openai/big" and primary.cost_usd == 0.0
    assert primary.attempts == 0 and primary.attempt_log == []
    assert (primary.error or "").startswith("BudgetExceeded: node `answer`, model `openai/big`")
    assert fallback.model == CHEAP and fallback.error is None and fallback.attempts == 1
    assert budget.spent_usd == pytest.approx(r.cost_usd) and 0 < budget.spent_usd <= 0.01
    assert budget.reserved_usd == 0


async def test_a_fallback_the_budget_refuses_too_ends_in_the_primarys_refusal() -> None:
    """A budget that fits neither: nothing is sent, and the error is the primary's refusal (its
    worst case is what a larger budget must hold to run the node as written)."""
    async with SimServer(default=SimModel()) as srv:
        t = _single(srv.base_url, "openai-http", per_mtok=1000.0)
        with pytest.raises(moa.BudgetExceeded) as info:
            await t.run(PROMPT, runner=moa.Runner(), budget_usd=_cheap_worst_case() / 2)
        sent = _sent(srv)
    assert sent == []
    assert info.value.model == "openai/big" and "(after fallbacks: openai/gpt-4o-mini)" in str(info.value)
    assert [(c.model, c.attempts, c.cost_usd) for c in info.value.calls] == [
        ("openai/big", 0, 0.0),
        (CHEAP, 0, 0.0),
    ]


async def test_a_retry_the_budget_refuses_gives_way_to_the_fallback() -> None:
    """The primary's connection is reset after its request left (unknown usage: its worst case is
    kept); what is spent then leaves no room for a retry of the primary but room for the fallback,
    which answers: two requests in order, the budget never passed."""
    async with SimServer(default=SimModel()) as srv:
        srv.script("big", ["reset"])
        t = _single(srv.base_url, "openai-http", per_mtok=1.0)  # a worst case of about $0.00116
        budget = moa.Budget(0.002)
        assert _cheap_worst_case() < 0.002 - 0.00116
        async with moa.Runner(budget=budget) as rt:
            r = await t.run(PROMPT, runner=rt)
        sent = _sent(srv)
    assert [model for model, _ in sent] == ["big", "gpt-4o-mini"] and sent[0][1] == "reset"
    primary, fallback = r.calls
    assert primary.attempts == 1 and "not retrying ProviderError" in (primary.error or "")
    assert fallback.error is None and r.output.startswith("answer from gpt-4o-mini")
    assert budget.spent_usd == pytest.approx(r.cost_usd_max) and budget.spent_usd <= 0.002
    assert budget.reserved_usd == 0
