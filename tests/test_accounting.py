"""Every call accounted, nothing wedged: cancellations never wedge a connection pool, every attempt
leaves an ``attempt_log`` entry, unknown usage keeps its worst case, a lying provider cannot move the
budget, and retries stay within the endpoint's retry budget. Over real loopback HTTP, both transports."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

import moa
from moa import build
from moa.calls.attempt import prompt_token_bound, prompt_token_ceiling
from moa.calls.limits import RateLimit, RateLimits
from moa.calls.pricing import price_for
from moa.calls.retry_budget import RetryBudget
from moa.models.base import ModelRequest
from moa.models.openai_http import OpenAIHTTPModel
from moa.serve import create_app
from moa.testing import FunctionModel, ScriptedModel
from moa.testing.sim import FaultPlan, SimModel, SimServer
from moa.topology.loader import load_data
from tests.rawhttp import http, raw_server
from tests.serving import serving

TRANSPORTS = ["litellm", "openai-http"]
# litellm's aiohttp pool logs a warning when many requests queue for a slot; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")


def agent(base: str, model: str, transport: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": base,
        "transport": transport,
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        **extra,
    }


def single(base: str, model: str, transport: str, **extra: Any) -> moa.Topology:
    a = agent(base, model, transport, **extra)
    return load_data({"name": f"s-{model}", "kind": "single", "agent": "a", "agents": {"a": a}})


def parallel(base: str, workers: list[str], transport: str, **kw: Any) -> moa.Topology:
    extra = {"retry": kw.pop("retry", {"max_attempts": 1}), **kw.pop("agent_extra", {})}
    agents = {f"w{i}": agent(base, m, transport, **extra) for i, m in enumerate(workers)}
    agents["agg"] = agent(base, "fast", transport, **extra)
    data = {
        "name": "p",
        "kind": "parallel",
        "workers": [a for a in agents if a != "agg"],
        "aggregator": "agg",
    }
    return load_data(data | kw | {"agents": agents})


# -- 1. cancellations never wedge the pool -------------------------------------------------------


# a cut call's connection held until the slow model replies would make a fast call wait up to
# SLOW_S; the bound sits well under that and well over a fast call on a machine with load 20
SLOW_S = 10.0
BOUND_S = 4.0


async def _fast_calls_each_within(t: moa.Topology, rt: moa.Runner, n: int, bound_s: float) -> None:
    for i in range(n):
        try:
            async with asyncio.timeout(bound_s):
                await t.run(f"fast {i}", runner=rt)
        except TimeoutError:
            pytest.fail(f"fast call {i} did not complete within {bound_s}s: the pool is wedged")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deadlines_and_quorum_cancellations_never_wedge_the_runner(transport: str) -> None:
    """20 runs cut mid-call (deadlines and quorum stragglers), then 50 fast calls each within 4 s
    (a connection kept by a cut call would hold them for the slow model's 10 s)."""
    models = {"slow": SimModel(latency_s=SLOW_S), "fast": SimModel()}
    async with SimServer(models) as srv:
        slow = parallel(srv.base_url, ["slow", "slow"], transport)
        quorum = parallel(srv.base_url, ["fast", "slow", "slow"], transport, quorum=1)
        fast = single(srv.base_url, "fast", transport)
        async with moa.Runner() as rt:
            await fast.run("warm up", runner=rt)  # litellm's first call imports it
            for i in range(10):
                with pytest.raises(moa.TimedOut):
                    await slow.run(f"slow {i}", runner=rt, deadline_s=0.2)
                await quorum.run(f"quorum {i}", runner=rt)
            await _fast_calls_each_within(fast, rt, 50, BOUND_S)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_disconnects_never_wedge_serve(transport: str) -> None:
    """20 `moa serve` clients that give up mid-run, then 50 fast requests each within 4 s (a run
    left going by a gone client would hold its connections for the slow model's 10 s)."""
    with SimServer({"slow": SimModel(latency_s=SLOW_S), "fast": SimModel()}) as srv:
        slow = parallel(srv.base_url, ["slow", "slow"], transport).model_copy(update={"name": "slowt"})
        fast = parallel(srv.base_url, ["fast", "fast"], transport).model_copy(update={"name": "fastt"})
        with serving(create_app([slow, fast])) as url, httpx.Client(base_url=url) as client:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            client.post("/chat/completions", json={"model": "fastt", **body}, timeout=30)  # warm up
            for _ in range(20):
                with pytest.raises(httpx.TimeoutException):
                    client.post("/chat/completions", json={"model": "slowt", **body}, timeout=0.2)
            for i in range(50):
                r = client.post("/chat/completions", json={"model": "fastt", **body}, timeout=BOUND_S)
                assert r.status_code == 200, (i, r.text)


async def test_a_twice_cancelled_request_leaves_the_direct_pool_usable() -> None:
    """The root cause: a second cancel() during httpcore's cleanup no longer leaves a connection
    marked active forever; the next request gets a connection."""
    async with SimServer({"slow": SimModel(latency_s=3.0), "fast": SimModel()}) as srv:
        m = OpenAIHTTPModel()

        def req(name: str) -> ModelRequest:
            msgs = [{"role": "user", "content": "hi"}]
            return ModelRequest(model=f"openai/{name}", messages=msgs, api_base=srv.base_url)

        tasks = [asyncio.create_task(m.complete(req("slow"))) for _ in range(2)]
        await asyncio.sleep(0.3)
        for t in tasks:
            t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with asyncio.timeout(5):
            reply = await m.complete(req("fast"))
        assert reply.text
        await m.aclose()


async def test_waiting_for_a_connection_is_bounded_and_not_latency() -> None:
    """With every connection busy, a request waits (bounded by pool_timeout_s); its timeout_s and
    its latency start when it is sent, not while it waits for the connection."""
    async with SimServer({"slow": SimModel(latency_s=1.0)}) as srv:
        direct = OpenAIHTTPModel(max_connections=1)
        t = single(srv.base_url, "slow", "openai-http", timeout_s=1.6, retry={"max_attempts": 1})
        async with moa.Runner(models={"openai/slow": direct}) as rt:
            first, second = await asyncio.gather(t.run("one", runner=rt), t.run("two", runner=rt))
        # together they took ~2 s, past timeout_s, yet neither timed out, and neither counts the wait
        for r in (first, second):
            assert r.calls[0].attempt_log[0].status == "ok"
            assert r.calls[0].latency_s < 1.6

        bounded = OpenAIHTTPModel(max_connections=1, pool_timeout_s=0.2)
        async with moa.Runner(models={"openai/slow": bounded}) as rt:
            outcomes = await asyncio.gather(
                t.run("a", runner=rt), t.run("b", runner=rt), return_exceptions=True
            )
        errors = [o for o in outcomes if isinstance(o, moa.MoAError)]
        assert len(errors) == 1 and "no free connection within pool_timeout_s=0.2" in str(errors[0])
        # it never left: its wait is queued_s, not latency (it was both, counted twice)
        (rec,) = errors[0].calls
        assert rec.latency_s == 0.0 == rec.attempt_log[0].latency_s and rec.queued_s > 0


# -- 2. every attempt leaves a record --------------------------------------------------------------


async def test_attempt_log_has_one_entry_per_attempt_with_the_exact_fields() -> None:
    """Two failures then a success: attempts == 3, entries with status/latency_s/usage/error and
    each attempt's own cost and service tier."""
    fm = ScriptedModel([moa.ProviderError("boom", status_code=500), moa.RateLimited("slow down"), "fine"])
    a = build.agent("fake/a", retry={"max_attempts": 3, "backoff_base_s": 0.0})
    r = await build.single(a).run("q", runner=moa.Runner(models={"fake/*": fm}))
    rec = r.calls[0]
    assert rec.attempts == 3 == len(rec.attempt_log)
    assert [a.status for a in rec.attempt_log] == ["error", "error", "ok"]
    entry = rec.to_dict()["attempt_log"][0]
    assert set(entry) == {"status", "latency_s", "usage", "error", "cost_usd", "service_tier"}
    assert entry["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert rec.to_dict()["attempt_log"][2]["usage"]["completion_tokens"] == 1
    assert moa.CallRecord.from_dict(rec.to_dict()).attempt_log == rec.attempt_log


async def test_a_node_cancelled_during_a_retry_backoff_leaves_its_record() -> None:
    """A quorum straggler cancelled while waiting out its backoff still leaves a CallRecord."""
    straggler = ScriptedModel([moa.ProviderError("down", status_code=503)])
    fast = FunctionModel(lambda r: "ok")
    slow_retry = build.agent(
        "fake/slow", retry={"max_attempts": 5, "backoff_base_s": 5.0, "backoff_max_s": 5.0}
    )
    t = build.parallel(["fake/fast", slow_retry], aggregator="fake/fast", quorum=1)
    r = await t.run("q", runner=moa.Runner(models={"fake/fast": fast, "fake/slow": straggler}))
    recs = [c for c in r.calls if c.model == "fake/slow"]
    assert len(recs) == 1 and recs[0].error == "cancelled"
    assert [a.status for a in recs[0].attempt_log] == ["error"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_timed_out_attempt_keeps_its_worst_case(transport: str) -> None:
    """A timeout is unknown usage: it is logged with usage null, the budget keeps its worst case,
    and the run's cost_usd_max counts it."""
    faults = FaultPlan(rate=1.0, kinds=("hang",), hang_s=30)
    async with SimServer(default=SimModel(), faults=faults) as srv:
        t = single(
            srv.base_url,
            "m",
            transport,
            timeout_s=0.3,
            max_tokens=100,
            retry={"max_attempts": 2, "backoff_base_s": 0},
        )
        budget = moa.Budget(1.0)
        async with moa.Runner(budget=budget) as rt:
            with pytest.raises(moa.TimedOut) as info:
                await t.run("hello", runner=rt)
    rec = info.value.calls[0]
    assert [a.status for a in rec.attempt_log] == ["timeout", "timeout"]
    assert all(a.usage is None for a in rec.attempt_log)
    assert rec.unknown_usage_attempts == 2 and rec.cost_usd == 0
    worst = rec.cost_usd_max / 2
    assert worst > 0 and budget.spent_usd == pytest.approx(rec.cost_usd_max)


@pytest.mark.parametrize("client", ["aiohttp", "httpx", "litellm"])
async def test_a_refused_connection_costs_nothing(client: str) -> None:
    """No connection, so no byte of the request left: each attempt is known usage of zero and the
    budget keeps nothing (each had kept its worst case, so a down endpoint drained a shared budget
    through retries and fallbacks)."""
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{bound.getsockname()[1]}/v1"
        transport = "litellm" if client == "litellm" else "openai-http"
        t = single(base, "m", transport, max_tokens=100, retry={"max_attempts": 3, "backoff_base_s": 0})
        models = (
            {"openai/m": OpenAIHTTPModel(transport=httpx.AsyncHTTPTransport())} if client == "httpx" else {}
        )
        budget = moa.Budget(1.0)
        async with moa.Runner(models=models, budget=budget) as rt:
            with pytest.raises(moa.ProviderError, match="connection failed") as info:
                await t.run("hello", runner=rt)
    rec = info.value.calls[0]
    assert [(a.status, a.usage) for a in rec.attempt_log] == [("error", moa.Usage())] * 3
    assert rec.unknown_usage_attempts == 0 and rec.cost_usd_max == 0 and budget.spent_usd == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("rate", [0.2, 0.5])
async def test_served_completions_match_the_records_under_faults_and_cancellations(
    transport: str, rate: float, litellm_imported: None
) -> None:
    """At 20-50% faults with quorum cancellations: recorded <= served <= recorded + unknown, and
    recorded completion tokens never exceed what was served."""
    faults = FaultPlan(rate=rate, retry_after_s=0.02, hang_s=30, seed=11)
    models = {"a": SimModel(latency_s=0.01), "b": SimModel(latency_s=0.05), "c": SimModel(latency_s=0.2)}
    async with SimServer(models, default=SimModel(latency_s=0.01), faults=faults) as srv:
        retry = {"max_attempts": 3, "backoff_base_s": 0.02, "backoff_max_s": 0.1}
        # per-attempt timeouts cut the hangs (litellm's CPU queue under load needs a longer one)
        timeout = {"timeout_s": 4.0 if transport == "litellm" else 1.5}
        t = parallel(srv.base_url, ["a", "b", "c"], transport, quorum=1, retry=retry, agent_extra=timeout)
        async with moa.Runner() as rt:
            outcomes = await asyncio.gather(
                *(t.run(f"question {i}", runner=rt, deadline_s=60) for i in range(60)), return_exceptions=True
            )
        stats = srv.stats
    calls = [c for o in outcomes for c in (o.calls if isinstance(o, (moa.RunResult, moa.MoAError)) else [])]
    assert len(calls) >= 60
    with_usage = sum(1 for c in calls for a in c.attempt_log if a.status == "ok")
    unknown = sum(c.unknown_usage_attempts for c in calls)
    assert with_usage <= stats.served <= with_usage + unknown
    assert sum(c.usage.completion_tokens for c in calls) <= stats.completion_tokens
    assert sum(stats.faults.values()) > 10


# -- 3. the budget does not trust the provider --------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "lie",
    [
        {"prompt_tokens": 3, "completion_tokens": 100_000},
        {"prompt_tokens": -500_000, "completion_tokens": -500_000},
    ],
)
async def test_a_lying_provider_cannot_pass_the_cap_or_make_spend_negative(
    transport: str, lie: dict[str, int]
) -> None:
    """Over 500 concurrent runs against a server lying about usage, spent stays within [0, cap] and
    each suspect reply is flagged and charged exactly its worst case."""
    async with SimServer(default=SimModel(answer="four", reported_usage=lie)) as srv:
        cap = 0.3  # a hold is about $0.054: the prompt's ceiling and max_tokens at $50 / M
        budget = moa.Budget(cap)
        prices = {"input_per_mtok": 50.0, "output_per_mtok": 50.0}
        t = single(
            srv.base_url,
            "liar",
            transport,
            max_tokens=8,
            timeout_s=300,  # a hang guard: hundreds of calls at once through litellm on a busy machine
            retry={"max_attempts": 1},
            pricing=prices,
        )
        async with moa.Runner(budget=budget) as rt:
            outcomes = await asyncio.gather(
                *(t.run(f"q {i}", runner=rt) for i in range(500)), return_exceptions=True
            )
    ok = [o for o in outcomes if isinstance(o, moa.RunResult)]
    assert ok and all(isinstance(o, (moa.RunResult, moa.BudgetExceeded)) for o in outcomes)
    assert 0 <= budget.spent_usd <= cap + 1e-12
    rec = ok[0].calls[0]
    assert rec.usage_suspect and rec.to_dict()["usage_suspect"] is True
    assert 0 <= rec.usage.completion_tokens <= 8 and rec.usage.prompt_tokens >= 0
    assert all(o.calls[0].usage_suspect for o in ok)
    assert sum(o.cost_usd for o in ok) == pytest.approx(budget.spent_usd)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_believed_usage_above_the_prompt_bound_cannot_pass_the_cap(transport: str) -> None:
    """A provider may report more prompt tokens than the prompt's bytes (hidden template tokens) and
    still be believed, up to the ceiling: the hold covers that ceiling, so over 200 concurrent runs
    such replies never take spend past the cap (holds covered only the bound: a reply reporting
    1,000 prompt tokens for "q 1" was charged 20 times its hold)."""
    inflated = {"prompt_tokens": 1000, "completion_tokens": 1}
    async with SimServer(default=SimModel(answer="four", reported_usage=inflated)) as srv:
        cap = 0.5
        budget = moa.Budget(cap)
        t = single(
            srv.base_url,
            "inflates",
            transport,
            max_tokens=8,
            timeout_s=300,  # a hang guard: hundreds of calls at once through litellm on a busy machine
            retry={"max_attempts": 1},
            pricing={"input_per_mtok": 50.0, "output_per_mtok": 50.0},
        )
        async with moa.Runner(budget=budget) as rt:
            outcomes = await asyncio.gather(
                *(t.run(f"q {i}", runner=rt) for i in range(200)), return_exceptions=True
            )
    ok = [o for o in outcomes if isinstance(o, moa.RunResult)]
    assert ok and all(isinstance(o, (moa.RunResult, moa.BudgetExceeded)) for o in outcomes)
    assert not any(o.calls[0].usage_suspect for o in ok)  # believed: charged as reported
    assert all(o.cost_usd == pytest.approx(1001 * 50e-6) for o in ok)
    assert budget.spent_usd == pytest.approx(sum(o.cost_usd for o in ok)) and budget.spent_usd <= cap


def _tiered(base: str, transport: str, model: str = "openai/gpt-4o", **params: Any) -> moa.Topology:
    """A model the price map prices at several service tiers, max_tokens 100, one attempt."""
    a = {"model": model, "api_base": base, "transport": transport, "max_tokens": 100}
    a |= {"retry": {"max_attempts": 1}, "params": params}
    return load_data({"name": "tiered", "kind": "single", "agent": "a", "agents": {"a": a}})


def _served_at(tier: str, prompt_tokens: int) -> bytes:
    """A reply saying it was served at ``tier``, with believable usage (100 completion tokens)."""
    reply = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "service_tier": tier,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 100},
    }
    return http(200, reply)


