"""The loopback simulated OpenAI-compatible server that the other tests and the benchmarks use."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import ast
import asyncio
import email.utils
import importlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from moa.errors import UserError
from moa.testing import sim
from moa.testing.sim import (
    FaultPlan,
    SimModel,
    SimRequest,
    SimServer,
    count_completion_tokens,
    count_prompt_tokens,
)
from moa.testing.sim.http11 import Conn, Request

ROOT = Path(__file__).resolve().parents[1]


def _body(text: str = "what is two plus two", model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
def srv() -> Iterator[SimServer]:
    with SimServer({"m": SimModel(), "fixed": SimModel(answer="the answer is 4")}) as server:
        yield server


def _post(server: SimServer, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, **kw)


def _sse(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


# -- the protocol as plain httpx sees it --------------------------------------------------------


def test_plain_completion_has_openai_shape_and_counted_usage(srv: SimServer) -> None:
    """A non-streamed reply is a full chat.completion with the documented token counts."""
    body = _body(model="fixed")
    reply = _post(srv, body).json()
    assert reply["object"] == "chat.completion" and reply["model"] == "fixed"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "the answer is 4"}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {
        "prompt_tokens": count_prompt_tokens(body["messages"]),
        "completion_tokens": count_completion_tokens("the answer is 4"),
        "total_tokens": 5 + 3 + 4,
    }


def test_default_answer_names_the_model_and_echoes_the_prompt(srv: SimServer) -> None:
    """Without an answer the model replies `answer from <model>: <first 8 words>`."""
    reply = _post(srv, _body("one two three four five six seven eight nine")).json()
    assert (
        reply["choices"][0]["message"]["content"] == "answer from m: one two three four five six seven eight"
    )


def test_models_endpoint_lists_the_table(srv: SimServer) -> None:
    """GET /v1/models returns the OpenAI list shape with every configured model."""
    listing = httpx.get(f"{srv.base_url}/models").json()
    assert listing["object"] == "list"
    assert sorted(m["id"] for m in listing["data"]) == ["fixed", "m"]


def test_provider_prefix_is_stripped(srv: SimServer) -> None:
    """`openai/fixed` reaches the model `fixed`."""
    reply = _post(srv, _body(model="openai/fixed")).json()
    assert reply["choices"][0]["message"]["content"] == "the answer is 4"
    assert srv.stats.served_by_model == Counter({"fixed": 1})


def test_unknown_model_is_404_in_openai_error_shape(srv: SimServer) -> None:
    """An unknown model gets a 404 with code model_not_found."""
    response = _post(srv, _body(model="nope"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_body_is_400(srv: SimServer) -> None:
    """A body that is not JSON gets a 400 in the OpenAI error shape."""
    response = httpx.post(f"{srv.base_url}/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_max_tokens_truncates_with_finish_reason_length(srv: SimServer) -> None:
    """An answer longer than max_tokens is cut to that many words and says `length`."""
    reply = _post(srv, _body(model="fixed", max_tokens=2)).json()
    assert reply["choices"][0]["message"]["content"] == "the answer"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 2


def test_connection_close_is_honoured(srv: SimServer) -> None:
    """A request with `Connection: close` gets its reply and then the socket is closed."""
    response = _post(srv, _body(), headers={"Connection": "close"})
    assert response.status_code == 200 and response.headers["connection"] == "close"


def test_keep_alive_serves_many_requests_on_one_connection(srv: SimServer) -> None:
    """One httpx client reuses its connection for successive requests."""
    with httpx.Client(base_url=srv.base_url) as client:
        for _ in range(20):
            assert client.post("/chat/completions", json=_body()).status_code == 200
    assert srv.stats.served == 20


async def test_stream_deltas_concatenate_and_end_with_usage_and_done() -> None:
    """A stream sends several deltas, a usage chunk when asked, then [DONE] (async httpx, same loop)."""
    async with SimServer({"fixed": SimModel(answer="the answer is 4")}) as server:
        body = _body(model="fixed", stream=True, stream_options={"include_usage": True})
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{server.base_url}/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    events = _sse(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len(deltas) >= 4 and "".join(deltas) == "the answer is 4"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert server.stats.served == 1 and server.stats.completion_tokens == 4


def test_stream_latency_is_spread_across_chunks() -> None:
    """The first streamed chunk arrives well before the full latency has passed."""
    with (
        SimServer({"slow": SimModel(latency_s=0.4, answer="a b c d e f g h")}) as server,
        httpx.stream(
            "POST", f"{server.base_url}/chat/completions", json=_body(model="slow", stream=True)
        ) as r,
    ):
        start = time.monotonic()
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.monotonic() - start
        rest = list(lines)
    assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "a "
    assert first_at < 0.3 and "data: [DONE]" in rest


# -- the clients the SDK really uses ----------------------------------------------------------


def test_openai_client_parses_plain_and_streamed_replies(srv: SimServer) -> None:
    """The official openai client reads both reply forms, including the usage chunk."""
    import openai

    with openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as client:
        msgs: Any = [{"role": "user", "content": "hi"}]
        plain = client.chat.completions.create(model="fixed", messages=msgs)
        assert plain.choices[0].message.content == "the answer is 4"
        assert plain.usage is not None and plain.usage.completion_tokens == 4
        stream = client.chat.completions.create(
            model="fixed", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the answer is 4"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1 + 3


async def test_litellm_parses_plain_and_streamed_replies(srv: SimServer) -> None:
    """litellm's openai/ provider reads both reply forms from the server."""
    import litellm

    kw: Any = {"api_base": srv.base_url, "api_key": "x", "num_retries": 0}
    msgs = [{"role": "user", "content": "hi there"}]
    plain = await litellm.acompletion(model="openai/fixed", messages=msgs, **kw)
    assert plain.choices[0].message.content == "the answer is 4"
    assert plain.usage.prompt_tokens == 2 + 3
    stream = await litellm.acompletion(
        model="openai/fixed", messages=msgs, stream=True, stream_options={"include_usage": True}, **kw
    )
    pieces = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "the answer is 4"
    assert srv.stats.served == 2


