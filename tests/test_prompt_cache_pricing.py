"""Calls are billed as their provider bills them: prompt tokens read from the provider's prompt cache
at the cache-read rate, tokens written to it at the cache-write rate, a prompt past a long-context
threshold at that tier's rates; the counts read from every usage shape a provider answers with, over
real HTTP on both transports; counts that do not add up earn no discount."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

import moa
from moa.calls.pricing import _load_map, price_for
from moa.errors import MalformedReply
from moa.results import Done, Usage
from moa.topology.loader import load_data
from tests.loopback_http import send_body, send_sse, threaded_server

# litellm's streaming types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

# the price map's rates (litellm's bundled file), per token
GPT4O_IN, GPT4O_READ, GPT4O_OUT = 2.5e-6, 1.25e-6, 1e-5
SONNET_IN, SONNET_READ, SONNET_WRITE, SONNET_OUT = 3e-6, 3e-7, 3.75e-6, 1.5e-5
#: Anthropic's one-hour cache writes: twice the input rate
SONNET_WRITE_1H = 6e-6
#: 1,000 prompt tokens of which 300 read from the cache and 500 written to it, 10 completion tokens
SONNET_BILL = 200 * SONNET_IN + 300 * SONNET_READ + 500 * SONNET_WRITE + 10 * SONNET_OUT


def test_the_map_rates_these_tests_assume() -> None:
    """The rates below are the bundled map's: a map update shows here first, not as odd sums."""
    gpt, sonnet = price_for("openai/gpt-4o"), price_for("anthropic/claude-sonnet-4-5")
    assert (gpt.card.base.input, gpt.card.base.cache_read, gpt.card.base.output) == (
        GPT4O_IN,
        GPT4O_READ,
        GPT4O_OUT,
    )
    b = sonnet.card.base
    assert (b.input, b.cache_read, b.cache_write, b.cache_write_1h) == (
        SONNET_IN,
        SONNET_READ,
        SONNET_WRITE,
        SONNET_WRITE_1H,
    )


#: moments around DeepSeek V4's peak hours (01:00-04:00 and 06:00-10:00 UTC on weekdays): inside,
#: outside, at a window's first and last minute, on a weekend, and where Beijing's calendar is a
#: day ahead of UTC's
MOMENTS = [
    datetime(2026, 12, 1, 2, 0, tzinfo=UTC),  # Tuesday, peak
    datetime(2026, 12, 1, 0, 30, tzinfo=UTC),  # off-peak
    datetime(2026, 12, 1, 1, 0, tzinfo=UTC),  # the off-peak window's end is exclusive: peak
    datetime(2026, 12, 1, 3, 59, tzinfo=UTC),  # peak
    datetime(2026, 12, 1, 4, 0, tzinfo=UTC),  # a window's start is inclusive: off-peak
    datetime(2026, 12, 1, 7, 15, tzinfo=UTC),  # peak
    datetime(2026, 12, 1, 10, 0, tzinfo=UTC),  # off-peak until midnight
    datetime(2026, 12, 5, 8, 0, tzinfo=UTC),  # Saturday: off-peak all day
    datetime(2026, 12, 4, 20, 0, tzinfo=UTC),  # Friday UTC, Saturday in Beijing
    datetime(2026, 12, 6, 23, 59, tzinfo=UTC),  # Sunday UTC, Monday in Beijing
    datetime(2026, 12, 7, 9, 59, tzinfo=UTC),  # Monday, peak
]

#: where litellm's provider calculators leave the service tier out while the map prices it
#: (Fireworks' and Bedrock's priority rates): moa bills the map's rate
_TIER_IGNORED_BY_LITELLM = {("fireworks_ai", "priority"), ("bedrock_converse", "priority")}


