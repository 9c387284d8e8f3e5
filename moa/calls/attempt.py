"""One attempt at one model, and its accounting: the innermost layer of a node's call.

An attempt takes a limiter slot, holds its worst case on the budgets (once the limiter lets it
through, so a request queued for its turn holds nothing; one that must wait for other calls' holds
to settle gives its slot back meanwhile and queues again, as it sends nothing), sends under ``timeout_s``
(counted from when the request leaves, for backends that report it), validates the reply, and books
what it consumed in the record's ``attempt_log``:

- a readable reply: its usage and cost (the backend's estimate when the provider reported none:
  the record is flagged ``usage_estimated``, and the budget keeps the worst case, as the bill may
  be above moa's count), unless that usage is impossible for the request
  (negative, more completion tokens than ``max_tokens``, a prompt above ``prompt_token_ceiling``):
  then the usage is clamped to those bounds, the record is flagged ``usage_suspect`` and charged
  the worst case, never more and never negative (so is a reply billed at a service tier dearer than
  every tier its hold covered);
- an HTTP error status, or an attempt that never left (the backend never reported sending it, or
  it failed before a byte left: ``ModelError.never_sent``): nothing;
- anything else that reached the provider (a timeout, a cancellation, a dropped connection, an
  unreadable reply): unknown usage; the provider may bill it, so the budget keeps its worst case
  and the record's ``cost_usd_max`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from moa.calls.budget import Budget, Reservation, hold_all, try_hold_all, wait_for_room
from moa.calls.limits import Limiter, Limiters, Permit, Permits
from moa.calls.pricing import Price, service_tier_name
from moa.calls.retry_budget import RetryBudget
from moa.errors import (
    BudgetExceeded,
    MalformedReply,
    MoAError,
    ModelError,
    ProviderError,
    TimedOut,
    UserError,
)
from moa.models.base import Message, Model, ModelReply, ModelRequest, TokenCallback
from moa.models.think import ThinkFilter, answer_of
from moa.results import AttemptStatus, CallRecord, Usage, build_attempt
from moa.scrub import StreamMask, mask_sent, param_secrets, scrubbed_failure, url_secrets

__all__ = [
    "BUDGET_DEFAULT_MAX_TOKENS",
    "CallPlan",
    "Target",
    "attempt",
    "held_usd",
    "hold_usd",
    "prompt_token_bound",
    "prompt_token_ceiling",
]

#: the max_tokens sent when a budget is active and the agent sets none: the worst case must be finite
BUDGET_DEFAULT_MAX_TOKENS = 4096

#: the most tokens a reply is believed to report when no max_tokens bounds it (2**53: past it a
#: float holds no count exactly)
MAX_TOKEN_COUNT = 2**53


@dataclass(frozen=True, slots=True)
class Target:
    """One model of an agent's chain, resolved: its backend, price, limiter and retry budget."""

    model: str
    backend: Model
    price: Price
    limiter: Limiter | Limiters | None
    retry_budget: RetryBudget | None = None
    #: a named provider sent to the direct path: its public URL
    api_base: str | None = None
    #: the key this model is sent with: the agent's ``api_key_env`` for its own provider or server,
    #: else the named provider's usual variable; None leaves it to the backend (litellm's own)
    api_key: str | None = None
    #: other prices a reply may be billed at (a tier the provider may serve when the agent pins
    #: none): the budget holds the dearest, so a reply billed at any of them stays within its hold
    hold_prices: tuple[Price, ...] = ()


def prompt_token_bound(messages: Sequence[Message]) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never use more tokens than UTF-8 bytes,
    plus the chat template's few tokens per message."""
    return sum(len(m.get("content", "").encode()) + 8 for m in messages) + 8


def prompt_token_ceiling(bound: int) -> int:
    """The most prompt tokens a reply may report and still be believed. Providers add hidden prompt
    tokens (chat templates, tool preambles) and tokenizers differ, so only "far above" the bound is
    suspect. The budget reserves this ceiling, not the bound: a believed reply must never cost more
    than its hold, or a hard cap could be passed by usage moa accepted."""
    return 2 * bound + 1024