# -- faults -------------------------------------------------------------------------------------


def test_429_carries_retry_after_seconds(srv: SimServer) -> None:
    """A scripted 429 carries Retry-After in seconds and the OpenAI error shape."""
    srv.faults = FaultPlan(0.0, retry_after_s=0.5)
    srv.script("m", ["429"])
    response = _post(srv, _body())
    assert response.status_code == 429 and response.headers["retry-after"] == "0.5"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_429_can_carry_an_http_date() -> None:
    """With retry_after_http_date the Retry-After header is a date no earlier than the delay."""
    plan = FaultPlan(1.0, kinds=("429",), retry_after_s=2, retry_after_http_date=True)
    with SimServer({"m": SimModel()}, faults=plan) as server:
        response = _post(server, _body())
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert response.status_code == 429 and when - time.time() > 1.0


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_errors_are_openai_shaped(srv: SimServer, kind: str) -> None:
    """500 and 503 faults reply with their status and an error body."""
    srv.script("m", [kind])
    response = _post(srv, _body())
    assert response.status_code == int(kind) and "error" in response.json()


def test_reset_raises_a_transport_error(srv: SimServer) -> None:
    """A reset closes the socket without a reply, which httpx reports as a transport error."""
    srv.script("m", ["reset"])
    with pytest.raises(httpx.TransportError):
        _post(srv, _body())
    assert srv.stats.faults == Counter({"reset": 1}) and srv.stats.served == 0


def test_malformed_replies_are_not_usable(srv: SimServer) -> None:
    """Malformed faults give a 200 that is not JSON, or JSON without choices."""
    srv.script("m", ["malformed_json", "no_choices"])
    with pytest.raises(json.JSONDecodeError):
        _post(srv, _body()).json()
    assert "choices" not in _post(srv, _body()).json()
    assert srv.stats.faults == Counter({"malformed": 2})


def test_hang_times_out_and_counts_a_disconnect(srv: SimServer) -> None:
    """A hang never answers; the client times out and the server sees it leave."""
    srv.script("m", ["hang"])
    with pytest.raises(httpx.ReadTimeout):
        _post(srv, _body(), timeout=0.2)
    deadline = time.monotonic() + 2
    while (srv.stats.disconnects < 1 or srv.stats.in_flight) and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = srv.stats
    assert stats.disconnects == 1 and stats.in_flight == 0 and stats.served == 0


