"""Turning a provider's HTTP status and message into moa's error tree (shared by the litellm and the
direct OpenAI-compatible paths, so both fail the same way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from moa.errors import ModelError, ProviderError, RateLimited, RequestRejected, TimedOut
from moa.models.retry_after import ratelimit_reset_from_headers, retry_after_from_headers
from moa.scrub import scrub_clip

__all__ = ["error_for_status"]


def error_for_status(
    status: int | None,
    message: str,
    *,
    model: str,
    node: str = "",
    headers: Mapping[str, str] | None = None,
    secrets: Sequence[str | None] = (),
) -> ModelError:
    """The moa error for an HTTP status: 429 -> RateLimited, 408 -> TimedOut, other 4xx ->
    RequestRejected (not retried), 5xx and unknown -> ProviderError. A 429 or a 5xx carries the
    server's Retry-After as ``retry_after_s``.

    ``secrets`` are the keys the request carried: a provider that echoes one (``Incorrect API key
    provided: ...``) would otherwise put it in every record, store and reply this message reaches,
    so they and any key shape are masked here, where the provider's text enters moa."""
    # scrubbed before the cut: half a key matches no rule
    text = scrub_clip(" ".join(message[:65536].split()), 500, secrets) or f"HTTP {status}"
    kw: dict[str, object] = {"model": model, "node": node or None, "status_code": status}
    if status is not None and 300 <= status < 400:
        # a redirect is not followed (the prompt would go to a host the agent did not name): it
        # says api_base is wrong (http for https, a missing /v1), which no retry changes
        location = next((v for k, v in (headers or {}).items() if k.lower() == "location"), "")
        where = scrub_clip(" ".join(str(location).split()), 200, secrets) or "nowhere"
        return RequestRejected(
            f"redirected ({status}) to {where}: moa does not follow redirects; set api_base to the "
            "endpoint itself",
            **kw,  # type: ignore[arg-type]
        )
    if status == 429:
        wait = _retry_after(headers)
        if wait is None and headers is not None:  # OpenAI says when its spent window resets instead
            wait = ratelimit_reset_from_headers(headers)
        limited = RateLimited(f"rate limited (429): {text}", retry_after_s=wait, **kw)
        if any(sign in text.lower() for sign in _QUOTA_SPENT):
            # OpenAI answers an account out of credit with a 429 too: no wait brings credit back,
            # so retries would only spend time and the endpoint's retry budget (a fallback may
            # still answer)
            limited.retryable = False
            limited.message += " (not retried: the account's quota is spent)"
        return limited
    if status == 408:
        return TimedOut(f"provider timed out (408): {text}", **kw)  # type: ignore[arg-type]
    if status is not None and 400 <= status < 500:
        return RequestRejected(f"request rejected ({status}): {text}", **kw)  # type: ignore[arg-type]
    label = f"provider error ({status})" if status else "provider error"
    # a 503 says when the server will be back as often as a 429 does (RFC 9110 §10.2.3): a retry
    # sooner meets the same overload and spends an attempt of the budget
    retry_after = _retry_after(headers) if status is not None and status >= 500 else None
    return ProviderError(f"{label}: {text}", retry_after_s=retry_after, **kw)


#: what OpenAI's 429 for an account out of credit says (``code: insufficient_quota``), as opposed
#: to its per-minute limits; litellm's message keeps the code, the direct path the message
_QUOTA_SPENT = ("insufficient_quota", "exceeded your current quota")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    return retry_after_from_headers(headers) if headers is not None else None
