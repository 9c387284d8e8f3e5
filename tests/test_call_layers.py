"""Each layer of a node's call, alone, with FunctionModel: one attempt and its accounting, the retry
loop and its retry budget, and the fallback chain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

import pytest

import moa
from moa.calls.attempt import CallPlan, Target, attempt, prompt_token_bound, prompt_token_ceiling
from moa.calls.budget import Budget
from moa.calls.call import AgentRuntime, CachedFailure, CallContext, call_agent
from moa.calls.limits import Limiter, RateLimit
from moa.calls.pricing import Price, price_for
from moa.calls.retry import RetryPolicy
from moa.calls.retry_budget import RetryBudget
from moa.models.base import ModelReply, ModelRequest
from moa.results import Attempt, CallRecord, Usage
from moa.testing import FunctionModel, ScriptedModel
from moa.topology.spec import AgentSpec

PRICE = Price.per_token(1e-6, 1e-6)
MESSAGES = [{"role": "user", "content": "two plus two"}]


def plan(max_tokens: int | None = 10) -> CallPlan:
    return CallPlan("n", MESSAGES, max_tokens, 100, None, None)


def request(timeout_s: float | None = None) -> ModelRequest:
    return ModelRequest(model="fake/m", messages=MESSAGES, max_tokens=10, timeout_s=timeout_s, node="n")


async def test_attempt_books_a_reply_and_settles_the_budget() -> None:
    """An answered attempt: one ok entry with its usage, the budget charged the real cost."""
    budget = Budget(1.0)
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    target = Target("fake/m", FunctionModel(lambda r: "four"), PRICE, None)
    reply = await attempt((budget,), target, request(), rec, plan())
    assert reply.text == "four" and rec.attempts == 1
    (entry,) = rec.attempt_log
    assert entry.status == "ok" and entry.usage == reply.usage
    assert budget.spent_usd == pytest.approx(PRICE.cost(reply.usage)) and budget.reserved_usd == 0


async def test_attempt_timeout_keeps_the_worst_case() -> None:
    """A timed-out attempt: usage unknown, the budget keeps the reserved worst case."""
    budget = Budget(1.0)
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    target = Target("fake/m", FunctionModel(lambda r: "late", delay_s=5), PRICE, None)
    with pytest.raises(moa.TimedOut):
        await attempt((budget,), target, request(timeout_s=0.05), rec, plan())
    (entry,) = rec.attempt_log
    assert entry.status == "timeout" and entry.usage is None
    worst = PRICE.worst_case(prompt_token_ceiling(100), 10)
    assert budget.spent_usd == pytest.approx(worst) == pytest.approx(rec.cost_usd_max)


async def test_attempt_refused_by_the_budget_sends_nothing() -> None:
    """A worst case past the cap raises BudgetExceeded before the model is called; nothing is logged."""
    fm = FunctionModel(lambda r: "never")
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    with pytest.raises(moa.BudgetExceeded):
        await attempt((Budget(1e-9),), Target("fake/m", fm, PRICE, None), request(), rec, plan())
    assert fm.calls == [] and rec.attempts == 0 and rec.attempt_log == []


@pytest.mark.parametrize("cap", ["5", None, True, float("nan"), -1.0])
def test_a_budget_that_is_not_a_number_of_usd_is_a_user_error(cap: object) -> None:
    """A cap that is not a non-negative number (a string read from the environment, None) is one
    UserError naming the value, as a negative one was; a string or None raised a bare TypeError."""
    with pytest.raises(moa.UserError, match="non-negative number of USD"):
        Budget(cap)  # type: ignore[arg-type]


async def test_a_hold_refused_at_the_limiters_turn_is_no_attempt_and_frees_its_place() -> None:
    """Let through by the limiter, the request waits for another call's hold to settle (holds, not
    spend, fill the budget); that call's spend then leaves no room, so it is refused: no attempt
    logged, nothing held, and its rpm stamp given back, so the next requests are not kept waiting
    a window for nothing."""
    worst = PRICE.worst_case(prompt_token_ceiling(100), 10)
    budget = Budget(1.5 * worst)
    other = budget.reserve(worst)  # another call in flight: spend alone leaves room, holds do not
    limiter = Limiter("k", RateLimit(rpm=2, period_s=600.0))
    fm = FunctionModel(lambda r: "four")
    target = Target("fake/m", fm, PRICE, limiter)
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    waiting = asyncio.create_task(attempt((budget,), target, request(), rec, plan()))
    async with asyncio.timeout(15):
        while not budget._waiters:  # it holds a stamp and waits for the other call's hold
            await asyncio.sleep(0.01)
    assert not waiting.done()
    budget.settle(other, worst)  # the other call spent its worst case: no room is left
    with pytest.raises(moa.BudgetExceeded):
        await waiting
    assert rec.attempts == 0 and rec.attempt_log == [] and fm.calls == [] and budget.reserved_usd == 0
    async with asyncio.timeout(15):  # the stamp kept, the second would wait the 600 s window
        for _ in range(2):
            reply = await attempt((), target, request(), rec, plan())
    assert reply.text == "four" and rec.attempts == 2


async def test_a_call_waits_for_holds_to_settle_instead_of_being_refused() -> None:
    """64 calls at once on a budget of 3 worst cases: holds fill it, but each call spends far less
    than its hold, so every call goes out in turn (it was refused, and an experiment stopped with
    under 1% of its cap spent); spend never passes the cap."""
    worst = PRICE.worst_case(prompt_token_ceiling(100), 10)
    budget = Budget(3 * worst)
    fm = FunctionModel(lambda r: "four", delay_s=0.005)
    target = Target("fake/m", fm, PRICE, None)
    recs = [CallRecord(node="n", model="fake/m", attempts=0) for _ in range(64)]
    async with asyncio.timeout(60):
        replies = await asyncio.gather(*(attempt((budget,), target, request(), r, plan()) for r in recs))
    assert [r.text for r in replies] == ["four"] * 64 and len(fm.calls) == 64
    assert budget.reserved_usd == pytest.approx(0.0, abs=1e-15) and budget.spent_usd <= 3 * worst
    assert budget.spent_usd == pytest.approx(sum(r.cost_usd for r in recs))


def _runtime(*models: str, attempts: int = 3) -> AgentRuntime:
    agent = AgentSpec(model=models[0], fallbacks=list(models[1:]))
    return AgentRuntime(agent, (), RetryPolicy(max_attempts=attempts, backoff_base_s=0.0), None)


async def test_retrying_stops_when_the_retry_budget_is_spent() -> None:
    """With no retry left in the endpoint's budget, the first failure is final and says why."""
    fm = ScriptedModel([moa.ProviderError("down", status_code=503)])
    rb = RetryBudget(ratio=0.0, min_retries=0)
    target = Target("fake/m", fm, PRICE, None, rb)
    ctx = CallContext(t0=time.perf_counter())
    with pytest.raises(moa.ProviderError, match="retry budget"):
        await call_agent(ctx, dataclasses.replace(_runtime("fake/m"), chain=(target,)), "n", MESSAGES)
    assert [rec.attempts for rec in ctx.calls] == [1]


