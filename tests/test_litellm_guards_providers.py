"""litellm's providers that speak their own protocol (`ollama/`, `gemini/`, `bedrock/`, `azure/`),
with a server of their own behind an agent's `api_base` (or Bedrock's runtime endpoint), get the
guard `test_litellm_guards` checks for the OpenAI-speaking ones: a redirect is not followed (their
litellm client carried the prompt and the agent's headers to the other port) and a gzip reply is
decompressed to the bound (theirs expanded it whole). Their normal request is still the one
litellm's own client sends (path, auth headers), and their reply is read (text and usage)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest

from moa._run import Runner
from moa.errors import MalformedReply, RequestRejected
from moa.models import openai_wire
from moa.results import RunResult, Token
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, threaded_server
from tests.test_litellm_guards import OWN_PROTOCOLS

# litellm's types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

KEY = "Guard.Key/Alpha+Beta=Gamma-5"
HEADER_KEY = "Gate.Guard/Header+Value=77"


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


_MODES = ("redirect", "bomb", "small-gzip", "plain")


def _mode(path: str, body: dict[str, Any]) -> str:
    """The test's instruction, which each protocol carries in the model's name: in the URL's path
    for Gemini (`/models/<m>:generateContent`), Bedrock (`/model/<m>/converse`) and an Azure
    deployment (`/openai/deployments/<m>/...`), in the body's `model` for the others, and in the
    path's first part for a model without a provider prefix (`/<mode>/v1/...`)."""
    parts = unquote(urlsplit(path).path).split("/")
    if parts[1] in _MODES:
        return parts[1]  # a model litellm must know by name: the mode is in its api_base
    for i, part in enumerate(parts[:-1]):
        if part in ("models", "model", "deployments"):
            return parts[i + 1].split(":", 1)[0]
    return str(body.get("model", "")).rsplit("/", 1)[-1]


def _reply(path: str, text: str) -> bytes:
    """A whole reply of ``text`` with usage 3 + 4 tokens, in the protocol the path names."""
    if path.endswith("/api/generate"):
        return json.dumps(
            {"model": "m", "response": text, "done": True, "prompt_eval_count": 3, "eval_count": 4}
        ).encode()
    if path.endswith("/api/chat"):
        message = {"role": "assistant", "content": text}
        return json.dumps(
            {"model": "m", "message": message, "done": True, "prompt_eval_count": 3, "eval_count": 4}
        ).encode()
    if ":generateContent" in path:
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        usage = {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}
        return json.dumps({"candidates": [candidate], "usageMetadata": usage}).encode()
    if path.endswith("/converse"):
        message = {"role": "assistant", "content": [{"text": text}]}
        usage = {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
        return json.dumps({"output": {"message": message}, "stopReason": "end_turn", "usage": usage}).encode()
    return completion(text, prompt_tokens=3, completion_tokens=4)


def _aws_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One message of the AWS event stream Bedrock streams in: a prelude (lengths and their
    CRC32), string headers, a JSON payload and the message's CRC32."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json")):
        headers += (
            bytes([len(name)]) + name.encode() + b"\x07" + len(value).to_bytes(2, "big") + value.encode()
        )
    headers += b"\x0d:message-type\x07\x00\x05event"
    body = json.dumps(payload).encode()
    prelude = (16 + len(headers) + len(body)).to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


def _stream_bomb(path: str) -> tuple[bytes, str]:
    """About 8 MiB of streamed events of 1000 characters each, as the path's protocol streams."""
    if path.endswith("/converse-stream"):
        event = _aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a" * 1000}})
        return event * 8200, "application/vnd.amazon.eventstream"
    if path.endswith("/api/generate"):
        line = json.dumps({"model": "m", "response": "a" * 1000, "done": False}) + "\n"
        return (line * 8200).encode(), "application/x-ndjson"
    if "streamGenerateContent" in path:
        event = {"candidates": [{"content": {"role": "model", "parts": [{"text": "a" * 1000}]}}]}
        return (f"data: {json.dumps(event)}\r\n\r\n" * 8200).encode(), "text/event-stream"
    chunk = {"id": "x", "object": "chat.completion.chunk", "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": {"content": "a" * 1000}, "finish_reason": None}]
    return (f"data: {json.dumps(chunk)}\n\n" * 8200).encode(), "text/event-stream"


