"""What a failing or misbehaving provider costs and how it is retried, on both transports (litellm
and the direct path), over real sockets: Retry-After on a 5xx, connections dropped before or during
a reply, replies that report no usage."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from typing import Any

import pytest

import moa
from moa.topology.loader import load_data
from tests.rawhttp import chunked, http, raw_server, sse_delta, sse_head

TRANSPORTS = ("openai-http", "litellm")
_OK = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def single(base: str, transport: str, **extra: Any) -> moa.Topology:
    agent = {
        "model": "openai/m",
        "api_base": base,
        "transport": transport,
        "pricing": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
        "retry": {"max_attempts": 1},
        **extra,
    }
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


def _overloaded(status: int, retry_after: str) -> bytes:
    return http(status, {"error": {"message": "overloaded"}}, [f"Retry-After: {retry_after}"])


# -- Retry-After on a 5xx ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_carries_its_retry_after(transport: str, status: int) -> None:
    """A 5xx with Retry-After becomes a ProviderError whose retry_after_s is the header's."""
    async with raw_server(_overloaded(status, "7")) as srv, moa.Runner() as rt:
        with pytest.raises(moa.ProviderError) as info:
            await single(srv.base_url, transport).run("hi", runner=rt)
    assert info.value.status_code == status and info.value.retry_after_s == pytest.approx(7)
    assert info.value.node == "answer" and info.value.model == "openai/m"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_503s_retry_after_is_waited_before_the_retry(transport: str) -> None:
    """The retry after a 503 saying Retry-After: 1 reaches the server no sooner than 1 s later,
    although the backoff alone would have retried within 10 ms."""
    async with raw_server(_overloaded(503, "1"), http(200, _OK)) as srv:
        retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
        async with moa.Runner() as rt:
            r = await single(srv.base_url, transport, retry=retry).run("hi", runner=rt)
        first, second = srv.arrivals
    assert r.output == "four" and r.calls[0].attempts == 2
    assert second - first >= 1.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_retry_after_date_is_measured_from_the_replys_own_date(transport: str) -> None:
    """A server whose clock is years behind ours says Date: 2001-01-01 00:00:00 and Retry-After one
    second later: the retry waits that second. Measured from our clock, the date was long past, and
    the retry went at once into the same overload."""
    dates = ["Date: Mon, 01 Jan 2001 00:00:00 GMT", "Retry-After: Mon, 01 Jan 2001 00:00:01 GMT"]
    overloaded = http(503, {"error": {"message": "overloaded"}}, dates)
    async with raw_server(overloaded, http(200, _OK)) as srv:
        retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
        async with moa.Runner() as rt:
            r = await single(srv.base_url, transport, retry=retry).run("hi", runner=rt)
        first, second = srv.arrivals
    assert r.output == "four" and r.calls[0].attempts == 2
    assert second - first >= 1.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_429_without_retry_after_waits_for_its_spent_window_to_reset(transport: str) -> None:
    """A 429 with no Retry-After but OpenAI's x-ratelimit headers (0 requests left, reset in 1s)
    is retried once that window resets, not after the 10 ms backoff that met the same 429."""
    headers = [
        "x-ratelimit-remaining-requests: 0",
        "x-ratelimit-reset-requests: 1s",
        "x-ratelimit-remaining-tokens: 9000",
        "x-ratelimit-reset-tokens: 6m0s",  # not spent: not waited for
    ]
    limited = http(429, {"error": {"message": "Rate limit reached for requests"}}, headers)
    async with raw_server(limited, http(200, _OK)) as srv:
        retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
        async with moa.Runner() as rt:
            r = await single(srv.base_url, transport, retry=retry).run("hi", runner=rt)
        first, second = srv.arrivals
    assert r.output == "four" and r.calls[0].attempts == 2
    assert second - first >= 1.0


