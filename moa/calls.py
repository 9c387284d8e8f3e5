"""One node's model call: budget reservation, rate limits, the call cache, retries with backoff and
Retry-After, per-attempt timeouts, fallbacks, and the ``CallRecord`` of every model tried.

Everything that can be decided once per agent (backend, price, limiter, retry policy, API key) is
resolved into an ``AgentRuntime`` the first time a run group meets the agent, not per call.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from moa.budget import Budget, Reservation
from moa.errors import MoAError, ModelError, ProviderError, Timeout, UserError
from moa.limits import Limiter, RateLimit, limiter_for
from moa.models.base import Message, Model, ModelReply, ModelRequest, TokenCallback
from moa.pricing import Price, price_for
from moa.results import CallRecord
from moa.retry import RetryPolicy, should_retry
from moa.spec import AgentSpec

__all__ = ["AgentRuntime", "CachedReply", "CallCache", "CallContext", "call_agent", "prompt_token_bound"]

#: the max_tokens sent when a budget is active and the agent sets none: the worst case must be finite
BUDGET_DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A reply stored by an experiment's call cache, with what it cost when it was first made."""

    reply: ModelReply
    model: str
    cost_usd: float


class CallCache(Protocol):
    """Where an experiment keeps replies keyed by the exact request, so re-runs send nothing."""

    def get(self, key: str) -> CachedReply | None: ...

    def put(self, key: str, value: CachedReply) -> None: ...

    def key(self, node: str, request: ModelRequest) -> str: ...


@dataclass(frozen=True, slots=True)
class _Target:
    model: str
    backend: Model
    price: Price
    limiter: Limiter | None


@dataclass(frozen=True, slots=True)
class AgentRuntime:
    """An agent resolved for one run group: its model chain (primary, then fallbacks)."""

    agent: AgentSpec
    chain: tuple[_Target, ...]
    retry: RetryPolicy
    api_key: str | None

    @classmethod
    def resolve(
        cls, agent: AgentSpec, backend_for: Callable[[str], Model], needs_key: Callable[[str], bool]
    ) -> AgentRuntime:
        api_key = None
        if agent.api_key_env:
            api_key = os.environ.get(agent.api_key_env)
            # a model answered by a user-supplied backend (a fake in tests) needs no key
            if api_key is None and any(needs_key(m) for m in [agent.model, *agent.fallbacks]):
                raise UserError(
                    f"environment variable `{agent.api_key_env}` (api_key_env of model `{agent.model}`) is not set"
                )
        rl = agent.rate_limit
        limit = RateLimit(rpm=rl.rpm, max_concurrent=rl.max_concurrent, tpm=rl.tpm) if rl else None
        targets = []
        for i, model in enumerate([agent.model, *agent.fallbacks]):
            backend = backend_for(model)
            price = price_for(model, agent.pricing if i == 0 else None, local=backend.local)
            targets.append(_Target(model, backend, price, limiter_for(model, agent.api_base, limit)))
        r = agent.retry
        policy = RetryPolicy(
            max_attempts=r.max_attempts, backoff_base_s=r.backoff_base_s, backoff_max_s=r.backoff_max_s
        )
        return cls(agent, tuple(targets), policy, api_key)


@dataclass(slots=True)
class CallContext:
    """Per-run state the calls share: the clock, the records, the budgets, the cache."""

    t0: float
    budgets: tuple[Budget, ...] = ()
    cache: CallCache | None = None
    calls: list[CallRecord] = field(default_factory=list)
    logger: Any = None


def prompt_token_bound(messages: Sequence[Message]) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never use more tokens than UTF-8 bytes,
    plus the chat template's few tokens per message."""
    return sum(len(m.get("content", "").encode()) + 8 for m in messages) + 8


def _settle(reservations: list[tuple[Budget, Reservation]], cost: float) -> None:
    for b, r in reservations:
        b.settle(r, cost)


def _settle_worst(reservations: list[tuple[Budget, Reservation]]) -> None:
    for b, r in reservations:
        b.settle(r, r.amount)


def _reserve(ctx: CallContext, amount: float, node: str, model: str) -> list[tuple[Budget, Reservation]]:
    held: list[tuple[Budget, Reservation]] = []
    try:
        for b in ctx.budgets:
            held.append((b, b.reserve(amount, node=node, model=model)))
    except MoAError:
        _settle(held, 0.0)
        raise
    return held


