"""`moa serve` tells a client's mistake (400, naming the field) from the server's (500, naming none
of the server's files or variables), and serves cascades as it serves other topologies; over a real
uvicorn server on 127.0.0.1 whose topologies call fake models."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from moa._run import Runner
from moa.errors import RequestRefused, UserError
from moa.serve import create_app
from moa.serve.protocol import error_for
from moa.testing import FunctionModel, capture_events
from moa.topology.loader import load_data
from tests.serving import serving

UNSET = "MOA_TEST_SERVE_ERRORS_UNSET"


def _single(name: str, **agent: Any) -> Any:
    a = {"model": "fake/model", "retry": {"max_attempts": 1}, **agent}
    return load_data({"name": name, "kind": "single", "agent": "a", "agents": {"a": a}})


def _cascade() -> Any:
    stages = [{"agent": "mini", "samples": 2, "accept": {"agree": 2}}, {"agent": "big"}]
    agents = {
        "mini": {"model": "fake/mini", "temperature": 0.7},
        "big": {"model": "fake/big"},
    }
    return load_data({"name": "casc", "kind": "cascade", "stages": stages, "agents": agents})


@pytest.fixture(scope="module")
def fakes() -> dict[str, FunctionModel]:
    return {
        "fake/model": FunctionModel(lambda r: "echo: " + str(r.messages[-1]["content"])),
        "fake/mini": FunctionModel(lambda r: "4"),
        "fake/big": FunctionModel(lambda r: "four"),
    }


@pytest.fixture(scope="module")
def url(fakes: dict[str, FunctionModel]) -> Iterator[str]:
    # `needs-key` is served through create_app, which (unlike the command) does not check keys
    # first: its run fails for the server's reason, a variable not set
    os.environ.pop(UNSET, None)
    runner = Runner(models=dict(fakes))
    topologies = [
        _single("echo"),
        _cascade(),
        _single("needs-key", model="openai/x", api_key_env=UNSET),
    ]
    with serving(create_app(topologies, runner=runner)) as base:
        yield base
    asyncio.run(runner.aclose())


def _post(url: str, model: str, text: str = "what is two plus two", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=30)


def _calls(fakes: dict[str, FunctionModel]) -> int:
    return sum(len(f.calls) for f in fakes.values())


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_misconfiguration_is_a_500_naming_nothing_of_the_server(url: str, stream: bool) -> None:
    """A run refused for the server's configuration is a 500 `server_error` that names the model
    but not the variable or file at fault; the server's log names it."""
    with capture_events() as events:
        r = _post(url, "needs-key", stream=stream)
    assert r.status_code == 500
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("server_error", "server_misconfigured", None)
    assert "`needs-key`" in err["message"]
    assert UNSET not in r.text and "api_key_env" not in r.text
    failed = [e for e in events if e["event"] == "serve.run_failed"]
    assert len(failed) == 1 and UNSET in failed[0]["error"] and failed[0]["model"] == "needs-key"


def test_a_server_misconfiguration_reaches_pythons_log_when_moa_logs_nothing(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With moa's logging off (an app built with `create_app`), the reason the 500 points to still
    reaches Python's logging, where it had been dropped."""
    with caplog.at_level("ERROR", logger="moa.serve"):
        assert _post(url, "needs-key").status_code == 500
    failed = [r.getMessage() for r in caplog.records if r.name == "moa.serve"]
    assert len(failed) == 1 and "model=needs-key" in failed[0] and UNSET in failed[0]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "required": 5},
        {"type": "object", "properties": [1]},
        {"type": "bogus"},
        {"type": "object", "properties": {"x": {"type": ["string", "text"]}}},
    ],
)
def test_a_json_schema_the_answer_check_cannot_read_is_a_400(
    url: str, fakes: dict[str, FunctionModel], schema: dict[str, Any]
) -> None:
    """A `response_format` schema whose `required` or `properties` has the wrong shape is refused
    before any call (it had been found only in the answer's check, as a 502 after paying for it)."""
    before = _calls(fakes)
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    r = _post(url, "echo", response_format=fmt)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and err["code"] == "unsupported_parameter"
    assert _calls(fakes) == before


