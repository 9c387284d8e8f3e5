"""An OpenAI-shaped reply's usage read into counts: the one reader of the direct path's JSON and of
litellm's usage objects, the estimate when a server reports none, and how a reply moa cannot use is
billed. Split from ``openai_wire`` (the protocol's bytes) so that both transports' readers share it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

from moa.errors import MalformedReply
from moa.models.base import ModelRequest, Reported, usage_with_estimate
from moa.results import Usage
from moa.scrub import param_secrets, scrub_clip, url_secrets

__all__ = [
    "billed",
    "billed_usage",
    "estimate_usage",
    "field",
    "kind",
    "malformed",
    "reported_usage",
    "secrets_of",
    "unanswered",
]

_PLAIN_USAGE = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


def secrets_of(request: ModelRequest) -> tuple[str | None, ...]:
    """What the request carried that must not come back: its key and any credential written in
    its ``api_base`` (``https://user:key@host``, ``?key=``) or in a secret-named header of its
    ``params``."""
    return (request.api_key, *url_secrets(request.api_base), *param_secrets(request.params))


def malformed(why: str, request: ModelRequest) -> MalformedReply:
    return MalformedReply(f"malformed reply: {why}", model=request.model, node=request.node or None)


def estimate_usage(request: ModelRequest, text: str, reasoning_bytes: int = 0) -> Usage:
    """``reasoning_bytes``: the UTF-8 bytes of the reasoning the reply sent beside its text
    (``reasoning_content``), completion tokens too: often most of the bill."""
    # rounded up: rounded down, a short prompt and answer (under 4 bytes each) were charged $0
    prompt = sum(len(m.get("content", "").encode()) for m in request.messages)
    return Usage(-(-prompt // 4), -(-(len(text.encode()) + reasoning_bytes) // 4))


def reported_usage(u: Any, request: ModelRequest) -> Reported | None:
    """The counts the server reported, or None for no usage object: the one reader of OpenAI-shaped
    usage, for the direct path's JSON and for litellm's usage objects (which keep the fields they do
    not know, ``input_tokens`` or Anthropic's cache names, as extra attributes). A count is missing
    when absent or zero (no request is answered with zero prompt tokens: zeros are a server's
    placeholder); ``input_tokens``/``output_tokens`` (the Anthropic and Responses names, which some
    OpenAI-compatible servers answer with) stand in for a missing ``prompt_tokens`` or
    ``completion_tokens``.

    A count that is not a whole number (text, a list, NaN, infinity, 2.5) is MalformedReply: the
    server's accounting cannot be read, so the attempt is unknown usage and the budget keeps its
    worst case. A negative whole number passes, for the attempt's suspect-usage clamp to charge."""
    if type(u) is dict and u.keys() <= _PLAIN_USAGE:  # the usual usage, as the walk below reads it
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        if type(p) is int and type(c) is int and p > 0 and c > 0:
            return Reported(p, c)
    if u is None:
        return None
    if not _is_object(u):
        raise malformed(f"usage is {kind(u)}, not an object", request)
    prompt = _reported(u, ("prompt_tokens",), request)
    completion = _reported(u, ("completion_tokens", "output_tokens"), request)
    if prompt is not None:
        completion = _with_reasoning(u, prompt, completion)
        # OpenAI's details (the Responses API's under input_tokens_details), DeepSeek's hit count,
        # a litellm proxy's Anthropic names: all parts of prompt_tokens
        details = _details(u, "prompt_tokens_details", request)
        cached = _reported(details, ("cached_tokens",), request) or _reported(
            u, ("prompt_cache_hit_tokens", "cache_read_input_tokens"), request
        )
        written = _reported(details, ("cache_creation_tokens",), request) or _reported(
            u, ("cache_creation_input_tokens",), request
        )
        return Reported(prompt, completion, cached or 0, written or 0, _written_1h(u, details, request))
    prompt = _reported(u, ("input_tokens",), request)
    if prompt is None:
        return Reported(None, completion)
    cached = _reported(_details(u, "input_tokens_details", request), ("cached_tokens",), request)
    if cached is not None:  # the Responses API's: a part of input_tokens
        return Reported(prompt, completion, cached)
    # Anthropic's own names: input_tokens leaves out the tokens read from and written to the cache
    read = _reported(u, ("cache_read_input_tokens",), request) or 0
    written = _reported(u, ("cache_creation_input_tokens",), request) or 0
    return Reported(prompt + read + written, completion, read, written, _written_1h(u, {}, request))


def _with_reasoning(u: Any, prompt: int, completion: int | None) -> int | None:
    """The completion count with the reasoning tokens in it. OpenAI's ``completion_tokens``
    includes ``completion_tokens_details.reasoning_tokens``; Gemini's OpenAI-compatible endpoint
    and gateways that convert Gemini's usage leave them out (``total_tokens`` has them), and the
    thinking, often most of the bill, went unpaid. Added only when ``total_tokens`` says so
    exactly: prompt + completion + reasoning."""
    details = field(u, "completion_tokens_details")
    reasoning = field(details, "reasoning_tokens") if details is not None and _is_object(details) else None
    total = field(u, "total_tokens")
    if type(reasoning) is not int or type(total) is not int or reasoning <= 0:  # bool is no count
        return completion
    if total == prompt + (completion or 0) + reasoning:
        return (completion or 0) + reasoning
    return completion


def _written_1h(u: Any, details: Any, request: ModelRequest) -> int:
    """The prompt tokens written to the cache for an hour: litellm's
    ``prompt_tokens_details.cache_creation_token_details``, else Anthropic's ``cache_creation``."""
    for where, name, path in (
        (details, "cache_creation_token_details", "prompt_tokens_details.cache_creation_token_details"),
        (u, "cache_creation_token_details", ""),
        (u, "cache_creation", ""),
    ):
        if field(where, name) is not None:
            lifetimes = _details(where, name, request, path)
            return _reported(lifetimes, ("ephemeral_1h_input_tokens",), request) or 0
    return 0


def field(u: Any, name: str) -> Any:
    """``u[name]`` of a JSON object, or the attribute of a litellm usage object (None if absent)."""
    return u.get(name) if isinstance(u, dict) else getattr(u, name, None)


def _is_object(value: Any) -> bool:
    """A JSON object, or a parsed one (litellm's usage and details models): not a scalar or list."""
    return isinstance(value, dict) or not isinstance(value, str | bytes | int | float | list | tuple)


def _details(u: Any, name: str, request: ModelRequest, path: str = "") -> Any:
    """``u[name]`` as an object ({} when absent); ``path`` names it in the error when nested."""
    details = field(u, name)
    if details is None:
        return {}
    if not _is_object(details):
        raise malformed(f"usage.{path or name} is {kind(details)}, not an object", request)
    return details


def _reported(u: Any, names: tuple[str, ...], request: ModelRequest) -> int | None:
    for name in names:
        value = field(u, name)
        if value is not None and (count := _count(value, name, request)):
            return count
    return None


def _count(value: Any, name: str, request: ModelRequest) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    shown = scrub_clip(repr(value), 40, secrets_of(request))
    raise malformed(f"usage.{name} is {shown}, not a token count", request)


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def billed_usage(u: Any, request: ModelRequest) -> Usage | None:
    """The usage of a reply moa cannot use, when it reports both its counts readably, else None."""
    try:
        return billed(reported_usage(u, request))
    except MalformedReply:
        return None


def unanswered(
    error: MalformedReply,
    reasoned: bool,
    reported: Callable[[], Reported | None],
    estimate: Callable[[], Usage],
) -> MalformedReply:
    """``error`` of a reply with no answer (``no_answer``), billed as it was charged. One that
    reasoned is billed as a reply with text is: its counts, the missing ones estimated from its
    reasoning (it was paid for), never as unknown usage or as no completion tokens; usage it reports
    that cannot be read is the error then. Any other: its counts when both are there and readable."""
    if reasoned:
        error.usage, error.usage_estimated = usage_with_estimate(reported(), "", estimate, reasoned=True)
        return error
    with contextlib.suppress(MalformedReply):
        error.usage = billed(reported())
    return error


def billed(reported: Reported | None) -> Usage | None:
    """``reported`` as the usage booked for a reply moa cannot use, when it has both counts."""
    if reported is None or reported.prompt is None or reported.completion is None:
        return None
    return Usage(
        reported.prompt, reported.completion, reported.cached, reported.cache_write, reported.cache_write_1h
    )
