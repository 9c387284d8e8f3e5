"""One node's model call, in layers (as httpx sends in layers):

``call_agent`` (fallbacks: the primary model, then each fallback)
  -> ``_call_model`` (the call cache, and the ``CallRecord`` of that model, kept whatever happens)
    -> ``_retrying`` (backoff with Retry-After, within the endpoint's retry budget)
      -> ``moa.calls.attempt.attempt`` (one attempt: budget hold, limiter slot, timeout, accounting)

Everything that can be decided once per agent (backend, price, limiter, retry policy, API key) is
resolved into an ``AgentRuntime`` the first time a run group meets the agent, not per call.

Every attempt leaves an entry in its record's ``attempt_log`` (the accounting rules are in
``moa.calls.attempt``), and every model tried leaves its ``CallRecord``, a cancellation during a backoff
included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from moa.calls.attempt import (
    BUDGET_DEFAULT_MAX_TOKENS,
    CallPlan,
    Target,
    attempt,
    hold_usd,
    prompt_token_bound,
)
from moa.calls.budget import Budget
from moa.calls.keys import PROVIDER_KEYS, takes_agent_key
from moa.calls.limits import Limiter, Limiters, RateLimit, endpoint_key, limiter_for
from moa.calls.pricing import Price, price_for, served_prices
from moa.calls.retry import RetryPolicy, should_retry
from moa.calls.retry_budget import RetryBudget
from moa.errors import BudgetExceeded, MoAError, ModelError, UserError
from moa.models.base import Message, Model, ModelReply, ModelRequest, TokenCallback, build_request
from moa.models.providers import named_endpoint
from moa.models.think import answer_of
from moa.results import Attempt, CallRecord, build_call_record
from moa.scrub import param_secrets, remember_secret, url_secrets
from moa.topology.spec import AgentSpec

__all__ = [
    "AgentRuntime",
    "CachedFailure",
    "CachedReply",
    "CallCache",
    "CallContext",
    "build_call_context",
    "call_agent",
    "chain_prices",
    "own_rate_limit",
    "prompt_token_bound",
    "requested_choices",
]


def own_rate_limit(agent: AgentSpec) -> RateLimit | None:
    """The limit the agent's own ``rate_limit`` declares, as its endpoint's limiter takes it."""
    rl = agent.rate_limit
    return RateLimit(rpm=rl.rpm, max_concurrent=rl.max_concurrent, tpm=rl.tpm, per=rl.per) if rl else None


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A reply stored by an experiment's call cache, with what its call booked when it was first made:
    ``reply.usage`` is the record's usage (every attempt that read a reply, clamped where suspect),
    not the last reply's own counts, so a replay reports what the first call did."""

    reply: ModelReply
    model: str
    cost_usd: float
    #: the first call's service time and queue wait: a replay reports them instead of its own ~0 s,
    #: so a resumed run reads as slow as its calls were (0.0: not known, cached by an older moa)
    latency_s: float = 0.0
    queued_s: float = 0.0
    #: the first call's usage was moa's count (the provider reported none): a replay says so too
    usage_estimated: bool = False
    #: the first call's usage could not have come from its request and was charged the worst case
    usage_suspect: bool = False
    #: the first call's attempts: a replay reports them, so an attempt of unknown usage (a timeout
    #: before the answer, which the provider may have billed) still counts in ``cost_usd_max``
    attempt_log: tuple[Attempt, ...] = ()
    #: ``reply.text`` is the answer as the first call returned it, its leading reasoning already
    #: taken out: a replay returns it as is. Taken out again, an answer that itself holds a
    #: ``</think>`` (``x </think>\n\ny``) was cut a second time, so a resumed run scored another
    #: answer than its first run. False: cached by an older moa (or a user's code), whose text may
    #: still begin with the reasoning, taken out when replayed
    answer_only: bool = False


@dataclass(frozen=True, slots=True)
class CachedFailure:
    """A call that failed once, kept to be read back rather than sent again (a cascade's tuning
    reads the failures of the stored run it re-records: sent again, they were paid again, and the
    stage they failed in could answer this time, unlike the run it stands for). ``record`` is that
    call's account; the replay raises ``error``."""

    record: CallRecord
    error: ModelError


class CallCache(Protocol):
    """Where an experiment keeps replies keyed by the exact request, so re-runs send nothing."""

    def get(self, key: str) -> CachedReply | CachedFailure | None: ...

    def put(self, key: str, value: CachedReply) -> None: ...

    def key(self, node: str, request: ModelRequest) -> str: ...