def test_cost_agrees_with_litellms_calculator() -> None:
    """Every chat model of the price map with cache rates, long-context tiers or service tiers (and
    Fireworks', which litellm gives a default cache rate), at prompts below, at and past the
    thresholds, with and without cached and cache-written tokens, at each service tier it has:
    moa's bill is litellm's ``cost_per_token`` to 1e-9."""
    from litellm._internal_context import pinned_billing_time
    from litellm.types.utils import CacheCreationTokenDetails, PromptTokensDetailsWrapper
    from litellm.types.utils import Usage as LitellmUsage

    from moa.models.litellm import import_litellm

    litellm = import_litellm()
    rng = random.Random(7)
    checked = 0
    for model, entry in sorted(_load_map().items()):
        if not isinstance(entry, dict) or entry.get("mode") != "chat" or "input_cost_per_token" not in entry:
            continue
        provider = str(entry.get("litellm_provider"))
        # copilot's lookup signs in over the network; opencode_go's Claude entries are priced by
        # litellm from another model's (3 prompts past 200k differ): not what the map says
        if "copilot" in provider or provider == "opencode_go":
            continue
        special = any(k.startswith(("cache_", "input_cost_per_token_above", "off_peak")) for k in entry)
        services = [s for s in ("flex", "priority") if any(k.endswith(f"_{s}") for k in entry)]
        if not special and not services and provider != "fireworks_ai":
            continue
        for service in (None, *services):
            if (provider, service) in _TIER_IGNORED_BY_LITELLM:
                continue
            for prompt in (1_000, 200_000, 300_000):
                read = rng.randint(0, prompt // 2)
                write = rng.choice([0, rng.randint(0, prompt // 4)])
                hour = rng.choice([0, write, rng.randint(0, write)])
                completion = rng.choice([1, 700])
                theirs = LitellmUsage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                    prompt_tokens_details=PromptTokensDetailsWrapper(
                        cached_tokens=read,
                        cache_creation_tokens=write,
                        cache_creation_token_details=CacheCreationTokenDetails(
                            ephemeral_5m_input_tokens=write - hour, ephemeral_1h_input_tokens=hour
                        ),
                    ),
                    cache_read_input_tokens=read,
                    cache_creation_input_tokens=write,
                )
                # an off-peak discount is billed by the hour: both priced at each of MOMENTS
                for moment in MOMENTS if "off_peak_pricing" in entry else MOMENTS[:1]:
                    try:
                        with pinned_billing_time(moment):
                            a, b = litellm.cost_per_token(
                                model=model, usage_object=theirs, service_tier=service
                            )
                    except Exception:  # a model litellm itself cannot price from the map
                        continue
                    ours = (
                        price_for(model)
                        .for_service_tier(service)
                        .at(moment.timestamp())
                        .cost(Usage(prompt, completion, read, write, hour))
                    )
                    assert ours == pytest.approx(a + b, rel=1e-9, abs=1e-15), (
                        model,
                        service,
                        prompt,
                        read,
                        write,
                        hour,
                        moment,
                    )
                    checked += 1
    assert checked > 5000


def test_a_long_prompt_is_billed_at_its_tier_for_every_token() -> None:
    """Gemini 2.5 Pro past 200k prompt tokens: input and output at the tier's rates; at 200k
    exactly, the base rates (the threshold is exclusive, as litellm bills it). A budget's worst
    case for such a prompt uses the tier too."""
    price = price_for("gemini/gemini-2.5-pro")
    (threshold, tier), *_ = price.card.tiers
    assert (
        threshold == 200_000 and tier.input > price.card.base.input and tier.output > price.card.base.output
    )
    assert price.cost(Usage(200_000, 1_000)) == pytest.approx(
        200_000 * price.card.base.input + 1_000 * price.card.base.output
    )
    assert price.cost(Usage(200_001, 1_000)) == pytest.approx(200_001 * tier.input + 1_000 * tier.output)
    assert price.worst_case(250_000, 1_000) == pytest.approx(250_000 * tier.input + 1_000 * tier.output)


def test_a_budgets_worst_case_assumes_no_cache_read_and_the_dearer_write() -> None:
    """Anthropic bills a cache write above the input rate, and a one-hour write above that: a
    request may write its whole prompt for an hour, so the worst case a budget reserves prices
    every prompt token at the one-hour write rate."""
    assert price_for("anthropic/claude-sonnet-4-5").worst_case(1_000, 10) == pytest.approx(
        1_000 * SONNET_WRITE_1H + 10 * SONNET_OUT
    )
    assert price_for("openai/gpt-4o").worst_case(1_000, 10) == pytest.approx(
        1_000 * GPT4O_IN + 10 * GPT4O_OUT
    )


def test_usage_keeps_the_cache_counts_through_its_dict() -> None:
    """Added, written in OpenAI's shape (only when there are any) and read back."""
    u = Usage(100, 5, 60, 10) + Usage(50, 5, 0, 20)
    assert u == Usage(150, 10, 60, 30)
    assert u.to_dict() == {
        "prompt_tokens": 150,
        "completion_tokens": 10,
        "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_creation_tokens": 30},
    }
    assert Usage.from_dict(u.to_dict()) == u
    assert "prompt_tokens_details" not in Usage(3, 4).to_dict()
    hour = Usage(100, 5, 0, 30, 20) + Usage(10, 1, 0, 10, 5)
    assert hour.to_dict()["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "cache_creation_tokens": 40,
        "cache_creation_token_details": {"ephemeral_1h_input_tokens": 25},
    }
    assert Usage.from_dict(hour.to_dict()) == hour


# -- over HTTP -------------------------------------------------------------------------------------


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering "ok" with the usage object the request's
    ``X-Usage`` header holds (JSON), whole or as a stream whose last event carries it, and the
    ``service_tier`` its ``X-Tier`` header names, if any."""

    protocol_version = "HTTP/1.1"
    #: the service_tier of each request received
    asked: ClassVar[list[object]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        usage = json.loads(self.headers.get("x-usage") or "null")
        tier = {"service_tier": self.headers["x-tier"]} if self.headers.get("x-tier") else {}
        _Provider.asked.append(body.get("service_tier"))
        if not body.get("stream"):
            reply = {
                "id": "x",
                "object": "chat.completion",
                **tier,
                "model": body.get("model", "m"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
            send_body(self, 200, json.dumps(reply).encode())
            return
        head = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model", "m"), **tier}
        events = [
            {**head, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**head, "choices": [], "usage": usage},
        ]
        send_sse(self, events)


@contextmanager
def provider() -> Iterator[str]:
    with threaded_server(_Provider) as url:
        yield url + "/v1"


def _topology(
    base: str, transport: str, model: str, usage: dict[str, Any], tier: str = "", **agent: Any
) -> moa.Topology:
    params = {"extra_headers": {"X-Usage": json.dumps(usage), "X-Tier": tier}, **agent.pop("params", {})}
    spec = {
        "model": model,
        "api_base": base,
        "transport": transport,
        "max_tokens": 50,
        "retry": {"max_attempts": 1},
        "params": params,
        **agent,
    }
    if transport == "litellm":
        spec["api_key_env"] = "MOA_T_CACHE_KEY"
    return load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})


#: long enough for the prompt counts below to be plausible (a reply claiming far more prompt tokens
#: than its request could hold is suspect usage, clamped)
PROMPT = "a long shared context to cache " * 400


async def _run(topology: moa.Topology, stream: bool) -> moa.RunResult:
    async with moa.Runner() as runner:
        if not stream:
            return await topology.run(PROMPT, runner=runner)
        async for ev in topology.stream(PROMPT, runner=runner):
            if isinstance(ev, Done):
                return ev.result
    raise AssertionError("the stream ended without a result")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_cached_prompt_tokens_are_billed_at_the_cache_rate(
    transport: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI's ``prompt_tokens_details.cached_tokens``: 1,536 of 2,000 prompt tokens read from the
    cache cost half the input rate (gpt-4o), on the call, the run and its dict."""
    monkeypatch.setenv("MOA_T_CACHE_KEY", "sk-cache-test-key")
    usage = {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1536}}
    with provider() as base:
        result = await _run(_topology(base, transport, "openai/gpt-4o", usage), stream)
    expected = 464 * GPT4O_IN + 1536 * GPT4O_READ + 10 * GPT4O_OUT
    (call,) = result.calls
    assert call.usage == Usage(2000, 10, 1536) and not call.usage_suspect
    assert call.cost_usd == pytest.approx(expected) and result.cost_usd == pytest.approx(expected)
    assert result.usage.cached_tokens == 1536
    assert result.to_dict()["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1536,
        "cache_creation_tokens": 0,
    }


@pytest.mark.parametrize(
    ("model", "usage", "counted", "cost"),
    [
        pytest.param(
            "openai/deepseek-chat",
            {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_cache_hit_tokens": 600,
             "prompt_cache_miss_tokens": 400},
            Usage(1000, 10, 600),
            None,
            id="deepseek-hit-count",
        ),
        pytest.param(
            "openai/claude-sonnet-4-5",
            {"prompt_tokens": 1000, "completion_tokens": 10, "cache_read_input_tokens": 300,
             "cache_creation_input_tokens": 500},
            Usage(1000, 10, 300, 500),
            SONNET_BILL,
            id="litellm-proxy-anthropic",
        ),
        pytest.param(
            "openai/claude-sonnet-4-5",
            {"input_tokens": 200, "output_tokens": 10, "cache_read_input_tokens": 300,
             "cache_creation_input_tokens": 500},
            Usage(1000, 10, 300, 500),
            SONNET_BILL,
            id="anthropic-names-leave-the-cache-out",
        ),
        pytest.param(
            "openai/gpt-4o",
            {"input_tokens": 2000, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 1536}},
            Usage(2000, 10, 1536),
            464 * GPT4O_IN + 1536 * GPT4O_READ + 10 * GPT4O_OUT,
            id="responses-api",
        ),
    ],
)  # fmt: skip
async def test_every_usage_shape_gives_its_cache_counts(
    model: str, usage: dict[str, Any], counted: Usage, cost: float | None
) -> None:
    """The direct path reads the cache counts of each shape OpenAI-compatible servers answer with;
    Anthropic's own names leave the cache's tokens out of ``input_tokens``, so they are added."""
    with provider() as base:
        result = await _run(_topology(base, "openai-http", model, usage), stream=False)
    (call,) = result.calls
    assert call.usage == counted and not call.usage_suspect
    if cost is None:
        cost = price_for("deepseek/deepseek-chat").cost(counted)
        assert cost < price_for("deepseek/deepseek-chat").cost(Usage(1000, 10))
    assert call.cost_usd == pytest.approx(cost)


