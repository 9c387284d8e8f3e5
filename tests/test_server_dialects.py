"""What real OpenAI-compatible servers refuse and send, over loopback HTTP on both paths (the direct
one and litellm): the chat templates of vLLM and llama-server that refuse a second system message,
OpenRouter's and llama-server's error events after a 200, gateways that answer an error with a 200,
Mistral's and FastAPI's refusals of a field they do not know, answers cut at max_tokens, reasoning
models' replies and usage (DeepSeek, vLLM, Gemini), Groq's and Fireworks' own conventions."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import httpx
import pytest

import moa
from moa.serve import create_app
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, threaded_server
from tests.rawhttp import http, raw_server, sse_head
from tests.serving import serving

TRANSPORTS = ("openai-http", "litellm")


def single(base: str, transport: str, model: str = "openai/m", **extra: Any) -> moa.Topology:
    agent = {
        "model": model,
        "api_base": base,
        "transport": transport,
        "max_tokens": 50,
        "pricing": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
        "retry": {"max_attempts": 1},
        **extra,
    }
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


# -- what a chat template refuses ---------------------------------------------------------------------


def _template_refusal(messages: list[dict[str, Any]]) -> str | None:
    """Why Llama 3's, Mistral's or Gemma's chat template (as vLLM and llama-server apply it) would
    refuse ``messages``, or None: one system message, first; then user and assistant turns that
    alternate, starting with the user's."""
    roles = [m.get("role") for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if "system" in roles:
        return "System message must be at the beginning."
    if any(r not in ("user", "assistant") for r in roles):
        return f"Unknown role: {next(r for r in roles if r not in ('user', 'assistant'))}"
    if any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)):
        return "Conversation roles must alternate user/assistant/user/assistant/..."
    return None


class _StrictTemplate(BaseHTTPRequestHandler):
    """A vLLM-like server whose chat template refuses what ``_template_refusal`` names, with vLLM's
    400 body; it records the messages of each request."""

    seen: ClassVar[list[list[dict[str, Any]]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append(body["messages"])
        why = _template_refusal(body["messages"])
        if why is not None:
            error = {"object": "error", "message": why, "type": "BadRequestError", "param": None, "code": 400}
            send_body(self, 400, json.dumps(error).encode())
        else:
            send_body(self, 200, completion("fine"))


_CHATS = {
    # moa serve's chat request and OpenAI's clients: the conversation's own system message
    "system": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}],
    # OpenAI's newer name for it, which templates know nothing of
    "developer": [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "hi"}],
    # a system message in the middle, and two user turns in a row
    "mid-system-and-two-users": [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "also this"},
        {"role": "user", "content": "hi"},
    ],
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("chat", sorted(_CHATS))
async def test_a_chat_reaches_a_strict_chat_template_with_one_system_message(
    transport: str, chat: str
) -> None:
    """An agent's system prompt and a chat's own system (or developer) turn reach the server as one
    system message, the agent's first, and turns of one role in a row as one: vLLM's and
    llama-server's templates answered the two system messages moa sent with HTTP 400."""
    _StrictTemplate.seen = []
    with threaded_server(_StrictTemplate) as base:
        topology = single(base + "/v1", transport, system="You are terse.")
        async with moa.Runner() as rt:
            r = await rt.run(topology, _CHATS[chat])
    assert r.output == "fine"
    sent = _StrictTemplate.seen[0]
    assert sent[0] == {"role": "system", "content": "You are terse.\n\nAnswer in French."}
    assert sent[-1]["role"] == "user" and sent[-1]["content"].endswith("hi")
    if chat == "mid-system-and-two-users":
        assert [m["content"] for m in sent[1:]] == ["q1", "a1", "also this\n\nhi"]


