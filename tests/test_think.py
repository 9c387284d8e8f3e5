"""A reasoning model's `<think>` block in its answer's text (DeepSeek-R1 distills, QwQ and Qwen3 served
without a reasoning parser), over loopback HTTP on both paths and through a backend of the user's:
the reasoning is no part of the answer, streamed or not, and its tokens stay billed."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dataclasses
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

import moa
from moa.models.base import ModelReply
from moa.models.think import ThinkFilter, split_reasoning
from moa.results import Usage
from moa.serve import create_app
from moa.testing import FunctionModel
from moa.topology.loader import load_data
from tests.dict_cache import DictCache
from tests.loopback_http import threaded_server
from tests.rawhttp import http, raw_server, sse_head
from tests.serving import serving
from tests.test_server_dialects import TRANSPORTS, _thinking, single

_REASONING = "The answer might be 7, or (B). Let me check: 6 * 7 = 42."

#: the texts a reasoning model answers with, and the answer in each
_REPLIES = {
    "think-block": (f"<think>\n{_REASONING}\n</think>\n\n42", "\n\n42"),
    "blank-first": (f"\n<think>{_REASONING}</think>\n\n42", "\n\n42"),
    # DeepSeek-R1's and QwQ's chat templates open <think> in the prompt
    "opened-by-template": (f"{_REASONING}\n</think>\n\n42", "\n\n42"),
    # the other tags litellm takes out of a whole reply: the direct path kept them in the answer
    "thinking-block": (f"<thinking>{_REASONING}</thinking>\n\n42", "\n\n42"),
    "budget-thinking-block": (f"<budget:thinking>{_REASONING}</budget:thinking>\n\n42", "\n\n42"),
}


def _whole(content: str, finish: str = "stop") -> bytes:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish}
    usage = {"prompt_tokens": 5, "completion_tokens": 40}
    return http(
        200, {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice], "usage": usage}
    )


def _streamed(pieces: list[str], finish: str = "stop") -> bytes:
    def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [choice],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    usage = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    usage["usage"] = {"prompt_tokens": 5, "completion_tokens": 40}
    body = b"".join(event({"content": p}) for p in pieces) + event({}, finish)
    return sse_head(False) + body + b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", sorted(_REPLIES))
async def test_a_reasoning_models_think_block_is_not_its_answer(transport: str, shape: str) -> None:
    """`<think>reasoning</think>answer` in `content` (or `reasoning</think>answer` when the chat
    template opened the block) answers `answer`, billed every token: the reasoning was the run's
    output, and an `exact` reading could take its 7 for the answer."""
    content, answer = _REPLIES[shape]
    async with raw_server(_whole(content)) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, transport), "hi")
    assert r.output == answer and r.calls[0].reply == answer
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 40)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_streamed_think_block_cut_across_deltas_never_reaches_the_consumer(transport: str) -> None:
    """A streamed `<think>` block whose tags are cut across deltas is held back and dropped: the
    tokens and the output are the answer alone, and its tokens are billed."""
    pieces = ["<th", "ink>\nThe answer might be 7.</th", "ink", ">\n\n4", "2"]
    tokens: list[str] = []
    async with raw_server(_streamed(pieces)) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, transport), "hi", on_token=tokens.append)
    assert "".join(tokens) == r.output == "\n\n42"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 40)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_thinking_block_answers_the_same_on_every_path(transport: str, stream: bool) -> None:
    """A leading `<thinking>` block (closed by `</thinking>`, or by `</think>` as litellm allows)
    is reasoning on both transports, whole or streamed: litellm took it out of a whole reply only,
    so the same server's reply answered `42` there and its reasoning's `7` on the other paths."""
    for content in (f"<thinking>{_REASONING}</thinking>\n\n42", f"<think>{_REASONING}</thinking>\n\n42"):
        pieces = [content[:5], content[5:-6], content[-6:]]
        tokens: list[str] = []
        body = _streamed(pieces) if stream else _whole(content)
        async with raw_server(body) as srv, moa.Runner() as rt:
            r = await rt.run(
                single(srv.base_url, transport), "hi", on_token=tokens.append if stream else None
            )
        assert r.output == "\n\n42", content
        assert "".join(tokens) == ("\n\n42" if stream else "")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_reply_that_is_only_reasoning_cut_at_max_tokens_says_to_raise_it(
    transport: str, stream: bool
) -> None:
    """A reply cut at max_tokens inside its `<think>` block is no answer: it fails as the same
    "cut at max_tokens while the model was still reasoning" a `reasoning_content` reply gives,
    billed what it reported, with nothing streamed; before, the reasoning was the answer."""
    reply = (
        _streamed(["<think>", "The answer might be 7"], "length")
        if stream
        else _whole("<think>The answer might be 7", "length")
    )
    tokens: list[str] = []
    async with raw_server(reply) as srv, moa.Runner() as rt:
        with pytest.raises(
            moa.MalformedReply, match="cut at max_tokens while the model was still reasoning"
        ) as info:
            await rt.run(single(srv.base_url, transport), "hi", on_token=tokens.append if stream else None)
    assert "raise max_tokens" in str(info.value) and "openai/m" in str(info.value) and tokens == []
    usage = info.value.calls[0].attempt_log[0].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (5, 40)


#: a reply that reasoned and answered nothing, however the reasoning came
_ONLY_REASONING = {
    "think-block": "<think>Maybe 7</think>",
    "thinking-block-then-blanks": "<thinking>Maybe 7</thinking>\n\n",
    "budget-thinking-block": "<budget:thinking>Maybe 7</budget:thinking>",
    "opened-by-template": "Maybe 7</think>",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("shape", [*sorted(_ONLY_REASONING), "reasoning_content"])
async def test_a_reply_that_is_only_reasoning_says_so_in_the_same_words_on_every_path(
    transport: str, stream: bool, shape: str
) -> None:
    """A reply that is only a reasoning block, or `reasoning_content` beside an empty `content`,
    fails as "no answer after the model's reasoning" on both transports, whole or streamed, billed,
    and is retried like any malformed reply: litellm takes a whole reply's block out itself, and
    what was left failed as "the reply is empty" there alone."""
    if shape == "reasoning_content":
        first = _thinking(None, "stop", stream, "")
    else:
        content = _ONLY_REASONING[shape]
        first = _streamed([content[:4], content[4:]]) if stream else _whole(content)
    on_token = (lambda _t: None) if stream else None
    async with raw_server(first) as srv, moa.Runner() as rt:
        with pytest.raises(moa.MalformedReply) as info:
            await rt.run(single(srv.base_url, transport), "hi", on_token=on_token)
    assert str(info.value) == (
        "node `answer`, model `openai/m`: malformed reply: no answer after the model's reasoning"
    )
    usage = info.value.calls[0].attempt_log[0].usage
    assert usage is not None and usage.prompt_tokens == 5
    if stream and shape == "opened-by-template":
        return  # its tokens passed before its `</think>` showed them reasoning: no retry may follow
    again = _streamed(["4", "2"]) if stream else _whole("42")
    async with raw_server(first, again) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, transport, retry={"max_attempts": 2}), "hi", on_token=on_token)
    assert r.output == "42" and r.calls[0].attempts == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_think_tag_inside_an_answer_is_kept(transport: str) -> None:
    """A `<think>` further into an answer (quoted HTML), and a `</think>` quoted mid-sentence, are
    the answer's own words."""
    for answer in ("Wrap it as <think>...</think>, then answer.", "The closing tag is `</think>`."):
        async with raw_server(_whole(answer)) as srv, moa.Runner() as rt:
            r = await rt.run(single(srv.base_url, transport), "hi")
        assert r.output == answer