def test_client_leaving_mid_latency_cancels_the_work() -> None:
    """A client that gives up during the model latency is a disconnect, never served."""
    with SimServer({"slow": SimModel(latency_s=5)}) as server:
        with pytest.raises(httpx.ReadTimeout):
            _post(server, _body(model="slow"), timeout=0.1)
        deadline = time.monotonic() + 2
        while server.stats.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = server.stats
    assert stats.disconnects == 1 and stats.served == 0 and stats.max_in_flight == 1


def test_leaving_the_context_closes_hanging_connections_promptly() -> None:
    """Shutdown does not wait for a hang to end."""
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=5) as client:
        with SimServer({"m": SimModel()}, faults=FaultPlan(1.0, kinds=("hang",))) as server:
            future = pool.submit(client.post, f"{server.base_url}/chat/completions", json=_body())
            while server.stats.in_flight == 0:
                time.sleep(0.01)
        with pytest.raises(httpx.TransportError):
            future.result(timeout=5)
    assert time.monotonic() - start < 3


def test_script_runs_in_order_before_random_faults(srv: SimServer) -> None:
    """Scripted outcomes are used in order, then the (here: absent) random plan."""
    srv.script("openai/m", ["429", "ok", "500"])
    codes = [_post(srv, _body()).status_code for _ in range(4)]
    assert codes == [429, 200, 500, 200]
    assert [kind for _, _, kind in srv.stats.request_log] == ["429", "ok", "500", "ok"]


def test_random_faults_follow_the_rate_and_repeat_across_servers() -> None:
    """Faults hit about `rate` of the requests, and the same seed gives the same sequence."""
    plan = FaultPlan(0.3, kinds=("500", "503", "429"), seed=7)
    runs = []
    for _ in range(2):
        with SimServer({"m": SimModel()}, faults=plan) as server, httpx.Client() as client:
            runs.append(
                [
                    client.post(f"{server.base_url}/chat/completions", json=_body()).status_code
                    for _ in range(400)
                ]
            )
            stats = server.stats
        assert stats.requests == 400 and stats.served == runs[-1].count(200)
        assert sum(stats.faults.values()) == 400 - stats.served
    assert runs[0] == runs[1]
    assert 0.22 < 1 - runs[0].count(200) / 400 < 0.38


def test_faults_can_be_limited_to_some_models_and_swapped_at_runtime(srv: SimServer) -> None:
    """A plan naming models spares the others; assigning srv.faults takes effect at once."""
    srv.faults = FaultPlan(1.0, kinds=("500",), models=["fixed"])
    assert _post(srv, _body(model="fixed")).status_code == 500
    assert _post(srv, _body(model="m")).status_code == 200
    srv.faults = None
    assert _post(srv, _body(model="fixed")).status_code == 200


def test_bad_fault_plans_are_rejected() -> None:
    """Unknown fault kinds and rates outside [0, 1] raise UserError."""
    with pytest.raises(UserError):
        FaultPlan(0.1, kinds=("teapot",))
    with pytest.raises(UserError):
        FaultPlan(1.5)


# -- simulated accuracy ---------------------------------------------------------------------------


async def _ask_many(base_url: str, model: str, questions: list[str], concurrent: int = 8) -> list[str]:
    # Few connections: httpx's pool scans every connection per request, which would dominate the run.
    limits = httpx.Limits(max_connections=concurrent)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        sem = asyncio.Semaphore(concurrent)

        async def ask(q: str) -> str:
            async with sem:
                reply = (await client.post("/chat/completions", json=_body(q, model=model))).json()
            return str(reply["choices"][0]["message"]["content"])

        return await asyncio.gather(*(ask(q) for q in questions))