async def test_retrying_retries_until_an_answer() -> None:
    """Two failures, then an answer: three attempts on one record."""
    fm = ScriptedModel([moa.ProviderError("a", status_code=500), moa.RateLimited("b"), "ok"])
    target = Target("fake/m", fm, PRICE, None, RetryBudget())
    ctx = CallContext(t0=time.perf_counter())
    text = await call_agent(ctx, dataclasses.replace(_runtime("fake/m"), chain=(target,)), "n", MESSAGES)
    [rec] = ctx.calls
    assert text == "ok" and [a.status for a in rec.attempt_log] == ["error", "error", "ok"]


async def test_call_agent_falls_back_and_keeps_a_record_per_model() -> None:
    """The primary fails for good, the fallback answers: two records, the error names the first."""
    bad = ScriptedModel([moa.RequestRejected("no", status_code=400)])
    good = FunctionModel(lambda r: "fallback answer")
    rt = AgentRuntime(
        AgentSpec(model="fake/a", fallbacks=["fake/b"]),
        (Target("fake/a", bad, PRICE, None), Target("fake/b", good, PRICE, None)),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )
    ctx = CallContext(t0=time.perf_counter())
    text = await call_agent(ctx, rt, "n", MESSAGES)
    assert text == "fallback answer"
    assert [(c.model, c.error is None) for c in ctx.calls] == [("fake/a", False), ("fake/b", True)]
    assert ctx.calls[0].attempts == 1  # a 4xx is not retried