@dataclass(frozen=True, slots=True)
class AgentRuntime:
    """An agent resolved for one run group: its model chain (primary, then fallbacks)."""

    agent: AgentSpec
    chain: tuple[Target, ...]
    retry: RetryPolicy
    api_key: str | None
    #: the answers each request asks for (``n`` in the agent's params): each is billed, one is read
    choices: int = 1

    @classmethod
    def resolve(
        cls,
        agent: AgentSpec,
        backend_for: Callable[[str], Model],
        needs_key: Callable[[str], bool],
        retry_budget_for: Callable[[str], RetryBudget] | None = None,
        limiter_lookup: Callable[
            [str, str | None, RateLimit | None], Limiter | Limiters | None
        ] = limiter_for,
    ) -> AgentRuntime:
        api_key = None
        if agent.api_key_env:
            api_key = os.environ.get(agent.api_key_env)
            remember_secret(api_key)  # a variable of any name: its value must be masked everywhere
            # a model answered by a user-supplied backend (a fake in tests) needs no key
            own = [m for m in [agent.model, *agent.fallbacks] if takes_agent_key(agent, m)]
            if api_key is None and any(needs_key(m) for m in own):
                raise UserError(
                    f"environment variable `{agent.api_key_env}` (api_key_env of model `{agent.model}`) is not set"
                )
        # https://user:key@host, ?key=..., extra_headers: {X-Api-Key: ...}
        for secret in (*url_secrets(agent.api_base), *param_secrets(agent.params)):
            remember_secret(secret)
        limit = own_rate_limit(agent)
        targets = []
        models = [agent.model, *agent.fallbacks]
        backends = [backend_for(model) for model in models]
        # a backend of the user's need not say `local` (a missing one failed every call)
        prices = chain_prices(agent, [getattr(b, "local", False) for b in backends])
        for model, backend, (price, holds) in zip(models, backends, prices, strict=True):
            # the agent's key goes to its own provider or server only: a fallback of another
            # provider takes that provider's usual key (litellm's, or the named route's)
            mine = api_key if api_key is not None and takes_agent_key(agent, model) else None
            base, key = _named_route(agent, model, mine)
            key = key or mine
            # keyed by the model, not the named provider's URL: providers count per model, as
            # through litellm (by the URL, every groq model shared one window, the strictest)
            limiter = limiter_lookup(model, agent.api_base, limit)
            budget = (
                retry_budget_for(endpoint_key(base or agent.api_base or model))
                if retry_budget_for is not None
                else None
            )
            targets.append(Target(model, backend, price, limiter, budget, base, key, holds))
        r = agent.retry
        policy = RetryPolicy(
            max_attempts=r.max_attempts,
            backoff_base_s=r.backoff_base_s,
            backoff_max_s=r.backoff_max_s,
            max_retry_after_s=r.max_retry_after_s,
        )
        return cls(agent, tuple(targets), policy, api_key, requested_choices(agent.params))


def chain_prices(agent: AgentSpec, local: Sequence[bool]) -> tuple[tuple[Price, tuple[Price, ...]], ...]:
    """Each model of the agent's chain (its model, then its fallbacks; ``local``: which the
    embedded model answers, at $0): the price its record bills, at the service tier the agent asks
    for, and the other prices a reply may be billed at, which its budget hold covers. The agent's
    ``pricing`` prices its own model only: a fallback is another model, priced by the price map."""
    tier = agent.params.get("service_tier")
    return tuple(
        # the tier the agent asks for (params: {service_tier: priority}) prices its worst case,
        # held at every tier a reply may be billed at, or a hard cap could be passed
        served_prices(price_for(model, agent.pricing if i == 0 else None, local=here), tier)
        for i, (model, here) in enumerate(zip([agent.model, *agent.fallbacks], local, strict=True))
    )


def requested_choices(params: Mapping[str, Any]) -> int:
    """The answers a request asks for: ``n`` of the params, or of their ``extra_body``, which the
    body takes over it."""
    extra = params.get("extra_body")
    said = [params.get("n"), extra.get("n") if isinstance(extra, dict) else None]
    return max([n for n in said if isinstance(n, int) and not isinstance(n, bool)] + [1])