_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_429_for_a_spent_quota_is_not_retried_but_falls_back(transport: str) -> None:
    """OpenAI's 429 for an account out of credit is a RateLimited that is not retried (no wait
    brings credit back; it was retried max_attempts times, each spending the endpoint's retry
    budget), saying why, and the fallback answers at once."""
    async with raw_server(http(429, _QUOTA), http(200, _OK)) as srv, moa.Runner() as rt:
        retry = {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
        r = await single(srv.base_url, transport, retry=retry, fallbacks=["openai/other"]).run(
            "hi", runner=rt
        )
        arrived = len(srv.arrivals)
    primary, fallback = r.calls
    assert r.output == "four" and arrived == 2 and primary.attempts == 1 and fallback.model == "openai/other"
    assert primary.error is not None and "RateLimited" in primary.error and "quota is spent" in primary.error


# -- a connection dropped before the reply is whole ---------------------------------------------------


_HALF_A_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    b'{"choices": [{"message": {"content": "fo'
)


@pytest.mark.parametrize("reply", [b"", _HALF_A_REPLY], ids=["closed-unanswered", "closed-mid-body"])
async def test_a_dropped_connection_over_litellm_is_unknown_usage(reply: bytes) -> None:
    """A connection closed after the request arrived is a 'connection failed' with no status, as on
    the direct path: unknown usage, whose worst case the budget keeps. litellm calls it a 500,
    which was booked as a known $0."""
    budget = moa.Budget(10.0)
    async with raw_server(reply) as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(moa.ProviderError, match="connection failed") as info:
            await single(srv.base_url, "litellm", max_tokens=100).run("hi", runner=rt)
    assert info.value.status_code is None and "\n" not in str(info.value)
    call = info.value.calls[0]
    assert [a.usage for a in call.attempt_log] == [None] and call.unknown_usage_attempts == 1
    assert budget.spent_usd == pytest.approx(call.cost_usd_max) and call.cost_usd_max > 0


# -- a reply without usage ----------------------------------------------------------------------------


def _without_usage(usage: Any) -> bytes:
    reply = {k: v for k, v in _OK.items() if k != "usage"}
    reply["choices"] = [{"index": 0, "message": {"content": "word " * 200}, "finish_reason": "stop"}]
    if usage is not None:
        reply["usage"] = usage
    return http(200, reply)


_ZEROS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


# the direct path already estimated an absent usage; zeros were taken at their word on both
@pytest.mark.parametrize(
    ("transport", "usage"),
    [("litellm", None), ("litellm", {}), ("litellm", _ZEROS), ("openai-http", _ZEROS)],
    ids=["litellm-absent", "litellm-empty", "litellm-zeros", "direct-zeros"],
)
async def test_a_reply_without_usage_is_estimated_not_free(transport: str, usage: Any) -> None:
    """A 200 whose usage is absent, empty or all zeros is charged an estimate of its tokens, on both
    transports, never the $0 litellm's zero-filled usage once gave."""
    async with raw_server(_without_usage(usage)) as srv, moa.Runner() as rt:
        r = await single(srv.base_url, transport, max_tokens=500).run("write two hundred words", runner=rt)
    call = r.calls[0]
    assert 100 <= call.usage.completion_tokens <= 500 and call.usage.prompt_tokens > 0
    assert call.cost_usd > 0 and not call.usage_suspect


def _stream(usage: Any) -> bytes:
    return (
        sse_head(False)
        + sse_delta("word " * 200)
        + sse_delta(finish="stop", usage=usage)
        + b"data: [DONE]\n\n"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_estimated_usage_is_flagged_and_reported_usage_is_not(transport: str, stream: bool) -> None:
    """A reply without usage leaves a record flagged `usage_estimated`, counted on the run and in its
    JSON; a reply that reports its usage leaves none: a user can tell a guess from a bill."""
    flags = []
    for usage in (_ZEROS if stream else None, _OK["usage"]):
        reply = _stream(usage) if stream else _without_usage(usage)
        async with raw_server(reply) as srv, moa.Runner() as rt:
            topology = single(srv.base_url, transport, max_tokens=500)
            r = await rt.run(
                topology, "write two hundred words", on_token=(lambda _t: None) if stream else None
            )
        call = r.calls[0]
        assert call.cost_usd > 0 and call.to_dict()["usage_estimated"] is call.usage_estimated
        assert r.to_dict()["usage_estimated_calls"] == r.usage_estimated_calls == int(call.usage_estimated)
        flags.append(call.usage_estimated)
    assert flags == [True, False]


# -- a 2xx litellm cannot read ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({**_OK, "usage": {"prompt_tokens": "abc", "completion_tokens": 1}}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["usage-of-the-wrong-type", "nested-past-the-recursion-limit"],
)
async def test_an_unreadable_2xx_over_litellm_is_malformed(body: bytes) -> None:
    """litellm reports a 200 it cannot read as a 500; it is a MalformedReply of unknown usage (the
    provider answered and may bill it), in one line, not a free HTTP error."""
    async with raw_server(http(200, body)) as srv, moa.Runner() as rt:
        with pytest.raises(moa.MalformedReply) as info:
            await single(srv.base_url, "litellm", max_tokens=50).run("hi", runner=rt)
    assert "\n" not in str(info.value) and info.value.node == "answer"
    assert info.value.calls[0].attempt_log[0].usage is None