@pytest.mark.parametrize(
    "details",
    [{"cached_tokens": 2500}, {"cached_tokens": -5}, {"cached_tokens": 1500, "cache_creation_tokens": 1000}],
    ids=["more-than-the-prompt", "negative", "parts-past-the-whole"],
)
async def test_cache_counts_that_do_not_add_up_earn_no_discount(details: dict[str, int]) -> None:
    """A reply claiming more cached tokens than its prompt had (or fewer than none) is suspect: the
    call is billed without a cache discount, as the budget must not trust it."""
    usage = {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": details}
    with provider() as base:
        result = await _run(_topology(base, "openai-http", "openai/gpt-4o", usage), stream=False)
    (call,) = result.calls
    assert call.usage_suspect and call.usage.cached_tokens == 0
    assert call.cost_usd >= 2000 * GPT4O_IN + 10 * GPT4O_OUT


#: 1,000 prompt tokens: 300 read from the cache, 500 written to it of which 400 for an hour
SONNET_HOUR_BILL = (
    200 * SONNET_IN + 300 * SONNET_READ + 100 * SONNET_WRITE + 400 * SONNET_WRITE_1H + 10 * SONNET_OUT
)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_one_hour_cache_writes_are_billed_at_their_rate(
    transport: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic bills a prompt written to its cache for an hour at twice the input rate (a
    5-minute write: 1.25 x). litellm's shape (a litellm proxy's reply) says how many of the writes
    were for an hour; those are billed at the map's one-hour rate on both transports."""
    monkeypatch.setenv("MOA_T_CACHE_KEY", "sk-cache-test-key")
    details = {
        "cached_tokens": 300,
        "cache_creation_tokens": 500,
        "cache_creation_token_details": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 400},
    }
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": details}
    with provider() as base:
        result = await _run(_topology(base, transport, "openai/claude-sonnet-4-5", usage), stream)
    (call,) = result.calls
    assert call.usage == Usage(1000, 10, 300, 500, 400) and not call.usage_suspect
    assert call.cost_usd == pytest.approx(SONNET_HOUR_BILL) and SONNET_HOUR_BILL > SONNET_BILL
    assert result.usage.cache_write_1h_tokens == 400


