"""Tests for moa.calls.limits: the retry policy, Retry-After parsing and the shared rate limiters."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from moa import build
from moa._run import Runner
from moa.calls.limits import Limiter, RateLimit, RateLimits, clear_rate_limits, limiter_for, set_rate_limit
from moa.calls.retry import RetryPolicy, parse_retry_after, retry_after_from_headers, should_retry
from moa.errors import (
    BudgetExceeded,
    MalformedReply,
    ProviderError,
    QuorumNotReached,
    RateLimited,
    RequestRejected,
    TimedOut,
    TopologyError,
    UserError,
)
from moa.models.base import ModelReply, ModelRequest
from moa.models.retry_after import RETRY_AFTER_CEILING_S, ratelimit_reset_from_headers
from moa.results import Usage
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimServer


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    clear_rate_limits()
    yield
    clear_rate_limits()


# --- retry policy ---------------------------------------------------------------------------------


def test_backoff_stays_within_exponential_cap() -> None:
    """Each delay lies in [0, min(backoff_max, base * 2**(attempt-1))]."""
    policy = RetryPolicy(max_attempts=10, backoff_base_s=0.5, backoff_max_s=3.0)
    rng = random.Random(1)
    for attempt in range(1, 10):
        cap = min(3.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(200):
            delay = policy.delay_s(attempt, rng=rng)
            assert delay is not None
            assert 0.0 <= delay <= cap


def test_backoff_jitter_is_full_and_uniform() -> None:
    """Full jitter: delays spread over the whole [0, cap] range with mean near cap/2."""
    policy = RetryPolicy(max_attempts=5, backoff_base_s=1.0, backoff_max_s=30.0)
    rng = random.Random(42)
    delays = [policy.delay_s(3, rng=rng) for _ in range(5000)]
    values = [d for d in delays if d is not None]
    assert len(values) == 5000
    assert min(values) < 0.1 and max(values) > 3.9
    assert statistics.mean(values) == pytest.approx(2.0, abs=0.1)


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed gives the same delays."""
    policy = RetryPolicy()
    a = [policy.delay_s(1, rng=random.Random(7)), policy.delay_s(2, rng=random.Random(7))]
    b = [policy.delay_s(1, rng=random.Random(7)), policy.delay_s(2, rng=random.Random(7))]
    assert a == b


def test_no_delay_after_the_last_attempt() -> None:
    """delay_s returns None once attempt reaches max_attempts."""
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay_s(2) is not None
    assert policy.delay_s(3) is None
    assert RetryPolicy(max_attempts=1).delay_s(1) is None


def test_retry_after_is_never_shortened() -> None:
    """With Retry-After, the delay is at least Retry-After whatever the jitter."""
    policy = RetryPolicy(max_attempts=3, backoff_base_s=0.5, backoff_max_s=30.0)
    rng = random.Random(3)
    for _ in range(500):
        delay = policy.delay_s(1, retry_after_s=5.0, rng=rng)
        assert delay == 5.0  # the jitter cap (0.5) is below Retry-After


def test_jitter_above_retry_after_wins() -> None:
    """When the jittered backoff exceeds Retry-After, the longer wait is used."""
    policy = RetryPolicy(max_attempts=10, backoff_base_s=10.0, backoff_max_s=100.0)
    rng = random.Random(5)
    delays = [policy.delay_s(4, retry_after_s=1.0, rng=rng) for _ in range(200)]
    assert all(d is not None and d >= 1.0 for d in delays)
    assert any(d is not None and d > 1.0 for d in delays)


def test_too_long_retry_after_gives_up() -> None:
    """A Retry-After beyond max_retry_after_s means no further attempt."""
    policy = RetryPolicy(max_attempts=5, max_retry_after_s=60.0)
    assert policy.delay_s(1, retry_after_s=61.0) is None
    assert policy.delay_s(1, retry_after_s=60.0) == 60.0


