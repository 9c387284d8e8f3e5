"""`moa serve`: topologies as an OpenAI-compatible model, exercised with the official `openai` client
against a real uvicorn server whose topologies call a loopback SimServer over HTTP."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from moa._run import Runner
from moa.calls.budget import Budget
from moa.errors import ProviderError, TimedOut
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.serve import create_app
from moa.serve.cli import add_parser
from moa.testing import FunctionModel
from moa.testing.sim import FaultPlan, SimModel, SimServer
from moa.topology.definition import Topology
from moa.topology.loader import load_data

# litellm's streaming types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

SIM_KEY_ENV = "MOA_TEST_SERVE_SIM_KEY"
from tests.serving import serving  # noqa: E402

API_KEY = "s3cret-serve-key"
SLOW_WORDS = "one two three four five six seven eight"


def _parallel(name: str, base: str, workers: list[str], agg: str, **extra: Any) -> Topology:
    def agent(model: str) -> dict[str, Any]:
        return {
            "model": f"openai/{model}",
            "api_base": base,
            "api_key_env": SIM_KEY_ENV,
            "transport": "litellm",
            "retry": {"max_attempts": 1},
        }

    agents = {f"w{i}": agent(m) for i, m in enumerate(workers)} | {"agg": agent(agg)}
    data = {
        "name": name,
        "kind": "parallel",
        "workers": list(agents)[:-1],
        "aggregator": "agg",
        "agents": agents,
    }
    return load_data(data | extra)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    models = {
        "w": SimModel(latency_s=0.02),
        "agg": SimModel(latency_s=0.02, answer="the mixture says four"),
        "agg-slow": SimModel(latency_s=1.6, answer=SLOW_WORDS),
        "slow": SimModel(latency_s=5.0),
        "broken": SimModel(),
    }
    faults = FaultPlan(1.0, kinds=("500",), models=("broken",))
    with pytest.MonkeyPatch.context() as mp, SimServer(models, faults=faults) as srv:
        mp.setenv(SIM_KEY_ENV, "sim-key")
        yield srv


@pytest.fixture(scope="module")
def url(sim: SimServer) -> Iterator[str]:
    """The main app: SimServer-backed topologies, no auth."""
    b = sim.base_url
    topologies = [
        _parallel("parallel-3", b, ["w", "w", "w"], "agg"),
        _parallel("slow-aggregator", b, ["w", "w", "w"], "agg-slow"),
        _parallel("slow-workers", b, ["slow", "slow", "slow"], "agg"),
        _parallel("broken", b, ["broken", "broken", "broken"], "agg"),
        _parallel("no-quorum", b, ["broken", "broken", "w"], "agg", quorum=2),
    ]
    with serving(create_app(topologies)) as base:
        yield base


def _fake_topology(name: str, **agent: Any) -> Topology:
    a = {"model": "fake/model", "retry": {"max_attempts": 1}, **agent}
    return load_data({"name": name, "kind": "single", "agent": "a", "agents": {"a": a}})


def _echo(request: Any) -> str:
    return "echo: " + str(request.messages[-1]["content"])


class _Halfway:
    """A fake model that streams one token, then fails."""

    local = False

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        if on_token is not None:
            on_token("partial ")
        await asyncio.sleep(0)
        raise ProviderError("connection reset mid-answer")

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """A fast app on fake models with auth on and a 4 kB body limit."""
    runner = Runner(
        models={
            "fake/model": FunctionModel(_echo),
            "fake/late": FunctionModel(lambda r: TimedOut("slow")),
            "fake/halfway": _Halfway(),
        }
    )
    topologies = [
        _fake_topology("echo"),
        _fake_topology("late", model="fake/late"),
        _fake_topology("halfway", model="fake/halfway"),
    ]
    with serving(create_app(topologies, api_key=API_KEY, max_body_bytes=4096, runner=runner)) as base:
        yield base
    asyncio.run(runner.aclose())


def _client(base: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def _ask(text: str = "what is two plus two") -> list[Any]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# -- the happy paths, over real upstream HTTP ----------------------------------------------------


def test_models_lists_each_topology_owned_by_moa(url: str) -> None:
    """GET /v1/models lists every served topology by name in OpenAI's list shape."""
    models = _client(url).models.list()
    assert [m.id for m in models.data] == [
        "parallel-3",
        "slow-aggregator",
        "slow-workers",
        "broken",
        "no-quorum",
    ]
    assert {m.owned_by for m in models.data} == {"moa"} and {m.object for m in models.data} == {"model"}


