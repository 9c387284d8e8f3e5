"""The OpenAI chat-completions protocol as bytes, with no HTTP client in it: the request body and
headers, a reply read into a ``ModelReply``, a server-sent event stream decoded, and a failure
status turned into moa's error. Both clients of the direct path (aiohttp for the network, httpx for
a given transport) speak it through here, so they fail and count usage identically.

When the server reports no usage (some streaming servers ignore ``stream_options``; some report
zeros), usage is estimated as UTF-8 bytes / 4, rounded up, of the messages (prompt) and of the
text (completion); nothing else marks the record as estimated.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic_core import from_json, to_json

from moa.errors import MalformedReply, ModelError, ProviderError, TimedOut
from moa.models.base import (
    ModelReply,
    ModelRequest,
    Reported,
    TokenCallback,
    build_reply,
    usage_with_estimate,
)
from moa.models.errors import error_for_status
from moa.models.providers import NAMED_OPENAI_ENDPOINTS, OPENAI_COMPATIBLE_PREFIXES
from moa.models.wire_usage import (
    billed_usage,
    estimate_usage,
    field,
    kind,
    malformed,
    reported_usage,
    secrets_of,
    unanswered,
)
from moa.scrub import scrub_clip

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_API_BASE",
    "JSON_HEADERS",
    "MAX_ERROR_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_REPLY_BYTES",
    "after_reasoning",
    "asks_stream_usage",
    "connect_timed_out",
    "connection_failed",
    "consume_sse",
    "empty_reason",
    "encode_body",
    "endpoint",
    "header_overrides",
    "headers_for",
    "no_answer",
    "parse_reply",
    "read_error_body",
    "read_reply_body",
    "reasoning_text",
    "refuses_stream_options",
    "status_error",
    "wire_model_name",
]

#: where a model with no ``api_base`` is sent (as litellm does for ``openai/`` models)
DEFAULT_API_BASE = "https://api.openai.com/v1"

#: connecting is bounded even when the agent sets no timeout_s (reading is not: a local model may
#: take minutes, and the runner bounds attempts whose agent sets timeout_s)
CONNECT_TIMEOUT_S = 30.0

#: the longest stream line read before the stream counts as malformed: a server that never sends a
#: newline would otherwise grow the buffer without end
MAX_EVENT_BYTES = 16 * 1024 * 1024

#: the largest non-streamed reply read: more than any max_tokens produces (4M tokens of text), and
#: a server that sends more would otherwise be held in memory whole
MAX_REPLY_BYTES = 16 * 1024 * 1024

#: how much of an error reply is read: its message is cut to 500 characters anyway
MAX_ERROR_BYTES = 64 * 1024

#: the headers of every request, but a stream's ``accept`` (see ``header_overrides``)
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
# one encoder: json.dumps with separators builds a new one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"))
#: the types of a param value ``to_json`` writes exactly as ``json`` does; anything else (a nested
#: object, a list, a datetime ``json`` refuses and ``to_json`` would write) goes through ``json``
_PLAIN = frozenset((str, int, float, bool, type(None)))
#: the usual usage: two counts and their sum, no details (``reported_usage`` reads it in one step)


@functools.lru_cache(maxsize=64)
def endpoint(api_base: str | None) -> str:
    """The completions URL of an api_base."""
    return (api_base or DEFAULT_API_BASE).rstrip("/") + "/chat/completions"


def wire_model_name(model: str) -> str:
    """The model name the server expects: the litellm provider prefix (``openai/``,
    ``hosted_vllm/``...) removed, as litellm itself sends it; a Fireworks name without its account
    (``fireworks_ai/llama-v3p1-8b-instruct``) completed to ``accounts/fireworks/models/...``, as
    litellm completes it and as Fireworks' API needs it (the short name is a 404 there)."""
    prefix, sep, rest = model.partition("/")
    if not sep or (prefix not in OPENAI_COMPATIBLE_PREFIXES and prefix not in NAMED_OPENAI_ENDPOINTS):
        return model
    if prefix == "fireworks_ai" and not rest.startswith("accounts/"):
        return (
            f"accounts/fireworks/{rest}"
            if rest.startswith(("models/", "routers/"))
            else f"accounts/fireworks/models/{rest}"
        )
    return rest


#: named providers that refuse ``stream_options`` (Mistral's API answers a field it does not know
#: with a 422, and sends the usage in its last chunk unasked), as litellm leaves it out for them
_NO_STREAM_OPTIONS = ("mistral/",)