@dataclass(slots=True)
class CallPlan:
    """What one node's call shares across its models and attempts."""

    node: str
    messages: Sequence[Message]
    max_tokens: int | None
    prompt_bound: int
    on_token: TokenCallback | None
    validate: Callable[[str], None] | None
    #: the answers the request asks for (``n``): the provider bills each up to ``max_tokens``, so
    #: the worst case and the believable completion count are that many times one answer's
    choices: int = 1
    #: tokens already reached the consumer: no retry or fallback may splice a second answer on
    emitted: bool = False
    #: the last attempt got a reply that ``validate`` rejected: a retry for content, not a sign of
    #: overload, so it does not draw on the endpoint's retry budget
    rejected_reply: bool = False

    #: the clock of the attempt in flight: the request's ``on_sent`` reaches it through ``mark_sent``
    #: (one request object serves every attempt at a model, so nothing is copied per attempt)
    clock: _SendClock | None = None

    #: the rate-limit permit of the attempt in flight, renewed by the request's ``before_send``
    permit: Permit | Permits | None = None

    #: the budget holds of the attempt in flight, settled when it is booked
    held: Sequence[tuple[Budget, Reservation]] = ()
    #: the attempt in flight was refused at its turn (what is spent leaves no room): no attempt
    refused: bool = False
    #: what the caller's ``on_token`` raised: the caller's failure, not the model's, so the call
    #: ends without a retry or a fallback and the error names the callback
    consumer_error: Exception | None = None
    #: the streamed attempt's key mask, flushed once its reply is in hand (so a callback raising
    #: on the last piece still finds the reply's usage booked)
    mask: StreamMask | None = None
    #: the streamed attempt's reasoning filter, ahead of the mask: a leading ``<think>`` block's
    #: tokens never reach the consumer, and a reply that is only reasoning may still be retried
    think: ThinkFilter | None = None

    def mark_sent(self) -> None:
        if self.permit is not None:
            self.permit.sent()
        if self.clock is not None:
            self.clock.on_sent()

    async def before_send(self) -> None:
        if self.permit is not None:
            await self.permit.renew()

    def stream(self, piece: str) -> None:
        self.emitted = True
        try:
            self.on_token(piece)  # type: ignore[misc]
        except Exception as e:
            # a backend may wrap what its stream raised (litellm: a MalformedReply): kept here, the
            # attempt still knows whose failure it was
            self.consumer_error = e
            raise

    def consumer_failed(self) -> UserError:
        """The error a call whose ``on_token`` raised ends with, naming the callback."""
        e = self.consumer_error
        return UserError(f"node `{self.node}`: the on_token callback raised {type(e).__name__}: {e}")

    def completion_cap(self, price: Price) -> int:
        """The completion tokens of the worst case: ``max_tokens`` (else the model's output cap)
        for each answer asked for."""
        return (self.max_tokens or price.max_output_tokens or BUDGET_DEFAULT_MAX_TOKENS) * self.choices

    def worst_case(self, price: Price) -> float:
        return price.worst_case(prompt_token_ceiling(self.prompt_bound), self.completion_cap(price))