async def test_accuracy_model_is_right_about_p_of_the_time() -> None:
    """With p=0.7 about 70% of 2,000 answers are correct, and wrong ones rarely agree."""
    answers = {f"question {i}?": str(i * 3) for i in range(40)}
    model = SimModel.with_accuracy(0.7, answers, seed=1)
    asked = [f"question {i % 40}?" for i in range(2000)]
    async with SimServer({"acc": model}) as server:
        got = await _ask_many(server.base_url, "acc", asked)
    right = sum(g == answers[q] for q, g in zip(asked, got, strict=True))
    assert abs(right / 2000 - 0.7) < 0.04
    wrong = [g for q, g in zip(asked, got, strict=True) if g != answers[q]]
    assert all(w.lstrip("-").isdigit() for w in wrong)
    assert max(Counter(wrong).values()) < len(wrong) / 10


async def test_accuracy_draws_repeat_across_server_instances() -> None:
    """Two fresh servers with the same seed give the same answer sequence."""
    model = SimModel.with_accuracy(0.5, {"capital of France": "Paris"}, seed=3)
    sequences = []
    for _ in range(2):
        async with SimServer({"acc": model}) as server, httpx.AsyncClient(base_url=server.base_url) as client:
            seq = []
            for _ in range(30):
                r = await client.post("/chat/completions", json=_body("capital of France", model="acc"))
                seq.append(r.json()["choices"][0]["message"]["content"])
            sequences.append(seq)
    assert sequences[0] == sequences[1]
    assert len(set(sequences[0])) > 2 and "Paris" in sequences[0]
    assert all(s == "Paris" or s.startswith("Paris-wrong") for s in sequences[0])


def test_accuracy_finds_the_question_inside_a_longer_prompt() -> None:
    """An aggregator prompt that contains the question is answered from the table."""
    model = SimModel.with_accuracy(1.0, {"What is 6*7?": "42"})
    with SimServer({"agg": model}) as server:
        reply = _post(server, _body("Responses to: What is 6*7?\n1. 41\n2. 42", model="agg")).json()
    assert reply["choices"][0]["message"]["content"] == "42"


def test_answer_function_sees_the_request(srv: SimServer) -> None:
    """A callable answer receives the resolved model, messages and a per-question call index."""
    seen: list[SimRequest] = []

    def answer(req: SimRequest) -> str:
        seen.append(req)
        return f"call {req.call_index}"

    with SimServer({"f": SimModel(answer=answer)}) as server:
        replies = [_post(server, _body(model="openai/f")).json() for _ in range(2)]
    assert [r["choices"][0]["message"]["content"] for r in replies] == ["call 0", "call 1"]
    assert seen[0].model == "f" and seen[0].body["model"] == "openai/f"


def test_answer_function_bug_is_an_openai_shaped_500() -> None:
    """An answer function that raises gives a 500 naming the error; the connection serves on."""

    def answer(req: SimRequest) -> str:
        raise ZeroDivisionError("the answer function broke")

    with SimServer({"bad": SimModel(answer=answer), "m": SimModel()}) as server, httpx.Client() as client:
        url = f"{server.base_url}/chat/completions"
        bad = client.post(url, json=_body(model="bad"))
        good = client.post(url, json=_body(model="m"))
    assert bad.status_code == 500 and bad.json()["error"]["type"] == "server_error"
    assert "ZeroDivisionError: the answer function broke" in bad.json()["error"]["message"]
    assert good.status_code == 200 and server.stats.in_flight == 0


# -- accounting ---------------------------------------------------------------------------------


def test_stats_count_served_tokens_and_faults_and_reset(srv: SimServer) -> None:
    """served, tokens, requests, faults and the request log add up; reset_stats zeroes them."""
    srv.script("fixed", ["503"])
    for _ in range(3):
        _post(srv, _body("a b", model="fixed"))
    _post(srv, _body(model="missing"))
    stats = srv.stats
    assert (stats.served, stats.requests) == (2, 4)
    assert stats.prompt_tokens == 2 * (2 + 3) and stats.completion_tokens == 2 * 4
    assert stats.faults == Counter({"503": 1})
    assert [k for _, _, k in stats.request_log] == ["503", "ok", "ok", "not_found"]
    assert stats.request_log == sorted(stats.request_log)
    srv.reset_stats()
    assert srv.stats.requests == 0 and srv.stats.served == 0


async def test_in_flight_tracks_concurrent_requests() -> None:
    """max_in_flight records how many requests were being processed at once."""
    async with SimServer({"slow": SimModel(latency_s=0.2)}) as server:
        await _ask_many(server.base_url, "slow", ["q"] * 10, concurrent=10)
        stats = server.stats
    assert stats.max_in_flight == 10 and stats.in_flight == 0 and stats.served == 10


