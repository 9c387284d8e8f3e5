"""The direct path's JSON: the body written by pydantic-core where it writes as ``json`` does, and the
reply read by it where it reads as ``json`` does; everything else goes through ``json``, so the bytes
a server gets and the reply moa reads (or its error) are what ``json`` made of them before."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from moa.errors import MalformedReply
from moa.models.base import ModelRequest
from moa.models.openai_wire import encode_body, parse_reply


def _request(params: dict[str, Any] | None = None, content: str = "hi") -> ModelRequest:
    return ModelRequest(
        model="openai/m",
        messages=[{"role": "user", "content": content}],
        temperature=0.7,
        max_tokens=5,
        stop=["\n"],
        params=params or {},
        node="n",
    )


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"seed": 7, "user": "u", "logprobs": True, "presence_penalty": 1e-07, "n": None},
        {"big": 2**70, "neg": -0.0},
        {"response_format": {"type": "json_object"}, "logit_bias": {"50256": -100}},
    ],
    ids=["none", "scalars", "odd-numbers", "nested"],
)
@pytest.mark.parametrize("content", ["hi", 'héllo \u2028 \U0001f600 \x00 "q" \\'], ids=["ascii", "unicode"])
def test_the_body_reads_back_as_the_json_encoder_wrote_it(params: dict[str, Any], content: str) -> None:
    """Whichever encoder writes it, the body parses to what ``json`` wrote: same fields, same order."""
    request = _request(params, content)
    for stream in (False, True):
        body = encode_body(request, stream)
        assert json.loads(body) == json.loads(json.dumps(json.loads(body)))
        assert list(json.loads(body)) == list(json.loads(json.dumps(json.loads(body))))
        assert json.loads(body)["messages"] == [{"role": "user", "content": content}]
        assert json.loads(body)["temperature"] == 0.7 and json.loads(body)["stop"] == ["\n"]


def test_a_nan_param_is_written_as_json_writes_it() -> None:
    """NaN and Infinity in params go out as ``json`` writes them, not as null."""
    body = encode_body(_request({"a": float("nan"), "b": float("inf")}), False)
    assert b'"a":NaN' in body and b'"b":Infinity' in body


def test_a_param_json_cannot_write_is_still_refused() -> None:
    """A datetime in params is refused as ``json`` refuses it, not written by pydantic-core."""
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_body(_request({"when": datetime.date(2026, 1, 1)}), False)


def test_a_lone_surrogate_in_a_message_is_escaped_as_before() -> None:
    """Text UTF-8 cannot hold goes through ``json``, escaped as it always was."""
    body = encode_body(_request(content="a\ud800b"), False)
    assert b'"content":"a\\ud800b"' in body


def _reply(extra: bytes = b"") -> bytes:
    return (
        b'{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},'
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}' + extra
    )


@pytest.mark.parametrize(
    "raw",
    [
        _reply(),
        b"\xef\xbb\xbf" + _reply(),
        _reply().decode().encode("utf-16"),
        _reply().replace(b'"Paris"', b'"Par\\ud800is"'),
        _reply().replace(b'"Paris"', b'"Paris","content":"Lyon"'),
    ],
    ids=["plain", "utf8-bom", "utf16", "lone-surrogate-escape", "duplicate-key"],
)
def test_a_reply_reads_as_json_loads_reads_it(raw: bytes) -> None:
    """What pydantic-core refuses is read by ``json.loads``: the text is ``json``'s reading."""
    expected = json.loads(raw)["choices"][0]["message"]["content"]
    assert parse_reply(raw, _request()).text == expected


@pytest.mark.parametrize(
    "raw", [_reply(b"\x00"), b"[" * 5000 + b"]" * 5000, b"not json"], ids=["trailing", "deep", "text"]
)
def test_a_reply_json_loads_refuses_is_malformed(raw: bytes) -> None:
    """A reply neither reader takes is one MalformedReply line, as before."""
    with pytest.raises(MalformedReply, match="malformed reply"):
        parse_reply(raw, _request())