async def test_anthropics_own_names_give_the_one_hour_writes() -> None:
    """Anthropic's usage: ``cache_creation: {ephemeral_1h_input_tokens}`` beside the totals."""
    usage = {
        "input_tokens": 200,
        "output_tokens": 10,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 400},
    }
    with provider() as base:
        result = await _run(_topology(base, "openai-http", "openai/claude-sonnet-4-5", usage), False)
    assert result.calls[0].usage == Usage(1000, 10, 300, 500, 400)
    assert result.cost_usd == pytest.approx(SONNET_HOUR_BILL)


async def test_more_one_hour_writes_than_writes_is_suspect() -> None:
    """One-hour writes are a part of the writes: a reply claiming more is suspect usage, billed as
    the budget's worst case allows and never below the writes it claimed."""
    details = {
        "cache_creation_tokens": 100,
        "cache_creation_token_details": {"ephemeral_1h_input_tokens": 900},
    }
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": details}
    with provider() as base:
        result = await _run(_topology(base, "openai-http", "openai/claude-sonnet-4-5", usage), False)
    (call,) = result.calls
    assert call.usage_suspect and call.usage.cache_write_1h_tokens <= call.usage.cache_write_tokens == 100
    assert call.cost_usd >= 900 * SONNET_IN + 100 * SONNET_WRITE_1H + 10 * SONNET_OUT


