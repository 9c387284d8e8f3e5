"""A hostile server behind an agent's `api_base`, over litellm, gets what the direct path gives it,
for every provider moa hands a client of its own (litellm's OpenAI SDK route and its own HTTP
handler's): no redirect is followed (litellm's clients carried the prompt and the agent's secret
headers to another port), and a compressed reply is decompressed to a bound, not to whatever it
expands to."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from moa._run import Runner
from moa.errors import MalformedReply, RequestRejected
from moa.models import openai_wire
from moa.models.litellm import OPENAI_SDK_PROVIDERS, OWN_HTTP_PROVIDERS
from moa.results import Token
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, threaded_server

# litellm's types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

HEADER_KEY = "Gate.Guard/Header+Value=77"


def _reply(text: str) -> bytes:
    return completion(text, service_tier="default")  # groq's converter reads the tier


def _anthropic_reply(text: str) -> bytes:
    return json.dumps(
        {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 3},
        }
    ).encode()


def _ollama_reply(text: str) -> bytes:
    return json.dumps(
        {
            "model": "m",
            "message": {"role": "assistant", "content": text},
            "done": True,
            "prompt_eval_count": 3,
            "eval_count": 3,
        }
    ).encode()


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


class _Thief(BaseHTTPRequestHandler):
    """Where the redirect points: it notes every request it receives."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append(dict(self.headers))
        send_body(self, 200, _reply("stolen"))


class _Hostile(BaseHTTPRequestHandler):
    """Model `redirect`: a 307 to the thief. Model `bomb`: 8 MiB of JSON (or of SSE events, when the
    request streams) in a small gzip reply. Model `small-gzip`: an honest gzip reply. Model
    `brotli`: a reply that claims an encoding moa does not decode."""

    protocol_version = "HTTP/1.1"
    thief = ""
    #: the Authorization header of each request
    auth: ClassVar[list[str]] = []
    #: each request's path and credential headers
    requests: ClassVar[list[tuple[str, str, str]]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        self.auth.append(self.headers.get("authorization", ""))
        credentials = tuple(", ".join(self.headers.get_all(h) or []) for h in ("x-api-key", "authorization"))
        self.requests.append((self.path, *credentials))
        model = body["model"].rsplit("/", 1)[-1]  # fireworks_ai sends `accounts/fireworks/models/<m>`
        anthropic = self.path.endswith("/messages")
        reply = (
            _anthropic_reply if anthropic else _ollama_reply if self.path.endswith("/api/chat") else _reply
        )
        if model == "redirect":
            self.send_response(307)
            self.send_header("location", self.thief + self.path)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if model == "bomb" and body.get("stream"):
            delta: dict[str, Any] = {"type": "content_block_delta", "index": 0}
            delta["delta"] = {"type": "text_delta", "text": "a" * 1000}
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": "a" * 1000}, "finish_reason": None}],
            }
            event = json.dumps(delta if anthropic else chunk)
            head = "event: content_block_delta\n" if anthropic else ""
            raw = (f"{head}data: {event}\n\n" * 8200).encode()
            self._send(_gzip(raw), "gzip", "text/event-stream")
        elif model == "bomb":
            self._send(_gzip(reply("a" * (8 << 20))), "gzip")
        elif model == "small-gzip":
            self._send(_gzip(reply("fine, and compressed")), "gzip")
        else:
            self._send(reply("never read"), "br")

    def _send(self, data: bytes, coding: str, ctype: str = "application/json") -> None:
        send_body(self, 200, data, ctype, coding)


@contextmanager
def _servers() -> Iterator[str]:
    with threaded_server(_Thief) as thief, threaded_server(_Hostile) as url:
        _Hostile.thief = thief
        _Thief.seen.clear()
        _Hostile.auth.clear()
        _Hostile.requests.clear()
        yield url + "/v1"


def _topology(base: str, model: str) -> Any:
    agent = {
        "model": model if "/" in model else f"openai/{model}",
        "api_base": base,
        "api_key_env": "MOA_T_GUARD_CRED",
        "transport": "litellm",
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        "params": {"extra_headers": {"X-Api-Key": HEADER_KEY}},
    }
    return load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})


