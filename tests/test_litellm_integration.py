"""Every topology kind over real HTTP through litellm, against a loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import moa
from moa.models.base import ModelRequest
from moa.models.litellm import LitellmModel, _SentHook
from moa.results import Token
from moa.testing.sim import (
    FaultPlan,
    SimModel,
    SimRequest,
    SimServer,
    count_completion_tokens,
    last_user_text,
)
from moa.topology.loader import load_data


def _answer(req: SimRequest) -> str:
    text = last_user_text(req.messages)
    if "manager splitting a task among" in text:
        return '{"instructions": ["part one", "part two"]}'
    return f"answer from {req.model}"


def agents(base: str, *names: str, **extra: Any) -> dict[str, Any]:
    return {
        n: {
            "model": f"openai/sim-{n}",
            "api_base": base,
            "api_key_env": "MOA_SIM_KEY",
            "transport": "litellm",
            "temperature": 0.7,
            "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            **extra,
        }
        for n in names
    }


@pytest.fixture
def srv(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MOA_SIM_KEY", "sk-test-not-secret")
    with SimServer(default=SimModel(answer=_answer)) as s:
        yield s


KINDS = {
    "single": {"kind": "single", "agent": "a"},
    "sequential": {"kind": "sequential", "steps": ["a", "b", "c"]},
    "parallel": {
        "kind": "parallel",
        "workers": ["a", "b", "c"],
        "aggregator": "agg",
        "quorum": 2,
        "on_quorum": "wait",
    },
    "hierarchical": {"kind": "hierarchical", "manager": "agg", "workers": ["a", "b"]},
    "layered": {"kind": "layered", "layers": 2, "proposers": ["a", "b"], "aggregator": "agg"},
    "self_moa": {"kind": "self_moa", "agent": "a", "samples": 3, "aggregator": "agg"},
}
CALLS = {"single": 1, "sequential": 3, "parallel": 4, "hierarchical": 4, "layered": 5, "self_moa": 4}


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_each_kind_over_litellm(srv: SimServer, kind: str) -> None:
    """Each kind runs over HTTP through litellm; usage and cost match what the server served."""
    t = load_data({"name": kind, **KINDS[kind], "agents": agents(srv.base_url, "a", "b", "c", "agg")})
    async with moa.Runner() as rt:
        r = await t.run("What is the capital of France?", runner=rt)
    stats = srv.stats
    assert len(r.calls) == CALLS[kind] == stats.served
    assert r.usage.prompt_tokens == stats.prompt_tokens
    assert r.usage.completion_tokens == stats.completion_tokens
    assert r.cost_usd == pytest.approx(stats.prompt_tokens * 1e-6 + stats.completion_tokens * 2e-6)
    assert all(c.error is None and c.attempts == 1 for c in r.calls)
    assert r.output.startswith("answer from sim-")


async def test_api_base_and_key_are_sent(srv: SimServer) -> None:
    """api_base is honoured (the server saw the calls) and the key comes from api_key_env."""
    t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": agents(srv.base_url, "a")})
    async with moa.Runner() as rt:
        await t.run("hi", runner=rt)
    assert srv.stats.served_by_model["sim-a"] == 1


async def test_stream_over_litellm(srv: SimServer) -> None:
    """Streaming through litellm yields the tokens and records usage."""
    t = load_data({"name": "p", **KINDS["parallel"], "agents": agents(srv.base_url, "a", "b", "c", "agg")})
    pieces: list[str] = []
    result = None
    async with moa.Runner() as rt:
        async for ev in t.stream("hello there", runner=rt):
            if isinstance(ev, Token):
                pieces.append(ev.text)
            else:
                result = ev.result
    assert result is not None and "".join(pieces) == result.output == "answer from sim-agg"
    assert result.usage.completion_tokens == srv.stats.completion_tokens


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("429", moa.RateLimited),
        ("500", moa.ProviderError),
        ("503", moa.ProviderError),
        ("reset", moa.ProviderError),
        ("malformed", moa.MalformedReply),
    ],
)
async def test_errors_are_mapped(srv: SimServer, fault: str, error: type[moa.ModelError]) -> None:
    """litellm's exceptions become moa's, naming node and model."""
    srv.faults = FaultPlan(rate=1.0, kinds=(fault,), retry_after_s=0.01)
    ag = agents(srv.base_url, "a", retry={"max_attempts": 1})
    t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": ag})
    async with moa.Runner() as rt:
        with pytest.raises(error) as info:
            await t.run("hi", runner=rt)
    assert info.value.node == "answer" and info.value.model == "openai/sim-a"
    assert len(info.value.calls) == 1 and info.value.calls[0].error is not None


async def test_rate_limit_carries_retry_after(srv: SimServer) -> None:
    """A 429's Retry-After reaches the RateLimited error."""
    srv.faults = FaultPlan(rate=1.0, kinds=("429",), retry_after_s=7)
    t = load_data(
        {
            "name": "s",
            "kind": "single",
            "agent": "a",
            "agents": agents(srv.base_url, "a", retry={"max_attempts": 1}),
        }
    )
    async with moa.Runner() as rt:
        with pytest.raises(moa.RateLimited) as info:
            await t.run("hi", runner=rt)
    assert info.value.retry_after_s == pytest.approx(7, abs=1)


async def test_unknown_model_is_request_rejected() -> None:
    """A 404 for an unknown model is not retried and is a RequestRejected."""
    os.environ["MOA_SIM_KEY"] = "x"
    with SimServer(models={"known": SimModel()}) as s:
        t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": agents(s.base_url, "a")})
        async with moa.Runner() as rt:
            with pytest.raises(moa.RequestRejected):
                await t.run("hi", runner=rt)
        assert s.stats.requests == 1