@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_an_off_peak_call_is_billed_at_the_off_peak_rates(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DeepSeek V4 bills half its peak rates outside Beijing's busy hours (the map's
    ``off_peak_pricing``): a call is billed at the rates of the hour it was sent, on both
    transports, while a budget's worst case keeps the peak rates."""
    monkeypatch.setenv("MOA_T_CACHE_KEY", "sk-cache-test-key")
    usage = {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 500}}
    price = price_for("deepseek/deepseek-v4-flash")
    peak, off_peak = price.at(MOMENTS[0].timestamp()), price.at(MOMENTS[1].timestamp())
    counted = Usage(2000, 10, 500)
    assert off_peak.cost(counted) == pytest.approx(peak.cost(counted) / 2)
    assert price.worst_case(2000, 50) == peak.worst_case(2000, 50) > off_peak.worst_case(2000, 50)
    sent = time.time()
    with provider() as base:
        result = await _run(_topology(base, transport, "deepseek/deepseek-v4-flash", usage), False)
    # the hour may turn while the call is out: it is billed at the rates of one of the two ends
    billed = {price.at(sent).cost(counted), price.at(time.time()).cost(counted)}
    assert any(result.cost_usd == pytest.approx(b) for b in billed), (result.cost_usd, billed)


def test_off_peak_windows_follow_litellms_rules() -> None:
    """Windows wrap past midnight, start == end is the whole day, weekday names are read, and a
    malformed window or weekday is ignored (as litellm ignores it)."""
    from moa.calls.pricing import _off_peak

    base = price_for("openai/gpt-4o").card.base
    block = {
        "input_cost_per_token": 1e-7,
        "hours_utc": ["22:00-02:00", "25:00-26:00", "nonsense", 7],
        "windows": [{"hours_utc": "00:00-00:00", "weekdays": ["Sat", "sunday", 9, "moonday"]}],
    }
    off = _off_peak(block, base)
    assert off is not None and off.rates.input == 1e-7 and off.rates.output == base.output
    tuesday = datetime(2026, 12, 1, tzinfo=UTC)
    hours = [h for h in range(24) if off.covers(tuesday.timestamp() + h * 3600)]
    assert hours == [0, 1, 22, 23]
    assert off.covers(datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp())  # Saturday
    assert _off_peak({"hours_utc": "soon"}, base) is None and _off_peak("x", base) is None


@pytest.mark.parametrize(
    ("details", "why"),
    [
        ({"cache_creation_tokens": 100, "cache_creation_token_details": [1]},
         r"usage\.prompt_tokens_details\.cache_creation_token_details is a list, not an object"),
        ({"cache_creation_tokens": 100, "cache_creation_token_details": {"ephemeral_1h_input_tokens": "x"}},
         r"usage\.ephemeral_1h_input_tokens is 'x', not a token count"),
    ],
    ids=["lifetimes-not-an-object", "hour-count-not-a-number"],
)  # fmt: skip
async def test_unreadable_cache_lifetimes_are_a_malformed_reply(details: dict[str, Any], why: str) -> None:
    """The one-hour write count is read as strictly as the others, the error naming where it is."""
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": details}
    with provider() as base:
        topology = _topology(base, "openai-http", "openai/claude-sonnet-4-5", usage)
        with pytest.raises(MalformedReply, match=why):
            await _run(topology, stream=False)