_CEILING = prompt_token_ceiling(prompt_token_bound([{"role": "user", "content": "hi"}]))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reply_served_at_a_dearer_tier_cannot_pass_the_cap(transport: str) -> None:
    """An agent asking for no service tier may be served (and billed) at priority, ~1.7x: its hold
    covers that, so a cap between the standard and the priority worst case refuses the call before
    it is sent, and a cap at the priority worst case is met exactly. The hold was the standard one,
    and the priority bill took spend 40% past such a cap."""
    standard = price_for("openai/gpt-4o")
    worst = standard.for_service_tier("priority").worst_case(_CEILING, 100)
    assert worst > 1.5 * standard.worst_case(_CEILING, 100)
    for cap in (standard.worst_case(_CEILING, 100) * 1.2, worst):
        budget = moa.Budget(cap)
        async with raw_server(_served_at("priority", _CEILING)) as srv, moa.Runner(budget=budget) as rt:
            if cap < worst:
                with pytest.raises(moa.BudgetExceeded):
                    await _tiered(srv.base_url, transport).run("hi", runner=rt)
                assert srv.arrivals == [] and budget.spent_usd == 0.0
            else:
                r = await _tiered(srv.base_url, transport).run("hi", runner=rt)
                assert not r.calls[0].usage_suspect and r.cost_usd == pytest.approx(worst)
                assert budget.spent_usd == pytest.approx(worst) and budget.spent_usd <= cap * (1 + 1e-9)


