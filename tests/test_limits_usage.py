"""What a rate limit counts and which limits hold, over real HTTP against the loopback simulator: a
tpm window counts each reply's real tokens (prompt and completion), not only the prompt it
estimated up front; and a limit set for a model holds that model whatever `api_base` an agent
gives it, together with a limit set for the URL (a request waits for both)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import moa
from moa.calls.limits import RateLimit, RateLimits, clear_rate_limits
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load_data

# far longer than any test runs: a request the window refuses waits for the next minute
MINUTE = 60.0
# how long a request the window admits may take on a busy machine, at most (a hang guard, not a
# measure: a refused request waits the whole minute)
ADMITTED_S = 20.0
# a request the window refuses is still waiting after this long (it waits a minute)
REFUSED_S = 1.0


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    clear_rate_limits()
    yield
    clear_rate_limits()


def _single(base: str, model: str, **extra: Any) -> moa.Topology:
    agent = {"model": model, "api_base": base, "transport": "openai-http", "timeout_s": 30, **extra}
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


async def _refused(run: Any) -> bool:
    """Whether ``run`` is still held by its limiter after ``REFUSED_S``."""
    try:
        await asyncio.wait_for(run, REFUSED_S)
    except TimeoutError:
        return True
    return False


# --- tpm counts what replies really used ----------------------------------------------------------


async def test_a_tpm_window_counts_the_replys_completion_tokens() -> None:
    """No max_tokens and no budget: a reply of 300 completion tokens fills a window of 300 tpm, so
    the next request waits for the next minute. Before, the window counted only the first prompt
    (about 15 tokens) and the second request went at once, past the limit."""
    long_answer = " ".join(["word"] * 300)
    async with SimServer({"m": SimModel(answer=long_answer)}) as srv:
        limits = RateLimits()
        limits.set(srv.base_url, tpm=300, period_s=MINUTE)
        topo = _single(srv.base_url, "openai/m")
        async with moa.Runner(rate_limits=limits) as rt:
            await asyncio.wait_for(topo.run("first", runner=rt), ADMITTED_S)
            assert await _refused(topo.run("second", runner=rt))
        assert srv.stats.requests == 1
        assert srv.stats.completion_tokens == 300


async def test_a_tpm_window_gives_back_what_a_short_reply_did_not_use() -> None:
    """max_tokens 200 reserves 200 completion tokens up front; a reply of one word settles the
    window at its real total, so the room it did not use goes to the next requests: three go
    within a window of 300 tpm, where the reservations alone (about 215 each) let one through."""
    async with SimServer({"m": SimModel(answer="ok")}) as srv:
        limits = RateLimits()
        limits.set(srv.base_url, tpm=300, period_s=MINUTE)
        topo = _single(srv.base_url, "openai/m", max_tokens=200)
        async with moa.Runner(rate_limits=limits) as rt:
            for i in range(3):
                await asyncio.wait_for(topo.run(f"q{i}", runner=rt), ADMITTED_S)
        assert srv.stats.requests == 3


async def test_a_reply_without_usage_keeps_the_estimate() -> None:
    """A server that reports no usage and sends no text: the window keeps the request's estimate
    (its prompt and max_tokens), not zero, so a limit it fills still refuses the next request."""
    empty = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    async with SimServer({"m": SimModel(answer="", reported_usage=empty)}) as srv:
        limits = RateLimits()
        limits.set(srv.base_url, tpm=250, period_s=MINUTE)
        topo = _single(srv.base_url, "openai/m", max_tokens=200, retry={"max_attempts": 1})
        async with moa.Runner(rate_limits=limits) as rt:
            first = await asyncio.gather(topo.run("first", runner=rt), return_exceptions=True)
            assert srv.stats.requests == 1, first
            assert await _refused(topo.run("second", runner=rt))
        assert srv.stats.requests == 1


# --- a model's limit and a URL's limit ------------------------------------------------------------


async def test_a_models_limit_holds_behind_an_api_base() -> None:
    """`set_rate_limit("openai/m", rpm=1)` and an agent of that model with an `api_base`: its second
    request waits for the next minute. Before, the limit was keyed by the URL only when the URL had
    no limit of its own, and (as here) another URL's agent of the model had its own window."""
    async with SimServer({"m": SimModel()}) as srv, SimServer({"m": SimModel()}) as other:
        moa.set_rate_limit("openai/m", rpm=1, period_s=MINUTE)
        moa.set_rate_limit(other.base_url, rpm=100, period_s=MINUTE)
        async with moa.Runner() as rt:
            await asyncio.wait_for(_single(srv.base_url, "openai/m").run("first", runner=rt), ADMITTED_S)
            # the same model through another server: one model, one window
            assert await _refused(_single(other.base_url, "openai/m").run("second", runner=rt))
        assert srv.stats.requests == 1 and other.stats.requests == 0


