"""An agent's `rate_limit` is its endpoint's: an agent of the same endpoint (`api_base`, else model)
without one is held by it too, whichever of them a run meets first. Over real HTTP against a
loopback server that counts the requests in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import moa
from moa.calls.limits import RateLimit, RateLimits
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load_data


def _agent(base: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": base,
        "transport": "openai-http",
        "timeout_s": 30,
        **extra,
    }


async def test_an_agent_without_a_limit_shares_its_endpoints_limiter() -> None:
    """Two workers on one server, the first (met first) with no `rate_limit`, the second with
    `max_concurrent: 1`: the server never has two of their requests at once. Before, the first was
    not limited at all, and the server had both in flight."""
    async with SimServer(default=SimModel(latency_s=0.2)) as srv:
        limited = {"max_concurrent": 1}
        agents = {
            "free": _agent(srv.base_url, "m-free"),
            "held": _agent(srv.base_url + "/", "m-held", rate_limit=limited),  # one endpoint, spelt twice
            "agg": _agent(srv.base_url, "m-agg"),
        }
        t = load_data(
            {
                "name": "p",
                "kind": "parallel",
                "workers": ["free", "held"],
                "aggregator": "agg",
                "agents": agents,
            }
        )
        async with moa.Runner(rate_limits=RateLimits()) as rt:
            await asyncio.gather(*(t.run(f"q{i}", runner=rt) for i in range(3)))
        stats = srv.stats
    assert stats.served == 9 and stats.max_in_flight == 1


async def test_an_agent_resolved_before_another_topologys_limit_is_held_by_it() -> None:
    """One runner serving two topologies (as `moa serve` does): the unlimited one runs first, then
    one limiting the same server to one request at a time; from then on both together never have
    two requests at the server. Before, the first stayed unlimited for the runner's life, as it was
    resolved before the limit existed (and was limited when it happened to come second)."""
    async with SimServer(default=SimModel(latency_s=0.2)) as srv:

        def single(name: str, **extra: Any) -> moa.Topology:
            a = _agent(srv.base_url, f"m-{name}", **extra)
            return load_data({"name": name, "kind": "single", "agent": "a", "agents": {"a": a}})

        free, held = single("free"), single("held", rate_limit={"max_concurrent": 1})
        async with moa.Runner(rate_limits=RateLimits()) as rt:
            await free.run("warm", runner=rt)
            await held.run("warm", runner=rt)
            srv.reset_stats()
            await asyncio.gather(*(t.run(f"q{i}", runner=rt) for i in range(3) for t in (free, held)))
        stats = srv.stats
    assert stats.served == 6 and stats.max_in_flight == 1


def test_an_agent_of_another_endpoint_stays_unlimited() -> None:
    """Another model with no `api_base` of its own, or another server, is no endpoint the limit is
    for: it gets no limiter (its hot path pays nothing)."""
    limits = RateLimits()
    held = limits.limiter_for("openai/m", "http://127.0.0.1:9/v1", RateLimit(max_concurrent=1))
    assert held is not None
    assert limits.limiter_for("openai/other", "HTTP://127.0.0.1:9/v1/", None) is held
    assert limits.limiter_for("openai/other", "http://127.0.0.1:10/v1", None) is None
    assert limits.limiter_for("openai/other", None, None) is None