class _SendClock:
    """When an attempt entered its backend and when its request left. A backend that calls
    ``ModelRequest.on_sent`` (the direct path once a connection is free, the embedded model once it
    holds a sequence, litellm when it hands the request to the provider's client) keeps its wait
    inside the backend out of the latency and out of ``timeout_s``: the timeout is armed when the
    request leaves. Only a backend that reports sending (``reports_send``) is trusted to call it
    before anything can be billed, so for the others the attempt counts as sent from when it
    entered, and one that may not report (``send_wait_s``) is cut ``timeout_s + send_wait_s``
    after it entered if it never does."""

    __slots__ = ("entered_at", "reports", "send_wait_s", "sent_at", "timeout", "timeout_s")

    def __init__(self, backend: Model, timeout_s: float | None) -> None:
        self.reports: bool = getattr(backend, "reports_send", False)
        self.send_wait_s: float | None = getattr(backend, "send_wait_s", None)
        self.timeout_s = timeout_s
        self.entered_at: float | None = None
        self.sent_at: float | None = None
        self.timeout: asyncio.Timeout | None = None

    def enter(self) -> None:
        self.entered_at = time.perf_counter()

    def deadline_before_send(self) -> float | None:
        """The loop time the attempt is cut at while its backend has not reported sending, if ever."""
        if self.reports or self.timeout_s is None:
            return None
        return asyncio.get_running_loop().time() + self.timeout_s + (self.send_wait_s or 0.0)

    def unreported(self) -> str:
        """What a timeout's message adds when the backend never reported sending the request."""
        if self.reports or self.sent_at is not None or self.send_wait_s is None or self.timeout_s is None:
            return ""
        return (
            f" (the backend had not reported sending it {self.timeout_s + self.send_wait_s:g} s after"
            " the attempt began)"
        )

    def on_sent(self) -> None:
        self.sent_at = time.perf_counter()
        if self.timeout is not None and self.timeout_s is not None:
            # already expiring: the attempt is being cut anyway
            with contextlib.suppress(RuntimeError):
                self.timeout.reschedule(asyncio.get_running_loop().time() + self.timeout_s)

    @property
    def sent(self) -> bool:
        """Whether the provider may have received the request."""
        return self.sent_at is not None if self.reports else self.entered_at is not None

    def queued(self, end: float) -> float:
        """How long the attempt waited inside its backend before its request left (a connection
        slot, the embedded model's lock): not part of the latency."""
        if self.entered_at is None:
            return 0.0
        left = self.sent_at if self.sent_at is not None else (end if self.reports else self.entered_at)
        return max(0.0, left - self.entered_at)

    def latency(self, end: float) -> float:
        """From the send; 0 for a request a backend that reports sending never sent (its wait for
        a connection that never came is ``queued``, and was counted as both)."""
        start = self.sent_at if self.sent_at is not None or self.reports else self.entered_at
        return 0.0 if start is None else end - start


async def attempt(
    budgets: tuple[Budget, ...], target: Target, request: ModelRequest, rec: CallRecord, call: CallPlan
) -> ModelReply:
    """One attempt: take a limiter slot, hold the worst case on the budgets, send under the timeout,
    validate, and book what the attempt consumed (known usage, or the worst case when unknown)."""
    worst = hold_usd(target, call)
    call.held = ()
    call.refused = False
    if budgets and target.limiter is None:
        call.held = await hold_all(budgets, worst, node=call.node, model=target.model)
    elif budgets:
        # the hold is taken when the limiter lets the request through: held while it queued (for
        # minutes under an rpm limit), it refused other models' calls money that nothing had spent.
        # What is spent already is final, so a request it leaves no room for is refused now.
        for b in budgets:
            b.refuse_out_of_reach(worst, node=call.node, model=target.model, why="")
    rec.attempts += 1
    clock = call.clock = _SendClock(target.backend, request.timeout_s)
    reply: ModelReply | None = None
    call.rejected_reply = False
    call.permit = None
    call.mask = None
    call.think = None
    try:
        if target.limiter is not None:
            reply = await _send_when_admitted(target.limiter, target, budgets, worst, request, clock, call)
        else:
            reply = await _send(target.backend, request, clock, call)
        # the reasoning a model wrote into its text is no answer (raised with ``reply`` in hand,
        # a reply that is only reasoning is booked at its usage, like one validation rejects)
        reply = answer_of(reply, call.node, target.model)
        if call.think is not None:
            call.think.flush()
        if call.mask is not None:
            call.mask.flush()  # what was held back, once the reply shows it starts no key
        # an endpoint that echoes the request (a debugging proxy, a hostile one) must not put its
        # key into the answer, the store or a report
        sent = _sent_keys(request)
        if any(sent):
            text = mask_sent(reply.text, sent)
            if text != reply.text:
                reply = dataclasses.replace(reply, text=text)
        # the trace keeps the last reply received, one that validation rejects included
        rec.reply = reply.text
        if call.validate is not None:
            call.validate(reply.text)
    except asyncio.CancelledError:
        _book(rec, clock, target.price, call.held, worst, call, "cancelled", reply, "cancelled")
        raise
    except Exception as e:
        if call.consumer_error is not None:  # whatever the backend made of it, the caller's failure
            raise _consumer_failed(rec, clock, target, worst, call, reply) from call.consumer_error
        error = _failed(e, rec, clock, target, worst, call, reply, request)
        if error is e:
            raise
        raise error from e
    _book(rec, clock, target.price, call.held, worst, call, "ok", reply, None)
    rec.model, rec.finish_reason = target.model, reply.finish_reason
    return reply