def asks_stream_usage(request: ModelRequest) -> bool:
    """Whether a stream of ``request`` is sent ``stream_options: {include_usage: true}``."""
    return not request.model.startswith(_NO_STREAM_OPTIONS)


def refuses_stream_options(error: ModelError) -> bool:
    """Whether ``error`` is a strict server refusing ``stream_options``, a field it does not know
    (older vLLM, TGI, LM Studio and some proxies answer it with a 400 or a 422 naming the field):
    the stream is sent again without it, its usage then estimated when the server sends none."""
    return error.status_code in (400, 422) and "stream_options" in error.message


def encode_body(
    request: ModelRequest, stream: bool, *, stream_options: bool = True, max_tokens_name: str = "max_tokens"
) -> bytes:
    """The JSON body: the agent's params, then the fields moa owns (they win over params).
    For a server that refused them: ``stream_options=False`` leaves that field out of a stream's,
    and ``max_tokens_name`` sends ``max_tokens`` under another name (``max_completion_tokens``)."""
    body: dict[str, Any] = dict(request.params)
    # litellm's request-shaping arguments, not fields of the API: headers go in the headers (in
    # the body they reached no gateway, and put its key in the JSON), extra_body is merged
    body.pop("extra_headers", None)
    extra = body.pop("extra_body", None)
    if isinstance(extra, dict):
        body.update(extra)
    body["model"] = wire_model_name(request.model)
    body["messages"] = [m if isinstance(m, dict) else dict(m) for m in request.messages]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[max_tokens_name] = request.max_tokens
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if stream:
        body["stream"] = True
        if stream_options and asks_stream_usage(request):
            body["stream_options"] = {"include_usage": True}
    return _encode(body, request.params)


def _encode(body: dict[str, Any], params: Mapping[str, Any]) -> bytes:
    """``body`` as JSON. pydantic-core's ``to_json`` costs a quarter of the ``json`` encoder's
    instructions (about 6k against 23k for a one-message body); it is used when every value is one
    both write alike (moa's own fields, messages of text, params of plain values), so the values
    ``json`` refuses are still refused as they were. What ``to_json`` cannot write (a lone surrogate
    in UTF-8) goes through ``json``, which escapes it as before."""
    if not params or all(type(v) in _PLAIN for v in params.values()):
        try:
            # constants: NaN and Infinity written as ``json`` writes them, not as null
            return to_json(body, inf_nan_mode="constants")
        except ValueError:
            pass
    return _ENCODER.encode(body).encode()


def _loads(content: bytes) -> Any:
    """A reply's JSON. pydantic-core's ``from_json`` costs about a third of ``json.loads``'s
    instructions (16k against 42k for a short reply) and reads what it accepts as ``json`` does;
    what it refuses (a BOM, UTF-16, a lone surrogate's escape, nesting past 200, trailing bytes) is
    read by ``json.loads``, whose result or error is the reply's as before."""
    try:
        return from_json(content)
    except ValueError:
        return json.loads(content)


def headers_for(request: ModelRequest, stream: bool) -> dict[str, str]:
    headers = dict(JSON_HEADERS)
    headers.update(header_overrides(request, stream) or ())
    return headers


def header_overrides(request: ModelRequest, stream: bool) -> dict[str, str] | None:
    """The headers of ``headers_for`` that are not ``JSON_HEADERS``' (a stream's ``accept``, the
    params' ``extra_headers``, the key), to send over a client that sends those by default: None
    when there are none, the usual request, which so costs the client no headers of its own to
    merge (about 9k instructions a call on aiohttp)."""
    extra = request.params.get("extra_headers") if request.params else None
    if not stream and not request.api_key and not isinstance(extra, dict):
        return None
    headers = {"accept": "text/event-stream"} if stream else {}
    if isinstance(extra, dict):
        headers.update({str(k).lower(): str(v) for k, v in extra.items()})
    if request.api_key:
        headers["authorization"] = f"Bearer {request.api_key}"
    return headers


def connection_failed(
    error: BaseException, request: ModelRequest, *, never_sent: bool = False
) -> ProviderError:
    """A transport failure (connect, reset, a header the client refuses to send) as ProviderError;
    the client's message may quote a header value whole, the bearer key with it. ``never_sent``:
    the failure came before a byte of the request left (no connection, a refused header)."""
    detail = scrub_clip(str(error) or type(error).__name__, 500, secrets_of(request))
    return ProviderError(
        f"connection failed: {detail}", model=request.model, node=request.node or None, never_sent=never_sent
    )