def test_invalid_retry_policy_is_a_user_error() -> None:
    """max_attempts below 1 raises UserError naming the field."""
    with pytest.raises(UserError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RateLimited("429"), True),
        (TimedOut("slow"), True),
        (ProviderError("503"), True),
        (MalformedReply("bad json"), True),
        (RequestRejected("401"), False),
        (BudgetExceeded("over"), False),
        (UserError("bad flag"), False),
        (TopologyError(["bad node"]), False),
        (QuorumNotReached("1 of 3", node="agg", needed=2, answered=1), False),
        (ValueError("not ours"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_should_retry_per_error_class(error: BaseException, expected: bool) -> None:
    """Only retryable ModelErrors are retried."""
    assert should_retry(error) is expected


# --- Retry-After parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), (" 0 ", 0.0), ("1.5", 1.5), ("120", 120.0)])
def test_parse_retry_after_seconds(value: str, expected: float) -> None:
    """Delta-seconds parse as numbers."""
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "nan", "-inf", "Mon, 99 Foo 2024"])
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    """Garbage, negative and NaN values give None."""
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    "value", ["9" * 400, "1e309", "inf", "1e300", "Fri, 31 Dec 9999 23:59:59 GMT"], ids=lambda v: v[:12]
)
def test_a_huge_retry_after_is_capped_not_garbage(value: str) -> None:
    """A wait too long to represent (400 digits, 1e309, infinity) or merely huge is the 2**31 s
    ceiling, over any max_retry_after_s; it was None, and a None let the retry go at once."""
    assert parse_retry_after(value) == RETRY_AFTER_CEILING_S == 2.0**31
    assert RetryPolicy().delay_s(1, retry_after_s=parse_retry_after(value)) is None


@pytest.mark.parametrize("millis", ["1e309", "9" * 400, "inf"])
def test_a_huge_retry_after_ms_is_capped_not_skipped(millis: str) -> None:
    """An overflowing retry-after-ms is the ceiling, not a header to skip for a shorter retry-after."""
    assert retry_after_from_headers({"retry-after-ms": millis, "retry-after": "1"}) == RETRY_AFTER_CEILING_S


def test_parse_retry_after_http_date() -> None:
    """An IMF-fixdate gives the seconds between now and that date."""
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0


def test_parse_retry_after_past_date_is_zero() -> None:
    """A date in the past clips to 0."""
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0


def test_parse_retry_after_date_against_real_clock() -> None:
    """Without ``now``, the date is measured from the current time."""
    value = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    seconds = parse_retry_after(value)
    assert seconds is not None and 95.0 <= seconds <= 100.0


def test_retry_after_ms_header_wins() -> None:
    """retry-after-ms is read before retry-after, keys case-insensitive."""
    assert retry_after_from_headers({"Retry-After-Ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after_from_headers(httpx.Headers({"retry-after-ms": "1500"})) == 1.5


def test_a_retry_after_date_counts_from_the_date_header() -> None:
    """An HTTP-date Retry-After is measured from the reply's Date when readable, else from now."""
    server_now = "Wed, 01 May 2024 12:00:00 GMT"
    later = "Wed, 01 May 2024 12:00:30 GMT"
    assert retry_after_from_headers({"Date": server_now, "Retry-After": later}) == 30.0
    assert retry_after_from_headers({"Date": "yesterday", "Retry-After": later}) == 0.0  # past, by our clock
    assert retry_after_from_headers({"Date": server_now, "Retry-After": "7"}) == 7.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"X-RateLimit-Remaining-Tokens": "0", "X-RateLimit-Reset-Tokens": "1m30.5s"}, 90.5),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            360.0,
        ),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "-3s"}, None),
        (
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9" * 400},
            RETRY_AFTER_CEILING_S,
        ),
    ],
)
def test_ratelimit_reset_headers_give_the_wait_of_the_spent_windows(
    headers: dict[str, str], expected: float | None
) -> None:
    """x-ratelimit-reset-* (Go durations) count for the windows with nothing left, the longest
    wins; a window with requests left, a missing count or an unreadable reset gives nothing."""
    assert ratelimit_reset_from_headers(headers) == expected