@dataclass
class _Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class _Thief(BaseHTTPRequestHandler):
    """Where the redirect points: it notes every request it receives."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append(f"{self.path} {body.decode()}")
        send_body(self, 200, b"{}")


class _Hostile(BaseHTTPRequestHandler):
    """Model `redirect`: a 307 to the thief. Model `bomb`: 8 MiB of reply (or of streamed events)
    in a small gzip body. Model `small-gzip`: an honest gzip reply. Any other: a plain reply."""

    protocol_version = "HTTP/1.1"
    thief = ""
    seen: ClassVar[list[_Seen]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        self.seen.append(_Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        mode, path = _mode(self.path, body), urlsplit(self.path).path
        if path.endswith("/api/show"):
            mode = "redirect"  # Ollama's model details, which litellm's logging asks for
        streamed = body.get("stream") is True or path.endswith(("streamGenerateContent", "-stream"))
        if mode == "redirect":
            self.send_response(307)
            self.send_header("location", self.thief + self.path)
            self.send_header("content-length", "0")
            self.end_headers()
        elif mode == "bomb" and streamed:
            data, ctype = _stream_bomb(path)
            self._send(_gzip(data), ctype, "gzip")
        elif mode == "bomb":
            self._send(_gzip(_reply(path, "a" * (8 << 20))), "application/json", "gzip")
        elif mode == "small-gzip":
            self._send(_gzip(_reply(path, "fine, and compressed")), "application/json", "gzip")
        else:
            self._send(_reply(path, "a plain answer"), "application/json", "")

    def _send(self, data: bytes, ctype: str, coding: str) -> None:
        send_body(self, 200, data, ctype, coding)


@contextmanager
def _servers() -> Iterator[str]:
    with threaded_server(_Thief) as thief, threaded_server(_Hostile) as url:
        _Hostile.thief = thief
        _Thief.seen.clear()
        _Hostile.seen.clear()
        yield url


#: each provider: the agent for a mode (its model, its endpoint), with the key in MOA_T_GUARD_CRED
_CASES = ["ollama", "gemini", "bedrock", "bedrock-endpoint", "azure", "azure-v1", "no-prefix"]


def test_every_provider_of_its_own_protocol_is_tested_here() -> None:
    """test_litellm_guards leaves these providers to this file: none is left untested."""
    assert {case.split("-", 1)[0] for case in _CASES} >= OWN_PROTOCOLS


def _agent(case: str, base: str, mode: str) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "transport": "litellm",
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        "params": {"extra_headers": {"X-Api-Key": HEADER_KEY}},
        "api_base": base,
        "api_key_env": "MOA_T_GUARD_CRED",
    }
    if case.startswith("bedrock"):
        del agent["api_key_env"]  # signed with the AWS credentials of the environment
        agent["model"] = f"bedrock/{mode}"
        if case == "bedrock-endpoint":
            del agent["api_base"]
            agent["params"]["aws_bedrock_runtime_endpoint"] = base
    elif case.startswith("azure"):
        agent["model"] = f"azure/{mode}"
        agent["params"]["api_version"] = "v1" if case == "azure-v1" else "2024-06-01"
    elif case == "no-prefix":
        agent["model"] = "gpt-4o"  # litellm sends it as openai/
        agent["api_base"] = f"{base}/{mode}/v1"
    else:
        agent["model"] = f"{case}/{mode}"
    return agent


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_T_GUARD_CRED", KEY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGUARDTESTKEY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "guard/test/secret/key/0000000000000000000")
    monkeypatch.setenv("AWS_REGION_NAME", "us-east-1")
    # each would take the call off moa's client, or elsewhere
    for name in ("SSL_VERIFY", "SSL_CERTIFICATE", "AWS_BEDROCK_RUNTIME_ENDPOINT", "AZURE_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AZURE_USERNAME", "AZURE_PASSWORD", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


async def _run(case: str, base: str, mode: str, stream: bool = False) -> RunResult | str:
    agent = _agent(case, base, mode)
    topology = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})
    async with Runner() as runner:
        if not stream:
            return await topology.run("hi", runner=runner)
        return "".join(
            [ev.text async for ev in topology.stream("hi", runner=runner) if isinstance(ev, Token)]
        )


@pytest.mark.parametrize("case", _CASES)
async def test_a_redirect_is_not_followed(case: str) -> None:
    """A 307 to another port on 127.0.0.1: nothing reaches it, and the call fails as on the
    direct path, naming the redirect."""
    with _servers() as base, pytest.raises(RequestRejected) as info:
        await _run(case, base, "redirect")
    assert _Thief.seen == []
    assert "redirected (307) to http://127.0.0.1:" in str(info.value)
    assert "moa does not follow redirects" in str(info.value)


@pytest.mark.parametrize("case", ["ollama", "gemini", "bedrock", "azure"])
async def test_a_redirect_is_not_followed_when_streaming(case: str) -> None:
    """The same for a streamed call (Bedrock's, Gemini's and Ollama's streams have their own
    readers in litellm)."""
    with _servers() as base, pytest.raises(RequestRejected) as info:
        await _run(case, base, "redirect", stream=True)
    assert _Thief.seen == []
    assert "moa does not follow redirects" in str(info.value)


@pytest.mark.parametrize("case", _CASES)
async def test_a_gzip_bomb_is_cut_at_the_bound(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 MiB of reply in a few KB of gzip, with the bound lowered to 1 MiB: one line naming the
    bound, not the reply expanded whole."""
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1 << 20)
    with _servers() as base, pytest.raises(MalformedReply) as info:
        await _run(case, base, "bomb")
    assert f"the reply passed {1 << 20} bytes after decompression" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["ollama", "gemini", "bedrock", "azure"])