async def test_a_chat_without_an_agent_system_prompt_keeps_its_own_first() -> None:
    """With no system prompt of the agent's, the chat's own system turns are the one system message,
    joined by a blank line in their order."""
    _StrictTemplate.seen = []
    chat = [
        {"role": "system", "content": "One."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "developer", "content": "Two."},
        {"role": "user", "content": "again"},
    ]
    with threaded_server(_StrictTemplate) as base:
        async with moa.Runner() as rt:
            r = await rt.run(single(base + "/v1", "openai-http"), chat)
    assert r.output == "fine"
    assert [(m["role"], m["content"]) for m in _StrictTemplate.seen[0]] == [
        ("system", "One.\n\nTwo."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "again"),
    ]


# -- an error after the 200 ---------------------------------------------------------------------------


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _delta(text: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


_STREAM_ERRORS = {
    # OpenRouter's: the error beside a choice that ends with finish_reason "error"
    "openrouter": {
        **_delta(""),
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    },
    # llama-server's and vLLM's: an error object alone
    "error-object": {"error": {"code": 500, "message": "Provider disconnected", "type": "server_error"}},
}


# litellm reads `openai/` through the OpenAI SDK and `hosted_vllm/` through its own handler
_PATHS = [("openai-http", "openai/m"), ("litellm", "openai/m"), ("litellm", "hosted_vllm/m")]


@pytest.mark.parametrize(("transport", "model"), _PATHS)
@pytest.mark.parametrize("error", sorted(_STREAM_ERRORS))
async def test_an_error_event_mid_stream_is_a_provider_error_not_the_answer(
    transport: str, model: str, error: str
) -> None:
    """A stream that says `data: {"error": ...}` after some text fails in one line with the server's
    words and no HTTP status, its worst case kept on the budget: the direct path took the text
    before OpenRouter's error for the answer, and litellm booked vLLM's at $0 as a 502."""
    body = sse_head(False) + _event(_delta("The answer is ")) + _event(_STREAM_ERRORS[error])
    budget = moa.Budget(10.0)
    async with raw_server(body + b"data: [DONE]\n\n") as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(
            moa.ProviderError, match=r"provider error in stream: .*Provider disconnected"
        ) as info:
            await rt.run(single(srv.base_url, transport, model), "hi", on_token=lambda _t: None)
    assert info.value.status_code is None and "\n" not in str(info.value)
    call = info.value.calls[0]
    assert [a.usage for a in call.attempt_log] == [None] and budget.spent_usd == pytest.approx(
        call.cost_usd_max
    )


async def test_an_error_field_that_is_null_is_no_error() -> None:
    """Events that carry `"error": null` (some gateways add it to every chunk) are read as usual."""
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    events = [
        {**_delta("four"), "error": None},
        {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "error": None},
        {"id": "x", "choices": [], "usage": usage, "error": None},
    ]
    body = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    async with raw_server(body) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, "openai-http"), "hi", on_token=lambda _t: None)
    assert r.output == "four" and r.calls[0].usage.prompt_tokens == 5


# -- an error answered with a 200 ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_200_whose_body_is_an_error_with_a_status_code_is_that_status(transport: str) -> None:
    """A 200 whose body is `{"error": {"code": 429, ...}}` (OpenRouter's upstream failures) is the
    error its code names, with the server's words, on both paths: the direct path called it
    "malformed reply: no choices"."""
    body = {"error": {"code": 429, "message": "Rate limit exceeded upstream"}}
    async with raw_server(http(200, body)) as srv, moa.Runner() as rt:
        with pytest.raises(moa.RateLimited, match="Rate limit exceeded upstream") as info:
            await rt.run(single(srv.base_url, transport), "hi")
    assert info.value.status_code == 429


@pytest.mark.parametrize("indent", [None, 2], ids=["one-line", "pretty-printed"])
async def test_a_streamed_request_answered_with_a_json_error_names_it(indent: int | None) -> None:
    """A streamed request answered with a 200 whose body is a JSON error, not a stream, is the
    error its code names, with the server's words: it said "the stream carried no events"."""
    body = json.dumps({"error": {"code": 429, "message": "Rate limit exceeded upstream"}}, indent=indent)
    async with raw_server(http(200, body.encode())) as srv, moa.Runner() as rt:
        with pytest.raises(moa.RateLimited, match="Rate limit exceeded upstream"):
            await rt.run(single(srv.base_url, "openai-http"), "hi", on_token=lambda _t: None)


