"""litellm's error messages as moa's one line: a pasted traceback cut to its exception, litellm's
advice to catch its class and its bug-report link dropped, and a non-JSON error body's words kept
where the OpenAI SDK said only `Error code: 400`. Over real loopback HTTP, through litellm."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from http.server import BaseHTTPRequestHandler

import pytest

from moa import Runner
from moa.errors import MalformedReply, ModelError, RequestRejected
from moa.topology.loader import load_data
from tests.loopback_http import send_body, threaded_server


def _handler(status: int, body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            send_body(self, status, body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


async def _fail(model: str, base: str) -> ModelError:
    agent = {"model": model, "api_base": base, "transport": "litellm", "retry": {"max_attempts": 1}}
    topology = load_data({"name": "x", "kind": "single", "agent": "a", "agents": {"a": agent}})
    async with Runner() as runner:
        with pytest.raises(ModelError) as e:
            await runner.run(topology, "hi")
    return e.value


async def test_a_pasted_traceback_is_cut_to_its_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Anthropic-shaped 200 without `content`: litellm's message held a whole traceback and a
    1,500-character bug-report link."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with threaded_server(_handler(200, b'{"nope": 1}')) as base:
        error = await _fail("anthropic/m", base)
    assert isinstance(error, MalformedReply)
    assert "Traceback" not in str(error) and "github.com" not in str(error)
    assert str(error).endswith("(KeyError: 'content')")


async def test_a_non_json_error_body_keeps_the_providers_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400 whose body is plain text: the OpenAI SDK's message was `Error code: 400` alone."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with threaded_server(_handler(400, b"context length exceeded for this model")) as base:
        error = await _fail("openai/m", f"{base}/v1")
    assert isinstance(error, RequestRejected)
    assert str(error).endswith("Error code: 400 - context length exceeded for this model")


async def test_litellms_advice_and_repeated_class_names_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with threaded_server(_handler(500, b'{"error": {"message": "boom"}}')) as base:
        error = await _fail("anthropic/m", base)
    assert "Handle with" not in str(error) and "InternalServerError: InternalServerError" not in str(error)
    assert "boom" in str(error)