# -- command line ---------------------------------------------------------------------------------


def test_command_line_prints_the_url_and_serves() -> None:
    """`python -m moa.testing.sim` prints its base URL and answers until terminated."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "moa.testing.sim", "--port", "0", "--latency-ms", "1"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            reply = httpx.post(f"{url}/chat/completions", json=_body(model="anything"), timeout=5).json()
            assert reply["choices"][0]["message"]["content"].startswith("answer from anything")
        finally:
            proc.terminate()
            proc.wait(timeout=5)
    assert proc.returncode == 0


def test_command_line_bad_input_is_one_line_and_exit_2() -> None:
    """A fault rate outside [0, 1], a port past 65535 or one already taken: one line naming it and
    exit 2, where each was a traceback."""
    import socket

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = {}
        for args, line in [
            (["--fault-rate", "2"], "FaultPlan: rate=2.0 is not within [0, 1]"),
            (["--port", "70000"], "--port must be within 0..65535 (got 70000)"),
            (["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use"),
        ]:
            cmd = [sys.executable, "-m", "moa.testing.sim", *args]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
            said[args[0] + " " + args[1]] = (
                done.returncode,
                done.stderr.strip(),
                f"python -m moa.testing.sim: {line}",
            )
    assert all(code == 2 and err == want for code, err, want in said.values()), said


# -- the old name ---------------------------------------------------------------------------------


def test_old_module_warns_and_hands_out_the_same_names() -> None:
    """`moa.testing.server` warns that it moved and re-exports every public name of moa.testing.sim."""
    sys.modules.pop("moa.testing.server", None)
    with pytest.warns(DeprecationWarning, match="moa.testing.server is now moa.testing.sim"):
        old = importlib.import_module("moa.testing.server")
    assert set(sim.__all__) <= set(old.__all__)
    assert all(getattr(old, name) is getattr(sim, name) for name in sim.__all__)


def test_old_command_line_still_runs() -> None:
    """`python -m moa.testing.server --help` still works, and says on stderr that it moved."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "moa.testing.server", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--latency-ms" in done.stdout and "python -m moa.testing.server" in done.stdout
    assert "moa.testing.server is now moa.testing.sim" in done.stderr


# -- the protocol alone ---------------------------------------------------------------------------


def test_protocol_module_knows_nothing_of_the_server() -> None:
    """http11 imports nothing from moa: the server hands it a handler, never the other way round."""
    tree = ast.parse((ROOT / "moa/testing/sim/http11.py").read_text(encoding="utf-8"))
    imported = [
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name.split(".")[0] == "moa"]


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
    writer.close()
    return reply


async def test_connection_runs_pipelined_requests_through_its_handler_in_order() -> None:
    """A bare Conn hands each parsed request to its handler, in order, and tells its owner of
    opening and loss."""
    seen: list[tuple[str, str, bytes]] = []
    opened: list[Conn] = []
    lost: list[Conn] = []

    async def handler(conn: Conn, req: Request) -> None:
        seen.append((req.method, req.path, req.body))
        conn.respond(200, req.body or b"-", close=req.close, ctype="text/plain")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Conn(handler, on_open=opened.append, on_lost=lost.append), "127.0.0.1", 0
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        reply = await _raw(
            port,
            b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        await asyncio.wait_for(asyncio.shield(opened[0].lost), timeout=5)
    assert seen == [("POST", "/a", b"hi"), ("GET", "/b", b"")]
    assert reply.count(b"HTTP/1.1 200 OK") == 2 and reply.endswith(b"-")
    assert len(opened) == 1 and lost == opened


async def test_connection_answers_500_and_closes_when_its_handler_breaks() -> None:
    """A handler that raises still gets its client a reply: a plain 500, then the connection closes."""

    async def handler(conn: Conn, req: Request) -> None:
        raise RuntimeError("handler broke")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(handler), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reply = await _raw(port, b"GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Connection: close" in reply and reply.endswith(b"RuntimeError: handler broke")
    assert reply.count(b"HTTP/1.1") == 1
