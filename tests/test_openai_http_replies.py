"""Hostile 2xx replies on the direct path, over a real socket: fields of the wrong type, counts
that are not numbers, JSON nested past the recursion limit, bodies too large to hold. Each is read
as the answer it carries or fails as one MalformedReply line, never as a Python repr, a crash, or a
'connection failed'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import moa
from moa.errors import MalformedReply
from moa.models.base import ModelRequest
from moa.models.openai_http import OpenAIHTTPModel
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