def test_a_cascades_reply_carries_its_run_id(url: str) -> None:
    """The `moa` object of a cascade's reply names its run (it was empty), one id per request."""
    ids = [_post(url, "casc").json()["moa"]["run_id"] for _ in range(2)]
    assert all(len(i) == 16 for i in ids) and ids[0] != ids[1]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": ""}], "messages[0].content"),
        ([{"role": "user", "content": " \n\t "}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "messages[0].content"),
        ([{"role": "user"}], "messages[0].content"),
        (
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": " "},
            ],
            "messages[3].content",
        ),
        ([{"role": "user", "content": ""}, {"role": "user", "content": "hi"}], "messages[0].content"),
    ],
)
def test_an_empty_user_message_is_a_400_naming_it(
    url: str, fakes: dict[str, FunctionModel], messages: list[Any], param: str
) -> None:
    """A user message with no text but whitespace is refused before any call, as `moa run` refuses
    an empty `--prompt`, naming the message; plain and cascade topologies alike. Other roles may be
    empty."""
    before = _calls(fakes)
    for model in ("echo", "casc"):
        r = httpx.post(f"{url}/chat/completions", json={"model": model, "messages": messages}, timeout=30)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["type"], err["param"]) == ("invalid_request_error", param)
        assert f"`{param}`" in err["message"] and "empty" in err["message"]
    assert _calls(fakes) == before
    fine = [
        {"role": "system", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "two plus two"},
    ]
    r = httpx.post(f"{url}/chat/completions", json={"model": "echo", "messages": fine}, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: two plus two"


def test_a_run_refusing_what_the_request_asked_is_a_400_naming_the_request_field() -> None:
    """`RequestRefused` out of a run is the client's 400 naming the request field the run argument
    came from (`output_type` is `response_format`), never the server's 500."""
    e = error_for(RequestRefused("the output schema: `type` 'x' is not a JSON type", field="output_type"))
    assert (e.status, e.type, e.param, e.code, e.retry) == (
        400,
        "invalid_request_error",
        "response_format",
        "unsupported_parameter",
        False,
    )
    assert e.message == "`response_format`: the output schema: `type` 'x' is not a JSON type"
    assert isinstance(RequestRefused("r", field="prompt"), UserError)
    assert error_for(UserError("key not set")).status == 500


@pytest.mark.parametrize(
    ("which", "schema"),
    [("casc", {"type": "bogus"}), ("echo", {"type": "bogus"}), ("echo", {"required": 5})],
)
def test_the_runner_refuses_what_it_cannot_give_as_request_refused_before_any_call(
    fakes: dict[str, FunctionModel], which: str, schema: dict[str, Any]
) -> None:
    """A schema the answer's check cannot read raises `RequestRefused` naming `output_type` before
    any call, for a cascade as for a topology, so a server can tell it from its own misconfiguration."""
    topology = _cascade() if which == "casc" else _single("echo")
    before = _calls(fakes)

    async def go() -> None:
        async with Runner(models=dict(fakes)) as runner:
            await topology.run("two plus two", runner=runner, output_type=schema)

    with pytest.raises(RequestRefused) as info:
        asyncio.run(go())
    assert info.value.field == "output_type" and info.value.calls == []
    assert _calls(fakes) == before


def test_an_api_key_with_non_ascii_characters_is_accepted_when_right(fakes: dict[str, FunctionModel]) -> None:
    """A key with non-ASCII characters, sent as UTF-8 as clients send it, is accepted on both routes
    (the header's latin-1 text had been re-encoded as UTF-8, so the right key never matched); a
    wrong one is still a 401."""
    key = "clé-secrète"
    with serving(create_app([_single("echo")], runner=Runner(models=dict(fakes)), api_key=key)) as base:
        right = [(b"authorization", f"Bearer {key}".encode())]
        wrong = [(b"authorization", b"Bearer cle-secrete")]
        assert httpx.get(f"{base}/models", headers=right, timeout=30).status_code == 200
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{base}/chat/completions", json=body, headers=right, timeout=30).status_code == 200
        assert httpx.get(f"{base}/models", headers=wrong, timeout=30).status_code == 401
        assert httpx.post(f"{base}/chat/completions", json=body, headers=wrong, timeout=30).status_code == 401
