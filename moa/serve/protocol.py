"""The OpenAI chat completions wire format as moa serves it: the request body (validated with
pydantic), the reply and chunk objects, and the error shape with the status each moa error maps to.
No web framework here, so this is testable and typed on its own."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moa.errors import (
    BudgetExceeded,
    MalformedReply,
    MoAError,
    ModelError,
    ProviderError,
    QuorumNotReached,
    RateLimited,
    RequestRefused,
    RequestRejected,
    TimedOut,
    UserError,
)
from moa.results import CallRecord, NodeResult, RunResult

__all__ = [
    "ApiError",
    "ChatRequest",
    "chunk",
    "completion",
    "empty_user_turn",
    "error_body",
    "error_for",
    "invalid_body",
    "moa_extension",
]

# OpenAI ignores fields it does not know; so do we (clients send `user`, `seed`, `tools`: []...),
# but a known field with the wrong type is refused, so strict types and no coercion.
_REQUEST = ConfigDict(extra="ignore", frozen=True, strict=True)


class TextPart(BaseModel):
    """One part of a message whose ``content`` is a list: only text parts are served."""

    model_config = _REQUEST

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One turn of the chat. ``developer`` is OpenAI's newer name for ``system``."""

    model_config = _REQUEST

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = _REQUEST

    include_usage: bool | None = None


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``. ``temperature``, ``max_tokens`` and
    ``max_completion_tokens`` are validated but ignored: each agent keeps its own settings."""

    model_config = _REQUEST

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # a number so that its type is checked; more than one choice is refused by unsupported()
    n: int | None = Field(None, ge=1)
    moa_trace: bool | None = None
    """moa's extension: include each call's messages and reply in the reply's ``moa`` object."""
    # accepted by the schema so that their presence is answered with a 400 naming them, never
    # silently ignored: a client asking for tool calls must not get plain text back
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)

    def unsupported(self) -> tuple[str, str] | None:
        """The first field asking for what a topology cannot give (tool calls, JSON mode), and why."""
        if self.model_fields_set <= _ALWAYS_SERVED:
            return None  # most requests: nothing below was sent, so nothing to look at
        for name in ("tools", "functions"):
            if getattr(self, name):
                return (
                    name,
                    f"`{name}` is not supported: the served topologies answer in text, not tool calls",
                )
        for name in ("tool_choice", "function_call"):
            value = getattr(self, name)
            if value is not None and value != "none":
                return (
                    name,
                    f"`{name}` is not supported: the served topologies answer in text, not tool calls",
                )
        if self.n is not None and self.n > 1:
            return "n", f"`n` is {self.n}: a topology gives one answer per request (send {self.n} requests)"
        if self.logprobs or self.top_logprobs:
            # a mixture's answer has no token probabilities; `logprobs: null` would read as none asked
            name = "logprobs" if self.logprobs else "top_logprobs"
            return name, f"`{name}` is not supported: a topology's answer has no token log probabilities"
        fmt = self.response_format
        if fmt is not None:
            try:
                self.output_schema()
            except ValueError as e:
                return "response_format", str(e)
        return None

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema ``response_format`` asks the output node to answer in (None for text):
        ``json_schema`` gives its ``schema``, ``json_object`` any JSON object."""
        fmt = self.response_format
        if fmt is None:
            return None
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        if kind == "text":
            return None
        if kind == "json_object":
            return {"type": "object"}
        if kind == "json_schema" and isinstance(fmt, dict):
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise ValueError("`response_format.json_schema.schema` must be a JSON Schema object")
            # a schema the answer's check cannot read is refused by the run, before any call
            # (``RequestRefused``, a 400 naming this field)
            return schema
        raise ValueError(f"`response_format` type {kind!r} is not one of text, json_object, json_schema")

    @field_validator("messages")
    @classmethod
    def _last_turn_is_users(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v and v[-1].role != "user":
            raise ValueError("the last message must be the user's turn")
        return v

    def chat(self) -> list[dict[str, str]]:
        """The messages as the runner takes them (text only, ``developer`` folded into ``system``)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options is not None and self.stream_options.include_usage)


#: the fields whose every valid value is served (the others are checked by ``unsupported``)
_ALWAYS_SERVED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "moa_trace",
    }
)