async def test_a_streamed_gzip_bomb_is_cut_at_eight_times_the_bound(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB of streamed events (server-sent, Ollama's JSON lines, Bedrock's AWS event stream) in
    a small gzip body, with the bound lowered to 128 KiB: cut at eight times the bound."""
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 128 << 10)
    with _servers() as base, pytest.raises(MalformedReply) as info:
        await _run(case, base, "bomb", stream=True)
    assert f"the reply passed {1 << 20} bytes after decompression" in str(info.value)


@pytest.mark.parametrize("case", _CASES)
async def test_a_normal_reply_is_read_with_its_usage(case: str) -> None:
    """A plain reply and a small gzip one read as any other: the text, and the usage the server
    reported (3 + 4 tokens), not an estimate."""
    with _servers() as base:
        plain = await _run(case, base, "plain")
        packed = await _run(case, base, "small-gzip")
    assert isinstance(plain, RunResult) and isinstance(packed, RunResult)
    assert (plain.output, packed.output) == ("a plain answer", "fine, and compressed")
    for result in (plain, packed):
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)
        assert not result.calls[0].usage_estimated


#: the headers that carry each provider's credential, compared with litellm's own client's
_AUTH = ("authorization", "api-key", "x-goog-api-key", "x-api-key")


@pytest.mark.parametrize("case", _CASES)
async def test_the_request_is_the_one_litellms_client_sends(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same call through moa's client and through litellm's own (`SSL_VERIFY` set keeps it):
    the same path and query, the same credential headers (Bedrock's signature aside, which signs
    the time), the same body. For `azure/` litellm's own call also shows that litellm's client
    cache no longer hands it moa's Azure client, closed with moa's runner ("Cannot send a request,
    as the client has been closed")."""
    with _servers() as base:
        await _run(case, base, "plain")
        monkeypatch.setenv("SSL_VERIFY", "True")
        await _run(case, base, "plain")
    # litellm's logging also asks an Ollama server for the model's details (`/api/show`), itself
    ours, theirs = [seen for seen in _Hostile.seen if not seen.path.endswith("/api/show")]
    assert ours.path == theirs.path
    assert ours.body == theirs.body
    for name in _AUTH:
        mine, its = ours.headers.get(name), theirs.headers.get(name)
        if case.startswith("bedrock") and name == "authorization":
            assert mine is not None and its is not None
            mine, its = mine.split("Signature=")[0], its.split("Signature=")[0]
        assert mine == its, name
    assert any(ours.headers.get(name) for name in _AUTH)


def test_an_azure_call_signed_with_an_ad_token_keeps_litellms_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """moa's Azure client is built with the call's API key: a call litellm signs with an Azure AD
    token (a token or a token provider in its params, `AZURE_AD_TOKEN`, a user and password, or no
    key at all) keeps litellm's client, as does Cloudflare's gateway."""
    from moa.models.litellm import guarded, import_litellm

    litellm = import_litellm()
    for name in ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_USERNAME", "AZURE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    base = {"api_base": "http://127.0.0.1:9"}
    assert guarded("azure/d", {**base, "api_key": "k"}, litellm) == "azure"
    assert guarded("azure/d", base, litellm) is None
    assert guarded("azure/d", {**base, "api_key": "k", "azure_ad_token": "t"}, litellm) is None
    assert guarded("azure/d", {**base, "extra_body": {"azure_ad_token": "t"}}, litellm) is None
    gateway = {"api_base": "https://gateway.ai.cloudflare.com/v1/a/b/azure-openai/r", "api_key": "k"}
    assert guarded("azure/d", gateway, litellm) is None
    monkeypatch.setenv("AZURE_API_KEY", "k")
    assert guarded("azure/d", base, litellm) == "azure"
    monkeypatch.setenv("AZURE_AD_TOKEN", "t")
    assert guarded("azure/d", base, litellm) is None


@pytest.mark.parametrize("provider", ["ollama", "ollama_chat"])
async def test_litellms_logging_asks_an_ollama_server_nothing_past_the_guard(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an `ollama/` reply litellm's logging asked the server for the model's details
    (`/api/show`) through a client of its own, which followed this 307 (and would have expanded
    a gzip bomb whole): a guarded call has it ask nothing. The same call on litellm's own client
    (`SSL_VERIFY` set), made after it, shows the question would have been asked: litellm's
    logging works through its calls in order, so once that one has reached the thief the guarded
    call's would have too."""
    with _servers() as base:
        await _run(provider, base, "plain")
        monkeypatch.setenv("SSL_VERIFY", "True")
        await _run(provider, base, "plain-unguarded")
        for _ in range(3000):  # a hang guard of 30 s for what takes milliseconds
            if _Thief.seen:
                break
            await asyncio.sleep(0.01)
    assert _Thief.seen == ['/api/show {"name":"plain-unguarded"}']