def test_completion_answers_with_usage_summed_over_every_call(url: str, sim: SimServer) -> None:
    """A plain completion carries the aggregator's answer and usage equal to the sum over all calls."""
    sim.reset_stats()
    raw = _client(url).chat.completions.with_raw_response.create(model="parallel-3", messages=_ask())
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == "parallel-3"
    assert reply.choices[0].message.content == "the mixture says four"
    assert reply.choices[0].finish_reason == "stop"
    calls = raw.http_response.json()["moa"]["calls"]
    assert len(calls) == 4
    assert reply.usage is not None
    assert (
        reply.usage.prompt_tokens
        == sum(c["usage"]["prompt_tokens"] for c in calls)
        == sim.stats.prompt_tokens
    )
    assert reply.usage.completion_tokens == sum(c["usage"]["completion_tokens"] for c in calls)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_completion_has_the_moa_extension_in_raw_json(url: str) -> None:
    """The raw JSON has a `moa` object with cost, latency, critical path, calls and nodes."""
    raw = _client(url).chat.completions.with_raw_response.create(model="parallel-3", messages=_ask())
    ext = raw.http_response.json()["moa"]
    assert raw.parse().model_extra == {"moa": ext}  # the openai client keeps it as an extra field
    assert set(ext) == {
        "run_id",
        "cost_usd",
        "latency_s",
        "critical_path_s",
        "by_node",
        "by_model",
        "calls",
        "nodes",
    }
    assert len(ext["run_id"]) == 16
    assert set(ext["nodes"]) >= {"aggregate"} and ext["latency_s"] >= ext["critical_path_s"] > 0


def test_chat_history_reaches_the_agents(url: str, sim: SimServer) -> None:
    """System and assistant turns are passed to the topology's calls as the chat before the prompt."""
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "and now"},
    ]
    sim.reset_stats()
    reply = _client(url).chat.completions.create(model="parallel-3", messages=chat)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "the mixture says four"
    # each of the 4 calls sent 4 messages: 3 turns of history + the rendered prompt (3 tokens each)
    assert sim.stats.prompt_tokens >= 4 * (
        4 * 3 + len(["be", "brief", "earlier", "question", "earlier", "answer", "and", "now"])
    )