async def test_a_reply_claiming_a_tier_the_agent_did_not_ask_for_is_charged_its_hold() -> None:
    """Asking for flex, the hold covers flex and the standard tier (which may serve instead); a
    reply claiming priority, dearer than both, is flagged usage_suspect and charged the hold."""
    standard = price_for("openai/gpt-5")
    hold = standard.worst_case(_CEILING, 100)  # above flex's
    assert standard.for_service_tier("priority").worst_case(_CEILING, 100) > hold
    budget = moa.Budget(hold)
    async with raw_server(_served_at("priority", _CEILING)) as srv, moa.Runner(budget=budget) as rt:
        t = _tiered(srv.base_url, "openai-http", "openai/gpt-5", service_tier="flex")
        r = await t.run("hi", runner=rt)
    assert r.calls[0].usage_suspect and r.cost_usd == pytest.approx(hold)
    assert budget.spent_usd == pytest.approx(hold) and budget.spent_usd <= hold * (1 + 1e-9)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_requests_queued_on_a_rate_limit_hold_no_budget(transport: str) -> None:
    """Requests waiting for their turn under an rpm limit hold nothing: another endpoint's call is
    made with the money they may spend later. They held their worst case while queued (a minute,
    here), and that call was refused with BudgetExceeded with almost all of its cap unspent."""
    worst = 1e-6 * (prompt_token_ceiling(prompt_token_bound([{"role": "user", "content": "q 0"}])) + 100)
    budget = moa.Budget(3.5 * worst)  # room for three holds, not four
    # two servers: agents of one endpoint share its limiter, so `other` would queue behind them too
    async with SimServer({"limited": SimModel()}) as srv, SimServer({"other": SimModel()}) as elsewhere:
        limited = single(srv.base_url, "limited", transport, max_tokens=100, rate_limit={"rpm": 1})
        other = single(elsewhere.base_url, "other", transport, max_tokens=100)
        async with moa.Runner(budget=budget, rate_limits=RateLimits()) as rt:
            first = await limited.run("q 0", runner=rt)  # the minute's one request
            queued = [asyncio.create_task(limited.run(f"q {i}", runner=rt)) for i in (1, 2, 3)]
            await asyncio.sleep(0.3)  # the three wait behind the full window
            second = await other.run("q 9", runner=rt)
            for task in queued:
                task.cancel()
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert first.output and second.output
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert budget.spent_usd == pytest.approx(first.cost_usd + second.cost_usd) and budget.reserved_usd == 0