async def test_a_retry_wait_past_the_deadline_goes_to_the_fallback_at_once() -> None:
    """A 429 whose Retry-After (30 s) ends past the run's deadline (in 20 s) is not waited for: the
    fallback answers at once, the primary's record saying why it was not retried. The retry used to
    sleep until the deadline cut the run, the fallback never tried."""
    primary = ScriptedModel([moa.RateLimited("slow down", retry_after_s=30.0, status_code=429), "late"])
    rt = AgentRuntime(
        AgentSpec(model="fake/a", fallbacks=["fake/b"]),
        (Target("fake/a", primary, PRICE, None), Target("fake/b", FunctionModel(lambda r: "b"), PRICE, None)),
        RetryPolicy(max_attempts=3, backoff_base_s=0.0),
        None,
    )
    ctx = CallContext(t0=time.perf_counter(), deadline=asyncio.get_running_loop().time() + 20.0)
    async with asyncio.timeout(15):  # far below the 30 s the old code waited, far above the call
        text = await call_agent(ctx, rt, "n", MESSAGES)
    assert text == "b" and len(primary.calls) == 1
    error = ctx.calls[0].error or ""
    assert "not retried" in error and "past the run's deadline" in error


async def test_a_runs_deadline_reaches_its_retries() -> None:
    """The same through a run: ``deadline_s`` is the deadline each call's retries are held to, so
    the fallback answers the run instead of the run's TimedOut after the primary's 30 s wait."""
    primary = ScriptedModel([moa.RateLimited("slow down", retry_after_s=30.0, status_code=429), "late"])
    topology = moa.Topology.model_validate(
        {
            "name": "one",
            "kind": "single",
            "agent": "a",
            "agents": {"a": {"model": "fake/a", "fallbacks": ["fake/b"], "retry": {"backoff_base_s": 0}}},
        }
    )
    runner = moa.Runner(models={"fake/a": primary, "fake/b": FunctionModel(lambda r: "b")})
    async with asyncio.timeout(15):  # far below the primary's 30 s wait
        result = await topology.run("q", runner=runner, deadline_s=20)
    assert result.output == "b" and len(primary.calls) == 1