def test_stream_chunks_concatenate_to_the_answer_with_usage(url: str) -> None:
    """A stream starts with the assistant role, ends with `stop`, a usage chunk, then [DONE]."""
    chunks = list(
        _client(url).chat.completions.create(
            model="parallel-3", messages=_ask(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the mixture says four"
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1


def test_stream_wire_format_ends_with_done_and_no_usage_unless_asked(url: str) -> None:
    """Without include_usage no chunk carries usage; the SSE stream ends with `data: [DONE]`."""
    body = {"model": "parallel-3", "messages": _ask(), "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "moa" in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_first_token_arrives_long_before_the_end(url: str) -> None:
    """With a slowly streaming aggregator, time to first token is well below the full time."""
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    started = time.perf_counter()
    first = None
    text = ""
    stream = await client.chat.completions.create(model="slow-aggregator", messages=_ask(), stream=True)
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            first = first or time.perf_counter() - started
            text += c.choices[0].delta.content
    total = time.perf_counter() - started
    await client.close()
    assert text == SLOW_WORDS
    assert first is not None and first < total / 2


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_model_is_404_in_openai_error_shape(url: str) -> None:
    """An unknown model is a 404 whose error object names the model parameter."""
    with pytest.raises(openai.NotFoundError) as info:
        _client(url).chat.completions.create(model="nope", messages=_ask())
    assert info.value.status_code == 404
    assert info.value.body == {
        "message": info.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert "`nope`" in info.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
            "messages",
        ),
        ({"model": 3}, "model"),
    ],
)
def test_invalid_body_is_400_naming_the_field(url: str, extra: dict[str, Any], param: str) -> None:
    """A known field with a wrong type or value is a 400 whose `param` names the field."""
    body = {"model": "parallel-3", "messages": _ask(), **extra}
    r = httpx.post(f"{url}/chat/completions", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and param in err["message"]


def test_unknown_fields_are_ignored(url: str) -> None:
    """Fields moa does not use (user, seed, max_tokens) are accepted, as OpenAI accepts them."""
    body = {
        "model": "parallel-3",
        "messages": _ask(),
        "user": "u1",
        "seed": 7,
        "max_tokens": 5,
        "whatever": {},
    }
    r = httpx.post(f"{url}/chat/completions", json=body, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "the mixture says four"


def test_body_that_is_not_json_is_400(url: str) -> None:
    """A body that is not JSON is a 400 in the OpenAI error shape."""
    r = httpx.post(f"{url}/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_upstream_500_is_502(url: str) -> None:
    """Workers whose provider answers 500 make the completion a 502 naming the node and the HTTP
    status in moa's words (the provider's text and the server's model names stay in its log)."""
    with pytest.raises(openai.APIStatusError) as info:
        _client(url).chat.completions.create(model="broken", messages=_ask())
    assert info.value.status_code == 502
    assert info.value.body["type"] == "server_error"  # type: ignore[index]
    assert "the provider failed (HTTP 500)" in info.value.message
    assert "openai/broken" not in info.value.message


def test_quorum_not_reached_is_503(url: str) -> None:
    """Two of three workers failing under quorum 2 is a 503 with the quorum message."""
    with pytest.raises(openai.InternalServerError) as info:
        _client(url).chat.completions.create(model="no-quorum", messages=_ask())
    assert info.value.status_code == 503
    assert info.value.body["code"] == "quorum_not_reached"  # type: ignore[index]


def test_failure_before_the_first_token_of_a_stream_keeps_its_status(url: str) -> None:
    """A stream whose run fails before the answer starts gets a plain error status (502)."""
    with pytest.raises(openai.APIStatusError) as info:
        list(_client(url).chat.completions.create(model="broken", messages=_ask(), stream=True))
    assert info.value.status_code == 502


def test_failure_mid_stream_ends_with_an_error_event_then_done(fake_url: str) -> None:
    """A run failing after tokens were sent ends its stream with `data: {"error": ...}` and [DONE]."""
    body = {"model": "halfway", "messages": _ask(), "stream": True}
    auth = {"authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{fake_url}/chat/completions", json=body, headers=auth) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "node `answer`: the provider failed or could not be reached"
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "partial "


def test_budget_exceeded_is_503_and_not_retried() -> None:
    """A run the budget refuses is a 503 `budget_exceeded` that tells clients not to retry."""
    runner = Runner(models={"fake/model": FunctionModel(_echo)}, budget=Budget(0.0))
    topology = _fake_topology("priced", pricing={"input_per_mtok": 1.0, "output_per_mtok": 1.0})
    with serving(create_app([topology], runner=runner)) as base:
        r = httpx.post(f"{base}/chat/completions", json={"model": "priced", "messages": _ask()})
    asyncio.run(runner.aclose())
    assert r.status_code == 503 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["code"] == "budget_exceeded" and "budget" in r.json()["error"]["message"]


def test_timeout_is_504(fake_url: str) -> None:
    """A model that times out makes the completion a 504."""
    with pytest.raises(openai.APIStatusError) as info:
        _client(fake_url, api_key=API_KEY).chat.completions.create(model="late", messages=_ask())
    assert info.value.status_code == 504 and info.value.body["code"] == "timeout"  # type: ignore[index]


def test_unknown_route_is_404_in_openai_shape(url: str) -> None:
    """Routes other than the two served answer 404 in the OpenAI error shape."""
    r = httpx.get(f"{url}/completions")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"), [("GET", "chat/completions", "POST"), ("DELETE", "models", "GET, HEAD")]
)
def test_a_wrong_method_is_405_naming_the_allowed_ones(url: str, method: str, path: str, allow: str) -> None:
    """A served route asked with a method it does not take is a 405 `method_not_allowed` whose
    `Allow` header names the methods it takes (it had none)."""
    r = httpx.request(method, f"{url}/{path}")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    # Starlette keeps a route's methods in a set: their order changes with the hash seed
    assert set(r.headers["allow"].split(", ")) == set(allow.split(", "))


# -- auth and limits -------------------------------------------------------------------------------


def test_auth_rejects_a_missing_key(fake_url: str) -> None:
    """With an API key set, a request without `Authorization` is a 401 in the OpenAI shape."""
    r = httpx.get(f"{fake_url}/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_auth_rejects_a_wrong_key(fake_url: str) -> None:
    """A wrong bearer key is a 401 for the official client too."""
    with pytest.raises(openai.AuthenticationError):
        _client(fake_url, api_key="wrong").chat.completions.create(model="echo", messages=_ask())


def test_auth_accepts_the_right_key(fake_url: str) -> None:
    """The right bearer key gets the answer."""
    reply = _client(fake_url, api_key=API_KEY).chat.completions.create(model="echo", messages=_ask("hello"))
    assert reply.choices[0].message.content is not None
    assert reply.choices[0].message.content.startswith("echo:")


def test_auth_off_accepts_any_key(url: str) -> None:
    """Without an API key the server ignores `Authorization`."""
    assert _client(url, api_key="anything").models.list().data


def test_body_over_the_limit_by_content_length_is_413(fake_url: str) -> None:
    """A body whose Content-Length passes the limit is refused with 413."""
    body = {"model": "echo", "messages": _ask("x" * 5000)}
    r = httpx.post(f"{fake_url}/chat/completions", json=body, headers={"authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(fake_url: str) -> None:
    """A chunked body (no Content-Length) is counted while it streams and refused with 413."""

    def parts() -> Iterator[bytes]:
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(
        f"{fake_url}/chat/completions", content=parts(), headers={"authorization": f"Bearer {API_KEY}"}
    )
    assert r.status_code == 413


# -- disconnects cancel the run ----------------------------------------------------------------------


def _wait_for(cond: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_disconnect_cancels_a_plain_run(url: str, sim: SimServer) -> None:
    """A client that gives up mid-run makes the server drop its upstream calls; no aggregator call."""
    sim.reset_stats()
    with pytest.raises(openai.APITimeoutError):
        _client(url, timeout=0.5).chat.completions.create(model="slow-workers", messages=_ask())
    assert _wait_for(lambda: sim.stats.disconnects >= 3 and sim.stats.in_flight == 0)
    time.sleep(0.1)
    stats = sim.stats
    assert stats.served == 0 and [m for _, m, _ in stats.request_log] == ["slow", "slow", "slow"]


async def test_disconnect_mid_stream_cancels_the_aggregator(url: str, sim: SimServer) -> None:
    """Closing a stream after its first token makes the server drop the aggregator's upstream stream."""
    sim.reset_stats()
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(model="slow-aggregator", messages=_ask(), stream=True)
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            break
    await stream.close()
    await client.close()

    async def dropped() -> None:
        while not (sim.stats.disconnects >= 1 and sim.stats.in_flight == 0):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(dropped(), 10)
    assert sim.stats.served_by_model["agg-slow"] == 0


def test_disconnect_while_a_stream_waits_for_proposers_cancels_them(url: str, sim: SimServer) -> None:
    """A stream abandoned before its first token cancels the proposers' upstream calls."""
    sim.reset_stats()
    with pytest.raises(openai.APITimeoutError):
        list(
            _client(url, timeout=0.5).chat.completions.create(
                model="slow-workers", messages=_ask(), stream=True
            )
        )
    assert _wait_for(lambda: sim.stats.disconnects >= 3 and sim.stats.in_flight == 0)
    assert sim.stats.served == 0


# -- the command line ------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moa")
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_cli_defaults_bind_loopback() -> None:
    """`moa serve` binds 127.0.0.1:8000 with no key and a 1 MB body limit by default."""
    args = _parse("a.yaml", "b.yaml")
    assert (args.host, args.port, args.api_key_env, args.max_body_bytes) == (
        "127.0.0.1",
        8000,
        None,
        1_000_000,
    )
    assert args.topologies == ["a.yaml", "b.yaml"]


def test_cli_missing_key_env_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A named API key variable that is not set ends with exit 2 and one line on stderr."""
    args = _parse("parallel-3", "--api-key-env", "MOA_TEST_SERVE_UNSET_KEY")
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MOA_TEST_SERVE_UNSET_KEY" in err


def test_cli_bad_topology_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A topology file that does not exist ends with exit 2 naming it."""
    args = _parse("/nonexistent/serve-me.yaml")
    assert args.func(args) == 2
    assert "serve-me.yaml" in capsys.readouterr().err


def test_cli_agent_key_not_set_exits_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """An agent whose api_key_env is not set stops the server at startup with one line naming it."""
    f = tmp_path / "t.yaml"
    f.write_text(
        "name: t\nkind: single\nagent: a\nagents:\n  a: {model: openai/x, api_key_env: MOA_TEST_SERVE_NOPE}\n"
    )
    args = _parse(str(f))
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "agent `a`" in err and "MOA_TEST_SERVE_NOPE" in err


def test_cli_cascade_stage_keys_are_checked_at_startup(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cascade whose stage topology files need keys that are not set stops the server at startup:
    exit 2, one line per missing variable naming the stages, though the cascade's own agents are fine."""
    monkeypatch.delenv("MOA_TEST_SERVE_NOPE", raising=False)
    monkeypatch.delenv("MOA_TEST_SERVE_NOPE2", raising=False)
    a = "  a: {model: openai/x, api_key_env: MOA_TEST_SERVE_NOPE}\n"
    (tmp_path / "s1.yaml").write_text("name: s1\nkind: single\nagents:\n" + a)
    (tmp_path / "s2.yaml").write_text(
        "name: s2\nkind: parallel\nworkers: [a, b]\naggregator: a\nagents:\n"
        + a
        + "  b: {model: openai/y, api_key_env: MOA_TEST_SERVE_NOPE2}\n"
    )
    f = tmp_path / "c.yaml"
    f.write_text(
        "name: c\nkind: cascade\nstages:\n"
        "  - {agent: mini, samples: 2, accept: {agree: 2}}\n"
        "  - {topology: s1.yaml, accept: {judge: {agent: mini, threshold: 0.5}}}\n"
        "  - {topology: s2.yaml}\n"
        "agents:\n  mini: {model: openai/m, api_base: 'http://127.0.0.1:9/v1', temperature: 0.7}\n"
    )
    with socket.socket() as taken:
        # a port already taken: were the stages not checked, serving would end there, not block
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = _parse(str(f), "--port", str(taken.getsockname()[1]))
        assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("moa serve: c: `MOA_TEST_SERVE_NOPE` is not set (needed by stage 2 ")
    assert "stage 3 (topology `s2`): agent `a`" in err[0]
    assert "MOA_TEST_SERVE_NOPE2" in err[1] and "stage 3 (topology `s2`): agent `b`" in err[1]


def test_moa_trace_adds_each_calls_messages_and_reply(url: str) -> None:
    """`"moa_trace": true` adds the messages sent and the reply's text to every call of the `moa`
    object; without it the object carries numbers only."""
    body = {"model": "parallel-3", "messages": _ask("trace me please")}
    plain = httpx.post(f"{url}/chat/completions", json=body, timeout=30).json()["moa"]
    traced = httpx.post(f"{url}/chat/completions", json=body | {"moa_trace": True}, timeout=30).json()["moa"]
    assert all("messages" not in c and "reply" not in c for c in plain["calls"])
    assert len(traced["calls"]) == 4
    agg = next(c for c in traced["calls"] if c["reply"] == "the mixture says four")
    workers = [c for c in traced["calls"] if c is not agg]
    assert all(c["messages"][-1]["content"].endswith("trace me please") for c in workers)
    # the aggregator's prompt is its template filled in with the workers' replies
    sent = agg["messages"][-1]["content"]
    assert all(c["reply"] in sent for c in workers)


@pytest.mark.parametrize("stream", [False, True])
def test_no_trace_refuses_moa_trace_with_a_400_naming_it(sim: SimServer, stream: bool) -> None:
    """`create_app(allow_trace=False)`: `"moa_trace": true` is a 400 naming the field, before any
    call, so no client reads the server's system prompts; `false` and plain requests still run."""
    topology = _parallel("parallel-3", sim.base_url, ["w", "w", "w"], "agg")
    body = {"model": "parallel-3", "messages": _ask("trace me please"), "stream": stream}
    with serving(create_app([topology], allow_trace=False)) as base:
        before = sim.stats.requests
        refused = httpx.post(f"{base}/chat/completions", json=body | {"moa_trace": True}, timeout=30)
        assert sim.stats.requests == before  # refused before any call
        fine = httpx.post(f"{base}/chat/completions", json=body | {"moa_trace": False}, timeout=30)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "moa_trace" and "--no-trace" in error["message"]
    assert "trace me please" not in refused.text and "be brief" not in refused.text
    assert fine.status_code == 200 and "the mixture says four" in fine.text


def test_serve_no_trace_flag_reaches_the_app(
    tmp_path: Path, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`moa serve --no-trace`: the app it serves refuses `moa_trace` (over real HTTP); without the
    flag it answers with the trace, as before."""
    f = tmp_path / "t.json"
    agent = {
        "model": "openai/agg",
        "api_base": sim.base_url,
        "api_key_env": SIM_KEY_ENV,
        "transport": "litellm",
    }
    f.write_text(json.dumps({"name": "parallel-3", "kind": "single", "agent": "a", "agents": {"a": agent}}))
    served: list[Any] = []
    monkeypatch.setattr("moa.serve.cli.serve", lambda app, sock: (sock.close(), served.append(app)))
    body = {"model": "parallel-3", "messages": _ask(), "moa_trace": True}
    for flags, status in ((["--no-trace"], 400), ([], 200)):
        args = _parse(str(f), "--port", "0", *flags)
        assert args.func(args) == 0
        with serving(served[-1]) as base:
            r = httpx.post(f"{base}/chat/completions", json=body, timeout=30)
        assert r.status_code == status, r.text
    assert "messages" in r.json()["moa"]["calls"][0]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
        ({"response_format": {"type": "json_object"}, "stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_tools_and_json_mode_are_a_400_naming_the_field(url: str, extra: dict[str, Any], param: str) -> None:
    """Asking for tool calls, JSON mode, several choices or log probabilities is refused up front,
    never answered with one plain-text choice (`n` and `logprobs` were a 200 or a 400 without
    `code: unsupported_parameter`)."""
    r = httpx.post(
        f"{url}/chat/completions", json={"model": "parallel-3", "messages": _ask(), **extra}, timeout=30
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "unsupported_parameter" and param in err["message"]


def test_tool_choice_none_and_text_format_are_fine(url: str) -> None:
    body = {
        "model": "parallel-3",
        "messages": _ask(),
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "n": 1,
        "logprobs": False,
        "top_logprobs": 0,
    }
    assert httpx.post(f"{url}/chat/completions", json=body, timeout=30).status_code == 200


@pytest.fixture(scope="module")
def json_url() -> Iterator[str]:
    """A topology whose output model answers JSON only when the prompt carries a schema."""

    def answer(request: Any) -> str:
        text = str(request.messages[-1]["content"])
        return 'Sure:\n```json\n{"answer": 4, "unit": "apples"}\n```' if "JSON Schema" in text else "four"

    with serving(
        create_app([_fake_topology("json-model")], runner=Runner(models={"fake/*": FunctionModel(answer)}))
    ) as base:
        yield base


def test_response_format_json_schema_is_honoured_on_the_output_node(json_url: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    r = _client(json_url).chat.completions.create(model="json-model", messages=_ask(), response_format=fmt)  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content or "") == {"answer": 4, "unit": "apples"}
    plain = _client(json_url).chat.completions.create(model="json-model", messages=_ask())
    assert plain.choices[0].message.content == "four"
    obj = httpx.post(
        f"{json_url}/chat/completions",
        json={"model": "json-model", "messages": _ask(), "response_format": {"type": "json_object"}},
        timeout=30,
    ).json()
    assert json.loads(obj["choices"][0]["message"]["content"])["answer"] == 4
