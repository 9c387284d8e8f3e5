"""Named providers whose API is OpenAI's (Groq, Together, Fireworks, DeepSeek, OpenRouter, Mistral,
xAI) go to the direct path at their public URL with their usual key, not through litellm;
`transport: litellm` keeps litellm. Tested against a loopback server standing in for the provider."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

import moa
from moa.models import providers
from moa.models.registry import use_direct_http
from moa.topology.loader import load_data
from tests.loopback_http import send_body


class _Provider(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        _Provider.seen.append(
            {"path": self.path, "auth": self.headers.get("authorization"), "model": body["model"]}
        )
        reply = {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi from groq"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
        send_body(self, 200, json.dumps(reply).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/openai/v1"
    monkeypatch.setitem(providers.NAMED_OPENAI_ENDPOINTS, "groq", base)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test-key-123456")
    _Provider.seen.clear()
    yield base
    server.shutdown()


def test_routing_rules() -> None:
    assert use_direct_http("groq/llama-3.1-8b-instant", None, "auto")
    assert use_direct_http("together_ai/meta-llama/Llama-3-8b", None, "auto")
    assert not use_direct_http("groq/llama", None, "litellm")
    assert not use_direct_http("anthropic/claude-3-5-haiku", None, "auto")
    assert not use_direct_http("bedrock/anthropic.claude-v2", None, "auto")


async def test_a_named_provider_goes_direct_with_its_key(provider: str) -> None:
    t = load_data(
        {"name": "g", "kind": "single", "agent": "a", "agents": {"a": {"model": "groq/llama-3.1-8b-instant"}}}
    )
    async with moa.Runner() as runner:
        result = await t.run("hello", runner=runner)
        assert runner.registry._litellm is None  # litellm never loaded for this call
    assert result.output == "hi from groq"
    (seen,) = _Provider.seen
    assert seen == {
        "path": "/openai/v1/chat/completions",
        "auth": "Bearer gsk-test-key-123456",
        "model": "llama-3.1-8b-instant",
    }
    assert result.usage.total_tokens == 8