async def test_both_a_url_limit_and_a_model_limit_hold() -> None:
    """A URL limited to 1 request in flight and its model to 1 per minute: a request waits for
    each. The model's window refuses a second request of the model; another model at the URL is
    held only by the URL's limit and goes."""
    async with SimServer(default=SimModel()) as srv:
        moa.set_rate_limit(srv.base_url, max_concurrent=1)
        moa.set_rate_limit("openai/m", rpm=1, period_s=MINUTE)
        async with moa.Runner() as rt:
            await asyncio.wait_for(_single(srv.base_url, "openai/m").run("a", runner=rt), ADMITTED_S)
            assert await _refused(_single(srv.base_url, "openai/m").run("b", runner=rt))
            await asyncio.wait_for(_single(srv.base_url, "openai/n").run("c", runner=rt), ADMITTED_S)
        assert srv.stats.requests == 2


async def test_an_agents_own_limit_and_a_models_limit_both_hold() -> None:
    """An agent's own `rate_limit` (its endpoint's, behind its `api_base`) does not hide a limit set
    for its model: with a generous own limit, the model's 1 per minute still holds."""
    async with SimServer({"m": SimModel()}) as srv:
        moa.set_rate_limit("openai/m", rpm=1, period_s=MINUTE)
        topo = _single(srv.base_url, "openai/m", rate_limit={"rpm": 1000})
        async with moa.Runner() as rt:
            await asyncio.wait_for(topo.run("first", runner=rt), ADMITTED_S)
            assert await _refused(topo.run("second", runner=rt))
        assert srv.stats.requests == 1


def test_a_models_limit_behind_a_url_is_the_models_limiter() -> None:
    """Without an `api_base` and behind any: the same limiter for a model's limit; a provider's limit
    behind a URL is each model's own, as it is without one."""
    limits = RateLimits()
    limits.set("openai/m", rpm=5)
    plain = limits.limiter_for("openai/m", None, None)
    assert plain is not None and plain.limit == RateLimit(rpm=5)
    assert limits.limiter_for("openai/m", "http://127.0.0.1:9/v1", None) is plain
    limits.set("groq", rpm=7)
    a = limits.limiter_for("groq/a", "http://127.0.0.1:9/v1", None)
    b = limits.limiter_for("groq/b", "http://127.0.0.1:9/v1", None)
    assert a is not None and b is not None and a is not b


async def test_settling_an_entry_deep_in_a_busy_window_counts_it_in_place() -> None:
    """A reply settling its request's entry with thousands of later entries after it (the requests
    started while it was in flight): the window's sum takes the difference, the entry keeps its
    start time, and an entry already out of the window changes nothing."""
    from moa.calls._windows import Tokens

    window = Tokens(10**9, MINUTE)
    entries = [await window.reserve(10) for _ in range(5000)]
    first = entries[0]
    assert first is not None
    settled = window.settle(first, 250)
    assert settled == (first[0], 250)
    assert window._used == 5000 * 10 + 240
    assert window.settle((first[0] - 1.0, 10), 999) == (first[0] - 1.0, 10)  # not there: unchanged
    assert window._used == 5000 * 10 + 240