def _failed(
    e: Exception,
    rec: CallRecord,
    clock: _SendClock,
    target: Target,
    worst: float,
    call: CallPlan,
    reply: ModelReply | None,
    request: ModelRequest,
) -> Exception:
    """Book an attempt that raised ``e`` (not the caller's ``on_token``) and return what the
    attempt raises: ``e`` itself, or a ``ProviderError`` for an exception outside moa's tree."""
    if isinstance(e, MoAError):
        _mask_sent_keys(e, request)
    if isinstance(e, ModelError):
        status: AttemptStatus = "timeout" if isinstance(e, TimedOut) else "error"
        # an HTTP error status is an answer: the provider reports nothing billable; nor can a
        # request the backend knows never left (a refused connection)
        known_zero = (e.status_code is not None or e.never_sent) and reply is None
        call.rejected_reply = reply is not None
        if call.rejected_reply and isinstance(e, MalformedReply):
            e.rejected = True
        billed = getattr(e, "usage", None) if reply is None else None
        if isinstance(billed, Usage):  # a reply moa cannot use that said what it cost
            reply = ModelReply("", billed, usage_estimated=getattr(e, "usage_estimated", False))
        _book(rec, clock, target.price, call.held, worst, call, status, reply, e.message, known_zero)
        return e
    if isinstance(e, MoAError):  # bad input found at call time: nothing was sent
        if call.refused:  # refused at its turn, as a refusal before the limiter, it was no attempt
            rec.attempts -= 1
        else:
            _book(rec, clock, target.price, call.held, worst, call, "error", reply, e.message, True)
        return e
    # a backend bug or a user fake that raised: still a model failure, whose text never went
    # through a backend's scrubbing (a user's backend may quote the key)
    error = ProviderError(scrubbed_failure(e, _sent_keys(request)), model=target.model, node=call.node)
    _book(rec, clock, target.price, call.held, worst, call, "error", reply, error.message)
    return error


async def _send_when_admitted(
    limiter: Limiter | Limiters,
    target: Target,
    budgets: tuple[Budget, ...],
    worst: float,
    request: ModelRequest,
    clock: _SendClock,
    call: CallPlan,
) -> ModelReply:
    """Send once the limiter lets the request through and its worst case is held on the budgets.
    A request whose hold must wait for other calls' holds to settle sends nothing meanwhile: its
    concurrency slot and window stamps go to calls that do (kept, they blocked every call of the
    endpoint behind it), and it queues at the limiter again once room is made."""
    loop = asyncio.get_running_loop()
    while True:
        async with limiter.slot(call.prompt_bound + (call.max_tokens or 0) * call.choices) as permit:
            blocked = None
            if budgets:
                try:
                    got = try_hold_all(budgets, worst, loop, node=call.node, model=target.model)
                except BudgetExceeded:
                    call.refused = True
                    permit.give_back()  # its place in the windows, for a request that is sent
                    raise
                if isinstance(got, list):
                    call.held = got
                else:
                    permit.give_back()
                    blocked = got
            if blocked is None:
                call.permit = permit
                try:
                    reply = await _send(target.backend, request, clock, call)
                    permit.settle(reply.usage.total_tokens, estimated=reply.usage_estimated)
                    return reply
                except BaseException:
                    # never left (cut while it waited for a connection): its stamps are no send
                    # the provider counts, and kept they held the window for the whole period
                    if not clock.sent:
                        permit.give_back()
                    raise
                finally:
                    # a late on_sent (litellm's, from a thread) must not move the next attempt's
                    call.permit = None
        # not bounded by its timeout_s, which times a request that left: the holds in its way
        # settle as their calls end (each under its own timeout_s), and the run's deadline cancels
        # the wait. Bounded, slow calls (a minute each, eight holds in the cap, 64 in flight)
        # refused the rest and `moa compare` stopped at the first refusal
        await wait_for_room(blocked)


