"""The direct OpenAI-compatible path: same records as litellm, same errors, streaming, keep-alive."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import moa
from moa.errors import MalformedReply, ProviderError, RateLimited, RequestRejected, TimedOut
from moa.models import openai_wire
from moa.models.base import ModelRequest
from moa.models.openai_http import OpenAIHTTPModel, wire_model_name
from moa.models.openai_wire import consume_sse
from moa.results import Done, Token
from moa.testing.sim import SimModel, SimServer

KEY_ENV = "MOA_TEST_SIM_KEY"


@pytest.fixture
async def srv() -> AsyncIterator[SimServer]:
    async with SimServer() as server:
        yield server


@pytest.fixture
async def model() -> AsyncIterator[OpenAIHTTPModel]:
    m = OpenAIHTTPModel()
    yield m
    await m.aclose()


def _agent(base: str, transport: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "api_base": base,
        "api_key_env": KEY_ENV,
        "transport": transport,
        "temperature": 0.5,
        "max_tokens": 64,
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "retry": {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05},
        **extra,
    }


def _parallel3(base: str, transport: str) -> moa.Topology:
    return moa.Topology.model_validate(
        {
            "name": "parallel-3",
            "kind": "parallel",
            "workers": ["a", "b", "c"],
            "aggregator": "agg",
            "agents": {
                "a": _agent(base, transport, "openai/sim-a"),
                "b": _agent(base, transport, "openai/sim-b"),
                "c": _agent(base, transport, "hosted_vllm/sim-c"),
                "agg": _agent(base, transport, "openai/sim-agg"),
            },
        }
    )


def _request(base: str, **kw: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "model": "openai/m",
        "messages": [{"role": "user", "content": "what is two plus two"}],
        "api_base": base,
        "node": "n",
    }
    fields.update(kw)
    return ModelRequest(**fields)


def _comparable(rec: moa.CallRecord) -> tuple[Any, ...]:
    return (
        rec.node,
        rec.model,
        rec.requested_model,
        rec.usage,
        rec.cost_usd,
        rec.attempts,
        rec.error,
        rec.priced,
        rec.local,
        rec.cached,
    )


async def test_litellm_and_direct_paths_make_the_same_records(
    srv: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One parallel-3 topology through litellm and through openai-http: same records and output."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    outcomes: dict[str, tuple[str, list[tuple[Any, ...]]]] = {}
    for transport in ("litellm", "openai-http"):
        # one retry each for b and c, so attempts and Retry-After handling are compared too
        srv.script("sim-b", ["500", "ok"])
        srv.script("sim-c", ["429", "ok"])
        async with moa.Runner() as runner:
            result = await _parallel3(srv.base_url, transport).run("what is two plus two", runner=runner)
        outcomes[transport] = (result.output, sorted(_comparable(c) for c in result.calls))
    assert outcomes["litellm"] == outcomes["openai-http"]
    output, records = outcomes["openai-http"]
    assert output.startswith("answer from sim-agg")
    assert [r[0] for r in records] == ["a", "aggregate", "b", "c"]
    assert all(r[6] is None and r[4] > 0 for r in records)
    assert [r[5] for r in records] == [1, 1, 2, 2]


def test_auto_transport_with_api_base_takes_the_direct_path() -> None:
    """`auto` plus an api_base of an OpenAI-compatible prefix resolves to OpenAIHTTPModel."""
    runner = moa.Runner()
    agent = moa.AgentSpec(model="openai/x", api_base="http://127.0.0.1:9/v1")
    assert isinstance(runner.runtime(agent).chain[0].backend, OpenAIHTTPModel)


def test_wire_model_name_strips_only_openai_compatible_prefixes() -> None:
    """`openai/` and `hosted_vllm/` are dropped as litellm does; other names pass unchanged."""
    assert wire_model_name("openai/gpt-4o-mini") == "gpt-4o-mini"
    assert wire_model_name("hosted_vllm/Qwen/Qwen2.5-7B") == "Qwen/Qwen2.5-7B"
    assert wire_model_name("Qwen/Qwen2.5-7B") == "Qwen/Qwen2.5-7B"
    assert wire_model_name("gpt-4o") == "gpt-4o"


async def test_request_body_and_headers_follow_the_openai_protocol() -> None:
    """The body carries the bare model name, sampling fields and params; the key is a Bearer token."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        choice = {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
        return httpx.Response(
            200,
            json={"model": "m", "choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 1}},
        )

    m = OpenAIHTTPModel(transport=httpx.MockTransport(handler))
    req = _request(
        "http://sim.test/v1/",
        temperature=0.2,
        max_tokens=9,
        top_p=0.9,
        stop=["\n"],
        api_key="sk-1",
        params={"seed": 3},
    )
    reply = await m.complete(req)
    await m.aclose()
    assert (reply.text, reply.usage, reply.finish_reason) == ("4", moa.Usage(7, 1), "stop")
    sent = seen[0]
    assert str(sent.url) == "http://sim.test/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-1"
    body = json.loads(sent.content)
    assert body == {
        "seed": 3,
        "model": "m",
        "messages": [{"role": "user", "content": "what is two plus two"}],
        "temperature": 0.2,
        "max_tokens": 9,
        "top_p": 0.9,
        "stop": ["\n"],
    }


async def test_no_authorization_header_without_a_key() -> None:
    """Local servers need no key: no Authorization header is sent when none is given."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    m = OpenAIHTTPModel(transport=httpx.MockTransport(handler))
    await m.complete(_request("http://sim.test/v1"))
    await m.aclose()
    assert "authorization" not in seen[0].headers


# -- error mapping ----------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A 429 becomes RateLimited carrying the server's Retry-After."""
    srv.script("m", ["429"])
    with pytest.raises(RateLimited) as info:
        await model.complete(_request(srv.base_url))
    assert info.value.retry_after_s == pytest.approx(0.2)
    assert info.value.status_code == 429 and "simulated rate limit" in str(info.value)


async def test_500_is_provider_error(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A 500 becomes ProviderError with the server's message and status."""
    srv.script("m", ["500"])
    with pytest.raises(ProviderError) as info:
        await model.complete(_request(srv.base_url))
    assert info.value.status_code == 500 and "simulated 500" in str(info.value)


async def test_reset_connection_is_provider_error(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A connection reset mid-request becomes ProviderError."""
    srv.script("m", ["reset"])
    with pytest.raises(ProviderError, match="connection failed"):
        await model.complete(_request(srv.base_url))


async def test_refused_connection_is_provider_error(model: OpenAIHTTPModel) -> None:
    """Nothing listening on the port becomes ProviderError, not an httpx exception."""
    with pytest.raises(ProviderError, match="connection failed"):
        await model.complete(_request("http://127.0.0.1:9/v1"))


async def test_body_that_is_not_json_is_malformed_reply(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A 200 whose body is not JSON becomes MalformedReply."""
    srv.script("m", ["malformed_json"])
    with pytest.raises(MalformedReply, match="not JSON"):
        await model.complete(_request(srv.base_url))


async def test_reply_without_choices_is_malformed_reply(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A 200 JSON body without choices becomes MalformedReply."""
    srv.script("m", ["no_choices"])
    with pytest.raises(MalformedReply, match="no choices"):
        await model.complete(_request(srv.base_url))


async def test_reply_without_content_is_malformed_reply() -> None:
    """A choice whose message has no content becomes MalformedReply."""
    m = OpenAIHTTPModel(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": [{"message": {}}]}))
    )
    with pytest.raises(MalformedReply, match="no message content"):
        await m.complete(_request("http://sim.test/v1"))
    await m.aclose()


async def test_hanging_server_is_timeout(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A server that never answers becomes TimedOut after the request's timeout_s."""
    srv.script("m", ["hang"])
    with pytest.raises(TimedOut):
        await model.complete(_request(srv.base_url, timeout_s=0.2))


async def test_401_is_rejected_and_not_retried() -> None:
    """A 401 becomes RequestRejected and the runner does not retry it."""
    hits: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(1)
        return httpx.Response(401, json={"error": {"message": "Incorrect API key provided", "type": "auth"}})

    backend = OpenAIHTTPModel(transport=httpx.MockTransport(handler))
    topo = moa.build.single(
        moa.build.agent("openai/m", api_base="http://sim.test/v1", retry={"max_attempts": 3})
    )
    async with moa.Runner(models={"openai/*": backend}) as runner:
        with pytest.raises(RequestRejected, match="Incorrect API key") as info:
            await topo.run("hi", runner=runner)
    await backend.aclose()
    assert len(hits) == 1 and info.value.calls[0].attempts == 1


async def test_runner_retries_a_429_on_the_direct_path(
    srv: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scripted 429 then success: one record, two attempts, no error."""
    monkeypatch.setenv(KEY_ENV, "k")
    srv.script("sim-a", ["429", "ok"])
    topo = moa.Topology.model_validate(
        {
            "name": "one",
            "kind": "single",
            "agent": "a",
            "agents": {"a": _agent(srv.base_url, "auto", "openai/sim-a")},
        }
    )
    async with moa.Runner() as runner:
        result = await topo.run("hi", runner=runner)
    assert [(c.attempts, c.error) for c in result.calls] == [(2, None)]


# -- streaming ----------------------------------------------------------------------------------


async def test_topology_stream_over_the_direct_path(srv: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Topology.stream yields the aggregator's deltas; they join into the output and usage is the server's."""
    monkeypatch.setenv(KEY_ENV, "k")
    topo = _parallel3(srv.base_url, "openai-http")
    pieces: list[str] = []
    done: Done | None = None
    async with moa.Runner() as runner:
        async for event in topo.stream("what is two plus two", runner=runner):
            if isinstance(event, Token):
                pieces.append(event.text)
            else:
                done = event
    assert done is not None and len(pieces) > 1
    assert "".join(pieces) == done.result.output
    stats = srv.stats
    assert done.result.usage == moa.Usage(stats.prompt_tokens, stats.completion_tokens)


async def test_stream_errors_are_mapped(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """A streamed request that gets a 429 raises RateLimited; a non-JSON event raises MalformedReply."""
    srv.script("m", ["429", "malformed"])
    with pytest.raises(RateLimited):
        await model.complete(_request(srv.base_url), lambda _: None)
    with pytest.raises(MalformedReply):
        await model.complete(_request(srv.base_url), lambda _: None)


async def test_stream_without_usage_estimates_bytes_over_four() -> None:
    """When the stream reports no usage, prompt and completion are UTF-8 bytes / 4."""
    events = [
        {"choices": [{"delta": {"content": "abcd" * 3}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
    ]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream_options"] == {"include_usage": True}
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    m = OpenAIHTTPModel(transport=httpx.MockTransport(handler))
    got: list[str] = []
    reply = await m.complete(
        _request("http://sim.test/v1", messages=[{"role": "user", "content": "x" * 40}]), got.append
    )
    await m.aclose()
    assert got == ["abcd" * 3] and reply.finish_reason == "stop"
    assert reply.usage == moa.Usage(10, 3)


# -- pooling ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _counting_proxy(target_port: int) -> AsyncIterator[tuple[str, Callable[[], int]]]:
    """A loopback TCP proxy in front of the sim server that counts the connections clients open."""
    opened = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", lambda: opened
    finally:
        server.close()
        if hasattr(server, "close_clients"):
            server.close_clients()


async def test_sequential_calls_reuse_one_connection(srv: SimServer, model: OpenAIHTTPModel) -> None:
    """Forty sequential calls open a single TCP connection (HTTP keep-alive)."""
    async with _counting_proxy(srv.port) as (base, opened):
        for _ in range(40):
            await model.complete(_request(base))
        await model.aclose()
    assert opened() == 1
    assert srv.stats.served == 40


def test_run_sync_twice_gets_a_client_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `run_sync` has its own loop; the backend makes a client per loop, so both runs work."""
    monkeypatch.setenv(KEY_ENV, "k")
    with SimServer({"sim-a": SimModel(answer="fine")}) as server:
        topo = moa.Topology.model_validate(
            {
                "name": "one",
                "kind": "single",
                "agent": "a",
                "agents": {"a": _agent(server.base_url, "openai-http", "openai/sim-a")},
            }
        )
        runner = moa.Runner()
        assert topo.run_sync("one", runner=runner).output == "fine"
        assert topo.run_sync("two", runner=runner).output == "fine"


async def test_concurrent_calls_spread_over_small_pools_within_max_connections() -> None:
    """Twenty concurrent calls through pools of 4 never open more than max_connections sockets."""
    async with SimServer(default=SimModel(latency_s=0.05)) as server:
        m = OpenAIHTTPModel(max_connections=8)
        async with _counting_proxy(server.port) as (base, opened):
            replies = await asyncio.gather(*(m.complete(_request(base)) for _ in range(20)))
            await m.aclose()
        assert len(replies) == 20 and all(r.text for r in replies)
        assert 4 < opened() <= 8
        assert server.stats.max_in_flight <= 8


def test_streamed_calls_reuse_one_connection() -> None:
    """Streams read to their end hand their connection back: ten in a row open one socket."""
    with SimServer() as srv:

        async def go() -> int:
            m = OpenAIHTTPModel()
            async with _counting_proxy(srv.port) as (base, opened):
                for _ in range(10):
                    await m.complete(_request(base), lambda _t: None)
                await m.aclose()
            return opened()

        assert asyncio.run(go()) == 1
        assert srv.stats.served == 10


# -- the network client (aiohttp) -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _recording_server(
    reply: bytes,
) -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """A loopback server that records each request (request line, headers, body) and answers
    ``reply`` as a JSON 200."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen.append((line, headers, body))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(reply), reply)
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.close()
        if hasattr(server, "close_clients"):
            server.close_clients()


_OK = json.dumps({"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]}).encode()


async def test_request_over_the_network_follows_the_openai_protocol(model: OpenAIHTTPModel) -> None:
    """Over a real socket: POST to {api_base}/chat/completions, JSON body, Bearer key, keep-alive."""
    async with _recording_server(_OK) as (base, seen):
        reply = await model.complete(
            _request(base + "/", api_key="sk-net-1", max_tokens=5, params={"seed": 1})
        )
        await model.complete(_request(base))
    assert reply.text == "4"
    (line, headers, body), (_, second, _) = seen
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["authorization"] == "Bearer sk-net-1" and "authorization" not in second
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert "cookie" not in headers and headers.get("connection", "keep-alive").lower() != "close"
    assert json.loads(body) == {
        "seed": 1,
        "model": "m",
        "messages": [{"role": "user", "content": "what is two plus two"}],
        "max_tokens": 5,
    }


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"api_key": "sk-h-1"},
        {"params": {"extra_headers": {"X-Trace": "t1", "Content-Type": "application/json; charset=utf-8"}}},
    ],
    ids=["plain", "key", "extra-headers"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_the_headers_sent_are_the_protocols(
    model: OpenAIHTTPModel, kw: dict[str, Any], stream: bool
) -> None:
    """Over aiohttp, whose session sends the usual headers itself, each request still carries
    exactly ``headers_for``'s, in its order: the stream's accept, extra headers over the usual ones,
    the key."""
    async with _recording_server(_OK) as (base, seen):
        request = _request(base, **kw)
        with contextlib.suppress(MalformedReply):  # a JSON reply to a stream: no events
            await model.complete(request, (lambda _t: None) if stream else None)
    expected = openai_wire.headers_for(request, stream)
    (_, headers, _) = seen[0]
    assert {k: headers.get(k) for k in expected} == expected
    assert [k for k in headers if k in expected] == list(expected)
    assert set(headers) - set(expected) <= {"host", "content-length", "accept-encoding", "user-agent"}


async def test_a_stream_that_stalls_is_timeout() -> None:
    """A stream whose next chunk does not come within timeout_s becomes TimedOut."""
    slow = SimModel(stream_chunk_delay_s=30.0)
    async with SimServer({"m": slow}) as srv:
        m = OpenAIHTTPModel()
        with pytest.raises(TimedOut):
            await m.complete(_request(srv.base_url, timeout_s=0.2), lambda _t: None)
        await m.aclose()


async def _until(check: Callable[[], bool]) -> None:
    """Wait for a condition the server reports (bounded generously: a wedge, not a speed, fails)."""
    async with asyncio.timeout(30):
        while not check():
            await asyncio.sleep(0.01)


async def test_cancelled_requests_leave_every_connection_free() -> None:
    """Sixty-four requests to a server that never answers, cancelled twice (in flight and waiting
    for a connection alike): afterwards the pool's every connection serves again, none waits."""
    async with SimServer({"never": SimModel(latency_s=3600.0), "pause": SimModel(latency_s=0.5)}) as srv:
        m = OpenAIHTTPModel(max_connections=4, pool_timeout_s=0.25)
        tasks = [
            asyncio.create_task(m.complete(_request(srv.base_url, model="openai/never"))) for _ in range(64)
        ]
        await _until(lambda: srv.stats.in_flight == 4)
        for t in tasks:
            t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        # four at once fill the pool exactly: a slot still held would make one wait past
        # pool_timeout_s (the reply takes 0.5 s) and fail; a socket still held would hang it
        async with asyncio.timeout(30):
            replies = await asyncio.gather(
                *(m.complete(_request(srv.base_url, model="openai/pause")) for _ in range(4))
            )
        assert all(r.text for r in replies)
        await m.aclose()


async def test_a_stream_cancelled_midway_closes_its_connection() -> None:
    """A stream cancelled after its first token closes its connection (half a reply is never
    reused); with a single connection, the next request still goes through."""
    async with SimServer({"m": SimModel(stream_chunk_delay_s=0.5)}) as srv:
        m = OpenAIHTTPModel(max_connections=1)
        first = asyncio.Event()
        task = asyncio.create_task(m.complete(_request(srv.base_url), lambda _t: first.set()))
        async with asyncio.timeout(30):
            await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: srv.stats.disconnects == 1)
        async with asyncio.timeout(30):
            reply = await m.complete(_request(srv.base_url))
        assert reply.text
        await m.aclose()


def test_a_loop_that_ends_closes_its_session(caplog: pytest.LogCaptureFixture) -> None:
    """Two `asyncio.run`s on one backend, never closed: each loop gets a session and closes it as it
    ends, so nothing logs an unclosed session or connector."""
    m = OpenAIHTTPModel()
    with SimServer() as srv:
        for _ in range(2):
            assert asyncio.run(m.complete(_request(srv.base_url))).text
    gc.collect()
    assert "Unclosed" not in caplog.text


@pytest.mark.parametrize("bypass", [False, True])
async def test_proxy_from_the_environment(
    srv: SimServer, monkeypatch: pytest.MonkeyPatch, bypass: bool
) -> None:
    """HTTP_PROXY is honoured (as httpx did), and NO_PROXY exempts a host from it."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with _counting_proxy(srv.port) as (proxy_base, opened):
        monkeypatch.setenv("HTTP_PROXY", proxy_base.removesuffix("/v1"))
        if bypass:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        m = OpenAIHTTPModel()
        reply = await m.complete(_request(srv.base_url))
        await m.aclose()
    assert reply.text and opened() == (0 if bypass else 1)


# -- stream decoding --------------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def _event(text: str, **extra: Any) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}], **extra}).encode()


async def test_stream_lines_split_anywhere_and_any_line_ending() -> None:
    """Events cut mid-line and mid-CRLF, CR-only endings and comment lines decode to the same text."""
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    raw = (
        b": keep-alive\r\n\r\n"
        + _event("hel")
        + b"\r\n\r\n"
        + _event("lo", usage=usage)
        + b"\r\rdata: [DONE]\n\n"
    )
    for cut in range(1, len(raw)):
        got: list[str] = []
        reply = await consume_sse(_chunks(raw[:cut], raw[cut:]), _request("x"), got.append)
        assert (got, reply.text, reply.usage) == (["hel", "lo"], "hello", moa.Usage(3, 2)), cut


async def test_stream_without_done_after_its_finish_reason_ends_with_the_body() -> None:
    """A stream that ends without [DONE] (its last line unterminated) but after a finish_reason
    yields its text: the answer said it was whole."""
    tail = _event("b", choices=[{"delta": {"content": "b"}, "finish_reason": "stop"}])
    reply = await consume_sse(_chunks(_event("a") + b"\n\n" + tail), _request("x"), lambda _t: None)
    assert (reply.text, reply.finish_reason) == ("ab", "stop")


async def test_stream_cut_before_done_and_finish_reason_is_malformed() -> None:
    """A body that ends after some deltas, with neither [DONE] nor a finish_reason, is a cut
    answer: MalformedReply naming node and model, not the truncated text as a success."""
    with pytest.raises(MalformedReply, match="ended before \\[DONE\\]") as info:
        await consume_sse(_chunks(_event("a") + b"\n\n" + _event("b")), _request("x"), lambda _t: None)
    assert (info.value.node, info.value.model) == ("n", "openai/m")


async def test_a_stream_line_without_end_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line that grows past MAX_EVENT_BYTES without a newline becomes MalformedReply, not memory."""
    monkeypatch.setattr(openai_wire, "MAX_EVENT_BYTES", 1000)
    with pytest.raises(MalformedReply, match="passed 1000 bytes"):
        await consume_sse(_chunks(*[b"x" * 300] * 10), _request("x"), lambda _t: None)


async def test_the_connection_cap_hands_a_slot_on_past_a_cancelled_request() -> None:
    """A slot given back goes to the first request in line; handed to one cancelled before it
    resumed, it passes on to the next, and one cancelled while waiting leaves the line."""
    from moa.models.openai_http import _Gate

    gate = _Gate(1)
    assert gate.take() and not gate.take()
    first, second, third = (asyncio.create_task(gate.wait()) for _ in range(3))
    await asyncio.sleep(0)
    third.cancel()
    gate.release()  # to `first`, cancelled in the same turn
    first.cancel()
    for cancelled in (first, third):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    async with asyncio.timeout(30):
        await second
    assert not gate.take()  # `second` holds the one slot
    gate.release()
    assert gate.take()