async def test_a_retry_wait_within_the_deadline_is_waited() -> None:
    """A wait that ends before the deadline is still waited for, and the retry answers."""
    primary = ScriptedModel([moa.RateLimited("slow down", retry_after_s=0.05, status_code=429), "second"])
    rt = AgentRuntime(
        AgentSpec(model="fake/a"),
        (Target("fake/a", primary, PRICE, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )
    ctx = CallContext(t0=time.perf_counter(), deadline=asyncio.get_running_loop().time() + 60.0)
    assert await call_agent(ctx, rt, "n", MESSAGES) == "second" and len(primary.calls) == 2


async def test_a_retry_the_budget_can_never_cover_is_refused_before_the_wait() -> None:
    """A dropped connection keeps its worst case on a budget of 1.5 worst cases: the retry can never
    fit, so BudgetExceeded comes at once, naming the failure it would have retried, instead of
    after the 60 s Retry-After."""
    dropped = moa.ProviderError("connection failed: reset", retry_after_s=60.0)
    model = ScriptedModel([dropped, "never"])
    worst = PRICE.worst_case(prompt_token_ceiling(prompt_token_bound(MESSAGES)), 10)
    budget = Budget(1.5 * worst)
    rt = AgentRuntime(
        AgentSpec(model="fake/a", max_tokens=10),
        (Target("fake/a", model, PRICE, None),),
        RetryPolicy(max_attempts=3, backoff_base_s=0.0),
        None,
    )
    ctx = CallContext(t0=time.perf_counter(), budgets=(budget,))
    async with asyncio.timeout(15):  # the old code waited the 60 s
        with pytest.raises(moa.BudgetExceeded, match="not retrying ProviderError: connection failed") as info:
            await call_agent(ctx, rt, "n", MESSAGES)
    assert "\n" not in str(info.value) and len(model.calls) == 1
    assert budget.spent_usd == pytest.approx(worst) and budget.reserved_usd == 0


async def test_a_retry_that_may_fit_once_holds_settle_is_still_waited_for() -> None:
    """Held (not spent) money may come back: a retry that fits under the cap minus what is spent
    waits and is sent, though other holds fill the budget when the failure comes."""
    worst = PRICE.worst_case(prompt_token_ceiling(prompt_token_bound(MESSAGES)), 10)
    budget = Budget(1.0)
    # another call's hold, settled during the wait: until then, the retry's hold does not fit
    other = budget.reserve(1.0 - 1.5 * worst)
    model = ScriptedModel([moa.ProviderError("connection failed", retry_after_s=0.2), "second"])
    rt = AgentRuntime(
        AgentSpec(model="fake/a", max_tokens=10),
        (Target("fake/a", model, PRICE, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )
    ctx = CallContext(t0=time.perf_counter(), budgets=(budget,))
    asyncio.get_running_loop().call_later(0.05, budget.settle, other, 0.0)
    assert await call_agent(ctx, rt, "n", MESSAGES) == "second" and len(model.calls) == 2


async def test_call_agent_record_survives_cancellation() -> None:
    """Cancelled mid-call, the model's record is still appended (error: cancelled)."""
    rt = AgentRuntime(
        AgentSpec(model="fake/a"),
        (Target("fake/a", FunctionModel(lambda r: "x", delay_s=5), PRICE, None),),
        RetryPolicy(),
        None,
    )
    ctx = CallContext(t0=time.perf_counter())
    task = asyncio.create_task(call_agent(ctx, rt, "n", MESSAGES))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (rec,) = ctx.calls
    assert rec.error == "cancelled" and rec.attempt_log[0].status == "cancelled"


async def test_waiting_for_a_serialized_backend_is_queued_s_not_latency() -> None:
    """Self-MoA samples on one model that serves one request at a time (as the embedded model does):
    each call's wait for the model is `queued_s`, and its latency is its own service time only."""
    import asyncio as _asyncio

    from moa.models.base import ModelReply
    from moa.results import Usage
    from moa.topology.loader import load_data

    class OneAtATime:
        local = True
        reports_send = True

        def __init__(self) -> None:
            self.lock = _asyncio.Lock()

        async def complete(self, request: ModelRequest, on_token: object = None) -> ModelReply:
            async with self.lock:
                if request.on_sent is not None:
                    request.on_sent()
                await _asyncio.sleep(0.05)
                return ModelReply("x", Usage(3, 1), request.model)

        async def aclose(self) -> None:
            pass

    topo = load_data(
        {
            "name": "s",
            "kind": "self_moa",
            "agent": "a",
            "samples": 3,
            "agents": {"a": {"model": "slow/m", "temperature": 0.5}},
        }
    )
    result = await topo.run("q", runner=moa.Runner(models={"slow/*": OneAtATime()}))
    samples = sorted((c for c in result.calls if c.node != "aggregate"), key=lambda c: c.queued_s)
    assert len(samples) == 3
    # the second and third waited for the ones before them; no call's latency includes that wait
    assert samples[1].queued_s >= 0.04 and samples[2].queued_s >= samples[1].queued_s + 0.04
    assert all(c.latency_s < samples[2].queued_s for c in samples)
    assert result.to_dict()["calls"][0]["queued_s"] >= 0.0


class _WaitsThenSends:
    """A backend that waits `wait_s` inside itself (a connection slot, the model, litellm's worker
    threads), reports the send unless told not to, then answers after `service_s`."""

    local = False

    def __init__(self, wait_s: float, service_s: float, *, report: bool = True) -> None:
        self.wait_s, self.service_s, self.report = wait_s, service_s, report

    async def complete(self, request: ModelRequest, on_token: object = None) -> ModelReply:
        await asyncio.sleep(self.wait_s)
        if self.report and request.on_sent is not None:
            request.on_sent()
        await asyncio.sleep(self.service_s)
        return ModelReply("four", Usage(3, 1), request.model)

    async def aclose(self) -> None:
        pass


class _Reports(_WaitsThenSends):
    reports_send = True


class _MayReport(_WaitsThenSends):
    send_wait_s = 1.0


@pytest.mark.parametrize(
    ("attr", "value", "says"),
    [
        ("send_wait_s", -1.0, "send_wait_s must be None or a finite number of seconds >= 0, got -1.0"),
        ("send_wait_s", float("nan"), "send_wait_s must be None or a finite number"),
        ("send_wait_s", "60", "got '60'"),
        ("reports_send", "yes", "reports_send must be True or False, got 'yes'"),
        ("complete", None, "has no complete() method"),
    ],
)
def test_a_backend_whose_send_report_would_bend_the_clock_is_refused_before_any_call(
    attr: str, value: object, says: str
) -> None:
    """A negative `send_wait_s` would cut every attempt before its `timeout_s`: the Runner refuses
    the backend when it is given, naming the key and the class."""
    backend = _MayReport(wait_s=0.0, service_s=0.0)
    setattr(backend, attr, value)
    with pytest.raises(moa.UserError) as err:
        moa.Runner(models={"fake/*": backend})  # type: ignore[dict-item]
    assert "models['fake/*']: _MayReport" in str(err.value) and says in str(err.value)


def _request_with_clock(call: CallPlan, timeout_s: float) -> ModelRequest:
    return ModelRequest(
        model="fake/m",
        messages=MESSAGES,
        max_tokens=10,
        timeout_s=timeout_s,
        node="n",
        on_sent=call.mark_sent,
    )


@pytest.mark.parametrize("backend", [_Reports, _MayReport])
async def test_a_wait_inside_the_backend_longer_than_the_timeout_is_not_cut(backend: type) -> None:
    """`timeout_s` is armed when the backend reports the send: waiting longer than it for a
    connection, the embedded model or litellm's threads is `queued_s`, not a timeout (before, the
    timeout ran from the start of the attempt and cut such a call before it was sent)."""
    rec, call = CallRecord(node="n", model="fake/m", attempts=0), plan()
    target = Target("fake/m", backend(wait_s=0.6, service_s=0.02), PRICE, None)
    reply = await attempt((), target, _request_with_clock(call, 0.3), rec, call)
    assert reply.text == "four" and rec.attempt_log[0].status == "ok"
    assert rec.queued_s >= 0.55 and rec.latency_s < 0.3


@pytest.mark.parametrize("backend", [_Reports, _MayReport])
async def test_a_reply_that_never_comes_is_cut_timeout_s_after_the_send(backend: type) -> None:
    rec, call = CallRecord(node="n", model="fake/m", attempts=0), plan()
    target = Target("fake/m", backend(wait_s=0.5, service_s=30), PRICE, None)
    start = time.perf_counter()
    with pytest.raises(moa.TimedOut, match=r"no reply within timeout_s=0.2$"):
        await attempt((), target, _request_with_clock(call, 0.2), rec, call)
    assert 0.65 <= time.perf_counter() - start < 10
    assert rec.attempt_log[0].status == "timeout" and rec.queued_s >= 0.45


async def test_a_backend_that_may_not_report_is_cut_send_wait_s_after_the_timeout() -> None:
    """A backend that reports the send on most paths only (litellm): if it never does, the attempt
    is cut `timeout_s + send_wait_s` after it began, and the error says the send was not seen."""
    rec, call = CallRecord(node="n", model="fake/m", attempts=0), plan()
    target = Target("fake/m", _MayReport(wait_s=0.0, service_s=30, report=False), PRICE, None)
    start = time.perf_counter()
    with pytest.raises(moa.TimedOut, match=r"had not reported sending it 1.2 s after the attempt began"):
        await attempt((), target, _request_with_clock(call, 0.2), rec, call)
    assert 1.15 <= time.perf_counter() - start < 10
    # it may have been sent: the worst case is kept
    assert rec.attempt_log[0].usage is None


class _DictCache:
    """The experiment's call cache in a dict: what ``moa compare`` replays from."""

    def __init__(self) -> None:
        self.replies: dict[str, object] = {}

    def key(self, node: str, request: ModelRequest) -> str:
        return node

    def get(self, key: str) -> object:
        return self.replies.get(key)

    def put(self, key: str, value: object) -> None:
        self.replies[key] = value


async def _first_and_replay(rt: AgentRuntime, **kw: Any) -> tuple[CallRecord, CallRecord]:
    """One call, then the same call again over the same cache: the first record and the replay's."""
    cache = _DictCache()
    first = CallContext(t0=time.perf_counter(), cache=cache)  # type: ignore[arg-type]
    await call_agent(first, rt, "n", MESSAGES, **kw)
    replay = CallContext(t0=time.perf_counter(), cache=cache)  # type: ignore[arg-type]
    await call_agent(replay, rt, "n", MESSAGES, **kw)
    ((a,), (b,)) = first.calls, replay.calls
    return a, b


async def test_a_replayed_call_reports_what_the_first_call_booked() -> None:
    """A call whose first reply failed validation (its tokens paid) and whose second read the
    prompt cache at the priority tier replays with the record's usage (both replies, every cache
    count), cost, tier and flags; before, it replayed the last reply's prompt and completion only."""
    rejected = ModelReply("not json", Usage(40, 5), "m", "stop")
    answer = ModelReply('{"a": 1}', Usage(60, 6, 30, 20, 5), "m", "stop", service_tier="priority")
    price = Price.per_token(1e-6, 2e-6)
    rt = AgentRuntime(
        AgentSpec(model="fake/a"),
        (Target("fake/a", ScriptedModel([rejected, answer]), price, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )

    def validate(text: str) -> None:
        if not text.startswith("{"):
            raise moa.MalformedReply("not JSON")

    a, b = await _first_and_replay(rt, validate=validate)
    assert b.cached and a.attempts == 2
    assert a.usage == b.usage == Usage(100, 11, 30, 20, 5)
    assert b.cost_usd == pytest.approx(a.cost_usd) and a.cost_usd > 0
    assert a.service_tier == b.service_tier == "priority"
    assert (b.usage_suspect, b.usage_estimated) == (a.usage_suspect, a.usage_estimated)


async def test_a_replayed_suspect_call_keeps_its_clamped_usage_and_flag() -> None:
    """A reply claiming an impossible prompt is clamped and flagged ``usage_suspect``; its replay
    says so too, with the clamped counts, not the claim."""
    claim = ModelReply("four", Usage(1_000_000, 3), "m", "stop")
    rt = AgentRuntime(
        AgentSpec(model="fake/a"),
        (Target("fake/a", FunctionModel(lambda r: claim), PRICE, None),),
        RetryPolicy(),
        None,
    )
    a, b = await _first_and_replay(rt)
    assert a.usage_suspect and b.usage_suspect and b.cached
    assert b.usage == a.usage and a.usage.prompt_tokens < 1_000_000


async def test_a_call_waiting_for_budget_room_gives_its_limiter_slot_to_calls_that_fit() -> None:
    """One slot (max_concurrent 1) and an rpm of 1: a call whose worst case waits for another
    call's hold gives its slot and stamp back meanwhile, so a smaller call of the same endpoint
    that fits goes out (it waited behind a call that was not sending, until that hold settled);
    the first goes once the hold settles, and the windows count the two requests sent only."""
    small = plan(max_tokens=10)
    big = plan(max_tokens=1000)
    worst_small, worst_big = (
        PRICE.worst_case(prompt_token_ceiling(100), 10),
        PRICE.worst_case(prompt_token_ceiling(100), 1000),
    )
    budget = Budget(worst_big + worst_small)
    other = budget.reserve(worst_small * 1.5)  # another model's call in flight
    limiter = Limiter("k", RateLimit(rpm=2, max_concurrent=1, period_s=600.0))
    fm = FunctionModel(lambda r: "four")
    target = Target("fake/m", fm, PRICE, limiter)
    big_rec, small_rec = (CallRecord(node="n", model="fake/m", attempts=0) for _ in range(2))
    waiting = asyncio.create_task(attempt((budget,), target, request(), big_rec, big))
    async with asyncio.timeout(15):
        while not budget._waiters:
            await asyncio.sleep(0.01)
        assert limiter.in_flight == 0  # the waiting call holds no slot
        reply = await attempt((budget,), target, request(), small_rec, small)
    assert reply.text == "four" and not waiting.done()
    budget.settle(other, 0.0)
    async with asyncio.timeout(15):  # its stamp was given back: the rpm of 2 lets it through
        assert (await waiting).text == "four"
    assert len(fm.calls) == 2 and big_rec.attempts == small_rec.attempts == 1


@pytest.mark.parametrize("limited", [False, True], ids=["no-limiter", "limiter"])
async def test_a_wait_for_budget_room_outlasts_the_calls_timeout(limited: bool) -> None:
    """A call whose worst case waits on another call's hold waits past its own ``timeout_s`` (which
    times a request that left) and goes once that hold settles. Cut at its timeout, slow calls
    (eight holds in the cap, 64 in flight, a minute each) were refused and `moa compare` stopped
    at the first refusal, with the cap almost unspent."""
    worst = PRICE.worst_case(prompt_token_ceiling(100), 10)
    budget = Budget(1.5 * worst)
    other = budget.reserve(worst)  # another call in flight
    limiter = Limiter("k", RateLimit(max_concurrent=1)) if limited else None
    fm = FunctionModel(lambda r: "four")
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    waiting = asyncio.create_task(
        attempt((budget,), Target("fake/m", fm, PRICE, limiter), request(timeout_s=0.05), rec, plan())
    )
    async with asyncio.timeout(30):
        while not budget._waiters:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # four times its timeout_s
    assert not waiting.done() and fm.calls == []
    budget.settle(other, 0.0)
    async with asyncio.timeout(30):
        assert (await waiting).text == "four"
    assert len(fm.calls) == 1 and rec.attempts == 1 and not budget._waiters


async def test_a_runs_deadline_ends_its_wait_for_budget_room() -> None:
    """A run whose call waits on a shared budget filled by another run's hanging call (no timeout
    anywhere) ends at its own ``deadline_s``, sending nothing."""
    from moa.topology import build

    price = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
    hang, fast = FunctionModel(lambda r: "late", delay_s=3600), FunctionModel(lambda r: "four")
    budget = moa.Budget(0.006)  # one worst case of 2,000 completion tokens fits, two do not
    runner = moa.Runner(models={"fake/hang": hang, "fake/m": fast})
    hanging = build.single(build.agent("fake/hang", pricing=price, max_tokens=2000), name="a")
    waiting = build.single(build.agent("fake/m", pricing=price, max_tokens=2000), name="b")
    first = asyncio.create_task(runner.run(hanging, "q", budget=budget))
    try:
        async with asyncio.timeout(15):
            while not hang.calls:
                await asyncio.sleep(0.01)
            with pytest.raises(moa.TimedOut, match="deadline"):
                await runner.run(waiting, "q", budget=budget, deadline_s=0.3)
        assert fast.calls == [] and not budget._waiters
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await runner.aclose()


@pytest.mark.parametrize(
    ("said", "kept"),
    [("priority", "priority"), ("FLEX", "flex"), ("sk-proj-" + "a1" * 24, None), ("x" * 100_000, None)],
)
async def test_the_record_keeps_a_tier_moa_knows_only(said: str, kept: str | None) -> None:
    """A reply's ``service_tier`` is the provider's text, kept in records and the store: a tier moa
    knows is kept (lower-cased), anything else (an echoed key, megabytes) is not, and is billed
    at the standard tier, as the record's None says."""
    rec = CallRecord(node="n", model="fake/m", attempts=0)
    reply = ModelReply("four", Usage(5, 1), "m", "stop", service_tier=said)
    target = Target("fake/m", FunctionModel(lambda r: reply), PRICE, None)
    await attempt((), target, request(), rec, plan())
    assert rec.service_tier == kept


async def test_each_attempt_is_billed_at_its_own_tier_and_the_record_names_the_answers() -> None:
    """A flex reply validation rejected, then an answer that names no tier: each attempt is billed
    at its own reply's tier, and the record's tier is the answer's (None), not the rejected
    reply's `flex` it kept, which said the answer was billed at half its rates."""
    standard = price_for("openai/gpt-5")
    flex = standard.for_service_tier("flex")
    assert flex.card.base.input < standard.card.base.input
    rejected = ModelReply("not json", Usage(1000, 10), "m", "stop", service_tier="flex")
    answer = ModelReply("{}", Usage(1000, 10), "m", "stop")
    rt = AgentRuntime(
        AgentSpec(model="openai/gpt-5"),
        (Target("openai/gpt-5", ScriptedModel([rejected, answer]), standard, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )

    def validate(text: str) -> None:
        if not text.startswith("{"):
            raise moa.MalformedReply("not JSON")

    ctx = CallContext(0.0)
    await call_agent(ctx, rt, "n", MESSAGES, validate=validate)
    (rec,) = ctx.calls
    assert rec.cost_usd == pytest.approx(flex.cost(Usage(1000, 10)) + standard.cost(Usage(1000, 10)))
    assert rec.service_tier is None


async def test_each_attempt_on_the_record_names_its_tier_and_its_cost() -> None:
    """A `flex` reply validation rejected, then a `default` answer: each attempt's log entry names
    the tier its reply was served at and what it was billed there (the log had neither, so the
    audit trail could not tell a flex try from a default one), through a trace's round trip; an
    entry written before reads with no tier and no cost."""
    standard = price_for("openai/gpt-5")
    flex = standard.for_service_tier("flex")
    rejected = ModelReply("not json", Usage(1000, 10), "m", "stop", service_tier="flex")
    answer = ModelReply("{}", Usage(1000, 10), "m", "stop", service_tier="default")
    rt = AgentRuntime(
        AgentSpec(model="openai/gpt-5"),
        (Target("openai/gpt-5", ScriptedModel([rejected, answer]), standard, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )

    def validate(text: str) -> None:
        if not text.startswith("{"):
            raise moa.MalformedReply("not JSON")

    ctx = CallContext(0.0)
    await call_agent(ctx, rt, "n", MESSAGES, validate=validate)
    (rec,) = ctx.calls
    first, second = rec.attempt_log
    assert (first.service_tier, second.service_tier) == ("flex", "default")
    assert first.cost_usd == pytest.approx(flex.cost(Usage(1000, 10)))
    assert second.cost_usd == pytest.approx(standard.cost(Usage(1000, 10)))
    assert rec.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert CallRecord.from_dict(rec.to_dict()).attempt_log == rec.attempt_log
    old = {"status": "ok", "latency_s": 0.5, "usage": {"prompt_tokens": 3}, "error": None}
    assert Attempt.from_dict(old) == Attempt("ok", 0.5, Usage(3, 0))


async def test_a_replayed_call_keeps_the_worst_case_of_its_unknown_attempts() -> None:
    """A call whose first attempt timed out (unknown usage: the provider may bill it) and whose
    second answered replays with both attempts, so its ``cost_usd_max`` is the first call's: a
    resumed experiment's "up to" figure does not shrink."""
    script = ScriptedModel([moa.TimedOut("slow"), "four"])
    rt = AgentRuntime(
        AgentSpec(model="fake/a"),
        (Target("fake/a", script, PRICE, None),),
        RetryPolicy(max_attempts=2, backoff_base_s=0.0),
        None,
    )
    a, b = await _first_and_replay(rt)
    assert b.cached and a.unknown_usage_attempts == 1 and a.cost_usd_max > a.cost_usd
    assert b.cost_usd_max == pytest.approx(a.cost_usd_max) and b.attempt_log == a.attempt_log
    assert b.attempts == a.attempts == 2


async def test_a_cached_failure_is_raised_and_booked_as_read_back_not_sent() -> None:
    """A cache that holds a call's failure (the tuning's, of a stored cascade run) raises it again
    with its record's account, `cached`, and sends nothing; the fallback then runs (from its own
    cache entry or the network) as it did."""
    failed = CallRecord(
        "n",
        "fake/a",
        Usage(10, 2),
        cost_usd=0.25,
        error="ProviderError: upstream reset",
        attempt_log=[Attempt("error", 0.2, None, "reset", worst_case_usd=1.0)],
    )
    primary, fallback = FunctionModel(lambda r: "never"), FunctionModel(lambda r: "from the fallback")
    price = Price.per_token(1e-6, 2e-6)
    rt = AgentRuntime(
        AgentSpec(model="fake/a", fallbacks=["fake/b"]),
        (Target("fake/a", primary, price, None), Target("fake/b", fallback, price, None)),
        RetryPolicy(max_attempts=1),
        None,
    )

    class _ByModel(_DictCache):
        def key(self, node: str, request: ModelRequest) -> str:
            return f"{node}|{request.model}"

    cache = _ByModel()
    cache.replies["n|fake/a"] = CachedFailure(failed, moa.ProviderError("upstream reset"))
    ctx = CallContext(t0=time.perf_counter(), cache=cache)  # type: ignore[arg-type]
    assert await call_agent(ctx, rt, "n", MESSAGES) == "from the fallback"
    first, second = ctx.calls
    assert primary.calls == [] and len(fallback.calls) == 1
    assert first.cached and first.error == "ProviderError: upstream reset" and first.cost_usd == 0.25
    assert first.cost_usd_max == pytest.approx(1.25) and first.attempts == 1
    assert not second.cached and second.error is None