def _consumer_failed(
    rec: CallRecord, clock: _SendClock, target: Target, worst: float, call: CallPlan, reply: ModelReply | None
) -> UserError:
    """Book an attempt the caller's ``on_token`` ended: the request reached the provider and the
    model was answering, so without the whole reply its usage is unknown (the worst case)."""
    error = call.consumer_failed()
    _book(rec, clock, target.price, call.held, worst, call, "error", reply, error.message)
    return error


def hold_usd(target: Target, call: CallPlan) -> float:
    """What an attempt at ``target`` holds on the budgets: its worst case at every price a reply
    may be billed at."""
    return held_usd(call, target.price, target.hold_prices)


def held_usd(call: CallPlan, price: Price, others: Sequence[Price] = ()) -> float:
    """``hold_usd`` from the prices alone: the worst case of ``call`` at ``price`` and at each of
    ``others`` (the tiers a reply may be billed at), the dearest. ``moa compare --dry-run`` prices
    its most with it, so the estimate and the budget hold one amount."""
    worst = call.worst_case(price)
    for other in others:
        worst = max(worst, call.worst_case(other))
    return worst


def _mask_sent_keys(e: MoAError, request: ModelRequest) -> None:
    """``e``'s text with the request's keys masked, in place: moa's backends mask them where the
    provider's text enters, but a backend of the user's own may raise moa's errors too, quoting
    the key it was given, and the message goes on to the run's error, the store and ``moa serve``'s
    reply, which mask key shapes only (a key of no shape passed)."""
    sent = _sent_keys(request)
    if not any(sent):
        return
    masked = mask_sent(e.message, sent)
    if masked != e.message:
        e.message = masked
        e.args = (masked,)
    if isinstance(e, ModelError):
        e.provider_message = mask_sent(e.provider_message, sent)


def _sent_keys(request: ModelRequest) -> tuple[str | None, ...]:
    """The secrets the request carried: its key, the credentials in its URL, and the secret-named
    headers of its params (``extra_headers: {X-Api-Key: ...}``), which an echoing endpoint quotes."""
    keys = _endpoint_keys(request.api_key, request.api_base)
    return (*keys, *param_secrets(request.params)) if request.params else keys


@functools.lru_cache(maxsize=256)
def _endpoint_keys(api_key: str | None, api_base: str | None) -> tuple[str | None, ...]:
    """The key and the URL's credentials, worked out once per endpoint: every reply is masked with
    them (about 4.7k instructions a call, built anew each time)."""
    return (api_key, *url_secrets(api_base))


def _send(backend: Model, request: ModelRequest, clock: _SendClock, call: CallPlan) -> Awaitable[ModelReply]:
    """The backend's one attempt, to await at once, under ``timeout_s`` counted from when the
    request is sent. Neither timed nor streamed, it is the backend's own coroutine, with no level
    in between (one more object per attempt in flight, passed by each wake-up)."""
    if request.timeout_s is None and call.on_token is None:
        clock.enter()
        return backend.complete(request, None)
    return _send_guarded(backend, request, clock, call)


async def _send_guarded(
    backend: Model, request: ModelRequest, clock: _SendClock, call: CallPlan
) -> ModelReply:
    """``_send`` under a timeout, or streaming through the mask."""
    # the answer is masked whole once complete; its tokens, cut anywhere, are masked as they pass
    on_token = None
    if call.on_token is not None:
        mask = call.mask = StreamMask(call.stream, _sent_keys(request))
        call.think = ThinkFilter(mask.feed)
        on_token = call.think.feed
    clock.enter()
    if request.timeout_s is None:
        reply = await backend.complete(request, on_token)
    else:
        try:
            async with asyncio.timeout_at(clock.deadline_before_send()) as cm:
                clock.timeout = cm
                reply = await backend.complete(request, on_token)
        except TimeoutError:
            raise TimedOut(
                f"no reply within timeout_s={request.timeout_s}{clock.unreported()}",
                model=request.model,
                node=request.node,
            ) from None
    return reply