async def test_a_200_whose_body_is_an_error_without_a_status_is_a_provider_error() -> None:
    """A 200 whose body is an error with no HTTP status in it (TGI's string) is a ProviderError
    quoting it, of unknown usage."""
    body = {"error": "Model is overloaded", "error_type": "overloaded"}
    async with raw_server(http(200, body)) as srv, moa.Runner() as rt:
        with pytest.raises(moa.ProviderError, match="provider error: Model is overloaded") as info:
            await rt.run(single(srv.base_url, "openai-http"), "hi")
    assert info.value.status_code is None and info.value.calls[0].attempt_log[0].usage is None


_CODELESS_ERRORS = {
    "no-code": ({"error": {"message": "overloaded"}}, "overloaded"),
    "null-code": ({"error": {"message": "overloaded", "code": None}}, "overloaded"),
    "named-code": ({"error": {"message": "overloaded", "code": "server_busy"}}, "overloaded"),
    # TGI's: litellm keeps none of its words
    "string": ({"error": "Model is overloaded"}, ""),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", sorted(_CODELESS_ERRORS))
async def test_a_200_whose_body_is_an_error_without_a_status_is_retried_on_both_paths(
    transport: str, shape: str
) -> None:
    """A 200 whose body is an error with no HTTP status as its code is a ProviderError of unknown
    usage on both paths, retried: litellm labels one without a `code` a 422 of its own, and moa
    read that as the request's fault (`request rejected (422)`), never retried it and booked $0."""
    body, said = _CODELESS_ERRORS[shape]
    async with raw_server(http(200, body)) as srv, moa.Runner() as rt:
        with pytest.raises(moa.ProviderError, match=f"provider error: .*{said}") as info:
            await rt.run(single(srv.base_url, transport), "hi")
        assert "422" not in str(info.value) and "`openai/m`" in str(info.value)
        assert info.value.status_code is None and info.value.calls[0].attempt_log[0].usage is None
        ok = http(200, json.loads(completion("fine", 5, 1)))
        async with raw_server(http(200, body), ok) as retried:
            r = await rt.run(single(retried.base_url, transport, retry={"max_attempts": 2}), "hi")
    assert r.output == "fine" and r.calls[0].attempts == 2


class _Overloaded(BaseHTTPRequestHandler):
    """A gateway answering an upstream overload with a 200 whose body is a code-less error."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        send_body(self, 200, json.dumps({"error": {"message": "overloaded"}}).encode())


def test_moa_serve_does_not_blame_its_client_for_a_code_less_error_through_litellm() -> None:
    """Through litellm, `moa serve` answers such an overload as the provider's failure (502), not
    as the client's invalid request (400 `upstream_invalid_request`, not to be retried), which
    litellm's invented 422 made it."""
    agent = {"model": "openai/m", "transport": "litellm", "retry": {"max_attempts": 1}}
    with threaded_server(_Overloaded) as upstream:
        agents = {"a": {**agent, "api_base": upstream + "/v1"}}
        topology = load_data({"name": "t", "kind": "single", "agent": "a", "agents": agents})
        with serving(create_app([topology])) as base, httpx.Client(timeout=30) as client:
            reply = client.post(
                f"{base}/chat/completions",
                json={"model": "t", "messages": [{"role": "user", "content": "hi"}]},
            )
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "provider_error"


# -- a field a strict server refuses ------------------------------------------------------------------

_REFUSALS = {
    # Mistral's: pydantic's issues under an object `message`
    "mistral": {
        "object": "error",
        "message": {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "stream_options"],
                    "msg": "Extra inputs are not permitted",
                    "input": {"include_usage": True},
                }
            ]
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
    # a FastAPI server's own 422
    "fastapi": {
        "detail": [
            {
                "type": "extra_forbidden",
                "loc": ["body", "stream_options"],
                "msg": "Extra inputs are not permitted",
            }
        ]
    },
}