async def call_agent(
    ctx: CallContext,
    rt: AgentRuntime,
    node: str,
    messages: Sequence[Message],
    *,
    on_token: TokenCallback | None = None,
    validate: Callable[[str], None] | None = None,
) -> str:
    """Call the agent's model (then its fallbacks) until one answers; return the text."""
    agent = rt.agent
    max_tokens = agent.max_tokens
    if max_tokens is None and ctx.budgets:
        max_tokens = BUDGET_DEFAULT_MAX_TOKENS
    prompt_bound = prompt_token_bound(messages) if ctx.budgets or any(t.limiter for t in rt.chain) else 0
    emitted = False

    def tokens(piece: str) -> None:
        nonlocal emitted
        emitted = True
        on_token(piece)  # type: ignore[misc]

    last_error: ModelError | None = None
    for target in rt.chain:
        request = ModelRequest(
            model=target.model,
            messages=messages,
            temperature=agent.temperature,
            max_tokens=max_tokens,
            top_p=agent.top_p,
            stop=agent.stop,
            api_base=agent.api_base,
            api_key=rt.api_key,
            timeout_s=agent.timeout_s,
            params=agent.params,
            node=node,
        )
        rec = CallRecord(
            node=node,
            model=target.model,
            requested_model=agent.model,
            started_s=time.perf_counter() - ctx.t0,
            priced=target.price.known,
            local=target.backend.local,
            attempts=0,
        )
        cache_key = None
        if ctx.cache is not None:
            cache_key = ctx.cache.key(node, request)
            hit = ctx.cache.get(cache_key)
            if hit is not None and validate is not None:
                try:
                    validate(hit.reply.text)
                except ModelError:
                    hit = None
            if hit is not None:
                rec.usage, rec.cost_usd, rec.cached, rec.model = (
                    hit.reply.usage,
                    hit.cost_usd,
                    True,
                    hit.model,
                )
                if on_token is not None:
                    on_token(hit.reply.text)
                ctx.calls.append(rec)
                return hit.reply.text
        worst = target.price.worst_case(prompt_bound, max_tokens or 0) if ctx.budgets else 0.0
        error: ModelError | None = None
        while True:
            rec.attempts += 1
            held = _reserve(ctx, worst, node, target.model) if ctx.budgets else []
            started = time.perf_counter()
            reply: ModelReply | None = None
            sent = False
            try:
                if target.limiter is not None:
                    async with target.limiter.slot(prompt_bound + (max_tokens or 0)):
                        started, sent = time.perf_counter(), True
                        reply = await _attempt(target.backend, request, tokens if on_token else None)
                else:
                    sent = True
                    reply = await _attempt(target.backend, request, tokens if on_token else None)
                rec.latency_s += time.perf_counter() - started
                if validate is not None:
                    validate(reply.text)
            except asyncio.CancelledError:
                rec.latency_s += time.perf_counter() - started
                if reply is None and sent:
                    # the provider may bill a request cancelled mid-flight (quorum stragglers, a
                    # deadline): its tokens are unknown, so the budget keeps its worst case
                    _settle_worst(held)
                else:
                    _account(rec, reply, target.price, held)
                rec.error = "cancelled"
                ctx.calls.append(rec)
                raise
            except ModelError as e:
                if reply is None:
                    rec.latency_s += time.perf_counter() - started
                _account(rec, reply, target.price, held)
                e.model, e.node = e.model or target.model, e.node or node
                error = e
            except MoAError as e:  # bad input found at call time (an unknown model): no retry, no fallback
                rec.latency_s += time.perf_counter() - started
                _account(rec, reply, target.price, held)
                rec.error = f"{type(e).__name__}: {e.message}"
                ctx.calls.append(rec)
                raise
            except Exception as e:  # a backend bug or a user fake that raised: still a model failure
                rec.latency_s += time.perf_counter() - started
                _account(rec, reply, target.price, held)
                error = ProviderError(f"{type(e).__name__}: {e}", model=target.model, node=node)
            else:
                _account(rec, reply, target.price, held)
                rec.model = target.model
                ctx.calls.append(rec)
                if ctx.cache is not None and cache_key is not None:
                    ctx.cache.put(cache_key, CachedReply(reply, target.model, target.price.cost(reply.usage)))
                if ctx.logger is not None:
                    ctx.logger.info(
                        "call",
                        node=node,
                        model=target.model,
                        attempts=rec.attempts,
                        prompt_tokens=rec.usage.prompt_tokens,
                        completion_tokens=rec.usage.completion_tokens,
                        cost_usd=rec.cost_usd,
                        latency_s=round(rec.latency_s, 4),
                    )
                return reply.text
            # a failed attempt: retry the same model, or give up on it
            if emitted or not should_retry(error):
                break
            delay = rt.retry.delay_s(rec.attempts, retry_after_s=getattr(error, "retry_after_s", None))
            if delay is None:
                break
            if ctx.logger is not None:
                ctx.logger.warning(
                    "retry",
                    node=node,
                    model=target.model,
                    attempt=rec.attempts,
                    error=str(error),
                    delay_s=round(delay, 3),
                )
            await asyncio.sleep(delay)
        rec.error = f"{type(error).__name__}: {error.message}"
        ctx.calls.append(rec)
        last_error = error
        if emitted:
            break  # tokens already reached the consumer: a fallback would splice two answers
    assert last_error is not None  # the chain is never empty
    if len(rt.chain) > 1 and not emitted:
        last_error.message += f" (after fallbacks: {', '.join(t.model for t in rt.chain[1:])})"
    raise last_error


async def _attempt(backend: Model, request: ModelRequest, on_token: TokenCallback | None) -> ModelReply:
    try:
        if request.timeout_s is None:
            return await backend.complete(request, on_token)
        async with asyncio.timeout(request.timeout_s):
            return await backend.complete(request, on_token)
    except TimeoutError:
        raise Timeout(
            f"no reply within timeout_s={request.timeout_s}", model=request.model, node=request.node
        ) from None


def _account(
    rec: CallRecord, reply: ModelReply | None, price: Price, held: list[tuple[Budget, Reservation]]
) -> None:
    """Book what an attempt consumed (a malformed reply's tokens were paid for too)."""
    if reply is not None:
        rec.usage = rec.usage + reply.usage
        cost = price.cost(reply.usage)
        rec.cost_usd += cost
        _settle(held, cost)
    else:
        _settle(held, 0.0)