async def test_plausible_usage_is_charged_as_reported() -> None:
    """An honest reply is not suspect and costs exactly its tokens."""
    fm = FunctionModel(lambda r: "two words")
    a = build.agent("fake/a", max_tokens=10, pricing={"input_per_mtok": 1.0, "output_per_mtok": 1.0})
    r = await build.single(a).run("q", runner=moa.Runner(models={"fake/*": fm}), budget_usd=1.0)
    assert not r.calls[0].usage_suspect
    assert r.cost_usd == pytest.approx(r.usage.total_tokens * 1e-6)
    assert r.cost_usd_max == r.cost_usd and r.unknown_usage_attempts == 0


# -- 5. retries do not amplify an overload ---------------------------------------------------------


def test_retry_budget_allows_a_fifth_of_recent_traffic_plus_a_floor() -> None:
    """With 100 first attempts and a floor of 5, the 26th retry is refused."""
    b = RetryBudget(ratio=0.2, min_retries=5, window_s=60)
    for _ in range(100):
        b.sent()
    assert all(b.try_retry() for _ in range(25))
    assert not b.try_retry()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failing_endpoint_gets_no_retry_storm(transport: str) -> None:
    """At 100% faults, 300 calls allowed 4 attempts each send at most 300 + 20% + the floor, not 1,200."""
    async with SimServer(
        default=SimModel(), faults=FaultPlan(rate=1.0, kinds=("503",), retry_after_s=None)
    ) as srv:
        retry = {"max_attempts": 4, "backoff_base_s": 0.0, "backoff_max_s": 0.0}
        # a hang guard only: litellm spends milliseconds of CPU on each of the 300 calls sent at
        # once, so on a loaded machine the last ones left 30 s after their clocks started
        t = single(srv.base_url, "down", transport, retry=retry, timeout_s=300)
        async with moa.Runner() as rt:
            outcomes = await asyncio.gather(
                *(t.run(f"q{i}", runner=rt) for i in range(300)), return_exceptions=True
            )
        stats = srv.stats
    assert all(isinstance(o, moa.ProviderError) for o in outcomes)
    assert stats.requests <= 300 + 60 + 100
    assert any("retry budget" in str(o) for o in outcomes)