async def test_the_next_node_reads_the_answer_not_the_reasoning() -> None:
    """Through a backend of the user's (as through the embedded model): the next node's prompt
    holds the answer, and a reply that is only reasoning is retried, not passed on."""
    said = iter(["<think>maybe 7", "<think>maybe 7</think>42"])

    def answer(request: Any) -> str | ModelReply:
        if request.model == "fake/first":
            text = next(said)
            return ModelReply(text, Usage(3, 9), finish_reason="length" if "</think>" not in text else "stop")
        return "final: " + request.messages[-1]["content"]

    fake = FunctionModel(answer)
    topology = load_data(
        {
            "name": "s",
            "kind": "sequential",
            "steps": ["a", "b"],
            "agents": {"a": {"model": "fake/first"}, "b": {"model": "fake/second"}},
        }
    )
    async with moa.Runner(models={"fake/*": fake}) as rt:
        r = await rt.run(topology, "hi")
    assert "maybe 7" not in fake.calls[-1].messages[-1]["content"] and "42" in r.output
    first = r.calls[0]
    assert first.attempts == 2 and first.usage == Usage(6, 18)


async def test_a_reply_cached_with_its_reasoning_replays_the_answer() -> None:
    """A reply an experiment's call cache kept with its `<think>` block (cached by an older moa)
    replays the answer alone; one that is only reasoning is no hit, and the model is asked."""
    fake = FunctionModel(lambda _r: "fresh")
    cache = DictCache()
    topology = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}})
    async with moa.Runner(models={"fake/*": fake}, cache=cache) as rt:
        await rt.run(topology, "hi")
        (key,) = cache.replies
        for cached, output in (("<think>maybe 7</think>42", "42"), ("<think>maybe 7", "fresh")):
            hit = cache.replies[key] = dataclasses.replace(
                cache.replies[key], reply=ModelReply(cached, Usage(3, 9)), answer_only=False
            )
            r = await rt.run(topology, "hi")
            assert r.output == output and r.calls[0].cached == (output == "42"), hit
    assert len(fake.calls) == 2