def _named_route(agent: AgentSpec, model: str, api_key: str | None) -> tuple[str | None, str | None]:
    """For a named provider whose API is OpenAI's and that the agent sends to no ``api_base`` of its
    own: the public URL the direct path posts to, and the key (the agent's ``api_key_env``, else the
    provider's usual variable). (None, None) for everything else."""
    if agent.api_base or agent.transport != "auto":
        return None, None
    base = named_endpoint(model)
    if base is None:
        return None, None
    if api_key is None:
        names = PROVIDER_KEYS.get(model.split("/", 1)[0], ())
        api_key = next((v for n in names if (v := os.environ.get(n))), None)
    return base, api_key


@dataclass(slots=True)
class CallContext:
    """Per-run state the calls share: the clock, the records, the budgets, the cache."""

    t0: float
    budgets: tuple[Budget, ...] = ()
    cache: CallCache | None = None
    calls: list[CallRecord] = field(default_factory=list)
    logger: Any = None
    #: a ``moa.otel.Telemetry`` when OpenTelemetry is configured, else None (no cost)
    telemetry: Any = None
    #: the event loop's time at which the run's ``deadline_s`` ends, if it has one: a retry whose
    #: wait would end past it is not waited for, so the fallbacks get the time that is left
    deadline: float | None = None


def build_call_context(
    t0: float, budgets: tuple[Budget, ...], cache: CallCache | None, logger: Any, telemetry: Any
) -> CallContext:
    """``CallContext(t0=..., budgets=..., cache=..., logger=..., telemetry=...)``, as each run opens
    its context, at less than half the cost: plain slot stores, not the constructor's keyword
    matching (about 6k instructions a run; see ``moa.results.build_call_record``)."""
    c = object.__new__(CallContext)
    c.t0 = t0
    c.budgets = budgets
    c.cache = cache
    c.calls = []
    c.logger = logger
    c.telemetry = telemetry
    c.deadline = None
    return c


def call_agent(
    ctx: CallContext,
    rt: AgentRuntime,
    node: str,
    messages: Sequence[Message],
    *,
    on_token: TokenCallback | None = None,
    validate: Callable[[str], None] | None = None,
) -> Coroutine[Any, Any, str]:
    """Call the agent's model (then its fallbacks) until one answers: the text, to await. An agent
    without fallbacks is its model's call, with no level of its own between (one more coroutine per
    call in flight, passed by each wake-up): with nothing to fall back to, it would change nothing."""
    max_tokens = rt.agent.max_tokens
    if max_tokens is None and ctx.budgets:
        max_tokens = BUDGET_DEFAULT_MAX_TOKENS
    call = CallPlan(node, messages, max_tokens, prompt_token_bound(messages), on_token, validate, rt.choices)
    if len(rt.chain) == 1:
        return _call_model(ctx, rt, rt.chain[0], call)
    return _call_chain(ctx, rt, call)


async def _call_chain(ctx: CallContext, rt: AgentRuntime, call: CallPlan) -> str:
    """The agent's model, then each fallback, until one answers."""
    last_error: ModelError | BudgetExceeded | None = None
    refused: BudgetExceeded | None = None
    for target in rt.chain:
        try:
            return await _call_model(ctx, rt, target, call)
        except ModelError as e:
            last_error = e
        except BudgetExceeded as e:
            # refused before it was sent (or before a retry): a cheaper fallback's worst case may
            # still fit, and the cap stays hard, as each model's attempts are held on their own
            last_error = refused = refused or e
        if call.emitted:
            break  # tokens already reached the consumer: a fallback would splice two answers
    assert last_error is not None  # the chain is never empty
    # the budget refused a model the node needed: the budget's failure, not the fallbacks' (an
    # experiment stops at its budget and resumes the item, rather than storing it as failed)
    error = refused or last_error
    if len(rt.chain) > 1 and not call.emitted:
        error.message += f" (after fallbacks: {', '.join(t.model for t in rt.chain[1:])})"
        error.args = (error.message,)
    raise error