async def _run(base: str, model: str, stream: bool) -> str:
    topology = _topology(base, model)
    async with Runner() as runner:
        if not stream:
            return (await topology.run("hi", runner=runner)).output
        return "".join(
            [ev.text async for ev in topology.stream("hi", runner=runner) if isinstance(ev, Token)]
        )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_redirect_is_not_followed_over_litellm(stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 307 to another port on 127.0.0.1: nothing reaches it (litellm's OpenAI client carried the
    prompt and the agent's X-Api-Key there), and the call fails as on the direct path."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    with _servers() as base, pytest.raises(RequestRejected) as info:
        await _run(base, "redirect", stream)
    assert _Thief.seen == []
    assert "redirected (307) to http://127.0.0.1:" in str(info.value)
    assert "moa does not follow redirects" in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_gzip_bomb_over_litellm_is_cut_at_the_bound(
    stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB of reply in a few KB of gzip, with the bound lowered to 1 MiB (a stream's events may
    take eight times the bound): a MalformedReply naming the bound, not the reply expanded whole."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1 << 20)
    with _servers() as base, pytest.raises(MalformedReply) as info:
        await _run(base, "bomb", stream)
    assert f"the reply passed {1 << 20 if not stream else 8 << 20} bytes after decompression" in str(
        info.value
    )


async def test_an_honest_gzip_reply_is_read_and_an_unknown_encoding_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small gzip reply reads as any other; one claiming `br` (the request asked for gzip or
    deflate only) fails in one line naming the encoding."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    with _servers() as base:
        assert await _run(base, "small-gzip", False) == "fine, and compressed"
        with pytest.raises(MalformedReply) as info:
            await _run(base, "brotli", False)
    assert "Content-Encoding `br`, which moa does not decode" in str(info.value)


#: providers speaking a protocol of their own (paths, replies), tested by test_litellm_guards_providers
OWN_PROTOCOLS = frozenset({"ollama", "gemini", "bedrock"})
#: every other provider moa hands a guarded client (``moa.models.litellm``), by the route litellm takes
_PROVIDERS = sorted((OPENAI_SDK_PROVIDERS | OWN_HTTP_PROVIDERS) - OWN_PROTOCOLS)


@pytest.mark.parametrize("provider", _PROVIDERS)
async def test_every_guarded_provider_refuses_a_redirect(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hosted_vllm/`, `anthropic/`, `together_ai/`... with an `api_base`: a 307 to another port
    reaches nothing there and fails as on the direct path, free and not retried."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    with _servers() as base, pytest.raises(RequestRejected) as info:
        await _run(base, f"{provider}/redirect", False)
    assert _Thief.seen == []
    assert "redirected (307) to http://127.0.0.1:" in str(info.value)
    assert "moa does not follow redirects" in str(info.value)


@pytest.mark.parametrize("provider", _PROVIDERS)
async def test_every_guarded_provider_cuts_a_gzip_bomb_and_reads_honest_gzip(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same providers: 8 MiB in a small gzip reply is a one-line MalformedReply at the 1 MiB
    bound; a small gzip reply is read as any other."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1 << 20)
    with _servers() as base:
        with pytest.raises(MalformedReply) as info:
            await _run(base, f"{provider}/bomb", False)
        assert await _run(base, f"{provider}/small-gzip", False) == "fine, and compressed"
    assert f"the reply passed {1 << 20} bytes after decompression" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("provider", _PROVIDERS)
async def test_every_guarded_providers_request_is_the_one_litellms_client_sends(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same call through moa's client and through litellm's own (`SSL_VERIFY` set keeps it):
    the same path and the same credential headers (`Authorization`, and `X-Api-Key`, which
    `anthropic/` sends its key in)."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    with _servers() as base:
        assert await _run(base, f"{provider}/small-gzip", False) == "fine, and compressed"
        monkeypatch.setenv("SSL_VERIFY", "True")
        assert await _run(base, f"{provider}/small-gzip", False) == "fine, and compressed"
    ours, theirs = _Hostile.requests
    assert ours == theirs
    assert "Guard.Key/Alpha+Beta=Gamma-5" in "".join(ours)


@pytest.mark.parametrize("provider", ["hosted_vllm", "anthropic"])
async def test_litellms_own_handler_is_guarded_when_streaming(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed call through litellm's own handler: no redirect followed, a streamed bomb cut at
    eight times the bound."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1 << 20)
    with _servers() as base:
        with pytest.raises(RequestRejected) as moved:
            await _run(base, f"{provider}/redirect", True)
        with pytest.raises(MalformedReply) as bomb:
            await _run(base, f"{provider}/bomb", True)
    assert _Thief.seen == []
    assert "moa does not follow redirects" in str(moved.value)
    assert f"the reply passed {8 << 20} bytes after decompression" in str(bomb.value)


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, noting the URL it was asked for."""

    protocol_version = "HTTP/1.1"
    asked: ClassVar[list[str]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.asked.append(self.path)
        send_body(self, 200, _reply("through the proxy"))


@pytest.mark.parametrize("model", ["m", "hosted_vllm/m"])
async def test_the_environments_proxy_is_still_used(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `http_proxy` set, the guarded client (the OpenAI SDK's or litellm's own handler's)
    sends the call through it, as litellm's own client does (an httpx client given a transport
    skips the environment's proxies)."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    _Proxy.asked.clear()
    with threaded_server(_Proxy) as proxy:
        monkeypatch.setenv("http_proxy", proxy)
        # port 9 (discard): nothing answers there, so only the proxy can
        assert await _run("http://127.0.0.1:9/v1", model, False) == "through the proxy"
    assert _Proxy.asked == ["http://127.0.0.1:9/v1/chat/completions"]


def test_a_call_with_tls_settings_of_litellms_keeps_litellms_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guarded clients read no litellm TLS setting: a call with an agent's `ssl_verify`, under
    `SSL_VERIFY`, with a client certificate (`SSL_CERTIFICATE`), or passing its own `client` keeps
    litellm's client (a self-signed local server keeps working); so does a provider not known to
    take a client of moa's."""
    from moa.models.litellm import guarded, import_litellm

    litellm = import_litellm()
    for name in ("SSL_VERIFY", "SSL_CERTIFICATE", "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"):
        monkeypatch.delenv(name, raising=False)
    assert guarded("openai/m", {}, litellm) == "openai"
    assert guarded("hosted_vllm/m", {}, litellm) == "http"
    assert guarded("anthropic/m", {}, litellm) == "http"
    assert guarded("bedrock/m", {}, litellm) == "http"
    assert guarded("gpt-4o", {}, litellm) == "openai"  # litellm sends it as openai/
    assert guarded("vertex_ai/m", {}, litellm) is None
    assert guarded("vllm/m", {}, litellm) is None
    for kw in ({"ssl_verify": False}, {"client": object()}):
        assert guarded("openai/m", kw, litellm) is None
        assert guarded("hosted_vllm/m", kw, litellm) is None
    monkeypatch.setenv("SSL_CERTIFICATE", "/nowhere/client.pem")
    assert guarded("hosted_vllm/m", {}, litellm) is None
    monkeypatch.delenv("SSL_CERTIFICATE")
    monkeypatch.setenv("SSL_VERIFY", "False")
    assert guarded("openai/m", {}, litellm) is None
    assert guarded("together_ai/m", {}, litellm) is None


async def test_openai_over_litellms_experimental_handler_is_guarded_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER` litellm sends `openai/` through its own
    handler, which ignored moa's OpenAI client and followed the redirect: it gets the guarded
    handler instead."""
    monkeypatch.setenv("MOA_T_GUARD_CRED", "Guard.Key/Alpha+Beta=Gamma-5")
    monkeypatch.setenv("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "true")
    with _servers() as base, pytest.raises(RequestRejected) as info:
        await _run(base, "redirect", False)
    assert _Thief.seen == []
    assert "moa does not follow redirects" in str(info.value)


async def test_a_provider_keyed_from_its_own_variable_is_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `deepinfra/` agent with no `api_key_env` (litellm reads `DEEPINFRA_API_KEY`) got
    litellm's client, which followed the redirect: it gets the guarded one, with that key."""
    monkeypatch.setenv("DEEPINFRA_API_KEY", "Deep.Key/Alpha+Beta=Gamma-5")
    agent = {
        "model": "deepinfra/redirect",
        "transport": "litellm",
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
    }
    with _servers() as base:
        agent["api_base"] = base
        topology = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})
        with pytest.raises(RequestRejected) as info:
            await topology.run("hi")
        agent["model"] = "deepinfra/small-gzip"
        topology = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})
        assert (await topology.run("hi")).output == "fine, and compressed"
    assert _Thief.seen == []
    assert "moa does not follow redirects" in str(info.value)
    assert _Hostile.auth == ["Bearer Deep.Key/Alpha+Beta=Gamma-5"] * 2