def test_retry_after_header_fallback() -> None:
    """Without a usable retry-after-ms, retry-after is used; no header gives None."""
    assert retry_after_from_headers({"RETRY-AFTER": "7"}) == 7.0
    assert retry_after_from_headers({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    assert retry_after_from_headers(httpx.Headers({"content-type": "text/plain"})) is None


# --- registry -------------------------------------------------------------------------------------


def test_no_limit_gives_no_limiter() -> None:
    """Without any configured limit, limiter_for returns None."""
    assert limiter_for("openai/gpt-4o", None, None) is None


def test_same_key_same_limiter() -> None:
    """Two agents on the same model with the same limit share one Limiter."""
    limit = RateLimit(rpm=60, max_concurrent=4)
    a = limiter_for("openai/gpt-4o", None, limit)
    b = limiter_for("openai/gpt-4o", None, RateLimit(rpm=60, max_concurrent=4))
    assert a is not None and a is b


def test_api_base_is_the_key() -> None:
    """Agents naming the same api_base share a limiter whatever their model."""
    limit = RateLimit(rpm=10)
    a = limiter_for("openai/a", "http://127.0.0.1:8000/v1", limit)
    b = limiter_for("openai/b", "http://127.0.0.1:8000/v1", limit)
    c = limiter_for("openai/a", None, limit)
    assert a is b and a is not c


def test_different_limits_on_one_key_take_the_stricter_field() -> None:
    """Conflicting limits for one key merge field by field to the stricter value."""
    a = limiter_for("m/x", None, RateLimit(rpm=60, max_concurrent=2))
    b = limiter_for("m/x", None, RateLimit(rpm=30, max_concurrent=8, tpm=1000))
    assert a is b and a is not None
    assert a.limit == RateLimit(rpm=30, max_concurrent=2, tpm=1000)


async def _starts_after_tightening(limiter: Limiter, tighter: RateLimit, tokens: int) -> list[float]:
    """Fill the window with two starts, queue four more, tighten while they wait; their starts."""
    starts: list[float] = []

    async def one() -> None:
        async with limiter.slot(tokens):
            starts.append(time.monotonic())

    await asyncio.gather(one(), one())
    waiting = [asyncio.create_task(one()) for _ in range(4)]
    await asyncio.sleep(0.05)  # the four are waiting on the full window
    limiter.tighten(tighter)
    await asyncio.gather(*waiting)
    return sorted(starts[2:])


@pytest.mark.parametrize("field", ["rpm", "tpm"])
async def test_tightening_a_limit_holds_for_requests_already_waiting(field: str) -> None:
    """A stricter limit merged into a limiter (a second agent on the same endpoint, resolved later)
    binds the requests already queued on its window: one start per period, never two together.
    The window used to be replaced, and its waiters passed under the old limit, two at once."""
    period = 0.4
    if field == "rpm":
        limiter = Limiter("k", RateLimit(rpm=2, period_s=period))
        later = await _starts_after_tightening(limiter, RateLimit(rpm=1, period_s=period), 0)
    else:
        limiter = Limiter("k", RateLimit(tpm=200, period_s=period))
        later = await _starts_after_tightening(limiter, RateLimit(tpm=100, period_s=period), 100)
    gaps = [b - a for a, b in itertools.pairwise(later)]
    # a busy machine only delays starts; the limit forbids any two within one period
    assert len(later) == 4 and min(gaps) >= period * 0.95, gaps


def test_one_endpoint_spelled_two_ways_has_one_limiter() -> None:
    """A trailing slash or an upper-case scheme or host names the same endpoint: a limit set for one
    spelling holds for an agent writing the other (it was silently unlimited), and two agents share
    one window."""
    limits = RateLimits()
    limits.set("HTTP://LocalHost:8000/v1/", rpm=5)
    got = limits.limiter_for("openai/x", "http://localhost:8000/v1", None)
    assert got is not None and got.limit.rpm == 5
    assert got is limits.limiter_for("openai/y", "http://localhost:8000/v1//", None)


async def test_a_limit_set_with_a_trailing_slash_holds_over_http() -> None:
    """set_rate_limit(base + "/", rpm=1) queues an agent's second request to `base` behind the
    minute's first, over real HTTP."""
    async with SimServer({"m": SimModel()}) as srv:
        limits = RateLimits()
        limits.set(srv.base_url + "/", rpm=1)
        topo = build.single(build.agent("openai/m", api_base=srv.base_url, transport="openai-http"))
        async with Runner(rate_limits=limits) as runner:
            await topo.run("first", runner=runner)
            with pytest.raises(TimeoutError):  # waits for the next minute's window
                await asyncio.wait_for(topo.run("second", runner=runner), 1.0)
        assert srv.stats.requests == 1


def test_provider_global_limit_applies_to_its_models() -> None:
    """A global limit on "openai" applies to an openai/ model, not to another provider."""
    set_rate_limit("openai", rpm=100)
    limiter = limiter_for("openai/gpt-4o-mini", None, None)
    assert limiter is not None and limiter.limit.rpm == 100
    assert limiter_for("anthropic/claude", None, None) is None


def test_model_global_beats_provider_global() -> None:
    """A global limit on the exact model is preferred to the provider's."""
    set_rate_limit("openai", rpm=100)
    set_rate_limit("openai/gpt-4o", rpm=5)
    limiter = limiter_for("openai/gpt-4o", None, None)
    assert limiter is not None and limiter.limit.rpm == 5


def test_api_base_global_limit_applies() -> None:
    """A global limit keyed by an api_base URL applies to agents naming that api_base."""
    set_rate_limit("http://127.0.0.1:9/v1", max_concurrent=1)
    limiter = limiter_for("openai/local", "http://127.0.0.1:9/v1", None)
    assert limiter is not None and limiter.limit.max_concurrent == 1


def test_agent_limit_beats_global() -> None:
    """An agent's own rate_limit is used instead of a global one."""
    set_rate_limit("openai", rpm=100)
    limiter = limiter_for("openai/gpt-4o", None, RateLimit(rpm=7))
    assert limiter is not None and limiter.limit.rpm == 7


def test_invalid_rate_limit_is_a_user_error() -> None:
    """A non-positive rpm raises UserError naming the field."""
    with pytest.raises(UserError, match="rpm"):
        RateLimit(rpm=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent", math.nan),
        ("max_concurrent", 1.5),
        ("max_concurrent", True),
        ("tpm", math.nan),
        ("tpm", math.inf),
        ("tpm", "100"),
        ("rpm", "5"),
        ("rpm", -1.0),
        ("period_s", math.nan),
    ],
)
def test_a_limit_that_is_not_a_number_in_range_is_refused_when_set(field: str, value: object) -> None:
    """set_rate_limit refuses, naming the field, what the limiters cannot honour: a NaN
    max_concurrent passed every check and then held each request forever, a NaN or infinite tpm
    limited nothing, and a string failed with a TypeError at the first call."""
    with pytest.raises(UserError, match=f"rate_limit.{field}"):
        RateLimits().set("fake/m", **{field: value})  # type: ignore[arg-type]


async def test_a_call_under_a_valid_limit_still_starts() -> None:
    """The stricter checks leave whole numbers, and integral rpm, as they were."""
    limits = RateLimits()
    limits.set("fake/m", rpm=5, max_concurrent=1, tpm=1000)
    runner = Runner(models={"fake/*": FunctionModel(lambda r: "ok")}, rate_limits=limits)
    result = await build.single(build.agent("fake/m")).run("q", runner=runner)
    assert result.output == "ok"


# --- limiter behaviour ----------------------------------------------------------------------------


def _max_in_window(starts: list[float], period: float) -> int:
    starts = sorted(starts)
    # 5 ms of slack: the test stamps a start a moment after the limiter does.
    return max(sum(1 for t in starts if s <= t < s + period - 0.005) for s in starts)


async def test_rpm_holds_under_200_concurrent_tasks() -> None:
    """No window of period_s ever holds more than rpm request starts."""
    limiter = Limiter("t", RateLimit(rpm=50, period_s=0.4))
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def call() -> None:
        async with limiter.slot():
            starts.append(loop.time())

    began = loop.time()
    await asyncio.gather(*(call() for _ in range(200)))
    assert len(starts) == 200
    assert _max_in_window(starts, 0.4) <= 50
    assert loop.time() - began >= 3 * 0.4 * 0.9  # 200 starts need at least 4 windows


async def test_max_concurrent_holds() -> None:
    """No more than max_concurrent requests are in flight at once."""
    limiter = Limiter("t", RateLimit(max_concurrent=3))
    in_flight = peak = 0

    async def call() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1

    await asyncio.gather(*(call() for _ in range(60)))
    assert peak == 3
    assert limiter.in_flight == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    """Cancelling tasks queued for a slot leaves the capacity intact."""
    limiter = Limiter("t", RateLimit(max_concurrent=1))
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(holder()) for _ in range(5)]
    await asyncio.sleep(0.01)
    for w in waiters[:3]:
        w.cancel()
    release.set()
    async with asyncio.timeout(2):  # a leaked slot would leave the other waiters stuck
        await asyncio.gather(first, *waiters[3:])
        async with limiter.slot():
            assert limiter.in_flight == 1
    assert limiter.in_flight == 0
    assert all(w.cancelled() for w in waiters[:3])


