"""`moa serve`'s per-request path: the plain ASGI chat endpoint, its disconnect watcher, the reply's
encoding, the request log's cost when it is off, and how the command runs uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moa import log
from moa._run import Runner
from moa.results import Attempt, CallRecord, CostShare, NodeResult, RunResult, Usage
from moa.serve import create_app
from moa.serve.app import _Disconnected, _json, _unless_disconnected
from moa.serve.cli import UVICORN_SETTINGS, run
from moa.serve.protocol import moa_extension, new_id
from moa.testing import FunctionModel, capture_events
from moa.topology.loader import load_data
from tests.raising_logger import RaisingLogger


def _topology(name: str = "echo") -> Any:
    agent = {"model": "fake/model", "retry": {"max_attempts": 1}}
    return load_data({"name": name, "kind": "single", "agent": "a", "agents": {"a": agent}})


def _echo(request: Any) -> str:
    return "echo: " + str(request.messages[-1]["content"])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The app on an echoing fake model, called in process through httpx's ASGI transport."""
    runner = Runner(models={"fake/model": FunctionModel(_echo)})
    app = create_app([_topology()], runner=runner)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://moa") as c:
        yield c
    await runner.aclose()


def _ask(text: str) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": text}]}


# -- the reply --------------------------------------------------------------------------------------


