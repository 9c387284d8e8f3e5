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
from moa.calls.keys import missing_keys
from moa.calls.limits import RateLimits
from moa.models import providers
from moa.models.registry import use_direct_http
from moa.topology.loader import load_data
from moa.topology.spec import AgentSpec
from tests.loopback_http import send_body


class _Provider(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        _Provider.seen.append(
            {"path": self.path, "auth": self.headers.get("authorization"), "model": body["model"]}
        )
        if body["model"] == "down":  # a model refused with a status no retry changes: the fallback
            send_body(self, 400, b'{"error": {"message": "no such model"}}')
            return
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


async def test_a_provider_limit_keeps_one_window_per_model_on_the_direct_path(provider: str) -> None:
    """`set_rate_limit("groq", ...)` is per model, as providers count, whichever transport sends:
    keyed by the provider's public URL, the direct path put every groq model in one window (and
    the stricter of two models' limits held both)."""
    limits = RateLimits()
    limits.set("groq", rpm=30)
    limits.set("groq/big", rpm=100)
    async with moa.Runner(rate_limits=limits) as runner:
        small, big = (runner.runtime(AgentSpec(model=m)).chain[0].limiter for m in ("groq/small", "groq/big"))
        # the direct path it is: the same models through litellm were always keyed per model
        assert runner.runtime(AgentSpec(model="groq/small")).chain[0].api_base == provider
    assert small is not None and big is not None and small is not big
    assert (small.key, small.limit.rpm) == ("groq/small", 30)
    assert (big.key, big.limit.rpm) == ("groq/big", 100)


async def test_a_fallback_of_another_provider_gets_its_own_key_not_the_agents(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's `api_key_env` is its provider's key: a fallback of another provider is sent with
    that provider's usual key. Before, Groq's key went to Together (and an OpenAI key to
    Anthropic, through litellm), and the fallback failed on it."""
    monkeypatch.setitem(providers.NAMED_OPENAI_ENDPOINTS, "together_ai", provider)
    monkeypatch.setenv("MY_GROQ", "gsk-agent-key-123456")
    monkeypatch.setenv("TOGETHER_API_KEY", "tgp-together-key-654321")
    agent = {"model": "groq/down", "api_key_env": "MY_GROQ", "fallbacks": ["together_ai/qwen"]}
    t = load_data({"name": "g", "kind": "single", "agent": "a", "agents": {"a": agent}})
    async with moa.Runner() as runner:
        result = await t.run("hello", runner=runner)
    assert result.output == "hi from groq"
    assert [(s["model"], s["auth"]) for s in _Provider.seen] == [
        ("down", "Bearer gsk-agent-key-123456"),
        ("qwen", "Bearer tgp-together-key-654321"),
    ]


def test_a_fallback_of_another_provider_needs_its_key_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its key missing, such a fallback is refused up front like any model, not met mid-run."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-123456")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    same = AgentSpec(model="openai/gpt-4o", api_key_env="OPENAI_API_KEY", fallbacks=["openai/gpt-4o-mini"])
    other = AgentSpec(model="openai/gpt-4o", api_key_env="OPENAI_API_KEY", fallbacks=["anthropic/claude-x"])
    assert missing_keys([("agents.a", same)]) == []
    assert missing_keys([("agents.b", other)]) == [
        "`ANTHROPIC_API_KEY` is not set (needed by agents.b (anthropic/claude-x))"
    ]
