"""Hostile 2xx replies on the direct path, over a real socket: fields of the wrong type, counts
that are not numbers, JSON nested past the recursion limit, bodies too large to hold. Each is read
as the answer it carries or fails as one MalformedReply line, never as a Python repr, a crash, or a
'connection failed'."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import moa
from moa.errors import MalformedReply
from moa.models import openai_wire, wire_usage
from moa.models.base import ModelRequest
from moa.models.openai_http import OpenAIHTTPModel
from moa.topology.loader import load_data
from tests.rawhttp import chunked, http, raw_server, sse_delta, sse_head


@pytest.fixture
async def model() -> AsyncIterator[OpenAIHTTPModel]:
    m = OpenAIHTTPModel()
    yield m
    await m.aclose()


def _request(base: str) -> ModelRequest:
    return ModelRequest(
        model="openai/m", messages=[{"role": "user", "content": "hi"}], api_base=base, node="n"
    )


def _reply(content: Any, usage: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


_USAGE = {"prompt_tokens": 3, "completion_tokens": 2}


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ([{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}], "hi there"),
        ([{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "hi"}], "hi"),
    ],
    ids=["text-parts", "text-among-other-parts"],
)
async def test_content_as_a_list_of_parts_is_its_text(
    model: OpenAIHTTPModel, content: Any, text: str
) -> None:
    """A message whose content is a list of parts answers with its text parts joined, not with the
    Python repr of the list."""
    async with raw_server(http(200, _reply(content, _USAGE))) as srv:
        reply = await model.complete(_request(srv.base_url))
    assert reply.text == text and reply.usage == moa.Usage(3, 2)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (123, "the content is int, not text"),
        ({"text": "hi"}, "the content is an object, not text"),
        ([{"type": "image_url", "image_url": {"url": "x"}}], "the content has no text part"),
        (["hi"], "a content part is a string, not an object"),
        ([{"type": "text", "text": 5}], "a text part of the content has no text"),
    ],
    ids=["int", "object", "no-text-part", "bare-strings", "text-not-a-string"],
)
async def test_content_that_is_not_text_is_malformed(model: OpenAIHTTPModel, content: Any, why: str) -> None:
    """Content of another type is MalformedReply naming node and model, not str() of it."""
    async with raw_server(http(200, _reply(content, _USAGE))) as srv:
        with pytest.raises(MalformedReply, match=why) as info:
            await model.complete(_request(srv.base_url))
    assert (info.value.node, info.value.model) == ("n", "openai/m")


_BAD_USAGE = {
    "text": b'{"prompt_tokens": "abc", "completion_tokens": 1}',
    "list": b'{"prompt_tokens": [1], "completion_tokens": 1}',
    "nan": b'{"prompt_tokens": NaN, "completion_tokens": 1}',
    "infinity": b'{"prompt_tokens": 1, "completion_tokens": Infinity}',
    "fraction": b'{"prompt_tokens": 2.5, "completion_tokens": 1}',
    "boolean": b'{"prompt_tokens": true, "completion_tokens": 1}',
    "not-an-object": b"[3, 2]",
}


@pytest.mark.parametrize("usage", sorted(_BAD_USAGE))
async def test_usage_that_is_not_a_count_is_malformed(usage: str) -> None:
    """Token counts that are not whole numbers make the reply MalformedReply (not 'connection
    failed', a TypeError or an OverflowError): the server's accounting cannot be read, so the
    attempt is unknown usage and the budget keeps its worst case."""
    body = b'{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": %s}'
    budget = moa.Budget(10.0)
    async with raw_server(http(200, body % _BAD_USAGE[usage])) as srv, moa.Runner(budget=budget) as rt:
        topology = moa.build.single(
            moa.build.agent(
                "openai/m",
                api_base=srv.base_url,
                max_tokens=50,
                retry={"max_attempts": 1},
                pricing={"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
            )
        )
        with pytest.raises(MalformedReply, match="usage") as info:
            await topology.run("hi", runner=rt)
    call = info.value.calls[0]
    assert [a.usage for a in call.attempt_log] == [None] and budget.spent_usd == pytest.approx(
        call.cost_usd_max
    )


async def test_json_nested_past_the_recursion_limit_is_malformed(model: OpenAIHTTPModel) -> None:
    """A body of 100,000 nested arrays is MalformedReply, not a RecursionError."""
    async with raw_server(http(200, b"[" * 100_000 + b"]" * 100_000)) as srv:
        with pytest.raises(MalformedReply, match="not JSON"):
            await model.complete(_request(srv.base_url))


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (b'data: {"choices": [{"delta": {"content": 7}}]}\n\n', "the content is int, not text"),
        (b'data: {"choices": {"delta": {"content": "hi"}}}\n\n', "choices are not a list"),
        (b'data: {"choices": [], "usage": {"prompt_tokens": "x"}}\n\n', "usage.prompt_tokens"),
    ],
    ids=["delta-content-int", "choices-object", "usage-text"],
)
async def test_a_stream_event_of_the_wrong_shape_is_malformed(
    model: OpenAIHTTPModel, event: bytes, why: str
) -> None:
    """A stream event whose fields have the wrong type is MalformedReply, not a TypeError."""
    body = sse_head(True) + chunked(sse_delta("a") + event + sse_delta(finish="stop") + b"data: [DONE]\n\n")
    async with raw_server(body + b"0\r\n\r\n") as srv:
        with pytest.raises(MalformedReply, match=why):
            await model.complete(_request(srv.base_url), lambda _t: None)


# -- bodies too large to hold ------------------------------------------------------------------------


def _large_reply() -> dict[str, Any]:
    return _reply("a" * 5000, _USAGE)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_reply_past_max_reply_bytes_is_malformed(
    model: OpenAIHTTPModel, monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    """A non-streamed reply larger than MAX_REPLY_BYTES is MalformedReply, refused from its
    Content-Length or cut once the chunks pass the bound, not read whole into memory."""
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1000)
    data = json.dumps(_large_reply()).encode()
    if framing == "content-length":
        raw, why = http(200, data), "declares \\d+ bytes, more than 1000"
    else:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw, why = (
            head + b"".join(chunked(data[i : i + 400]) for i in range(0, len(data), 400)),
            "passed 1000",
        )
    async with raw_server(raw + b"0\r\n\r\n" if framing == "chunked" else raw) as srv:
        with pytest.raises(MalformedReply, match=why):
            await model.complete(_request(srv.base_url))


async def test_a_reply_past_max_reply_bytes_is_malformed_over_a_given_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The httpx client (a given transport) keeps the same bound."""
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1000)
    m = OpenAIHTTPModel(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=_large_reply())))
    with pytest.raises(MalformedReply, match="passed 1000 bytes"):
        await m.complete(_request("http://sim.test/v1"))
    await m.aclose()