async def test_a_replayed_reply_is_the_answer_its_first_call_returned() -> None:
    """An answer that itself holds a `</think>` after its reasoning was taken out replays as the
    first call returned it: taken out again on replay, it was cut a second time (a resumed run
    scored another answer than its first run)."""
    fake = FunctionModel(lambda _r: "<think>a</think>\n\nx </think>\n\ny")
    cache = DictCache()
    topology = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}})
    async with moa.Runner(models={"fake/*": fake}, cache=cache) as rt:
        first = await rt.run(topology, "hi")
        again = await rt.run(topology, "hi")
    assert first.output == "\n\nx </think>\n\ny"
    assert again.output == first.output and again.calls[0].cached and len(fake.calls) == 1


class _Thinker(BaseHTTPRequestHandler):
    """A vLLM without a reasoning parser: its answer after a `<think>` block, cut across deltas
    when streamed."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        pieces = ["<think>Maybe 7", "?</thi", "nk>\n\n42"]
        self.wfile.write(_streamed(pieces) if body.get("stream") else _whole("".join(pieces)))
        self.close_connection = True


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_moa_serve_answers_without_the_reasoning(stream: bool) -> None:
    """`moa serve`'s reply (its streamed deltas too) is the answer, not the reasoning before it."""
    with threaded_server(_Thinker) as upstream:
        topology = load_data(
            {
                "name": "t",
                "kind": "single",
                "agent": "a",
                "agents": {"a": {"model": "openai/m", "api_base": upstream + "/v1"}},
            }
        )
        with serving(create_app([topology])) as base:
            request = {"model": "t", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            with httpx.Client(timeout=30) as client:
                reply = client.post(f"{base}/chat/completions", json=request)
    assert reply.status_code == 200
    if stream:
        events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
        text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    else:
        text = reply.json()["choices"][0]["message"]["content"]
    assert text == "\n\n42"


_CUTS = [
    ("<think>abc</think>\n\nanswer", "\n\nanswer"),
    ("  <think>abc</think>answer", "answer"),
    ("<think>never closed", ""),
    ("<thi", "<thi"),
    ("plain answer with <think> inside", "plain answer with <think> inside"),
    ("<thinking is an answer", "<thinking is an answer"),
    ("<thinking>abc</thinking>\n\nanswer", "\n\nanswer"),
    (" <budget:thinking>a</budget:thinking>answer", "answer"),
    ("<think>abc</thinking>answer", "answer"),
    ("<thinking>never closed", ""),
    ("abc</think>\n42", "abc</think>\n42"),  # opened by the template: streamed as it came
]


@pytest.mark.parametrize(("text", "streamed"), _CUTS)
def test_the_think_filter_gives_the_same_tokens_wherever_the_stream_is_cut(text: str, streamed: str) -> None:
    """Cut into two or three pieces at every place, a stream passes on the same text: the answer
    after a leading `<think>` block, anything else whole."""
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            out: list[str] = []
            f = ThinkFilter(out.append)
            for piece in (text[:i], text[i:j], text[j:]):
                if piece:
                    f.feed(piece)
            f.flush()
            assert "".join(out) == streamed, (i, j)


def test_split_reasoning_reads_only_leading_reasoning() -> None:
    """Reasoning is a leading block, or text up to a `</think>` that ends a line; nothing else."""
    assert split_reasoning("<think>r</think>a") == ("r", "a")
    assert split_reasoning("r</think>\na") == ("r", "\na")
    assert split_reasoning("r</think>") == ("r", "")
    assert split_reasoning("a <think>r</think> b") is None
    assert split_reasoning("close with </think>.") is None
    assert split_reasoning("close with `</think>`\n") is None
    assert split_reasoning("Close it:\n```html\n</think>\n```") is None
    assert split_reasoning("Try:\n```py\nx = 1\n```\nso 1.</think>\n\n1") == (
        "Try:\n```py\nx = 1\n```\nso 1.",
        "\n\n1",
    )
    assert split_reasoning("plain") is None
    assert split_reasoning("<thinking>r</thinking>a") == ("r", "a")
    assert split_reasoning("<think>r</thinking>a</think>b") == ("r", "a</think>b")
    assert split_reasoning("a <thinking>r</thinking> b") is None


def _reasoned_without_usage(stream: bool) -> bytes:
    """A reasoning parser's reply (the reasoning in `reasoning_content`) from a server that reports
    no usage, as one that ignores `stream_options` streams."""
    reasoning = "Let me think about this carefully. " * 20
    if not stream:
        message = {"role": "assistant", "content": "42", "reasoning_content": reasoning}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return http(200, {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]})

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    thinking = b"".join(event({"reasoning_content": reasoning[i : i + 35]}) for i in range(0, 700, 35))
    body = thinking + event({"content": "42"}) + event({}, "stop") + b"data: [DONE]\n\n"
    return sse_head(False) + body


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_estimated_usage_counts_the_reasoning(transport: str, stream: bool) -> None:
    """A server that reports no usage has the reasoning it sent counted in the estimate, as the
    completion tokens it is: the estimate counted the two-character answer alone, about 1 token
    of the 150 or so the reply held."""
    async with raw_server(_reasoned_without_usage(stream)) as srv, moa.Runner() as rt:
        topology = single(srv.base_url, transport, max_tokens=1000)
        r = await rt.run(topology, "hi", on_token=(lambda _t: None) if stream else None)
    call = r.calls[0]
    assert r.output == "42" and call.usage_estimated and not call.usage_suspect
    assert call.usage.completion_tokens >= 100


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "first", [["<think>Maybe 7</think>", "\n\n"], ["\n", "  "]], ids=["reasoning", "blank"]
)
async def test_a_streamed_reply_with_no_answer_sends_no_token_and_is_retried(
    transport: str, first: list[str]
) -> None:
    """A streamed reply that is only reasoning and blanks, or only blanks, passes no token on, so
    it is retried like any reply with no answer: its blanks, passed on, forbade a retry (no second
    answer may follow tokens the consumer has) and the call failed."""
    tokens: list[str] = []
    async with raw_server(_streamed(first), _streamed(["4", "2"])) as srv, moa.Runner() as rt:
        r = await rt.run(
            single(srv.base_url, transport, retry={"max_attempts": 2}), "hi", on_token=tokens.append
        )
    assert r.output == "".join(tokens) == "42" and r.calls[0].attempts == 2