async def test_reply_is_utf8_json_with_the_answer(client: httpx.AsyncClient) -> None:
    """The reply is compact UTF-8 JSON (no ``\\u`` escapes) whose content is the model's answer."""
    r = await client.post("/v1/chat/completions", json=_ask("héllo ✓ 😀 </script>"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert "héllo ✓ 😀".encode() in r.content and b"\\u" not in r.content
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "echo: héllo ✓ 😀 </script>"
    assert body["usage"]["total_tokens"] > 0 and body["moa"]["calls"][0]["model"] == "fake/model"


def test_reply_encoding_keeps_json_valid_and_values_exact() -> None:
    """Replies decode to what was encoded (floats exactly); NaN and infinities become null."""
    obj = {"a": [0.1, 2.3044005502015352e-05, 1e20, -0.0, 10**30], "b": '✓\n"', "c": None, "d": True}
    assert json.loads(_json(obj)) == obj
    assert _json({"nan": float("nan"), "inf": float("-inf")}) == b'{"nan":null,"inf":null}'


async def test_body_in_several_parts_is_read_whole(client: httpx.AsyncClient) -> None:
    """A chunked body under the limit is joined before it is parsed."""

    async def parts() -> AsyncIterator[bytes]:
        text = json.dumps(_ask("in three parts")).encode()
        for i in range(0, len(text), len(text) // 3 + 1):
            yield text[i : i + len(text) // 3 + 1]

    r = await client.post("/v1/chat/completions", content=parts())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: in three parts"


async def test_moa_extension_carries_the_run_results_own_fields() -> None:
    """The reply's ``moa`` object is the same fields as ``RunResult.to_dict``, trace or not."""
    runner = Runner(models={"fake/model": FunctionModel(_echo)})
    result = await _topology().run("hi", runner=runner)
    keys = ("run_id", "cost_usd", "latency_s", "critical_path_s", "by_node", "by_model", "calls", "nodes")
    for trace in (False, True):
        whole = result.to_dict(trace=trace)
        assert moa_extension(result, trace=trace) == {k: whole[k] for k in keys}
    await runner.aclose()


def test_moa_extension_shares_are_the_run_results_with_many_calls() -> None:
    """``by_node`` and ``by_model``, built in one pass for the reply, equal ``RunResult.to_dict``'s
    (keys, order and sums) over calls sharing nodes and models, one with an attempt of unknown usage."""
    unknown = Attempt("timeout", 1.0, None, "TimedOut: slow", worst_case_usd=0.25)
    calls = [
        CallRecord("p1", "m/a", Usage(10, 5), 0.1, attempt_log=[Attempt("ok", 0.1, Usage(10, 5))]),
        CallRecord("p2", "m/b", Usage(7, 3), 0.3, attempt_log=[unknown, Attempt("ok", 0.2, Usage(7, 3))]),
        CallRecord("p2", "m/a", Usage(1, 1), 0.7, error="ProviderError: down"),
        CallRecord("agg", "m/b", Usage(20, 9), 0.2),
    ]
    nodes = {n: NodeResult(id=n) for n in ("p1", "p2", "agg")}
    result = RunResult("x", "t", Usage(38, 18), 1.3, 1.0, 1.0, calls, nodes)
    whole, ours = result.to_dict(), moa_extension(result)
    for key in ("by_node", "by_model"):
        assert list(ours[key].items()) == list(whole[key].items())
        assert all(list(v) == list(CostShare().to_dict()) for v in ours[key].values())
    assert ours["by_node"]["p2"]["cost_usd_max"] == pytest.approx(1.25)


def test_a_records_dict_sums_its_attempts_as_its_properties_do() -> None:
    """``CallRecord.to_dict`` works ``unknown_usage_attempts`` and ``cost_usd_max`` out in one loop:
    the same values, to the bit, as the properties, with unknown, estimated and no attempts."""
    unknown = Attempt("timeout", 1.0, None, "TimedOut: slow", worst_case_usd=0.1)
    estimated = Attempt("ok", 0.2, Usage(7, 3), worst_case_usd=0.3, cost_usd=0.07)
    records = [
        CallRecord("a", "m", cost_usd=0.7, attempt_log=[unknown, unknown, estimated]),
        CallRecord("b", "m", cost_usd=-0.0, attempt_log=[Attempt("ok", 0.1, Usage(1, 1))]),
        CallRecord("c", "m", cost_usd=0.3),
    ]
    for r in records:
        d = r.to_dict()
        assert d["unknown_usage_attempts"] == r.unknown_usage_attempts
        assert repr(d["cost_usd_max"]) == repr(r.cost_usd_max)


def test_fields_skipped_by_the_unsupported_check_are_those_it_never_refuses() -> None:
    """``ChatRequest.unsupported`` returns at once when only always-served fields were sent: every
    other field is one it checks, so a field added later is refused or listed, never skipped."""
    from moa.serve.protocol import _ALWAYS_SERVED, ChatRequest

    checked = set(ChatRequest.model_fields) - _ALWAYS_SERVED
    assert checked == {
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "n",
        "logprobs",
        "top_logprobs",
        "response_format",
    }
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    refused = {
        "tools": [{"type": "function"}],
        "functions": [{"name": "f"}],
        "tool_choice": "auto",
        "function_call": "auto",
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "xml"},
    }
    for name, value in refused.items():
        problem = ChatRequest.model_validate({**base, name: value}).unsupported()
        assert problem is not None and problem[0] == name
    assert ChatRequest.model_validate({**base, "stream": True, "moa_trace": True}).unsupported() is None


def test_completion_ids_are_unique_128_bit_hex() -> None:
    """Each reply id is ``chatcmpl-moa`` and 32 hex digits, never repeated."""
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(re.fullmatch(r"chatcmpl-moa[0-9a-f]{32}", i) for i in ids)


async def test_chat_route_answers_as_the_router_and_handlers_do() -> None:
    """``POST /v1/chat/completions`` skips Starlette's router (``_ChatRoute``); a request under a
    ``root_path`` still goes through it. Both give the same replies: an answer, each error's status,
    headers and body (a 413 closes the connection), and a GET is still a 405 naming POST."""
    runner = Runner(models={"fake/model": FunctionModel(_echo)})
    app = create_app([_topology()], runner=runner, max_body_bytes=2000)
    direct = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    routed = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/api"), base_url="http://127.0.0.1/api"
    )
    bodies: list[Any] = [
        _ask("hi"),
        {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "echo", "messages": []},
        {**_ask("hi"), "tools": [{"type": "function"}]},
        _ask("x" * 3000),
    ]
    replies = []
    try:
        for c in (direct, routed):
            got = []
            for body in bodies:
                r = await c.post("/v1/chat/completions", json=body)
                body_json = r.json()
                if r.status_code == 200:  # the run's own figures differ between runs
                    body_json = body_json["choices"][0]["message"]["content"]
                headers = {k: v for k, v in r.headers.items() if k != "content-length"}
                got.append((r.status_code, headers, body_json))
            r = await c.get("/v1/chat/completions")
            got.append((r.status_code, dict(r.headers), r.json()["error"]["code"]))
            replies.append(got)
    finally:
        await direct.aclose()
        await routed.aclose()
        await runner.aclose()
    assert replies[0][:5] == replies[1][:5]  # the 405 names the path it was sent to
    statuses = [g[0] for g in replies[0]]
    assert statuses == [200, 404, 400, 400, 413, 405]
    assert replies[0][4][1]["connection"] == "close"
    assert replies[0][5][1]["allow"] == replies[1][5][1]["allow"] == "POST"


# -- the disconnect watcher ---------------------------------------------------------------------------


def _receive_disconnect_after(ev: asyncio.Event) -> Any:
    async def receive() -> dict[str, Any]:
        await ev.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_disconnect_cancels_the_work_and_raises() -> None:
    """A disconnect while the work runs cancels the work and raises ``_Disconnected``."""
    gone, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    asyncio.get_running_loop().call_later(0.01, gone.set)
    with pytest.raises(_Disconnected):
        await _unless_disconnected(_receive_disconnect_after(gone), work())
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_work_that_finishes_first_returns_and_stops_the_watcher() -> None:
    """Work done before any disconnect returns its value and leaves no watcher waiting."""
    before = asyncio.all_tasks()

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await _unless_disconnected(_receive_disconnect_after(asyncio.Event()), work()) == "done"
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


async def test_a_receive_that_fails_leaves_the_work_alone() -> None:
    """A ``receive`` that raises ends the watcher only: the work finishes, nothing is left unretrieved."""

    async def receive() -> dict[str, Any]:
        raise RuntimeError("the server's receive broke")

    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await _unless_disconnected(receive, work()) == "done"


async def test_a_shutdown_cancel_goes_on_up_not_as_a_disconnect() -> None:
    """Cancelling the request's task (server shutdown) propagates as a cancellation."""
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(_unless_disconnected(_receive_disconnect_after(asyncio.Event()), work()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the request log --------------------------------------------------------------------------------


async def test_request_log_event_when_info_is_on(client: httpx.AsyncClient) -> None:
    """With events on, each request logs method, path, status, model and cost."""
    with capture_events() as events:
        r = await client.post("/v1/chat/completions", json=_ask("logged"))
        assert r.status_code == 200
        await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    served = [e for e in events if e["event"] == "serve.request"]
    assert [(e["status"], e["path"], e["method"]) for e in served] == [
        (200, "/v1/chat/completions", "POST"),
        (400, "/v1/chat/completions", "POST"),
    ]
    assert served[0]["model"] == "echo" and served[0]["stream"] is False and "cost_usd" in served[0]


async def test_no_request_events_at_the_serve_default_of_warnings(client: httpx.AsyncClient) -> None:
    """At warning level (``moa serve``'s default) a served request writes nothing."""
    previous, out = log.logger(), io.StringIO()
    log.configure_logging("json", level="WARNING", stream=out)
    try:
        r = await client.post("/v1/chat/completions", json=_ask("quiet"))
    finally:
        log.use_logger(previous)
    assert r.status_code == 200 and out.getvalue() == ""


# -- how the command runs uvicorn ---------------------------------------------------------------------


def test_uvicorn_runs_on_httptools_and_uvloop_when_installed() -> None:
    """The settings ``moa serve`` gives uvicorn resolve to httptools and uvloop when both are installed."""
    pytest.importorskip("httptools")
    uvloop = pytest.importorskip("uvloop")
    import uvicorn

    config = uvicorn.Config(create_app([_topology()]), **UVICORN_SETTINGS)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert UVICORN_SETTINGS["access_log"] is False


def _topology_file(tmp_path: Path) -> Path:
    topology = tmp_path / "t.yaml"
    topology.write_text(
        "name: t\nkind: single\nagent: a\nagents:\n  a: {model: openai/m, api_base: 'http://127.0.0.1:9/v1'}\n"
    )
    return topology


def _serve_and_fetch_models(tmp_path: Path, host: str, banner_host: str) -> None:
    """Start the real command on ``host`` port 0 and fetch /v1/models at the URL its banner prints."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [sys.executable, "-m", "moa", "serve", str(_topology_file(tmp_path)), "--host", host, "--port", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        found = re.search(r"t at (http://" + re.escape(banner_host) + r":(\d+)/v1)\n", banner)
        assert found, banner
        url, port = found.group(1), int(found.group(2))
        assert port > 0
        deadline = time.monotonic() + 60
        while True:  # the banner comes before uvicorn's startup completes
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
                    assert json.load(r)["data"][0]["id"] == "t"
                break
            except (ConnectionError, urllib.error.URLError):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_port_zero_serves_on_the_port_it_prints(tmp_path: Path) -> None:
    """``moa serve --port 0`` (the real command, real uvicorn) binds a free port, prints it, and
    answers there."""
    _serve_and_fetch_models(tmp_path, "127.0.0.1", "127.0.0.1")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_host_is_printed_as_a_url_that_works(tmp_path: Path) -> None:
    """``--host ::1`` prints ``http://[::1]:PORT/v1`` (``http://::1:PORT/v1`` is no URL), and the
    server answers at it."""
    _serve_and_fetch_models(tmp_path, "::1", "[::1]")


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = argparse.Namespace(
            topologies=[str(_topology_file(tmp_path))],
            host="127.0.0.1",
            port=port,
            api_key_env=None,
            max_body_bytes=1000,
            no_trace=False,
        )
        previous = log.logger()
        try:
            assert run(args) == 2
        finally:
            log.use_logger(previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"moa serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


async def test_a_logger_that_raises_costs_no_request_its_reply() -> None:
    """`moa serve`'s own events (the request log, a failed run's `serve.run_failed`) called the
    logger bare: one that raised turned a misconfigured model's 500 with its message into an empty
    500. Every request gets the reply it would have had with logging off."""
    from moa.errors import RequestRejected

    def answer(request: Any) -> object:
        if "refused" in str(request.messages[-1]["content"]):
            return RequestRejected("Incorrect API key provided", status_code=401)
        return "fine"

    runner = Runner(models={"fake/model": FunctionModel(answer)})
    app = create_app([_topology()], runner=runner)
    previous = log.logger()
    log.use_logger(RaisingLogger())
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://moa") as c:
            ok = await c.post("/v1/chat/completions", json=_ask("hello"))
            refused = await c.post("/v1/chat/completions", json=_ask("refused"))
    finally:
        log.use_logger(previous)
        await runner.aclose()
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "fine"
    assert refused.status_code == 500
    assert refused.json()["error"]["code"] == "server_misconfigured"