def test_retry_budget_rejects_nonsense_settings() -> None:
    """A negative ratio or an empty window is a UserError."""
    with pytest.raises(moa.UserError):
        RetryBudget(ratio=-1)
    with pytest.raises(moa.UserError):
        RetryBudget(window_s=0)


# -- the figures reach the user ------------------------------------------------------------------


async def test_unknown_usage_reaches_the_run_result_json() -> None:
    """--json carries cost_usd_max and unknown_usage_attempts, the record its attempt_log."""
    started = time.perf_counter()
    fm = FunctionModel(lambda r: "late", delay_s=5)
    a = build.agent(
        "fake/a",
        timeout_s=0.05,
        max_tokens=10,
        retry={"max_attempts": 1},
        pricing={"input_per_mtok": 1.0, "output_per_mtok": 1.0},
    )
    with pytest.raises(moa.TimedOut) as info:
        await build.single(a).run("q", runner=moa.Runner(models={"fake/*": fm}))
    assert time.perf_counter() - started < 4
    rec = info.value.calls[0]
    assert rec.to_dict()["unknown_usage_attempts"] == 1
    assert rec.to_dict()["cost_usd_max"] > 0 == rec.cost_usd
    assert rec.to_dict()["attempt_log"][0]["usage"] is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reply_moa_cannot_use_is_booked_at_the_usage_it_reports(transport: str) -> None:
    """Two replies with no message content (a content filter's), each reporting its usage, then an
    answer: the provider billed three replies, and the record books all three at their reported
    usage (they were unknown usage, so cost_usd was a third of the bill); the budget is charged
    the same, and nothing is left unknown."""
    usage = {"prompt_tokens": 100, "completion_tokens": 20}
    empty = {
        "id": "x",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}
        ],
        "usage": usage,
    }
    answer = {
        **empty,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
    async with raw_server(http(200, empty), http(200, empty), http(200, answer)) as srv:
        t = single(
            srv.base_url, "m", transport, max_tokens=50, retry={"max_attempts": 3, "backoff_base_s": 0}
        )
        budget = moa.Budget(1.0)
        async with moa.Runner(budget=budget) as rt:
            result = await t.run("q " * 50, runner=rt)
    (rec,) = result.calls
    billed = 3 * (100 * 1e-6 + 20 * 1e-6)
    assert len(srv.arrivals) == 3 and [a.status for a in rec.attempt_log] == ["error", "error", "ok"]
    assert all(a.usage == moa.Usage(100, 20) for a in rec.attempt_log)
    assert rec.usage == moa.Usage(300, 60) and rec.unknown_usage_attempts == 0
    assert rec.cost_usd == pytest.approx(billed) == pytest.approx(rec.cost_usd_max)
    assert budget.spent_usd == pytest.approx(billed)


_PAST_ANY_FLOAT = 10**400


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 3, "completion_tokens": _PAST_ANY_FLOAT},
        {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "completion_tokens_details": {"reasoning_tokens": _PAST_ANY_FLOAT},
            "total_tokens": 5 + _PAST_ANY_FLOAT,
        },
    ],
    ids=["completion", "reasoning"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_count_past_any_float_is_suspect_not_a_crash(transport: str, usage: dict[str, int]) -> None:
    """With no max_tokens sent (and no budget), a reply claiming 10**400 completion tokens, a whole
    number JSON reads, is suspect usage: the answer kept, the count clamped to the worst case's and
    charged that. Before, its cost overflowed a float: the run failed with "OverflowError: int too
    large to convert to float", and the attempt it had sent was missing from the record."""
    answer = {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": usage,
    }
    async with raw_server(http(200, answer)) as srv:
        t = single(srv.base_url, "m", transport, retry={"max_attempts": 1})
        async with moa.Runner() as rt:
            result = await t.run("q", runner=rt)
    (rec,) = result.calls
    assert result.output == "ok" and rec.usage_suspect and len(rec.attempt_log) == 1
    assert rec.usage == moa.Usage(3, 4096) == rec.attempt_log[0].usage  # the worst case's completion
    assert rec.cost_usd == pytest.approx((3 + 4096) * 1e-6) == result.cost_usd


def _reasoning_only(stream: bool, usage: dict[str, int] | None) -> bytes:
    """A reply whose content is empty beside its reasoning (a reasoning model that ended before its
    answer, as llama-server sends it), finished with ``stop``, with ``usage`` (None: no usage)."""
    reasoning = "thinking it over " * 200
    if not stream:
        message = {"role": "assistant", "content": "", "reasoning_content": reasoning}
        body: dict[str, Any] = {"id": "x", "model": "m", "choices": [{"index": 0, "message": message}]}
        body["choices"][0]["finish_reason"] = "stop"
        return http(200, body if usage is None else body | {"usage": usage})
    head = {"id": "x", "model": "m", "object": "chat.completion.chunk"}
    events = [
        {**head, "choices": [{"index": 0, "delta": {"reasoning_content": reasoning}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if usage is not None:
        events.append({**head, "choices": [], "usage": usage})
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + data


@pytest.mark.parametrize("usage", [None, {"prompt_tokens": 10}], ids=["no-usage", "prompt-only"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reply_that_only_reasoned_is_not_booked_free(
    transport: str, stream: bool, usage: dict[str, int] | None
) -> None:
    """A reply of reasoning and no text, whose provider reports no completion count, is booked at
    the estimate of its reasoning (3,400 bytes: hundreds of tokens), flagged estimated. Before, an
    empty text made the missing count 0: each such attempt, and each retry of it, booked no
    completion tokens, and with the prompt reported it was not even flagged as estimated."""
    async with raw_server(_reasoning_only(stream, usage)) as srv:
        t = single(srv.base_url, "m", transport, retry={"max_attempts": 1})
        async with moa.Runner() as rt:
            with pytest.raises(moa.MalformedReply, match=r"no answer after the model.s reasoning") as info:
                if stream:
                    async for _ in t.stream("q", runner=rt):
                        pass
                else:
                    await t.run("q", runner=rt)
    (rec,) = info.value.calls
    assert rec.usage_estimated and rec.usage.completion_tokens > 100
    assert rec.cost_usd == pytest.approx(rec.usage.total_tokens * 1e-6)


@pytest.mark.parametrize("params", [{"n": 3}, {"extra_body": {"n": 3}}], ids=["n", "extra-body-n"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_request_for_several_answers_is_held_and_charged_for_each(
    transport: str, params: dict[str, Any]
) -> None:
    """With `n: 3` in an agent's params the provider bills three answers of up to max_tokens each:
    their 25 completion tokens are charged as reported, and the hold covers three answers. Before,
    the hold covered one, and 25 tokens past max_tokens 10 were clamped as suspect and charged
    one answer's worst case: spend under the bill, and the cap passable."""
    usage = {"prompt_tokens": 3, "completion_tokens": 25}
    answer = {
        "id": "x",
        "model": "m",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": f"a{i}"}, "finish_reason": "stop"}
            for i in range(3)
        ],
        "usage": usage,
    }
    async with raw_server(http(200, answer)) as srv:
        t = single(srv.base_url, "m", transport, max_tokens=10, retry={"max_attempts": 1}, params=params)
        ceiling = prompt_token_ceiling(prompt_token_bound([{"role": "user", "content": "q"}]))
        one_answer = (ceiling + 10) * 1e-6
        async with moa.Runner(budget=moa.Budget(one_answer)) as rt:
            with pytest.raises(moa.BudgetExceeded):  # three answers' hold does not fit
                await t.run("q", runner=rt)
        budget = moa.Budget(1.0)
        async with moa.Runner(budget=budget) as rt:
            result = await t.run("q", runner=rt)
    (rec,) = result.calls
    assert result.output == "a0" and not rec.usage_suspect and rec.usage == moa.Usage(3, 25)
    assert rec.cost_usd == pytest.approx(28e-6) == budget.spent_usd


async def test_a_request_that_never_left_gives_its_rate_limit_stamps_back() -> None:
    """A request let through the rate limiter that then waited for a connection and was cut by its
    run's deadline never reached the provider: its rpm stamp leaves the window. Before, it counted
    against the limit for the whole period as if sent."""
    async with SimServer({"slow": SimModel(latency_s=1.0)}) as srv:
        direct = OpenAIHTTPModel(max_connections=1)
        t = single(srv.base_url, "slow", "openai-http", retry={"max_attempts": 1}, rate_limit={"rpm": 1000})
        limits = RateLimits()
        async with moa.Runner(models={"openai/slow": direct}, rate_limits=limits) as rt:
            sent, cut = await asyncio.gather(
                t.run("one", runner=rt), t.run("two", runner=rt, deadline_s=0.3), return_exceptions=True
            )
    assert isinstance(sent, moa.RunResult) and isinstance(cut, moa.TimedOut)
    assert cut.calls[0].attempt_log[0].usage == moa.Usage()  # it never left
    limiter = limits.limiter_for("openai/slow", srv.base_url, RateLimit(rpm=1000))
    assert limiter is not None and limiter._rpm is not None and len(limiter._rpm._task_logs) == 1