def test_limiter_survives_consecutive_event_loops() -> None:
    """One limiter serves two asyncio.run calls and keeps its window between them."""
    limiter = limiter_for("openai/x", None, RateLimit(rpm=5, max_concurrent=2, period_s=0.3))
    assert limiter is not None
    starts: list[float] = []

    async def burst() -> None:
        loop = asyncio.get_running_loop()

        async def call() -> None:
            async with limiter.slot(tokens=1):
                starts.append(loop.time())
                await asyncio.sleep(0.001)

        await asyncio.gather(*(call() for _ in range(5)))

    asyncio.run(burst())
    asyncio.run(burst())
    assert len(starts) == 10
    # the second loop waited for the first loop's starts to leave the window
    assert _max_in_window(starts, 0.3) <= 5


def test_max_concurrent_holds_across_threads() -> None:
    """Loops in two threads share one concurrency cap."""
    limiter = Limiter("t", RateLimit(max_concurrent=2))
    lock = threading.Lock()
    in_flight = peak = 0

    async def calls() -> None:
        async def call() -> None:
            nonlocal in_flight, peak
            async with limiter.slot():
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                await asyncio.sleep(0.002)
                with lock:
                    in_flight -= 1

        await asyncio.gather(*(call() for _ in range(30)))

    threads = [threading.Thread(target=asyncio.run, args=(calls(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert peak <= 2 and limiter.in_flight == 0


async def test_tpm_window_holds() -> None:
    """Token reservations in any window never pass tpm."""
    limiter = Limiter("t", RateLimit(tpm=100, period_s=0.3))
    loop = asyncio.get_running_loop()
    starts: list[tuple[float, int]] = []

    async def call(tokens: int) -> None:
        async with limiter.slot(tokens=tokens):
            starts.append((loop.time(), tokens))

    await asyncio.gather(*(call(40) for _ in range(6)))
    assert len(starts) == 6
    for s, _ in starts:
        in_window = sum(n for t, n in starts if s <= t < s + 0.3 - 0.005)
        assert in_window <= 100


async def test_oversized_request_proceeds_alone() -> None:
    """A request above tpm waits for an empty window, then goes alone instead of deadlocking."""
    limiter = Limiter("t", RateLimit(tpm=100, period_s=0.2))
    loop = asyncio.get_running_loop()
    order: list[tuple[str, float]] = []

    async def call(name: str, tokens: int) -> None:
        async with limiter.slot(tokens=tokens):
            order.append((name, loop.time()))

    await call("small", 10)
    async with asyncio.timeout(2):
        await call("huge", 500)
        await call("after", 10)
    times = dict(order)
    assert times["huge"] - times["small"] >= 0.2 * 0.9
    assert times["after"] - times["huge"] >= 0.2 * 0.9


class _StallsBeforeSending:
    """A backend whose first request holds the event loop (a blocking sleep, as a full garbage
    collection does) after the limiter let it through and before it is sent; each request's send
    time is recorded where a provider would count it."""

    local = False
    reports_send = True

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.sent_at: list[float] = []

    async def complete(self, request: ModelRequest, on_token: object = None) -> ModelReply:
        if self.stall_s:
            stall, self.stall_s = self.stall_s, 0.0
            time.sleep(stall)  # blocks the loop: every other request waits behind it
        if request.before_send is not None:
            await request.before_send()
        if request.on_sent is not None:
            request.on_sent()
        self.sent_at.append(time.monotonic())
        return ModelReply("ok", Usage(1, 1))

    async def aclose(self) -> None:
        return None


async def test_rpm_holds_at_the_send_when_the_loop_stalls_after_the_permit() -> None:
    """A request whose loop stalls between its permit and its send (1 s here) re-takes its stamp
    just before sending: no window of period_s holds more than rpm sends. The stamp taken before
    the stall let it reach the provider with the next window's requests (3 sends within a 0.5 s
    window limited to 2)."""
    backend = _StallsBeforeSending(stall_s=1.0)
    limits = RateLimits()
    limits.set("fake/stall", rpm=2, period_s=0.5)
    topology = build.single("fake/stall")
    async with Runner(models={"fake/stall": backend}, rate_limits=limits) as rt:
        await asyncio.gather(*(topology.run(f"q{i}", runner=rt) for i in range(6)))
    sends = sorted(backend.sent_at)
    assert len(sends) == 6
    # the limiter's own stamp precedes the recorded send by microseconds: 5 ms of slack
    assert max(sum(1 for t in sends if s <= t < s + 0.5 - 0.005) for s in sends) <= 2, sends


async def test_a_stamp_moves_to_when_the_request_left() -> None:
    """A backend that cannot wait right before its send (litellm) reports the send: its stamp moves
    there, so the next request's window counts from when the first really left."""
    limiter = Limiter("t", RateLimit(rpm=1, period_s=0.3))
    async with limiter.slot() as permit:
        await asyncio.sleep(0.2)  # the request waits inside its backend
        permit.sent()
        left = time.monotonic()
    async with limiter.slot():
        second = time.monotonic()
    assert second - left >= 0.3 * 0.99


@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_both_transports_renew_the_permit_before_the_request_leaves(transport: str) -> None:
    """The direct path awaits `before_send` once its connection is free and litellm before handing
    the request on: the server has seen nothing when it runs, and it runs before `on_sent`."""
    from moa.models.litellm import LitellmModel
    from moa.models.openai_http import OpenAIHTTPModel
    from tests.rawhttp import http, raw_server

    ok = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1}}
    events: list[str] = []
    async with raw_server(http(200, ok)) as srv:

        async def before_send() -> None:
            await asyncio.sleep(0.05)
            events.append(f"before_send, {len(srv.arrivals)} arrived")

        request = ModelRequest(
            model="openai/m",
            messages=[{"role": "user", "content": "hi"}],
            api_base=srv.base_url,
            api_key="sk-test-not-secret",
            before_send=before_send,
            on_sent=lambda: events.append("on_sent"),
        )
        backend = OpenAIHTTPModel() if transport == "openai-http" else LitellmModel()
        try:
            reply = await backend.complete(request)
        finally:
            await backend.aclose()
    assert reply.text == "ok" and events == ["before_send, 0 arrived", "on_sent"]


async def test_a_permit_given_back_frees_its_own_entries_in_a_busy_window() -> None:
    """Entries are taken out from the window's newest end: giving back the middle one of three
    frees exactly its stamp and its tokens, and moved entries (``renew``, ``sent``) still count
    once each."""
    limiter = Limiter("t", RateLimit(rpm=3, tpm=100, period_s=60))
    async with contextlib.AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(limiter.slot(30)) for _ in range(3)]
        b.give_back()
        await a.renew()
        c.sent()
        async with asyncio.timeout(30):  # 60 + 40 tokens and a third stamp fit: no wait
            d = await stack.enter_async_context(limiter.slot(40))
        d.sent()
        # three stamps and 100 tokens are in the window now: one more token waits a minute
        late = asyncio.ensure_future(stack.enter_async_context(limiter.slot(1)))
        await asyncio.sleep(0.2)
        assert not late.done()
        late.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await late


async def test_giving_back_a_stamp_already_out_of_the_window_frees_nothing_else() -> None:
    """A permit whose stamp left the window before it was given back must not take a newer
    request's stamp with it."""
    limiter = Limiter("t", RateLimit(rpm=1, period_s=0.3))
    async with limiter.slot() as old:
        await asyncio.sleep(0.4)  # its stamp leaves the window
        async with limiter.slot():
            newer = time.monotonic()
        old.give_back()
    async with limiter.slot():
        third = time.monotonic()
    assert third - newer >= 0.3 * 0.99


async def test_a_request_cancelled_in_the_rpm_queue_gives_its_tokens_back() -> None:
    """A request whose tokens were reserved and which was cancelled waiting for the rpm window
    (a quorum's straggler, a run's deadline) was never sent: its tokens leave the tpm window.
    Before, they stayed there, and requests that were sent waited behind ones that never were."""
    limiter = Limiter("t", RateLimit(rpm=1, tpm=100, period_s=3600))
    async with limiter.slot(tokens=60):
        pass
    queued = asyncio.create_task(limiter.slot(tokens=30).__aenter__())
    for _ in range(5):  # past the token reservation, into the rpm wait
        await asyncio.sleep(0)
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert limiter._tokens is not None and limiter._tokens._used == 60  # the sent request's only