@pytest.mark.parametrize("refusal", sorted(_REFUSALS))
async def test_a_refused_field_is_named_in_one_line(refusal: str) -> None:
    """A strict server's 422 for a field it does not know reads `stream_options: Extra inputs are
    not permitted`, not a Python repr of pydantic's issue list."""
    async with raw_server(http(422, _REFUSALS[refusal])) as srv, moa.Runner() as rt:
        with pytest.raises(moa.RequestRejected) as info:
            await rt.run(single(srv.base_url, "openai-http"), "hi", on_token=lambda _t: None)
    assert str(info.value).endswith("request rejected (422): stream_options: Extra inputs are not permitted")


# -- no usage at all ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_short_answer_without_usage_is_not_free(transport: str, stream: bool) -> None:
    """llama-server streams no usage unless asked in its own way: a two-letter prompt answered
    `yes` is estimated at a token or more each way on both paths, not at the $0 the direct path's
    bytes / 4, rounded down, gave it."""
    if stream:
        events = [
            _delta("yes"),
            {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        reply = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    else:
        answer = json.loads(completion("yes"))
        del answer["usage"]
        reply = http(200, answer)
    async with raw_server(reply) as srv, moa.Runner() as rt:
        r = await rt.run(
            single(srv.base_url, transport), "hi", on_token=(lambda _t: None) if stream else None
        )
    call = r.calls[0]
    assert r.output == "yes" and call.usage_estimated
    assert call.usage.prompt_tokens >= 1 and call.usage.completion_tokens >= 1 and call.cost_usd > 0


# -- an answer cut at max_tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_answer_cut_at_max_tokens_says_so_on_its_record(transport: str, stream: bool) -> None:
    """A reply that ended with `finish_reason: "length"` is the answer (its tokens were paid for),
    and its record says `finish_reason: length`, in `to_dict` too: before, nothing told a cut
    answer from a whole one."""
    usage = {"prompt_tokens": 5, "completion_tokens": 50}
    if stream:
        cut = {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        events = [_delta("The answer is"), cut, {"id": "x", "choices": [], "usage": usage}]
        reply = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    else:
        answer = json.loads(completion("The answer is", 5, 50))
        answer["choices"][0]["finish_reason"] = "length"
        reply = http(200, answer)
    async with raw_server(reply) as srv, moa.Runner() as rt:
        r = await rt.run(
            single(srv.base_url, transport), "hi", on_token=(lambda _t: None) if stream else None
        )
    call = r.calls[0]
    assert r.output == "The answer is" and call.finish_reason == "length"
    assert call.to_dict()["finish_reason"] == "length"
    assert moa.CallRecord.from_dict(call.to_dict()).finish_reason == "length"
    assert r.finish_reason == "length" and r.to_dict()["finish_reason"] == "length"


# -- reasoning models ---------------------------------------------------------------------------------


def _thinking(content: str | None, finish: str, stream: bool, empty: str | None = None) -> bytes:
    """DeepSeek-R1's reply (vLLM's reasoning parsers answer alike): the reasoning in
    `reasoning_content`, the answer in `content`, the reasoning tokens inside `completion_tokens`."""
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 50,
        "completion_tokens_details": {"reasoning_tokens": 48},
    }
    if not stream:
        message = {"role": "assistant", "content": content or empty, "reasoning_content": "Let me think."}
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return http(
            200, {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice], "usage": usage}
        )
    think = {**_delta(""), "choices": [{"index": 0, "delta": {"reasoning_content": "Let me think."}}]}
    end = {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    events = [think, *([_delta(content)] if content else []), end, {"id": "x", "choices": [], "usage": usage}]
    return sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_reasoning_models_answer_is_its_content_and_its_reasoning_is_paid(
    transport: str, stream: bool
) -> None:
    """The answer is `content`, not the reasoning, and the reasoning tokens are billed as the
    completion tokens they are part of."""
    async with raw_server(_thinking("42", "stop", stream)) as srv, moa.Runner() as rt:
        r = await rt.run(
            single(srv.base_url, transport), "hi", on_token=(lambda _t: None) if stream else None
        )
    call = r.calls[0]
    assert r.output == "42" and (call.usage.prompt_tokens, call.usage.completion_tokens) == (5, 50)
    assert not call.usage_estimated and call.cost_usd == pytest.approx(55 * 1000 / 1e6)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("stream", "empty"),
    [(False, None), (False, ""), (True, None)],
    ids=["whole-null", "whole-empty-string", "streamed"],
)
async def test_a_reasoning_model_cut_before_its_answer_says_to_raise_max_tokens(
    transport: str, stream: bool, empty: str | None
) -> None:
    """A reasoning model whose max_tokens ran out while it reasoned (`content: null`, or
    llama-server's `""`; finish_reason `length`) fails naming that, billed what it reported: it said "no message content" or "the
    reply is empty", and each retry paid for the same end with no hint why."""
    async with raw_server(_thinking(None, "length", stream, empty)) as srv, moa.Runner() as rt:
        with pytest.raises(
            moa.MalformedReply, match="cut at max_tokens while the model was still reasoning"
        ) as info:
            await rt.run(
                single(srv.base_url, transport), "hi", on_token=(lambda _t: None) if stream else None
            )
    assert "raise max_tokens" in str(info.value) and "\n" not in str(info.value)
    usage = info.value.calls[0].attempt_log[0].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 50)