def _choice(message: Any) -> bytes:
    return json.dumps(
        {**_OK, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    ).encode()


# litellm's own checks reject these with no parse error left in the exception chain (a body that
# is not an object, choices that are not a list), or with a TypeError/AttributeError underneath
_SHAPELESS = {
    "a-list": json.dumps([_OK]).encode(),
    "null": b"null",
    "a-string": b'"four"',
    "an-empty-object": b"{}",
    "choices-as-an-object": json.dumps({**_OK, "choices": {"0": _OK["choices"][0]}}).encode(),
    "a-choice-that-is-a-string": json.dumps({**_OK, "choices": ["four"]}).encode(),
    "a-message-that-is-a-string": _choice("four"),
    "no-message": json.dumps({**_OK, "choices": [{"index": 0, "finish_reason": "stop"}]}).encode(),
    "usage-as-a-list": json.dumps({**_OK, "usage": [3, 1]}).encode(),
}


@pytest.mark.parametrize("body", list(_SHAPELESS.values()), ids=list(_SHAPELESS))
async def test_a_2xx_of_the_wrong_shape_over_litellm_is_malformed_not_free(body: bytes) -> None:
    """A 200 whose JSON has the wrong shape, which litellm labels a 500 of its own, is a
    MalformedReply of unknown usage whose worst case the budget keeps, as on the direct path; it
    was booked as a free provider error."""
    budget = moa.Budget(10.0)
    async with raw_server(http(200, body)) as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(moa.MalformedReply) as info:
            await single(srv.base_url, "litellm", max_tokens=50).run("hi", runner=rt)
    assert info.value.status_code is None and "\n" not in str(info.value)
    call = info.value.calls[0]
    assert [a.usage for a in call.attempt_log] == [None]
    assert call.cost_usd_max > 0 and budget.spent_usd == pytest.approx(call.cost_usd_max)


@pytest.mark.parametrize(
    ("model", "label"),
    [("anthropic/claude-3-haiku-20240307", "connection error"), ("gemini/gemini-1.5-flash", "422")],
)
async def test_a_2xx_other_providers_cannot_read_is_malformed(model: str, label: str) -> None:
    """litellm's converters for other providers label an unreadable 200 a connection error
    (Anthropic) or a 422 (Gemini) over the TypeError they raised: MalformedReply of unknown usage,
    not a "connection failed" nor a free rejected request."""
    budget = moa.Budget(10.0)
    async with raw_server(http(200, b"[1]")) as srv, moa.Runner(budget=budget) as rt:
        base = srv.base_url.removesuffix("/v1")
        with pytest.raises(moa.MalformedReply) as info:
            await single(base, "litellm", model=model, api_key_env="HOME", max_tokens=50).run("hi", runner=rt)
    assert info.value.status_code is None and "\n" not in str(info.value), label
    assert info.value.calls[0].attempt_log[0].usage is None and budget.spent_usd > 0


@pytest.mark.parametrize(("status", "error"), [(500, moa.ProviderError), (400, moa.RequestRejected)])
async def test_a_real_error_status_over_litellm_stays_a_free_status(
    status: int, error: type[moa.ModelError]
) -> None:
    """An error status the provider really sent keeps its status and costs nothing."""
    budget = moa.Budget(10.0)
    async with raw_server(http(status, {"error": {"message": "no"}})) as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(error) as info:
            await single(srv.base_url, "litellm", max_tokens=50).run("hi", runner=rt)
    assert info.value.status_code == status and budget.spent_usd == 0


# -- a stream that stops before its end ---------------------------------------------------------------


_TWO_DELTAS = sse_delta("The answer is ") + sse_delta("1")
_CUT_STREAMS = {
    # the server ends a chunked body cleanly after two deltas: no finish_reason, no [DONE]
    "chunked-clean-end": sse_head(True) + chunked(_TWO_DELTAS) + b"0\r\n\r\n",
    # the body is delimited by the connection, which closes after two deltas (the server died)
    "close-delimited": sse_head(False) + _TWO_DELTAS,
    # the chunked body stops mid-way: the connection closes before its last chunk
    "chunked-abrupt-close": sse_head(True) + chunked(_TWO_DELTAS),
}


# the direct path already failed an abruptly closed chunked body as 'connection failed'
@pytest.mark.parametrize(
    ("transport", "stream"),
    [(t, s) for t in TRANSPORTS for s in _CUT_STREAMS if (t, s) != ("openai-http", "chunked-abrupt-close")],
)
async def test_a_stream_cut_before_its_end_is_unknown_usage_not_an_answer(
    transport: str, stream: str
) -> None:
    """A stream that stops after some deltas, without [DONE] or a finish_reason, fails in one line
    with no status: the cut text is not the answer, and its worst case stays on the budget."""
    budget = moa.Budget(10.0)
    async with raw_server(_CUT_STREAMS[stream]) as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(moa.ModelError) as info:
            await rt.run(
                single(srv.base_url, transport, max_tokens=50), "what is 12*12?", on_token=lambda _t: None
            )
    assert info.value.status_code is None and "\n" not in str(info.value)
    call = info.value.calls[0]
    assert [a.usage for a in call.attempt_log] == [None] and budget.spent_usd == pytest.approx(
        call.cost_usd_max
    )


_PARTIAL_USAGE = {
    # the Anthropic/Responses names, which some OpenAI-compatible servers answer with
    "input-output-names": ({"input_tokens": 700, "output_tokens": 300}, (700, 300), False),
    # a completion count with no prompt count: the prompt is estimated, the completion kept
    "completion-only": ({"completion_tokens": 300}, (None, 300), True),
    # a reply with text reported with zero completion tokens: the completion is estimated
    "prompt-only": ({"prompt_tokens": 700, "completion_tokens": 0}, (700, None), True),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(_PARTIAL_USAGE))
async def test_usage_reported_in_part_or_under_other_names_is_kept(transport: str, case: str) -> None:
    """Each count the server reported is charged, under `input_tokens`/`output_tokens` too, and only
    the missing one is estimated (flagged): the direct path dropped a lone completion count and
    both paths took 700 reported tokens for an estimate of a few."""
    usage, (prompt, completion), estimated = _PARTIAL_USAGE[case]
    async with raw_server(http(200, {**_OK, "usage": usage})) as srv, moa.Runner() as rt:
        r = await single(srv.base_url, transport, max_tokens=500).run("hi", runner=rt)
    call = r.calls[0]
    assert call.usage_estimated is estimated and not call.usage_suspect
    if prompt is not None:
        assert call.usage.prompt_tokens == prompt
    if completion is not None:
        assert call.usage.completion_tokens == completion
    else:
        assert call.usage.completion_tokens >= 1  # "four" is at least one token


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_repeating_its_usage_is_charged_once_at_its_last_count(transport: str) -> None:
    """A stream whose every event carries a running usage is charged its last count, once."""
    events = [
        sse_delta("one ", usage={"prompt_tokens": 5, "completion_tokens": 1}),
        sse_delta("two", usage={"prompt_tokens": 5, "completion_tokens": 2}),
        sse_delta(finish="stop", usage={"prompt_tokens": 5, "completion_tokens": 2}),
    ]
    async with (
        raw_server(sse_head(False) + b"".join(events) + b"data: [DONE]\n\n") as srv,
        moa.Runner() as rt,
    ):
        r = await rt.run(single(srv.base_url, transport, max_tokens=50), "count", on_token=lambda _t: None)
    call = r.calls[0]
    assert r.output == "one two" and (call.usage.prompt_tokens, call.usage.completion_tokens) == (5, 2)
    assert not call.usage_estimated


_NO_EVENTS = {
    "a-json-body": http(200, _OK),
    "only-done": sse_head(False) + b"data: [DONE]\n\n",
    "only-comments": sse_head(False) + b": keep-alive\n\n",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reply", sorted(_NO_EVENTS))
async def test_a_stream_with_no_events_is_malformed_not_an_empty_answer(transport: str, reply: str) -> None:
    """A streamed request answered with no event (a plain JSON body, only [DONE], only comments) is
    one MalformedReply line of unknown usage on both transports; litellm made it a finished empty
    answer that the run took as the model's."""
    budget = moa.Budget(10.0)
    async with raw_server(_NO_EVENTS[reply]) as srv, moa.Runner(budget=budget) as rt:
        with pytest.raises(moa.MalformedReply, match="no events") as info:
            await rt.run(single(srv.base_url, transport, max_tokens=50), "hi", on_token=lambda _t: None)
    assert "\n" not in str(info.value) and info.value.calls[0].attempt_log[0].usage is None
    assert budget.spent_usd > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_without_usage_is_flagged_estimated(transport: str) -> None:
    """A stream whose server sent no usage is flagged `usage_estimated`: litellm adds a usage chunk
    of its own count, which was taken as the provider's."""
    events = sse_delta("word " * 50) + sse_delta(finish="stop") + b"data: [DONE]\n\n"
    async with raw_server(sse_head(False) + events) as srv, moa.Runner() as rt:
        r = await rt.run(single(srv.base_url, transport, max_tokens=500), "hi", on_token=lambda _t: None)
    call = r.calls[0]
    assert call.usage_estimated and call.usage.completion_tokens > 0 and call.cost_usd > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_agent_sets_how_long_a_retry_after_it_waits_for(transport: str) -> None:
    """``retry: {max_retry_after_s: 1}``: a Retry-After of 5 s is over it, so the 429 is raised at
    once, one request sent, naming the agent's cap (the field was named in errors and the README
    but refused by the loader as unknown)."""
    reply = http(429, {"error": {"message": "slow down"}}, ["Retry-After: 5"])
    async with raw_server(reply, http(200, _OK)) as srv, moa.Runner() as rt:
        topology = single(srv.base_url, transport, retry={"max_attempts": 3, "max_retry_after_s": 1.0})
        with pytest.raises(moa.RateLimited) as info:
            await topology.run("hi", runner=rt)
        arrived = len(srv.arrivals)
    assert arrived == 1 and "max_retry_after_s=1)" in str(info.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "header",
    ["Retry-After: Fri, 31 Dec 9999 23:59:59 GMT", "Retry-After: " + "9" * 400, "retry-after-ms: 1e309"],
    ids=["year-9999", "400-digits", "ms-overflow"],
)
async def test_a_retry_after_past_the_cap_says_why_it_was_not_retried(transport: str, header: str) -> None:
    """A 429 whose Retry-After is an HTTP date in the year 9999, or a number too large for a float,
    is raised at once, one request sent, saying the wait is over retry.max_retry_after_s, not a bare
    429 with attempts left unused (the overflowing numbers were read as no Retry-After at all, and
    retried within the backoff)."""
    reply = http(429, {"error": {"message": "slow down"}}, [header])
    async with raw_server(reply, http(200, _OK)) as srv, moa.Runner() as rt:
        with pytest.raises(moa.RateLimited) as info:
            await single(srv.base_url, transport, retry={"max_attempts": 3}).run("hi", runner=rt)
        arrived = len(srv.arrivals)
    assert arrived == 1 and info.value.retry_after_s is not None and info.value.retry_after_s > 1e9
    assert "not retried: Retry-After" in str(info.value) and "max_retry_after_s=120" in str(info.value)
    assert "\n" not in str(info.value)
