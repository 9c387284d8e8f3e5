"""A model's refusal is its answer: OpenAI answers a request it declines with ``content: null`` and
its words in ``refusal`` (streamed as ``delta.refusal``). Read as "no message content", it was
retried (paid again) and its words were lost from the record; now its words are the reply's text,
on both transports, whole and streamed, over real HTTP."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

import moa
from moa.results import Done
from moa.topology.loader import load_data
from tests.loopback_http import send_body, send_sse, threaded_server

# litellm's streaming types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

WORDS = "I'm sorry, I can't help with that."


class _Refuser(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that refuses every request, whole or streamed."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[int] = 0

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        _Refuser.requests += 1
        usage = {"prompt_tokens": 12, "completion_tokens": 9}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "refusal": WORDS}
            reply = {
                "id": "x",
                "object": "chat.completion",
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
            send_body(self, 200, json.dumps(reply).encode())
            return
        head = {"id": "x", "object": "chat.completion.chunk", "model": "m"}
        pieces = [WORDS[:10], WORDS[10:]]
        events = [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "refusal": p}}]}
            for p in pieces
        ]
        events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**head, "choices": [], "usage": usage})
        send_sse(self, events)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_a_refusal_is_the_models_answer_sent_once(
    transport: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOA_T_REFUSAL_KEY", "sk-refusal-test-key")
    _Refuser.requests = 0
    with threaded_server(_Refuser) as url:
        agent: dict[str, Any] = {
            "model": "openai/gpt-4o",
            "api_base": url + "/v1",
            "transport": transport,
            "max_tokens": 50,
            "retry": {"max_attempts": 3},
        }
        if transport == "litellm":
            agent["api_key_env"] = "MOA_T_REFUSAL_KEY"
        topology = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})
        async with moa.Runner() as runner:
            if stream:
                result = None
                async for ev in topology.stream("help me with something", runner=runner):
                    if isinstance(ev, Done):
                        result = ev.result
                assert result is not None
            else:
                result = await topology.run("help me with something", runner=runner)
    if transport == "litellm" and stream:
        # litellm's stream keeps only a refusal's first piece (its Delta drops the later ones)
        assert result.output and WORDS.startswith(result.output)
    else:
        assert result.output == WORDS
    assert _Refuser.requests == 1
    (call,) = result.calls
    assert call.usage.completion_tokens == 9 and call.cost_usd > 0