async def test_an_error_reply_is_read_only_up_to_max_error_bytes(
    model: OpenAIHTTPModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of an error reply only the first MAX_ERROR_BYTES are read (its message is cut to 500
    characters anyway): here the JSON is cut, so the message is the start of the raw body."""
    monkeypatch.setattr(openai_wire, "MAX_ERROR_BYTES", 100)
    body = json.dumps({"error": {"message": "overloaded " + "x" * 5000}}).encode()
    async with raw_server(http(500, body)) as srv:
        with pytest.raises(moa.ProviderError, match=r'provider error \(500\): \{"error"') as info:
            await model.complete(_request(srv.base_url))
    assert "x" * 100 not in str(info.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_refused_not_followed(status: int) -> None:
    """A completion answered with a redirect to another host is a RequestRejected naming where it
    pointed, free and not retried: the prompt never reaches the other host, nor is its answer taken
    as the model's (aiohttp followed it, 307/308 with the prompt)."""
    async with raw_server(http(200, _reply("stolen", _USAGE))) as elsewhere:
        # another origin (its own port) on 127.0.0.1: a test talks to no other address
        other = elsewhere.base_url + "/chat/completions"
        moved = (
            f"HTTP/1.1 {status} Moved\r\nLocation: {other}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
        async with raw_server(moved) as srv:
            agent = {"model": "openai/m", "api_base": srv.base_url, "transport": "openai-http"}
            agent["pricing"] = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
            t = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})
            budget = moa.Budget(10.0)
            async with moa.Runner(budget=budget) as rt:
                with pytest.raises(moa.RequestRejected) as info:
                    await t.run("hi", runner=rt)
    assert info.value.status_code == status and "\n" not in str(info.value)
    assert f"redirected ({status}) to {other}" in str(info.value)
    assert elsewhere.arrivals == [] and len(srv.arrivals) == 1 and budget.spent_usd == 0


async def test_a_stream_past_max_reply_bytes_of_text_is_malformed(
    model: OpenAIHTTPModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose deltas add up to more text than MAX_REPLY_BYTES is MalformedReply once they
    pass it, as a whole reply is: a server streaming without end no longer grows the answer in
    memory without end (20 MiB came back as the answer to a request with max_tokens 50)."""
    monkeypatch.setattr(openai_wire, "MAX_REPLY_BYTES", 1000)
    events = sse_delta("x" * 300) * 5 + sse_delta(finish="stop") + b"data: [DONE]\n\n"
    seen: list[str] = []
    async with raw_server(sse_head(False) + events) as srv:
        with pytest.raises(MalformedReply, match="streamed text passed 1000 characters"):
            await model.complete(_request(srv.base_url), seen.append)
    assert len(seen) == 3  # the deltas within the bound reached the consumer, the fourth did not


class _Walked(dict[str, Any]):
    """A usage dict that is not exactly a ``dict``: ``reported_usage`` reads it field by field."""


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 3, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 99},
        {"prompt_tokens": 3},
        {"completion_tokens": 2, "total_tokens": 2},
        {"prompt_tokens": 0, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": 0},
        {"prompt_tokens": -3, "completion_tokens": 2},
        {"prompt_tokens": True, "completion_tokens": 2},
        {"prompt_tokens": 3.0, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": "2"},
        {"prompt_tokens": 3, "completion_tokens": None},
        {},
    ],
)
def test_the_usual_usage_reads_as_the_field_by_field_walk(usage: dict[str, Any]) -> None:
    """A usage of prompt, completion and total counts alone is read in one step: the same counts,
    and the same refusal, as the walk that reads every other shape."""

    def read(u: dict[str, Any]) -> object:
        try:
            return wire_usage.reported_usage(u, _request("http://127.0.0.1:9/v1"))
        except MalformedReply as e:
            return str(e)

    assert read(usage) == read(_Walked(usage))
