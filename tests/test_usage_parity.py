"""The same reply bodies, served by one loopback provider, through the direct path and through
litellm: the same ``Usage``, flags and cost on both, whole and streamed. Where litellm itself
throws information away before moa sees it, the difference is written down here case by case."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

import moa
from moa.results import Done, Usage
from moa.topology.loader import load_data
from tests.loopback_http import send_body, send_sse, threaded_server

# litellm's own import-time and serializer warnings (a count sent as text is coerced with one)
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning"),
]

#: a usage object left out of the reply altogether
ABSENT = "absent"


class _Provider(BaseHTTPRequestHandler):
    """Answers "ok fine" with the usage objects its request's ``X-Usages`` header holds (a JSON
    list): whole, the last one; streamed, one usage event each after the text and the finish."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        usages = json.loads(self.headers["x-usages"])
        head = {"id": "x", "model": body["model"], "created": 1}
        if not body.get("stream"):
            reply: dict[str, Any] = {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok fine"},
                        "finish_reason": "stop",
                    }
                ],
            }
            if usages[-1] != ABSENT:
                reply["usage"] = usages[-1]
            send_body(self, 200, json.dumps(reply).encode())
            return
        h = {**head, "object": "chat.completion.chunk"}
        events: list[dict[str, object]] = [
            {
                **h,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}
                ],
            },
            {**h, "choices": [{"index": 0, "delta": {"content": " fine"}, "finish_reason": None}]},
            {**h, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        events += [{**h, "choices": [], "usage": u} for u in usages if u != ABSENT]
        send_sse(self, events)


#: long enough for the prompt counts below to be believed (2,000 tokens of a 12,400-byte prompt)
PROMPT = "a long shared context to cache " * 400


async def _outcome(base: str, transport: str, usages: list[Any], stream: bool) -> tuple[Any, ...]:
    """What one call booked: (usage, usage_estimated, usage_suspect, cost), or for a reply moa could
    not read ("MalformedReply", the attempt's usage (None: unknown), the worst case kept)."""
    spec = {
        "model": "openai/gpt-4o",
        "api_base": base,
        "transport": transport,
        "max_tokens": 50,
        "api_key_env": "MOA_T_PARITY_KEY",
        "retry": {"max_attempts": 1},
        "params": {"extra_headers": {"X-Usages": json.dumps(usages)}},
    }
    topology = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
    async with moa.Runner() as runner:
        try:
            if not stream:
                result = await topology.run(PROMPT, runner=runner)
            else:
                async for ev in topology.stream(PROMPT, runner=runner):
                    if isinstance(ev, Done):
                        result = ev.result
        except moa.MoAError as e:
            (call,) = e.calls
            return (type(e).__name__, call.attempt_log[-1].usage, round(call.cost_usd_max, 9))
    (call,) = result.calls
    return (call.usage, call.usage_estimated, call.usage_suspect, round(call.cost_usd, 9))


#: bodies both paths must read alike, to the token and the cent
AGREE: dict[str, list[Any]] = {
    "plain": [{"prompt_tokens": 2000, "completion_tokens": 10}],
    "cached-tokens": [
        {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1536}}
    ],
    "cache-creation-details-1h": [
        {
            "prompt_tokens": 2000,
            "completion_tokens": 10,
            "prompt_tokens_details": {
                "cached_tokens": 100,
                "cache_creation_tokens": 500,
                "cache_creation_token_details": {"ephemeral_1h_input_tokens": 200},
            },
        }
    ],
    # a litellm proxy's Anthropic names beside prompt_tokens; litellm dropped the 1h lifetimes
    "anthropic-cache-creation-1h": [
        {
            "prompt_tokens": 2000,
            "completion_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_1h_input_tokens": 200, "ephemeral_5m_input_tokens": 300},
        }
    ],
    # Anthropic's own names: the cache's tokens are outside input_tokens (litellm read 200 prompt
    # tokens and charged the reply as suspect)
    "anthropic-names": [
        {
            "input_tokens": 200,
            "output_tokens": 10,
            "cache_read_input_tokens": 300,
            "cache_creation_input_tokens": 500,
        }
    ],
    # the Responses API's names (litellm lost the cache discount)
    "responses-api": [
        {"input_tokens": 2000, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 1536}}
    ],
    "deepseek-hit-count": [
        {
            "prompt_tokens": 2000,
            "completion_tokens": 10,
            "prompt_cache_hit_tokens": 600,
            "prompt_cache_miss_tokens": 1400,
        }
    ],
    "reasoning-tokens": [
        {
            "prompt_tokens": 2000,
            "completion_tokens": 40,
            "completion_tokens_details": {"reasoning_tokens": 30},
        }
    ],
    "negative-prompt": [{"prompt_tokens": -5, "completion_tokens": 10}],
    "negative-completion": [{"prompt_tokens": 2000, "completion_tokens": -10}],
    "negative-cache-read": [
        {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": -5}}
    ],
    "whole-floats": [{"prompt_tokens": 2000.0, "completion_tokens": 10.0}],
    "fractional-float": [{"prompt_tokens": 2000.5, "completion_tokens": 10}],
    "text-count": [{"prompt_tokens": "lots", "completion_tokens": 10}],
    "beyond-any-prompt": [{"prompt_tokens": 10**30, "completion_tokens": 10}],
    "usage-as-text": ["lots"],
    "usage-as-a-list": [[1, 2]],
    "repeated-in-chunks": [
        {"prompt_tokens": 2000, "completion_tokens": 3},
        {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1000}},
    ],
}