def connect_timed_out(error: BaseException, request: ModelRequest) -> TimedOut:
    """No connection within the connect timeout: like a refused one, nothing of the request left."""
    return TimedOut(
        f"timed out connecting: {type(error).__name__}",
        model=request.model,
        node=request.node or None,
        never_sent=True,
    )


def status_error(
    status: int, content: bytes, headers: Mapping[str, str], request: ModelRequest
) -> ModelError:
    return error_for_status(
        status,
        _error_message(content),
        model=request.model,
        node=request.node,
        headers=headers,
        secrets=secrets_of(request),
    )


async def read_reply_body(chunks: AsyncIterator[bytes], declared: int | None, request: ModelRequest) -> bytes:
    """A 2xx body, read whole unless it passes ``MAX_REPLY_BYTES`` (MalformedReply: the server
    answered, so the attempt is unknown usage); ``declared`` is its Content-Length, if any."""
    limit = MAX_REPLY_BYTES
    if declared is not None and declared > limit:
        raise malformed(f"the reply declares {declared} bytes, more than {limit}", request)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise malformed(f"the reply passed {limit} bytes", request)
        parts.append(chunk)
    return b"".join(parts)


async def read_error_body(chunks: AsyncIterator[bytes]) -> bytes:
    """The first ``MAX_ERROR_BYTES`` of an error reply: an HTML error page may be megabytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BYTES:
            break
    return b"".join(parts)[:MAX_ERROR_BYTES]


def reasoning_text(message: Any) -> str:
    """The reasoning a message or a delta sent beside its content: ``reasoning_content``
    (DeepSeek's, vLLM's and llama-server's name) or ``reasoning`` (OpenRouter's, Ollama's); a dict
    or a litellm object. "" when there is none, or it is not text."""
    for name in ("reasoning_content", "reasoning"):
        said = field(message, name)
        if isinstance(said, str) and said:
            return said
    return ""


def _text(content: Any, request: ModelRequest) -> str:
    """A message's or a delta's content: a string, or a list of parts whose ``text`` parts are
    joined (the shape OpenAI's API also accepts and some servers answer in). Anything else is
    MalformedReply: ``str()`` of it would hand a Python repr on as the model's answer."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                raise malformed(f"a content part is {kind(part)}, not an object", request)
            if part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    raise malformed("a text part of the content has no text", request)
                texts.append(part["text"])
        if content and not texts:
            raise malformed("the content has no text part", request)
        return "".join(texts)
    raise malformed(f"the content is {kind(content)}, not text", request)


def _error_message(body: bytes) -> str:
    """The server's error message when the body is JSON, else the body's text: OpenAI's
    ``error.message``, TGI's ``error`` string, vLLM's and Mistral's top-level ``message`` (Mistral's
    an object or a list of pydantic's issues), FastAPI's ``detail`` list. An issue list reads as
    ``stream_options: Extra inputs are not permitted``, naming the field a strict server refused,
    not as a Python repr of it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    return _message_in(data) or body.decode("utf-8", "replace")


def _message_in(data: Any) -> str:
    """The error message a parsed body or stream event says ("" when it says none)."""
    if isinstance(data, dict):
        for value in (data.get("error"), data.get("message"), data.get("detail")):
            if said := _said(value):
                return said
    return ""


def _said(value: Any, depth: int = 0) -> str:
    """The text of an error field: a string, an object's ``message``/``detail``, or pydantic's
    issue list (``[{"loc": ["body", "n"], "msg": "Extra inputs are not permitted"}]``)."""
    if isinstance(value, str):
        return value
    if depth > 3:
        return ""
    if isinstance(value, dict):
        for key in ("message", "detail"):
            if said := _said(value.get(key), depth + 1):
                return said
        return ""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "msg" in v for v in value):
        return "; ".join(_issue(v) for v in value[:5])
    return ""


def _issue(issue: dict[str, Any]) -> str:
    loc = issue.get("loc")
    where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
    return f"{where}: {issue['msg']}" if where else str(issue["msg"])


def parse_reply(content: bytes, request: ModelRequest) -> ModelReply:
    """A whole (non-streamed) 2xx reply."""
    try:
        return _parse_reply(content, request)
    except (ValueError, TypeError, OverflowError) as e:
        # a reply shape the checks below missed: the clients read a ValueError as a refused
        # request ("connection failed"), which a 2xx that arrived is not
        raise malformed(f"{type(e).__name__}: {e}", request) from e


def _parse_reply(content: bytes, request: ModelRequest) -> ModelReply:
    try:
        data = _loads(content)
    except (ValueError, RecursionError):  # RecursionError: arrays nested past the interpreter's limit
        snippet = scrub_clip(content[:2048].decode("utf-8", "replace"), 80, secrets_of(request))
        raise malformed(f"not JSON: {snippet!r}", request) from None
    if not isinstance(data, dict):
        raise malformed("not a JSON object", request)
    try:
        return _reply_of(data, request)
    except MalformedReply as e:
        # billed all the same: its counts are the attempt's, not an unknown worst case
        if e.usage is None:
            e.usage = billed_usage(data.get("usage"), request)
        raise


def _reply_of(data: dict[str, Any], request: ModelRequest) -> ModelReply:
    choices = data.get("choices")
    if not choices and _is_error(data):
        raise _error_reply(data, request)
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise malformed("no choices", request)
    message = choices[0].get("message")
    body = message.get("content") if isinstance(message, dict) else None
    if body is None and isinstance(message, dict) and isinstance(message.get("refusal"), str):
        # OpenAI's refusal (content null, ``refusal`` the model's words) is the model's answer: as
        # "no content" it was retried, paid again, and its words lost from the record
        body = message["refusal"]
    said = message if isinstance(message, dict) else {}
    reasoned = bool(said.get("reasoning_content") or said.get("reasoning"))
    finish = _finish(choices[0])
    if body is None or isinstance(body, str):  # null, "" or blank (beside reasoning): see no_answer
        tools = bool(said.get("tool_calls"))
        if error := no_answer(body, finish, reasoned, tools, request.model, request.node):
            estimate = functools.partial(estimate_usage, request, "", len(reasoning_text(message).encode()))
            raise unanswered(error, reasoned, lambda: reported_usage(data.get("usage"), request), estimate)
    text = _text(body, request)
    reasoning = reasoning_text(message) if reasoned else ""  # neither name holds text otherwise
    usage, estimated = usage_with_estimate(
        reported_usage(data.get("usage"), request),
        text,
        lambda: estimate_usage(request, text, len(reasoning.encode())),
        reasoned=bool(reasoning),
    )
    return build_reply(text, usage, str(data.get("model") or ""), finish, estimated, service_tier(data))


def empty_reason(finish: str | None, reasoned: bool, tool_calls: bool) -> str:
    """Why a reply has no text, from what it said, as ``": ..."`` ("" when it said nothing): a
    reasoning model (DeepSeek-R1, vLLM's reasoning parsers) whose ``max_tokens`` ran out while it
    reasoned answers ``content: null``, and every retry paid for the same end."""
    if tool_calls:
        return ": the model answered with tool calls, which moa does not run"
    if finish == "length":
        where = "while the model was still reasoning" if reasoned else "before any text"
        return f": cut at max_tokens {where} (finish_reason `length`); raise max_tokens"
    return f" (finish_reason `{finish}`)" if finish and finish != "stop" else ""


def after_reasoning(finish: str | None, model: str, node: str | None) -> MalformedReply:
    """A reply that reasoned and answered nothing: one wording wherever its reasoning came (a
    ``<think>`` block in the text, which litellm takes out of a whole reply itself, or
    ``reasoning_content``) and on every path, whole or streamed."""
    why = empty_reason(finish, True, False)
    return _rejected(f"malformed reply: no answer after the model's reasoning{why}", model, node)


def no_answer(
    text: str | None, finish: str | None, reasoned: bool, tool_calls: bool, model: str, node: str | None
) -> MalformedReply | None:
    """The error of a reply whose ``text`` is no answer, or None when it stands (a ``""`` that
    finished normally, which the node's check refuses as empty): blank after reasoning (see
    ``after_reasoning``), else null or empty for a reason ``empty_reason`` names."""
    if reasoned and not tool_calls and not (text or "").strip():
        return after_reasoning(finish, model, node)
    why = "" if text else empty_reason(finish, reasoned, tool_calls)
    if text is None or why:
        return _rejected(f"malformed reply: no message content{why}", model, node)
    return None


def _rejected(message: str, model: str, node: str | None) -> MalformedReply:
    # a reply read whole that holds no answer is the model's doing, as an empty text is (a judge's
    # reply without a verdict), not a body moa could not read: ``rejected``
    error = MalformedReply(message, model=model, node=node or None)
    error.rejected = True
    return error


def _is_error(data: dict[str, Any]) -> bool:
    """An error said in a 2xx body or stream event: an ``error`` that is not null (OpenAI's,
    OpenRouter's and llama-server's object, TGI's string) or vLLM's ``"object": "error"``."""
    return bool(data.get("error")) or data.get("object") == "error"


def _error_reply(data: dict[str, Any], request: ModelRequest) -> ModelError:
    """A 2xx whose body is an error (OpenRouter and some gateways answer an upstream failure so):
    the error its ``code`` names when that is an HTTP status, as litellm reads it, else a
    ProviderError; either way with the server's words, which "no choices" lost."""
    message = _message_in(data) or _ENCODER.encode(data)
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else data.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return error_for_status(
            code, message, model=request.model, node=request.node, secrets=secrets_of(request)
        )
    detail = scrub_clip(" ".join(message.split()), 500, secrets_of(request))
    return ProviderError(f"provider error: {detail}", model=request.model, node=request.node or None)


def service_tier(data: dict[str, Any]) -> str | None:
    """The reply's (or an event's) ``service_tier``, when it names one."""
    tier = data.get("service_tier")
    return tier if isinstance(tier, str) and tier else None


def _finish(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


class _Stream:
    """What a stream's events said so far."""

    __slots__ = (
        "events",
        "finish",
        "model",
        "on_token",
        "other",
        "other_size",
        "parts",
        "reasoned",
        "reasoning_bytes",
        "request",
        "service_tier",
        "size",
        "tool_calls",
        "usage",
    )

    def __init__(self, request: ModelRequest, on_token: TokenCallback) -> None:
        self.request = request
        self.on_token = on_token
        self.parts: list[str] = []
        self.usage: Reported | None = None
        self.finish: str | None = None
        self.model = ""
        self.service_tier: str | None = None
        self.events = 0
        #: characters of text received: bounded like a whole reply's bytes
        self.size = 0
        #: the lines before the first event that are no part of a stream, and their size
        self.other: list[bytes] = []
        self.other_size = 0
        #: whether deltas carried reasoning or tool calls: what an answer without text was instead
        self.reasoned = self.tool_calls = False
        #: the UTF-8 bytes of the reasoning deltas sent: completion tokens an estimate counts
        self.reasoning_bytes = 0

    def line(self, line: bytes) -> bool:
        """Read one line; True once the stream says ``[DONE]``."""
        if not line.startswith(b"data:"):
            # blank separators, `event:` and `:` comment lines; anything else before the first
            # event is kept (bounded): a body that is no stream may be a JSON error
            if (
                not self.events
                and self.other_size < MAX_ERROR_BYTES
                and not line.startswith((b":", b"event:"))
            ):
                self.other.append(line)
                self.other_size += len(line)
            return False
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return True
        request = self.request
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            snippet = scrub_clip(payload.decode("utf-8", "replace"), 80, secrets_of(request))
            raise malformed(f"stream event is not JSON: {snippet!r}", request) from None
        if not isinstance(chunk, dict):
            raise malformed("stream event is not a JSON object", request)
        self.events += 1
        if _is_error(chunk):
            # also beside choices: OpenRouter's mid-stream error comes in a chunk whose choice ends
            # with finish_reason "error", and the text so far is no answer
            said = _message_in(chunk) or payload.decode("utf-8", "replace")
            detail = scrub_clip(" ".join(said.split()), 500, secrets_of(request))
            raise ProviderError(
                f"provider error in stream: {detail}", model=request.model, node=request.node or None
            )
        self.model = str(chunk.get("model") or self.model)
        self.service_tier = service_tier(chunk) or self.service_tier
        # the last usage reported wins (servers that repeat it send running totals); an event
        # without counts keeps it
        raw = chunk.get("usage")
        if raw is None and isinstance(chunk.get("x_groq"), dict):
            raw = chunk["x_groq"].get("usage")  # Groq's last chunk, where stream_options goes unread
        usage = reported_usage(raw, request)
        if usage is not None and (usage.prompt, usage.completion) != (None, None):
            self.usage = usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise malformed("stream event's choices are not a list", request)
        for choice in choices:
            # the first choice is the answer, as in a whole reply: with `n` in an agent's params the
            # others' deltas came interleaved with it into one garbled text
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is None and isinstance(delta, dict) and isinstance(delta.get("refusal"), str):
                content = delta["refusal"]  # a refusal streams its words here
            piece = _text(content, request) if content is not None else ""
            if not piece and isinstance(delta, dict):
                self.reasoned = self.reasoned or bool(
                    delta.get("reasoning_content") or delta.get("reasoning")
                )
                self.tool_calls = self.tool_calls or bool(delta.get("tool_calls"))
            if isinstance(delta, dict) and (reasoning := reasoning_text(delta)):
                # counted, not kept: only an estimate needs it, and nothing bounds its size
                self.reasoning_bytes += len(reasoning.encode())
            if piece:
                self.size += len(piece)
                if self.size > MAX_REPLY_BYTES:
                    # a server streaming without end would otherwise grow the answer without end
                    raise malformed(f"the streamed text passed {MAX_REPLY_BYTES} characters", request)
                self.parts.append(piece)
                self.on_token(piece)
            finish = _finish(choice)
            if finish == "error":  # OpenRouter's: the provider failed mid-answer
                raise ProviderError(
                    "provider error in stream: it ended with finish_reason `error`",
                    model=request.model,
                    node=request.node or None,
                )
            self.finish = finish or self.finish
        return False

    def reply(self, done: bool) -> ModelReply:
        """The reply once the body ended; ``done`` when it ended with ``[DONE]``."""
        if not self.events:
            # a 200 whose body is a JSON error, not a stream (gateways answer a failure so): its words
            try:
                data = json.loads(b"".join(self.other))
            except (ValueError, RecursionError):
                data = None
            if isinstance(data, dict) and not data.get("choices") and _is_error(data):
                raise _error_reply(data, self.request)
            raise malformed("the stream carried no events", self.request)
        if not done and self.finish is None:
            # a server that dies mid-answer, or a proxy that cuts it, ends a close-delimited or
            # chunked body as cleanly as a finished one: only [DONE] or a finish_reason says the
            # answer is whole, and a cut one must not pass for an answer
            raise malformed("the stream ended before [DONE] and without a finish_reason", self.request)
        text = "".join(self.parts)
        model, node = self.request.model, self.request.node
        if error := no_answer(text, self.finish, self.reasoned, self.tool_calls, model, node):
            estimate = functools.partial(estimate_usage, self.request, "", self.reasoning_bytes)
            raise unanswered(error, self.reasoned, lambda: self.usage, estimate)
        usage, estimated = usage_with_estimate(
            self.usage,
            text,
            lambda: estimate_usage(self.request, text, self.reasoning_bytes),
            reasoned=self.reasoning_bytes > 0,
        )
        return ModelReply(
            text, usage, self.model, self.finish, usage_estimated=estimated, service_tier=self.service_tier
        )


async def consume_sse(
    chunks: AsyncIterator[bytes], request: ModelRequest, on_token: TokenCallback
) -> ModelReply:
    """A 2xx streamed reply: ``on_token`` with each text delta, the joined text, the last usage.
    A body that ends before ``[DONE]`` and without a ``finish_reason`` was cut: MalformedReply.

    Lines split on CR, LF or CRLF; a CRLF cut between two chunks makes one extra empty line, which
    SSE reads as a separator like the one before it."""
    stream = _Stream(request, on_token)
    # the unfinished line's pieces, joined once its end comes (a long line costs one copy, not one
    # per chunk)
    pending: list[bytes] = []
    size = 0
    async for chunk in chunks:
        if b"\n" not in chunk and b"\r" not in chunk:
            pending.append(chunk)
            size += len(chunk)
            if size > MAX_EVENT_BYTES:
                raise malformed(f"a stream line passed {MAX_EVENT_BYTES} bytes", request)
            continue
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
            size = 0
        lines = chunk.splitlines(keepends=True)
        if lines[-1][-1:] not in b"\r\n":
            last = lines.pop()
            pending.append(last)
            size = len(last)
        for line in lines:
            if stream.line(line):
                return stream.reply(done=True)
    # a last event with no line end after it
    done = stream.line(b"".join(pending)) if pending else False
    return stream.reply(done=done)