async def test_retry_then_success_over_http(srv: SimServer) -> None:
    """A scripted 503 then success: one record with two attempts; the server served one completion."""
    srv.script("sim-a", ["503", "ok"])
    t = load_data(
        {
            "name": "s",
            "kind": "single",
            "agent": "a",
            "agents": agents(srv.base_url, "a", retry={"max_attempts": 3, "backoff_base_s": 0.01}),
        }
    )
    async with moa.Runner() as rt:
        r = await t.run("hi", runner=rt)
    assert r.calls[0].attempts == 2 and srv.stats.served == 1
    assert r.usage.completion_tokens == count_completion_tokens("answer from sim-a")


def test_run_sync_over_litellm_twice(srv: SimServer) -> None:
    """run_sync through litellm works on consecutive fresh event loops."""
    t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": agents(srv.base_url, "a")})
    start = time.perf_counter()
    outs = [t.run_sync("hi").output for _ in range(2)]
    assert outs == ["answer from sim-a"] * 2
    assert time.perf_counter() - start < 30


async def test_unknown_provider_is_bad_input() -> None:
    """A model string litellm has no provider for is a one-line UserError naming it, found before any
    call (the runner's preflight), not a run failure."""
    t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": {"model": "foo/bar-model"}}})
    async with moa.Runner() as rt:
        with pytest.raises(moa.UserError, match="model `foo/bar-model`: unknown provider `foo`") as info:
            await t.run("hi", runner=rt)
    assert info.value.calls == []  # found by the preflight, before any call


async def test_timeout_counts_from_when_litellm_sends(srv: SimServer) -> None:
    """litellm builds each request in the event loop's default executor; a call waiting there for a
    thread (many calls at once, or a caller's own blocking work, as here) has not reached the
    provider, so that wait is `queued_s`, not latency, and does not spend `timeout_s`. Before, the
    wait below timed the call out without a request ever being sent."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(2)]
    timer = threading.Timer(3.0, release.set)
    timer.start()
    try:
        ag = agents(srv.base_url, "a", timeout_s=1.5, retry={"max_attempts": 1})
        t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": ag})
        async with moa.Runner() as rt:
            r = await t.run("hi", runner=rt)
    finally:
        release.set()
        timer.cancel()
        await asyncio.gather(*busy)
    call = r.calls[0]
    assert call.error is None and call.attempts == 1 and srv.stats.served == 1
    assert call.queued_s >= 2.0 and call.latency_s < 1.5


async def test_litellm_reports_the_send_once_before_the_server_sees_it() -> None:
    """litellm calls its `logger_fn` before sending and again after the reply: moa's `on_sent` runs
    once, on the event loop's thread, before the request reaches the server; a `logger_fn` of the
    caller's own, in `params`, still sees every event."""
    sent: list[int] = []
    seen_at_server: list[int] = []
    theirs: list[str] = []

    def answer(req: SimRequest) -> str:
        seen_at_server.append(len(sent))
        return "ok"

    with SimServer(default=SimModel(answer=answer)) as server:
        request = ModelRequest(
            model="openai/sim-hook",
            messages=[{"role": "user", "content": "hi"}],
            api_base=server.base_url,
            api_key="sk-test-not-secret",
            timeout_s=30,
            params={"logger_fn": lambda details: theirs.append(details.get("log_event_type"))},
            on_sent=lambda: sent.append(threading.get_ident()),
        )
        reply = await LitellmModel().complete(request)
    assert reply.text == "ok"
    assert sent == [threading.get_ident()] and seen_at_server == [1]
    assert theirs[0] == "pre_api_call" and len(theirs) >= 2


async def test_a_send_reported_from_a_thread_reaches_the_loop_unless_its_attempt_ended() -> None:
    """Providers litellm calls synchronously report the send from a worker thread: it is handed to
    the event loop, and dropped if the attempt has ended by then (the model's next attempt shares
    the request, and its clock must not start early)."""
    fired: list[int] = []
    hook = _SentHook(lambda: fired.append(threading.get_ident()))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, hook, {"log_event_type": "post_api_call"})
    await loop.run_in_executor(None, hook, {"log_event_type": "pre_api_call"})
    await loop.run_in_executor(None, hook, {"log_event_type": "pre_api_call"})
    await asyncio.sleep(0)
    assert fired == [threading.get_ident()]

    late = _SentHook(lambda: fired.append(0))
    worker = threading.Thread(target=late, args=({"log_event_type": "pre_api_call"},))
    worker.start()
    worker.join()  # blocks the loop: the hand-off waits in its queue until the attempt has ended
    late.ended = True
    await asyncio.sleep(0)
    assert fired == [threading.get_ident()]


_FIRST_CALL = """
import asyncio, sys
import moa
from moa.models import litellm as moa_litellm
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load_data

assert "litellm" not in sys.modules, "litellm imported before the first call"


async def main() -> None:
    async with SimServer({"m": SimModel()}) as srv:
        agent = {"model": "openai/m", "api_base": srv.base_url, "transport": "litellm"}
        t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})
        try:
            await t.run("q", deadline_s=0.2)
        except moa.TimedOut:
            # the deadline fired while litellm was still importing: the import did not hold the loop
            print("imported" if moa_litellm._litellm is not None else "still importing")


asyncio.run(main())
"""


def test_the_first_litellm_call_imports_it_off_the_event_loop() -> None:
    """litellm's first import takes seconds (10 beside other work): made on the event loop, it held
    every other call and the run's deadline (a 0.7 s deadline ended after 7 s). In a fresh process
    a 0.2 s deadline now ends the run while the import is still going on in its thread."""
    import subprocess
    import sys

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "still importing"