async def _call_model(ctx: CallContext, rt: AgentRuntime, target: Target, call: CallPlan) -> str:
    """One model of the chain: the cache, then attempts; its record is kept whatever happens
    (a cancellation during a backoff included)."""
    agent = rt.agent
    request = build_request(
        model=target.model,
        messages=call.messages,
        temperature=agent.temperature,
        max_tokens=call.max_tokens,
        top_p=agent.top_p,
        stop=agent.stop,
        api_base=target.api_base or agent.api_base,
        api_key=target.api_key,
        timeout_s=agent.timeout_s,
        params=agent.params,
        node=call.node,
        on_sent=call.mark_sent,
        # only a limiter's permit is renewed before the send: without one, a backend would make and
        # await a coroutine that does nothing, once per attempt
        before_send=call.before_send if target.limiter is not None else None,
    )
    rec = build_call_record(
        call.node,
        target.model,
        agent.model,
        time.perf_counter() - ctx.t0,
        target.price.known,
        getattr(target.backend, "local", False),
        call.messages,
    )
    cache_key = ctx.cache.key(call.node, request) if ctx.cache is not None else None
    try:
        if ctx.cache is not None and cache_key is not None:
            hit = _cache_hit(ctx.cache, cache_key, call)
            if isinstance(hit, CachedFailure):
                _replay_failure(rec, hit.record)
                raise hit.error
            if hit is not None:
                rec.usage, rec.cost_usd, rec.cached, rec.model = (
                    hit.reply.usage,
                    hit.cost_usd,
                    True,
                    hit.model,
                )
                rec.latency_s, rec.queued_s = hit.latency_s, hit.queued_s
                rec.usage_estimated, rec.usage_suspect = hit.usage_estimated, hit.usage_suspect
                rec.service_tier, rec.finish_reason = hit.reply.service_tier, hit.reply.finish_reason
                rec.attempt_log, rec.attempts = list(hit.attempt_log), len(hit.attempt_log)
                rec.reply = hit.reply.text
                if call.on_token is not None:
                    try:
                        call.stream(hit.reply.text)
                    except Exception as e:
                        raise call.consumer_failed() from e
                return hit.reply.text
        if target.retry_budget is not None:
            target.retry_budget.sent()
        # the first attempt awaited here, with no retry loop between (one more coroutine per call
        # in flight, passed by each wake-up); the loop starts only if it fails
        failed: ModelError | None = None
        try:
            reply = await _attempt(ctx, target, request, rec, call)
        except ModelError as e:
            failed = e
        if failed is not None:
            reply = await _retrying(ctx, rt, target, request, rec, call, failed)
        rec.reply = reply.text
    except asyncio.CancelledError:
        rec.error = "cancelled"
        raise
    except ModelError as e:
        e.model, e.node = e.model or target.model, e.node or call.node
        rec.error = f"{type(e).__name__}: {e.message}"
        raise
    except MoAError as e:  # bad input found at call time (an unknown model): no retry, no fallback
        rec.error = f"{type(e).__name__}: {e.message}"
        raise
    finally:
        ctx.calls.append(rec)
        if ctx.logger is not None and ctx.logger.info_on:  # `moa serve` logs warnings only
            _log_call(ctx.logger, rec)
    if ctx.cache is not None and cache_key is not None:
        # the record's usage, not the reply's: a suspect reply's raw counts, or a reply without the
        # usage of an earlier attempt validation rejected, would replay as another call's account
        booked = dataclasses.replace(reply, usage=rec.usage, service_tier=rec.service_tier)
        ctx.cache.put(
            cache_key,
            CachedReply(
                booked,
                target.model,
                rec.cost_usd,
                rec.latency_s,
                rec.queued_s,
                rec.usage_estimated,
                rec.usage_suspect,
                tuple(rec.attempt_log),
                answer_only=True,
            ),
        )
    return reply.text


def _log_call(logger: Any, rec: CallRecord) -> None:
    """One ``call`` event per record, whether it answered, failed, was cut off or was replayed
    from the cache: the events of a run add up to its ``run.end`` (each record is in its cost)."""
    extra: dict[str, Any] = {}
    if rec.error is not None:
        extra["error"] = rec.error
    if rec.cached:
        extra["cached"] = True
    if rec.finish_reason == "length":  # the answer was cut at max_tokens: its text is incomplete
        extra["finish_reason"] = rec.finish_reason
    worst = rec.cost_usd_max
    if worst > rec.cost_usd:  # an attempt sent whose usage is unknown may be billed up to this
        extra["cost_usd_max"] = worst
    logger.info(
        "call",
        node=rec.node,
        model=rec.model,
        attempts=rec.attempts,
        prompt_tokens=rec.usage.prompt_tokens,
        completion_tokens=rec.usage.completion_tokens,
        cost_usd=rec.cost_usd,
        latency_s=round(rec.latency_s, 4),
        **extra,
    )


