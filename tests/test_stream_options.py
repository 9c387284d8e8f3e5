"""A strict server that refuses `stream_options` (older vLLM, TGI, LM Studio, some proxies answer a field
they do not know with a 400 or a 422), over loopback HTTP on both paths: the stream is sent again
without it, once per endpoint, and its usage is then estimated and marked so."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

import moa
from tests.loopback_http import completion, send_body, send_sse, threaded_server
from tests.test_server_dialects import TRANSPORTS, single

#: how each server refuses a field it does not know: status, body, content type
_REFUSALS = {
    # vLLM before stream_options (its pydantic models forbade extra fields)
    "vllm": (
        400,
        json.dumps(
            {
                "object": "error",
                "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
                "'msg': 'Extra inputs are not permitted', 'input': {'include_usage': True}}]",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        ).encode(),
        "application/json",
    ),
    # TGI's router (serde's deny_unknown_fields, through axum's JSON rejection)
    "tgi": (
        422,
        b"Failed to deserialize the JSON body into the target type: unknown field `stream_options`, "
        b"expected one of `model`, `messages`, `stream` at line 1 column 90",
        "text/plain; charset=utf-8",
    ),
}


class _Strict(BaseHTTPRequestHandler):
    """Refuses `stream_options` (and `n`) as ``refusal`` says; streams `four` with no usage."""

    refusal: ClassVar[str] = "vllm"
    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        if "stream_options" in body or "n" in body:
            status, data, ctype = _REFUSALS[self.refusal]
            send_body(self, status, data.replace(b"stream_options", b"n") if "n" in body else data, ctype)
            return
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        send_sse(
            self,
            [
                {**chunk, "choices": [{"index": 0, "delta": {"content": "four"}, "finish_reason": None}]},
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ],
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("server", sorted(_REFUSALS))
async def test_a_server_refusing_stream_options_is_streamed_to_without_it(
    transport: str, server: str
) -> None:
    """A stream refused for `stream_options` is sent again without it, and the endpoint's later
    streams go without it at once; the usage, which such a server does not send, is estimated and
    flagged: before, every streamed call to it failed with a 400 or 422 no setting could avoid."""
    _Strict.refusal, _Strict.bodies = server, []
    tokens: list[str] = []
    with threaded_server(_Strict) as base:
        async with moa.Runner() as rt:
            first = await rt.run(single(base + "/v1", transport), "hi", on_token=tokens.append)
            second = await rt.run(single(base + "/v1", transport), "hi", on_token=tokens.append)
    assert first.output == second.output == "four" and tokens == ["four", "four"]
    assert ["stream_options" in b for b in _Strict.bodies] == [True, False, False]
    for r in (first, second):
        call = r.calls[0]
        assert call.usage_estimated and call.cost_usd > 0 and call.attempts == 1
        assert [a.status for a in call.attempt_log] == ["ok"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refusal_of_another_field_is_not_resent(transport: str) -> None:
    """A 400 naming another field is the request's fault, raised as it was, sent once."""
    _Strict.refusal, _Strict.bodies = "vllm", []
    with threaded_server(_Strict) as base:
        async with moa.Runner() as rt:
            with pytest.raises(moa.RequestRejected, match="'n'"):
                await rt.run(single(base + "/v1", transport, params={"n": 2}), "hi", on_token=lambda _t: None)
    assert len(_Strict.bodies) == 1


class _Reasoner(BaseHTTPRequestHandler):
    """OpenAI's reasoning models (o1 and after): `max_tokens` refused, the cap taken as
    `max_completion_tokens`, with OpenAI's words."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        if "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
            send_body(self, 400, json.dumps({"error": error}).encode())
            return
        if body.get("stream"):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            delta = {"index": 0, "delta": {"content": "four"}, "finish_reason": "stop"}
            send_sse(self, [{**chunk, "choices": [delta]}])
        else:
            send_body(self, 200, completion("four", 5, 1))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_model_that_takes_max_completion_tokens_only_is_sent_it(stream: bool) -> None:
    """On the direct path, a model refusing `max_tokens` for `max_completion_tokens` (OpenAI's o1
    and after, behind an `api_base`) is sent the same cap under that name, and so from then on:
    with a budget, which always sends a cap, every call to it was refused."""
    _Reasoner.bodies = []
    with threaded_server(_Reasoner) as base:
        async with moa.Runner() as rt:
            for _ in range(2):
                r = await rt.run(
                    single(base + "/v1", "openai-http", "openai/o3-mini"),
                    "hi",
                    budget_usd=100.0,
                    on_token=(lambda _t: None) if stream else None,
                )
                assert r.output == "four" and r.calls[0].attempts == 1
    assert [b.get("max_tokens") for b in _Reasoner.bodies] == [50, None, None]
    assert [b.get("max_completion_tokens") for b in _Reasoner.bodies] == [None, 50, 50]
