"""The ``Model`` protocol: the one shape every backend (litellm, direct OpenAI-compatible HTTP, the
embedded llama.cpp model, the test fakes) has. A backend makes exactly one attempt per call;
retries, fallbacks, rate limits, budgets and records belong to the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from moa.results import Usage, build_usage, draft_class

__all__ = [
    "Message",
    "Model",
    "ModelReply",
    "ModelRequest",
    "Reported",
    "TokenCallback",
    "usage_with_estimate",
]

#: a chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``
Message = Mapping[str, str]

#: called with each text delta as a streamed reply decodes
TokenCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One attempt at one completion, fully resolved (the key read from the environment)."""

    model: str
    messages: Sequence[Message]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: Sequence[str] | None = None
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float | None = None
    #: pass-through completion arguments (``params`` of the agent)
    params: Mapping[str, Any] = field(default_factory=dict)
    #: the node making the call, for error messages only
    node: str = ""
    #: called by a backend once the request leaves, after any wait inside the backend (a local
    #: connection slot, the embedded model, litellm's worker threads); the runner starts
    #: ``timeout_s`` and the latency there. Backends that never call it are timed from the start of
    #: ``complete``. Only ``reports_send = True`` backends are trusted to call it before anything
    #: can be billed: for the others an attempt counts as sent from the start of ``complete``.
    on_sent: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: awaited by a backend right before the request leaves (before ``on_sent``, after any wait
    #: inside the backend): the runner re-takes the request's rate-limit stamps there, waiting
    #: again if the window filled while the request waited, so the limit holds at the provider
    before_send: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    def cache_key_fields(self) -> dict[str, Any]:
        """The request as plain data, without the key: what the experiment call cache hashes."""
        return {
            "model": self.model,
            "messages": [dict(m) for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": list(self.stop) if self.stop else None,
            "api_base": self.api_base,
            "params": dict(self.params),
        }


_RequestDraft = draft_class(ModelRequest)


def build_request(
    *,
    model: str,
    messages: Sequence[Message],
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    stop: Sequence[str] | None,
    api_base: str | None,
    api_key: str | None,
    timeout_s: float | None,
    params: Mapping[str, Any],
    node: str,
    on_sent: Callable[[], None] | None,
    before_send: Callable[[], Awaitable[None]] | None,
) -> ModelRequest:
    """``ModelRequest(...)`` with every field given, at a sixth of the cost (``draft_class``): a
    call builds one per model it tries."""
    r: Any = _RequestDraft()
    r.model = model
    r.messages = messages
    r.temperature = temperature
    r.max_tokens = max_tokens
    r.top_p = top_p
    r.stop = stop
    r.api_base = api_base
    r.api_key = api_key
    r.timeout_s = timeout_s
    r.params = params
    r.node = node
    r.on_sent = on_sent
    r.before_send = before_send
    r.__class__ = ModelRequest
    return r  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ModelReply:
    """What one successful attempt returned."""

    text: str
    usage: Usage
    #: the model name the provider reported (may differ from the request's)
    model: str = ""
    finish_reason: str | None = None
    #: True when the provider reported no usage (absent, or all zeros) and ``usage`` is moa's count
    #: of the text sent and received, not the provider's bill
    usage_estimated: bool = False
    #: the service tier the provider says it served the request at (OpenAI's ``service_tier``:
    #: ``default``, ``flex``, ``priority``), which sets the price; None when it did not say
    service_tier: str | None = None


_ReplyDraft = draft_class(ModelReply)


def build_reply(
    text: str,
    usage: Usage,
    model: str,
    finish_reason: str | None,
    usage_estimated: bool,
    service_tier: str | None,
) -> ModelReply:
    """``ModelReply(...)`` with every field given, at a fifth of the cost (``draft_class``)."""
    r: Any = _ReplyDraft()
    r.text = text
    r.usage = usage
    r.model = model
    r.finish_reason = finish_reason
    r.usage_estimated = usage_estimated
    r.service_tier = service_tier
    r.__class__ = ModelReply
    return r  # type: ignore[no-any-return]


class Reported(NamedTuple):
    """The counts a provider reported; None for a count it did not report. The cache counts
    (parts of the prompt's, see ``Usage``) are 0 when not reported."""

    prompt: int | None
    completion: int | None
    cached: int = 0
    cache_write: int = 0
    #: the part of ``cache_write`` written for an hour (Anthropic's 1h lifetime)
    cache_write_1h: int = 0


def usage_with_estimate(
    reported: Reported | None, text: str, estimate: Callable[[], Usage], *, reasoned: bool = False
) -> tuple[Usage, bool]:
    """The usage a reply is charged, and whether any of it is estimated: each count the provider
    reported, and ``estimate``'s for each it did not. A reply with text, or with reasoning sent
    beside it (``reasoned``), has completion tokens, so only the missing completion count of a reply
    that wrote neither is 0; a prompt always has tokens. Shared by the litellm path, so both paths
    charge the same reply the same."""
    prompt, completion, cached, cache_write, write_1h = (
        reported if reported is not None else (None, None, 0, 0, 0)
    )
    if completion is None and not text and not reasoned:
        # a reply that only reasoned was booked no completion tokens, its retries too
        completion = 0
    if prompt is not None and completion is not None:
        return build_usage(prompt, completion, cached, cache_write, write_1h), False
    guess = estimate()
    return (
        Usage(
            guess.prompt_tokens if prompt is None else prompt,
            guess.completion_tokens if completion is None else completion,
            # cache counts without the prompt's they are parts of cannot be placed
            0 if prompt is None else cached,
            0 if prompt is None else cache_write,
            0 if prompt is None else write_1h,
        ),
        True,
    )


@runtime_checkable
class Model(Protocol):
    """A backend: one attempt per ``complete`` call, raising ``moa.ModelError`` subclasses.

    ``complete`` is all a backend needs (a user's, passed as ``Runner(models=...)``, type-checks
    with it alone). Optional attributes, read when present: ``local = True`` for an in-process model
    whose cost is a local-compute figure; ``async aclose()``, which ``Runner.aclose`` calls on the
    backends it made itself (never on a user's); and two that say how the backend reports sending
    (see ``ModelRequest.on_sent``): ``reports_send = True``, it always calls ``on_sent`` before the
    request can reach the provider, so ``timeout_s`` starts there and an attempt that never called
    it is billed nothing; ``send_wait_s``, it calls ``on_sent`` on most paths but not surely, so an
    attempt it has not reported sending is cut ``timeout_s + send_wait_s`` after it began."""

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        """Send ``request`` once. With ``on_token``, stream and call it with each text delta."""
        ...
