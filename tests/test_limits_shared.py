"""An agent's `rate_limit` is its endpoint's: an agent of the same endpoint (`api_base`, else model)
without one is held by it too, whichever of them a run meets first. Over real HTTP against a
loopback server that counts the requests in flight."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

import moa
from moa.calls.limits import RateLimit, RateLimits
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, threaded_server


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


class _PerModelServer:
    """A loopback provider that counts each model's requests in flight and holds its requests in
    batches of ``want[model]``, each released once its last has arrived, so the peak it records
    is the limit the client let through, not a matter of timing. The first hold to outlast
    ``guard_s`` (a hang guard: the limit let fewer through) releases every request for good, so a
    failure ends quickly."""

    def __init__(self, want: dict[str, int], guard_s: float = 30.0) -> None:
        self.want, self.guard_s = want, guard_s
        self.cond = threading.Condition()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.arrived: Counter[str] = Counter()
        self.released = False

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                model = str(body["model"]).rsplit("/", 1)[-1]
                with server.cond:
                    server.in_flight[model] += 1
                    server.peak[model] = max(server.peak[model], server.in_flight[model])
                    batch = server.arrived[model] // server.want[model] + 1
                    server.arrived[model] += 1
                    server.cond.notify_all()
                    held = server.cond.wait_for(
                        lambda: server.released or server.arrived[model] >= batch * server.want[model],
                        timeout=server.guard_s,
                    )
                    server.released = server.released or not held
                    # out of flight before the reply is sent: the client's next request may arrive
                    # before this thread runs again, and counting it then read 2 under a limit of 1
                    server.in_flight[model] -= 1
                    server.served[model] += 1
                    server.cond.notify_all()
                send_body(self, 200, completion("ok"))

        return Handler


@pytest.mark.parametrize("how", ["agent", "set_rate_limit"])
@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_a_limit_per_model_gives_each_model_behind_one_url_its_own(transport: str, how: str) -> None:
    """`per: model` behind one `api_base` (a gateway): each model has its own limit in flight at
    the server at once (agents' own: 3 and 1; `set_rate_limit(url, max_concurrent=3, per="model")`:
    3 each). Before, every model of the URL shared one limiter at the stricter limit."""
    caps = {"wide": 3, "narrow": 1} if how == "agent" else {"wide": 3, "narrow": 3}
    srv = _PerModelServer(caps)
    with threaded_server(srv.handler()) as base:
        limits = RateLimits()
        if how == "set_rate_limit":
            limits.set(base + "/", max_concurrent=3, per="model")

        def single(model: str) -> moa.Topology:
            extra: dict[str, Any] = {"transport": transport}
            if how == "agent":
                extra["rate_limit"] = {"max_concurrent": caps[model], "per": "model"}
            a = _agent(base, model, **extra)
            return load_data({"name": model, "kind": "single", "agent": "a", "agents": {"a": a}})

        wide, narrow = single("wide"), single("narrow")
        async with moa.Runner(rate_limits=limits) as rt:
            await asyncio.gather(*(t.run(f"q{i}", runner=rt) for i in range(6) for t in (wide, narrow)))
    assert srv.served == {"wide": 6, "narrow": 6}
    assert srv.released is False  # no hold outlasted its guard: each model reached its limit
    assert srv.peak == caps


def test_a_limit_per_model_and_one_per_endpoint_keep_apart() -> None:
    """Behind one URL, a model's `per: model` limiter is its own; another model there without a
    limit is held by the endpoint's limiter, when one was declared, and by nothing else."""
    limits = RateLimits()
    url = "http://127.0.0.1:9/v1"
    own = limits.limiter_for("openai/a", url, RateLimit(max_concurrent=3, per="model"))
    assert own is not None and own is limits.limiter_for("openai/a", url + "/", None)
    assert limits.limiter_for("openai/b", url, None) is None
    shared = limits.limiter_for("openai/c", url, RateLimit(max_concurrent=1))
    assert shared is not None and shared is not own
    assert limits.limiter_for("openai/b", url, None) is shared
    assert limits.limiter_for("openai/a", url, None) is own and own.limit.max_concurrent == 3


@pytest.mark.parametrize("per", ["models", "", None, 1])
def test_an_unknown_limit_scope_is_one_line_naming_the_field(per: object) -> None:
    """`per` other than `endpoint` or `model` is a one-line UserError, in a file and in Python."""
    agent = _agent("http://127.0.0.1:9/v1", "m", rate_limit={"rpm": 5, "per": per})
    with pytest.raises(moa.UserError, match=r"agents\.a\.rate_limit\.per") as info:
        load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})
    assert "\n" not in str(info.value)
    with pytest.raises(moa.UserError, match=r"^rate_limit\.per must be `endpoint` or `model`, got"):
        RateLimits().set("http://127.0.0.1:9/v1", rpm=5, per=per)  # type: ignore[arg-type]