def empty_user_turn(chat: Sequence[Mapping[str, str]]) -> int | None:
    """The index of the first user message of ``chat`` (``ChatRequest.chat``) with no text but
    whitespace, as ``moa run`` refuses an empty ``--prompt``: every agent would be paid to answer
    nothing. Other roles may be empty (an assistant turn's ``content`` is null when it called
    tools). Read off the messages the run takes, so their text is joined once a request."""
    for i, m in enumerate(chat):
        if m["role"] == "user" and not m["content"].strip():
            return i
    return None


class ApiError(Exception):
    """An error reply: status, OpenAI ``type``, message, ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry: bool | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        #: sent as ``x-should-retry`` so the official clients skip retries that cannot help
        self.retry = retry
        #: sent as ``retry-after`` (whole seconds, rounded up), which the official clients wait
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "none") or part.startswith(("function-", "literal[")):
            continue  # pydantic's union-branch names: not fields of the body
        else:
            out += f".{part}" if out else part
    return out


def invalid_body(err: ValidationError) -> ApiError:
    """A 400 naming the first field pydantic refused (``messages[1].role``), and how many others."""
    errors = err.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first['ctx'].get('error', first['msg'])}")
    if first["type"] == "model_type" and not first["loc"]:
        return ApiError(400, "the request body must be a JSON object")
    param = _loc(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if "content" in first["loc"]:
        # a union's branches each complain; one sentence says what is served
        loc = first["loc"]
        param = _loc(loc[: loc.index("content") + 1])
        msg = "must be a string or a list of text parts (images, audio and files are not served)"
        return ApiError(400, f"invalid request body: `{param}`: {msg}", param=param)
    if first["type"] == "missing":
        msg = "required field is missing"
    elif first["type"] not in ("value_error",) and not isinstance(first.get("input"), (dict, list)):
        msg = f"{msg} (got {first.get('input')!r})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if not param:
        return ApiError(400, f"invalid request body: {msg}{more}")
    return ApiError(400, f"invalid request body: `{param}`: {msg}{more}", param=param)


#: a provider's refusal of what it was sent (too long for the context, too large, unprocessable):
#: the request's content, so the client's to fix; a 401/403/404 is the server's key or model
_CONTENT_STATUSES = frozenset({400, 413, 422})
_CONFIG_STATUSES = frozenset({401, 403, 404})


def _upstream_refused(e: MoAError) -> RequestRejected | None:
    """The provider's refusal of the request's content that failed the run, if that is why it
    failed: the error itself, or every failure of a fan-in that missed its quorum for it."""
    if isinstance(e, RequestRejected):
        return e if e.status_code in _CONTENT_STATUSES else None
    if isinstance(e, QuorumNotReached) and e.errors:
        found = [_upstream_refused(x) for x in e.errors]
        return found[0] if all(found) else None
    return None


def _misconfigured(e: MoAError) -> bool:
    """Whether the server's configuration failed the run: a ``UserError`` out of it (a key not set,
    a model file missing), a provider refusing the server's key or model, or a fan-in that missed
    its quorum for one of these (its message would carry the provider's text)."""
    if isinstance(e, QuorumNotReached):
        return any(_misconfigured(x) for x in e.errors)
    if isinstance(e, RequestRejected):
        return e.status_code in _CONFIG_STATUSES
    return isinstance(e, UserError)


def _provider_said(e: ModelError) -> str:
    """What went wrong with a model call, in moa's words alone: the provider's own text (a 402's
    billing account, a 429's organisation, a 5xx's internals) and the server's model names stay in
    the server's log."""
    http = f" (HTTP {e.status_code})" if e.status_code else ""
    if isinstance(e, RateLimited):
        what = f"the provider rate-limited the request{http}"
    elif isinstance(e, TimedOut):
        # a run's own deadline names no model: its message is moa's and says the limit passed
        what = f"the provider timed out{http}" if e.model else e.message
    elif isinstance(e, RequestRejected):
        what = f"the provider refused the request{http}"
    elif isinstance(e, MalformedReply):
        what = "the provider's reply could not be read"
    elif isinstance(e, ProviderError):
        what = f"the provider failed{http}" if http else "the provider failed or could not be reached"
    else:
        what = f"the model call failed{http}"
    return f"node `{e.node}`: {what}" if e.node else what


def _client_message(e: MoAError) -> str:
    """The text of a failed run a client may read (see ``_provider_said``); a fan-in that missed
    its quorum names its first failure in the same words."""
    if isinstance(e, ModelError):
        return _provider_said(e)
    if isinstance(e, QuorumNotReached):
        first = f"; first failure: {_client_message(e.errors[0])}" if e.errors else ""
        return f"node `{e.node}` needs {e.needed} of its inputs but only {e.answered} answered{first}"
    return str(e)


REQUEST_FIELDS = {"output_type": "response_format", "prompt": "messages"}
"""The request field each run argument a ``RequestRefused`` names comes from."""


def error_for(e: MoAError, *, model: str = "") -> ApiError:
    """How a failed run is reported: provider failures 502 (a rate limit 429 with its
    ``Retry-After``), a passed deadline 504, budget and quorum failures 503 (the server, not the client, is short of something), a misconfigured
    agent 500. A provider's 400/413/422 (a prompt over the context window) is the client's 400
    (``upstream_invalid_request``); its 401/403/404 (the server's key or model) a 500 that says
    nothing of it, as a key not set. Every other upstream failure is told in moa's words with its
    HTTP status (``_client_message``): the provider's text is for the server's log.

    A run refusing what the request asked (``RequestRefused``) is a 400 naming the request field;
    any other ``UserError`` out of the run is the server's configuration (a key not set, a model
    file missing): the client is told that much and no more, since the message names the server's
    files and variables; the server logs it (``app``)."""
    name = "".join("_" + c.lower() if c.isupper() else c for c in type(e).__name__).lstrip("_")
    if isinstance(e, RequestRefused):
        param = REQUEST_FIELDS.get(e.field, e.field)
        return ApiError(400, f"`{param}`: {e.reason}", param=param, code="unsupported_parameter", retry=False)
    refused = _upstream_refused(e)
    if refused is not None:
        # OpenAI's own answer to a prompt over the context window; the provider's text (masked of
        # keys where it entered moa) says what to shorten
        return ApiError(
            400,
            f"the provider refused the request: {refused}",
            code="upstream_invalid_request",
            retry=False,
        )
    if _misconfigured(e):
        what = f"the model `{model}`" if model else "this model"
        return ApiError(
            500,
            f"the server is not configured to run {what} (its log says why)",
            type="server_error",
            code="server_misconfigured",
            retry=False,
        )
    if isinstance(e, TimedOut):
        return ApiError(504, _client_message(e), type="server_error", code="timeout")
    # a failure no retry mends (an account out of quota or credit): a client's retry would re-run
    # the topology and pay its other calls again (the openai SDK retries a 429 and a 5xx)
    retry = None if not isinstance(e, ModelError) or e.retryable else False
    if isinstance(e, RateLimited):
        # the provider's rate limit outlasted the agent's retries: the client is told to slow
        # down, and when, as a provider would tell it (a 502 gave it neither)
        return ApiError(
            429,
            _client_message(e),
            type="server_error",
            code="upstream_rate_limited",
            retry=retry,
            retry_after_s=e.retry_after_s,
        )
    if isinstance(e, ModelError):
        return ApiError(502, _client_message(e), type="server_error", code=name, retry=retry)
    if isinstance(e, BudgetExceeded):
        return ApiError(503, str(e), type="server_error", code="budget_exceeded", retry=False)
    if isinstance(e, QuorumNotReached):
        # moa retried each worker already; a client's retry re-runs the whole topology, paying
        # the workers that answered again (the openai SDK retries a 5xx twice by default)
        return ApiError(503, _client_message(e), type="server_error", code="quorum_not_reached", retry=False)
    return ApiError(500, "internal server error", type="server_error", code=name)


#: a provider's refusal of the server's key or model as ``moa.models.errors`` words it, up to the
#: end of the provider's text (which names keys, projects and models)
_SERVER_REFUSAL = re.compile(r"request rejected \((401|403|404)\): .*", re.DOTALL)
_WITHHELD = r"request rejected (\1): the provider refused the server's key or model (not shown to clients)"
#: any other provider status as ``moa.models.errors`` words it, but a refusal of the request's
#: content (400/413/422), whose words are the client's to read (they say what to shorten)
_CONTENT = "|".join(rf"{status}\)" for status in sorted(_CONTENT_STATUSES))
_PROVIDER_SAID = re.compile(
    rf"(request rejected|rate limited|provider error|provider timed out) \((?!{_CONTENT})(\d+)\): .*",
    re.DOTALL,
)
_SAID_WITHHELD = r"\1 (\2): the provider's message is in the server's log (not shown to clients)"


def _for_client(error: str | None) -> str | None:
    """An error text of a call or node as a client may read it: a provider's refusal of the
    server's own key or model loses the provider's words, as the failed run's 500 does, and so
    does any other provider failure but a refusal of the request's content (as the failed run's
    429, 502, 503 and 504 do)."""
    if error is None:
        return None
    return _PROVIDER_SAID.sub(_SAID_WITHHELD, _SERVER_REFUSAL.sub(_WITHHELD, error))


def _call(record: CallRecord, trace: bool) -> dict[str, Any]:
    d = record.to_dict(trace=trace)
    if record.error is not None:
        d["error"] = _for_client(record.error)
    # a call its retry saved has no error of its own, but its failed attempts carry the provider's
    # words all the same
    for a in d["attempt_log"]:
        if a["error"] is not None:
            a["error"] = _for_client(a["error"])
    return d


def _node(node: NodeResult) -> dict[str, Any]:
    d = node.to_dict()
    if node.error is not None:
        d["error"] = _for_client(node.error)
    return d


def _shares(
    calls: Sequence[CallRecord], dicts: Sequence[dict[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``by_node`` and ``by_model`` as ``RunResult.to_dict`` gives them (``CostShare.to_dict``'s
    keys, summed in the same order), built in one pass over the calls without a ``CostShare``;
    each call's ``cost_usd_max`` is read from its reply dict (``dicts``), not worked out again."""
    by_node: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    for c, d in zip(calls, dicts, strict=True):
        cost, worst, usage = c.cost_usd, d["cost_usd_max"], c.usage
        for shares, key in ((by_node, c.node), (by_model, c.model)):
            share = shares.get(key)
            if share is None:
                # a key's first call (most runs: every key's only one) is its share as it stands;
                # sums start from 0 as CostShare's do, so a -0.0 cost still sums to 0.0
                shares[key] = {
                    "cost_usd": 0.0 + cost,
                    "cost_usd_max": 0.0 + worst,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "calls": 1,
                }
                continue
            share["cost_usd"] += cost
            share["cost_usd_max"] += worst
            share["prompt_tokens"] += usage.prompt_tokens
            share["completion_tokens"] += usage.completion_tokens
            share["calls"] += 1
    return {"by_node": by_node, "by_model": by_model}


def moa_extension(result: RunResult, *, trace: bool = False) -> dict[str, Any]:
    """The ``moa`` object ordinary clients ignore: the run's cost and per-node account; with
    ``trace``, each call's messages and reply too. These keys of ``RunResult.to_dict`` are built
    alone: picking them out of the whole dict took half as long again (5 vs 3.4 µs a reply). A
    call that failed because the provider refused the server's key or model (a worker a quorum did
    without) says so without the provider's words."""
    calls = [_call(c, trace) for c in result.calls]
    return {
        "run_id": result.run_id,
        "cost_usd": result.cost_usd,
        "latency_s": result.latency_s,
        "critical_path_s": result.critical_path_s,
        **_shares(result.calls, calls),
        "calls": calls,
        "nodes": {k: _node(v) for k, v in result.nodes.items()},
    }


def new_id() -> str:
    # 128 random bits as uuid4 has, without a system call per reply (random reseeds after fork);
    # as 16 bytes' hex: a fifth fewer instructions than formatting the integer with `032x`
    return "chatcmpl-moa" + random.getrandbits(128).to_bytes(16, "big").hex()


def finish_reason(result: RunResult) -> str:
    """OpenAI's ``finish_reason`` of the run's answer: ``length`` when the call that wrote it was cut
    at ``max_tokens`` (a client may continue it, or say it is incomplete), else ``stop``."""
    return "length" if result.finish_reason == "length" else "stop"


def completion(model: str, result: RunResult, *, trace: bool = False) -> dict[str, Any]:
    """A ``chat.completion`` object for a finished run."""
    return {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                # JSON mode: the parsed value alone, without the prose or fences around it
                "message": {
                    "role": "assistant",
                    "content": result.output
                    if result.parsed is None
                    else json.dumps(result.parsed, ensure_ascii=False),
                    "refusal": None,
                },
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": result.usage.to_dict(),
        "moa": moa_extension(result, trace=trace),
    }


def chunk(
    head: dict[str, Any],
    delta: dict[str, Any] | None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    with_usage: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    out: dict[str, Any] = {**head, "object": "chat.completion.chunk"}
    if delta is None:
        out["choices"] = []
    else:
        out["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    if with_usage:
        out["usage"] = usage
    if extra:
        out.update(extra)
    return out