async def test_groqs_usage_in_x_groq_is_read_not_estimated() -> None:
    """Groq's stream reports its usage in the last chunk's `x_groq.usage`: on the direct path (where
    `groq/` goes by default) it is the count charged, not an estimate. litellm drops the field, so
    `transport: litellm` still estimates it."""
    usage = {"queue_time": 0.01, "prompt_tokens": 17, "completion_tokens": 9, "total_tokens": 26}
    last = {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    events = [_delta("four"), {**last, "x_groq": {"id": "req_1", "usage": usage}}]
    body = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    async with raw_server(body) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, "openai-http", "groq/m"), "hi", on_token=lambda _t: None)
    call = r.calls[0]
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (17, 9) and not call.usage_estimated


# -- named providers' own rules -----------------------------------------------------------------------

#: the fields Mistral's chat completions API takes; it answers any other with a 422
_MISTRAL_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
    "prediction", "parallel_tool_calls", "safe_prompt",
}  # fmt: skip


class _Mistral(BaseHTTPRequestHandler):
    """A server refusing unknown fields as Mistral's API does (pydantic's `extra_forbidden`)."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        extra = sorted(set(body) - _MISTRAL_FIELDS)
        if extra:
            issues = [
                {"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted"}
                for k in extra
            ]
            error = {
                "object": "error",
                "message": {"detail": issues},
                "type": "invalid_request_error",
                "code": None,
            }
            send_body(self, 422, json.dumps(error).encode())
            return
        usage = {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
        last = {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(_event(_delta("four")) + _event(last) + b"data: [DONE]\n\n")
        self.close_connection = True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_mistral_stream_is_sent_no_field_mistral_refuses(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed `mistral/` call sends no `stream_options` (Mistral's API refuses it with a 422,
    and litellm leaves it out): on the direct path every streamed Mistral call was refused."""
    monkeypatch.setenv("MOA_T_MISTRAL_KEY", "k")
    with threaded_server(_Mistral) as base:
        topology = single(base + "/v1", transport, "mistral/m", api_key_env="MOA_T_MISTRAL_KEY")
        async with moa.Runner() as rt:
            r = await rt.run(topology, "hi", on_token=lambda _t: None)
    assert r.output == "four" and r.calls[0].usage.prompt_tokens == 4


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        send_body(self, 200, completion("four"))


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("fireworks_ai/llama-v3p1-8b-instruct", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        ("fireworks_ai/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        ("fireworks_ai/accounts/me/models/mine", "accounts/me/models/mine"),
    ],
)
async def test_a_fireworks_model_is_sent_by_its_full_name_on_both_paths(
    model: str, sent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fireworks' API knows a model by `accounts/<account>/models/<name>`: a short name is
    completed on the direct path as litellm completes it (it went out short, a 404 at Fireworks)."""
    monkeypatch.setenv("MOA_T_FIREWORKS_KEY", "k")
    _Recorder.bodies = []
    with threaded_server(_Recorder) as base:
        async with moa.Runner() as rt:
            for transport in TRANSPORTS:
                topology = single(base + "/v1", transport, model, api_key_env="MOA_T_FIREWORKS_KEY")
                await rt.run(topology, "hi")
    assert [b["model"] for b in _Recorder.bodies] == [sent, sent]


_GEMINI_USAGE = {
    # Gemini's OpenAI-compatible usage: the thinking in total_tokens and the details only
    "reasoning-left-out": (
        {"prompt_tokens": 20, "completion_tokens": 151, "total_tokens": 553, "completion_tokens_details": {"reasoning_tokens": 382}},
        533,
    ),
    # a model that only thought: completion_tokens 0, the thinking in the details
    "only-reasoning": (
        {"prompt_tokens": 21, "completion_tokens": 0, "total_tokens": 81, "completion_tokens_details": {"reasoning_tokens": 60}},
        60,
    ),
    # OpenAI's: completion_tokens has the reasoning already
    "reasoning-included": (
        {"prompt_tokens": 20, "completion_tokens": 533, "total_tokens": 553, "completion_tokens_details": {"reasoning_tokens": 382}},
        533,
    ),
}  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", sorted(_GEMINI_USAGE))
async def test_reasoning_tokens_left_out_of_completion_tokens_are_billed(
    transport: str, stream: bool, case: str
) -> None:
    """Reasoning tokens a server counts in `total_tokens` but not in `completion_tokens` (Gemini's
    OpenAI-compatible endpoint) are billed as completion tokens, not dropped; OpenAI's usage, whose
    completion already holds them, is not counted twice."""
    usage, completion_tokens = _GEMINI_USAGE[case]
    if stream:
        end = {**_delta(""), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        events = [_delta("36"), end, {"id": "x", "choices": [], "usage": usage}]
        reply = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    else:
        reply = http(200, {**json.loads(completion("36")), "usage": usage})
    async with raw_server(reply) as srv, moa.Runner() as rt:
        r = await rt.run(
            single(srv.base_url, transport, max_tokens=1000),
            "hi",
            on_token=(lambda _t: None) if stream else None,
        )
    call = r.calls[0]
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (
        usage["prompt_tokens"],
        completion_tokens,
    )
    assert not call.usage_estimated and not call.usage_suspect


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_of_several_choices_answers_with_the_first(transport: str) -> None:
    """With `n: 2` in an agent's params a stream interleaves two choices' deltas: the answer is
    the first choice's text, as a whole reply's is, not both run together."""

    def choice(index: int, text: str | None, finish: str | None = None) -> dict[str, Any]:
        delta = {"content": text} if text is not None else {}
        return {**_delta(""), "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    events = [choice(0, "Paris"), choice(1, "Lyon"), choice(0, " it is"), choice(1, " then")]
    events += [choice(0, None, "stop"), choice(1, None, "stop")]
    body = sse_head(False) + b"".join(_event(e) for e in events) + b"data: [DONE]\n\n"
    async with raw_server(body) as srv, moa.Runner() as rt:
        topology = single(srv.base_url, transport, params={"n": 2})
        r = await rt.run(topology, "capital of France?", on_token=lambda _t: None)
    assert r.output == "Paris it is"