def _book(
    rec: CallRecord,
    clock: _SendClock,
    price: Price,
    held: Sequence[tuple[Budget, Reservation]],
    worst: float,
    call: CallPlan,
    status: AttemptStatus,
    reply: ModelReply | None,
    error: str | None,
    known_zero: bool = False,
) -> None:
    """Book one attempt on its record and settle its budget holds."""
    end = time.perf_counter()
    latency = clock.latency(end)
    rec.latency_s += latency
    rec.queued_s += clock.queued(end)
    usage: Usage | None
    tier = None
    estimated = False
    if reply is not None:
        # billed at the tier the provider says it served (a project whose default is priority)
        if reply.service_tier is not None:
            price = price.for_service_tier(reply.service_tier)
        # the record's tier is its last reply's, as its text is: an earlier attempt's (a flex reply
        # validation rejected) named the tier of an answer billed at another
        tier = service_tier_name(reply.service_tier) if reply.service_tier is not None else None
        rec.service_tier = tier
        if price.off_peak is not None:  # billed by the hour the request was sent
            price = price.at(time.time() - latency)
        usage, cost = _charge(rec, reply.usage, price, worst, call)
        rec.usage_estimated = rec.usage_estimated or reply.usage_estimated
        estimated = reply.usage_estimated
    elif known_zero or not clock.sent:
        usage, cost = Usage(), 0.0
    else:
        usage, cost = None, worst  # it may be billed: keep the worst case
    # moa's estimate of a reply whose provider reported no usage is no bill: the provider's count
    # may be higher (CJK text, hidden reasoning), so the budget keeps the worst case, which bounds
    # any bill, and the record shows the estimate with that bound in ``cost_usd_max``. Settled at
    # the estimate, the cap held only for moa's count
    bound = worst if usage is None or estimated else 0.0
    for b, r in held:
        b.settle(r, max(cost, bound))
    known = 0.0 if usage is None else cost
    rec.attempt_log.append(build_attempt(status, latency, usage, error, bound, known, tier))


def _charge(rec: CallRecord, usage: Usage, price: Price, worst: float, call: CallPlan) -> tuple[Usage, float]:
    """The usage and cost booked for a reply; usage the request cannot have produced is clamped to
    the request's bounds and charged the worst case (never more, never negative)."""
    # with no max_tokens sent a reply may be long, but no count passes what a float holds exactly:
    # 10**400 tokens (a whole number JSON reads) overflowed the cost and failed the run unbooked
    most = MAX_TOKEN_COUNT if call.max_tokens is None else call.max_tokens * call.choices
    ok_completion = 0 <= usage.completion_tokens <= most
    ceiling = prompt_token_ceiling(call.prompt_bound)
    ok_cache = (
        usage.cached_tokens >= 0
        and usage.cache_write_tokens >= 0
        and usage.cached_tokens + usage.cache_write_tokens <= usage.prompt_tokens
        and 0 <= usage.cache_write_1h_tokens <= usage.cache_write_tokens
    )
    if ok_completion and ok_cache and 0 <= usage.prompt_tokens <= ceiling:
        cost = price.cost(usage)
        if cost <= worst * (1 + 1e-9) or call.max_tokens is None:  # rounding is no dearer tier
            rec.usage = rec.usage + usage
            rec.cost_usd += cost
            return usage, cost
        # believable counts at a dearer rate than any held for: a tier the agent did not ask for
        # (a reply claiming priority on a flex request); charged the hold, never past the cap
    rec.usage_suspect = True
    completion = max(0, usage.completion_tokens)
    if completion > most:
        completion = call.completion_cap(price)
    prompt = min(max(0, usage.prompt_tokens), ceiling)
    # counts that do not add up earn no cache discount; claimed cache writes (dearer) are kept
    written = min(max(0, usage.cache_write_tokens), prompt)
    clamped = Usage(prompt, completion, 0, written, min(max(0, usage.cache_write_1h_tokens), written))
    cost = worst if call.max_tokens is not None else price.cost(clamped)
    rec.usage = rec.usage + clamped
    rec.cost_usd += cost
    return clamped, cost
