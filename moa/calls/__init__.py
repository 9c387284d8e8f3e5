"""One node's model call, in layers: ``call_agent`` (fallbacks) -> the model's record and cache ->
retries (backoff, Retry-After, the endpoint's retry budget) -> one attempt (budget hold, limiter
slot, timeout, accounting). Budgets, rate limits, the retry policy, retry budgets and pricing are
modules of this package."""

from moa.calls.budget import Budget
from moa.calls.call import AgentRuntime, CachedFailure, CachedReply, CallCache, CallContext, call_agent
from moa.calls.limits import RateLimits, set_rate_limit, shared_rate_limits

__all__ = [
    "AgentRuntime",
    "Budget",
    "CachedFailure",
    "CachedReply",
    "CallCache",
    "CallContext",
    "RateLimits",
    "call_agent",
    "set_rate_limit",
    "shared_rate_limits",
]