async def test_an_unreadable_cache_count_is_a_malformed_reply() -> None:
    """A cache count that is not a whole number: the server's accounting cannot be read, as with
    any other count (the attempt is unknown usage, charged its worst case)."""
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": "lots"},
    }
    with provider() as base:
        topology = _topology(base, "openai-http", "openai/gpt-4o", usage)
        with pytest.raises(MalformedReply, match=r"usage\.cached_tokens is 'lots'"):
            await _run(topology, stream=False)


async def test_an_agents_pricing_may_set_the_cache_rates() -> None:
    """``pricing: {cached_input_per_mtok, cache_write_per_mtok}`` for a model the map lacks."""
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "cache_read_input_tokens": 600,
             "cache_creation_input_tokens": 100}  # fmt: skip
    pricing = {
        "input_per_mtok": 1.0,
        "output_per_mtok": 2.0,
        "cached_input_per_mtok": 0.1,
        "cache_write_per_mtok": 1.5,
    }
    with provider() as base:
        result = await _run(
            _topology(base, "openai-http", "openai/house-model", usage, pricing=pricing), False
        )
    assert result.cost_usd == pytest.approx((300 * 1.0 + 600 * 0.1 + 100 * 1.5 + 10 * 2.0) / 1e6)
    hourly = {**usage, "cache_creation": {"ephemeral_1h_input_tokens": 100}}
    with provider() as base:
        result = await _run(
            _topology(
                base,
                "openai-http",
                "openai/house-model",
                hourly,
                pricing={**pricing, "cache_write_1h_per_mtok": 2.0},
            ),
            False,
        )
    assert result.cost_usd == pytest.approx((300 * 1.0 + 600 * 0.1 + 100 * 2.0 + 10 * 2.0) / 1e6)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
async def test_the_tier_a_reply_was_served_at_sets_its_price(
    transport: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply that says ``service_tier: priority`` (a project whose default tier is priority) is
    billed at the map's priority rates, though the agent asked for none."""
    monkeypatch.setenv("MOA_T_CACHE_KEY", "sk-cache-test-key")
    usage = {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1000}}
    with provider() as base:
        result = await _run(_topology(base, transport, "openai/gpt-4o", usage, tier="priority"), stream)
    priority = price_for("openai/gpt-4o").for_service_tier("priority")
    assert priority.card.base.input > GPT4O_IN  # the map's priority rates are dearer
    assert result.cost_usd == pytest.approx(
        1000 * priority.card.base.input
        + 1000 * (priority.card.base.cache_read or 0)
        + 10 * priority.card.base.output
    )


async def test_the_tier_an_agent_asks_for_prices_its_calls() -> None:
    """``params: {service_tier: flex}`` is sent, and with a reply that names no tier the call is
    billed at the flex rates (half of gpt-5's standard ones), its worst case too; a reply saying it
    was served at the standard tier instead is billed standard."""
    usage = {"prompt_tokens": 2000, "completion_tokens": 10}
    flex = price_for("openai/gpt-5").for_service_tier("flex")
    standard = price_for("openai/gpt-5")
    assert flex.card.base.input == standard.card.base.input / 2
    assert flex.worst_case(2000, 50) == pytest.approx(standard.worst_case(2000, 50) / 2)
    _Provider.asked.clear()
    with provider() as base:
        asked = _topology(base, "openai-http", "openai/gpt-5", usage, params={"service_tier": "flex"})
        served_standard = _topology(
            base, "openai-http", "openai/gpt-5", usage, tier="default", params={"service_tier": "flex"}
        )
        billed = (await _run(asked, stream=False)).cost_usd
        billed_standard = (await _run(served_standard, stream=False)).cost_usd
    assert _Provider.asked == ["flex", "flex"]
    assert billed == pytest.approx(flex.cost(Usage(2000, 10)))
    assert billed_standard == pytest.approx(standard.cost(Usage(2000, 10)))