async def _traced_attempt(
    ctx: CallContext, target: Target, request: ModelRequest, rec: CallRecord, call: CallPlan
) -> ModelReply:
    """One attempt inside its ``chat <model>`` span, closed from the attempt's log entry."""
    number, spent = rec.attempts + 1, rec.cost_usd
    with ctx.telemetry.call_span(request, number) as span:
        error: BaseException | None = None
        try:
            return await attempt(ctx.budgets, target, request, rec, call)
        except BaseException as e:  # its class is the span's and the metric's `error.type`
            error = e
            raise
        finally:
            entry = rec.attempt_log[-1] if len(rec.attempt_log) >= number else None
            ctx.telemetry.end_call(span, request, rec, entry, error, rec.cost_usd - spent)


def _replay_failure(rec: CallRecord, failed: CallRecord) -> None:
    """``rec`` as the account of the failed call read back: what it consumed was paid when it was
    made (``cached``), and an attempt of unknown usage still counts in ``cost_usd_max``."""
    rec.usage, rec.cost_usd, rec.cached = failed.usage, failed.cost_usd, True
    rec.latency_s, rec.queued_s = failed.latency_s, failed.queued_s
    rec.usage_estimated, rec.usage_suspect = failed.usage_estimated, failed.usage_suspect
    rec.service_tier, rec.reply = failed.service_tier, failed.reply
    rec.attempt_log, rec.attempts = list(failed.attempt_log), len(failed.attempt_log)


def _cache_hit(cache: CallCache, key: str, call: CallPlan) -> CachedReply | CachedFailure | None:
    hit = cache.get(key)
    if hit is None or isinstance(hit, CachedFailure):
        return hit
    try:
        # a reply cached before moa took a reasoning model's <think> block out of the answer: a
        # resumed experiment replayed the reasoning as the answers its first runs gave
        reply = hit.reply if hit.answer_only else answer_of(hit.reply, call.node, hit.model)
        if call.validate is not None:
            call.validate(reply.text)
    except ModelError:
        return None
    return hit if reply is hit.reply else dataclasses.replace(hit, reply=reply)


def _attempt(
    ctx: CallContext, target: Target, request: ModelRequest, rec: CallRecord, call: CallPlan
) -> Coroutine[Any, Any, ModelReply]:
    """One attempt, to await: inside its span when OpenTelemetry is on."""
    if ctx.telemetry is None:
        return attempt(ctx.budgets, target, request, rec, call)
    return _traced_attempt(ctx, target, request, rec, call)


async def _retrying(
    ctx: CallContext,
    rt: AgentRuntime,
    target: Target,
    request: ModelRequest,
    rec: CallRecord,
    call: CallPlan,
    error: ModelError,
) -> ModelReply:
    """After an attempt at one model failed with ``error``: attempts until one answers, the policy
    gives up, or the endpoint's retry budget (retries at most a fifth of its recent traffic) is
    spent."""
    while True:
        if call.emitted or not should_retry(error):
            raise error
        retry_after = getattr(error, "retry_after_s", None)
        delay = rt.retry.delay_s(rec.attempts, retry_after_s=retry_after)
        if delay is None:
            if rec.attempts < rt.retry.max_attempts and retry_after is not None:
                # attempts were left: say why they were not used, or the user sees a plain 429
                error.message += (
                    f" (not retried: Retry-After {retry_after:.0f} s is over "
                    f"retry.max_retry_after_s={rt.retry.max_retry_after_s:g})"
                )
            raise error
        if ctx.deadline is not None and asyncio.get_running_loop().time() + delay >= ctx.deadline:
            # the run would be cut during the wait: the error now, and a fallback if any, are
            # worth more than a wait that ends in the deadline's TimedOut
            error.message += f" (not retried: the {delay:.3g} s wait would end past the run's deadline)"
            raise error
        # spend only grows: a retry it already leaves no room for is refused now, not after
        # the wait (up to max_retry_after_s), and the refusal says what it would have retried
        for b in ctx.budgets:
            b.refuse_out_of_reach(
                hold_usd(target, call),
                node=call.node,
                model=target.model,
                why=f"; not retrying {type(error).__name__}: {error.message}",
            )
        budget = None if call.rejected_reply else target.retry_budget
        if budget is not None and not budget.try_retry():
            error.message += " (not retried: the endpoint's retry budget is spent)"
            raise error
        if ctx.logger is not None:
            ctx.logger.warning(
                "retry",
                node=call.node,
                model=target.model,
                attempt=rec.attempts,
                error=str(error),
                delay_s=round(delay, 3),
            )
        await asyncio.sleep(delay)
        try:
            return await _attempt(ctx, target, request, rec, call)
        except ModelError as e:
            error = e