#: streamed, litellm drops a usage event that is not an object (see ``LITELLM_LOSES``)
_WHOLE_ONLY = {"usage-as-text", "usage-as-a-list"}


@pytest.mark.parametrize(
    ("case", "stream"),
    [
        pytest.param(c, s, id=f"{c}-{'streamed' if s else 'whole'}")
        for c in sorted(AGREE)
        for s in (False, True)
        if not (s and c in _WHOLE_ONLY)
    ],
)
async def test_both_paths_book_the_same_reply_alike(
    case: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage (every cache count), the estimated and suspect flags and the cost agree between the
    direct path and litellm for the same bytes; a reply one path cannot read, the other cannot."""
    monkeypatch.setenv("MOA_T_PARITY_KEY", "sk-parity-test-key")
    usages = AGREE[case]
    with threaded_server(_Provider) as url:
        direct = await _outcome(url + "/v1", "openai-http", usages, stream)
        through = await _outcome(url + "/v1", "litellm", usages, stream)
    assert direct == through
    if case == "anthropic-names":
        assert direct[0] == Usage(1000, 10, 300, 500) and not direct[2]
    if case == "anthropic-cache-creation-1h":
        assert direct[0] == Usage(2000, 10, 100, 500, 200)
    if case == "repeated-in-chunks" and stream:
        assert direct[0] == Usage(2000, 10, 1000)  # the last count wins, not a sum


#: no usage the provider's: both estimate and say so; the estimates differ by design (the direct
#: path counts UTF-8 bytes / 4 and never imports litellm; litellm's path uses its tokenizer)
ESTIMATED: dict[str, list[Any]] = {
    "missing": [ABSENT],
    "null": [None],
    "all-zero": [{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}],
    "completion-only": [{"completion_tokens": 10}],
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", sorted(ESTIMATED))
async def test_both_paths_estimate_a_reply_without_usage(
    case: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply without usage is estimated and flagged on both paths (never $0), a count it did
    report kept on both; only the estimator differs."""
    monkeypatch.setenv("MOA_T_PARITY_KEY", "sk-parity-test-key")
    with threaded_server(_Provider) as url:
        direct = await _outcome(url + "/v1", "openai-http", ESTIMATED[case], stream)
        through = await _outcome(url + "/v1", "litellm", ESTIMATED[case], stream)
    for usage, estimated, suspect, cost in (direct, through):
        assert estimated and not suspect and cost > 0 and usage.prompt_tokens > 0
    if case == "completion-only":
        assert direct[0].completion_tokens == through[0].completion_tokens == 10


#: what litellm loses before moa sees it: the direct path refuses the count (a MalformedReply,
#: unknown usage, its worst case kept); litellm's pydantic model has already turned it into a
#: number (``"2000"`` -> 2000, ``true`` -> 1) or dropped it, so moa reads that
LITELLM_LOSES: dict[str, tuple[list[Any], Usage | None]] = {
    # (usages, what litellm books: None for an estimate)
    "count-as-digits": ([{"prompt_tokens": "2000", "completion_tokens": 10}], Usage(2000, 10)),
    "count-as-boolean": ([{"prompt_tokens": True, "completion_tokens": 10}], Usage(1, 10)),
    "details-as-text": (
        [{"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": "x"}],
        Usage(2000, 10),
    ),
    "cache-count-as-digits": (
        [{"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": "5"}}],
        Usage(2000, 10, 5),
    ),
    # streamed only: whole, litellm refuses the body as the direct path does (``AGREE``)
    "usage-as-text": (["lots"], None),
    "usage-as-a-list": ([[1, 2]], None),
}


@pytest.mark.parametrize(
    ("case", "stream"),
    [
        pytest.param(c, s, id=f"{c}-{'streamed' if s else 'whole'}")
        for c in sorted(LITELLM_LOSES)
        for s in (False, True)
        if s or c not in _WHOLE_ONLY
    ],
)
async def test_what_litellm_loses_is_written_down(
    case: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path refuses a count that is not one; litellm coerces or drops it first. This
    pins the difference, so a litellm that starts keeping the field is noticed."""
    usages, booked = LITELLM_LOSES[case]
    monkeypatch.setenv("MOA_T_PARITY_KEY", "sk-parity-test-key")
    with threaded_server(_Provider) as url:
        direct = await _outcome(url + "/v1", "openai-http", usages, stream)
        through = await _outcome(url + "/v1", "litellm", usages, stream)
    assert direct[:2] == ("MalformedReply", None) and direct[2] > 0
    if booked is None:
        assert through[1] and through[0].prompt_tokens > 0  # estimated
    else:
        assert through[0] == booked and not through[1]
