"""`moa serve` answers a provider's 4xx by whose it is: a refusal of the request's content (400, 413,
422: a prompt over the context window) is the client's 400 saying it came from upstream; a refusal of
the server's key or model (401, 403, 404) is a 500 that tells the client nothing of them. Over real
HTTP: a uvicorn moa server whose agents call a loopback OpenAI-compatible provider."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from moa.serve import create_app
from moa.testing import capture_events
from moa.topology.loader import load_data
from tests.serving import serving

KEY_ENV = "MOA_TEST_SERVE_UPSTREAM_KEY"
SECRET = "sk-upstreamtest-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

#: model -> (status, OpenAI-shaped error message) the provider answers with
REFUSALS: dict[str, tuple[int, str]] = {
    "ctx": (
        400,
        "This model's maximum context length is 8192 tokens. However, your messages resulted in "
        "9100 tokens. Please reduce the length of the messages.",
    ),
    "huge": (413, "Request entity too large"),
    "unprocessable": (422, "messages: input is unprocessable"),
    "badkey": (401, f"Incorrect API key provided: {SECRET}. You can find your API key at ..."),
    "forbidden": (403, "Project proj_internal42 does not have access to model `gpt-secret`"),
    "gone": (404, "The model `internal-finetune-7` does not exist or you do not have access to it."),
    "billing": (402, "Organization org-billing77 has run out of credits; see billing for proj_paying3"),
    "conflict": (409, "Project proj_conflict9 is locked by another deployment"),
    "broken": (500, "shard db-prod-3.internal failed for org-billing77"),
}
#: what the provider names that a client of the server must never read
PROVIDER_WORDS = (
    "org-billing77",
    "proj_paying3",
    "proj_conflict9",
    "db-prod-3",
    "org-ratelimit55",
    "openai/",
)


#: the `flaky-` models' state: True after a request refused
_FLAKY: dict[str, bool] = {}


async def _provider(request: Request) -> Response:
    body = await request.json()
    model = str(body["model"]).rsplit("/", 1)[-1]
    if model == "busy":
        msg = "Rate limit reached for requests in organization org-ratelimit55 on requests per min"
        err = {"message": msg, "type": "requests", "param": None, "code": None}
        return JSONResponse({"error": err}, status_code=429, headers={"retry-after": "6.5"})
    if model.startswith("flaky-"):
        # every other request refused as `flaky-<refusal>` says: a retry of the same model answers
        _FLAKY[model] = not _FLAKY.get(model, False)
        if _FLAKY[model]:
            model = model.removeprefix("flaky-")
    if model in REFUSALS:
        status, message = REFUSALS[model]
        err = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return JSONResponse({"error": err}, status_code=status)
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    finish = "length" if model == "cut" else "stop"  # "cut": an answer cut at max_tokens
    if body.get("stream"):
        head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": model}
        delta = {"index": 0, "delta": {"role": "assistant", "content": "fine"}, "finish_reason": finish}
        chunks = [{**head, "choices": [delta]}, {**head, "choices": [], "usage": usage}]
        sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return Response(sse, media_type="text/event-stream")
    reply = {"role": "assistant", "content": "fine"}
    return JSONResponse(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
            "usage": usage,
        }
    )


def _agent(base: str, model: str) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": KEY_ENV,
        "retry": {"max_attempts": 1},
    }


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with (
        pytest.MonkeyPatch.context() as mp,
        serving(Starlette(routes=[Route("/v1/chat/completions", _provider, methods=["POST"])])) as base,
    ):
        mp.setenv(KEY_ENV, SECRET)
        topologies = [
            load_data({"name": m, "kind": "single", "agent": "a", "agents": {"a": _agent(base, m)}})
            for m in (*REFUSALS, "ok", "busy", "cut")
        ]
        # every worker refused for the prompt's length: the quorum missed is the client's too
        agents = {f"w{i}": _agent(base, "ctx") for i in range(3)} | {"agg": _agent(base, "ok")}
        topologies.append(
            load_data(
                {
                    "name": "parallel-ctx",
                    "kind": "parallel",
                    "workers": ["w0", "w1", "w2"],
                    "aggregator": "agg",
                    "quorum": 2,
                    "agents": agents,
                }
            )
        )
        mixed = {"w0": _agent(base, "forbidden"), "w1": _agent(base, "ctx"), "agg": _agent(base, "ok")}
        topologies.append(
            load_data(
                {
                    "name": "parallel-mixed",
                    "kind": "parallel",
                    "workers": ["w0", "w1"],
                    "aggregator": "agg",
                    "quorum": 2,
                    "agents": mixed,
                }
            )
        )
        # every worker out of credit: the quorum's 503 names its first failure in moa's words
        broke = {f"w{i}": _agent(base, "billing") for i in range(2)} | {"agg": _agent(base, "ok")}
        topologies.append(
            load_data(
                {
                    "name": "parallel-billing",
                    "kind": "parallel",
                    "workers": ["w0", "w1"],
                    "aggregator": "agg",
                    "quorum": 1,
                    "agents": broke,
                }
            )
        )
        # a worker out of credit and one rate-limited, but the quorum holds: the reply is a 200
        short = {"w0": _agent(base, "billing"), "w1": _agent(base, "busy"), "w2": _agent(base, "ok")}
        topologies.append(
            load_data(
                {
                    "name": "parallel-short",
                    "kind": "parallel",
                    "workers": ["w0", "w1", "w2"],
                    "aggregator": "w2",
                    "quorum": 1,
                    "agents": short,
                }
            )
        )
        # a worker refused for the server's project, but the quorum holds: the reply is a 200
        spared = {"w0": _agent(base, "forbidden"), "w1": _agent(base, "ok"), "agg": _agent(base, "ok")}
        topologies.append(
            load_data(
                {
                    "name": "parallel-spared",
                    "kind": "parallel",
                    "workers": ["w0", "w1"],
                    "aggregator": "agg",
                    "quorum": 1,
                    "agents": spared,
                }
            )
        )
        # the workers are paid for, then the aggregator's provider refuses the server's model
        price = {"pricing": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}
        paid = {
            "w0": _agent(base, "ok") | price,
            "w1": _agent(base, "ok") | price,
            "agg": _agent(base, "gone"),
        }
        topologies.append(
            load_data(
                {
                    "name": "paid-then-failed",
                    "kind": "parallel",
                    "workers": ["w0", "w1"],
                    "aggregator": "agg",
                    "agents": paid,
                }
            )
        )
        # the provider fails (500), then the retry answers: the call succeeds, its first attempt's
        # error stays in its attempt log
        retried = {"a": _agent(base, "flaky-broken") | {"retry": {"max_attempts": 2, "backoff_base_s": 0.01}}}
        topologies.append(load_data({"name": "retried", "kind": "single", "agent": "a", "agents": retried}))
        with serving(create_app(topologies)) as served:
            yield served


def _post(url: str, model: str, *, stream: bool) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "status"), [("ctx", 400), ("huge", 413), ("unprocessable", 422)])
def test_a_provider_refusing_the_requests_content_is_the_clients_400(
    url: str, model: str, status: int, stream: bool
) -> None:
    """A provider's 400/413/422 (a prompt over the context window) is a 400 `invalid_request_error`
    with `code: upstream_invalid_request`, the provider's own words and `x-should-retry: false`,
    not a 502 the client would retry."""
    r = _post(url, model, stream=stream)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("invalid_request_error", "upstream_invalid_request")
    assert f"({status})" in err["message"] and REFUSALS[model][1].split(".")[0] in err["message"]
    assert r.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["badkey", "forbidden", "gone"])
def test_a_provider_refusing_the_servers_key_or_model_is_a_500_that_leaks_nothing(
    url: str, model: str, stream: bool
) -> None:
    """A provider's 401/403/404 is the server's key or model at fault: a 500 `server_misconfigured`
    naming only the served model, with the provider's text (which names keys, projects and models)
    in the server's log alone."""
    with capture_events() as events:
        r = _post(url, model, stream=stream)
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "server_misconfigured")
    assert f"`{model}`" in err["message"]
    for secret in (SECRET, SECRET[-8:], "proj_internal42", "internal-finetune-7", "gpt-secret", "openai/"):
        assert secret not in r.text
    failed = [e for e in events if e["event"] == "serve.run_failed"]
    assert len(failed) == 1 and failed[0]["model"] == model
    assert SECRET not in failed[0]["error"]


def test_a_quorum_missed_because_every_worker_refused_the_prompt_is_the_clients_400(url: str) -> None:
    """Every worker of a fan-in refusing the prompt's length is the client's 400 like a single
    agent's."""
    r = _post(url, "parallel-ctx", stream=False)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "upstream_invalid_request"


def test_a_quorum_missed_for_the_servers_key_or_model_is_a_500_that_leaks_nothing(url: str) -> None:
    """A fan-in that missed its quorum because a worker's provider refused the server's project is
    the server's 500, and the 503's "first failure" no longer carries the provider's text."""
    r = _post(url, "parallel-mixed", stream=False)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "server_misconfigured"
    assert "proj_internal42" not in r.text and "gpt-secret" not in r.text


def test_a_healthy_provider_still_answers(url: str) -> None:
    """The loopback provider answers an unrefused model, so the refusals above are its own doing."""
    r = _post(url, "ok", stream=False)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_does_not_carry_a_workers_refusal_of_the_servers_project(url: str, stream: bool) -> None:
    """A 200 whose quorum did without a worker the provider refused for the server's project says in
    its `moa` calls that the call was refused (403), not the provider's words naming the project."""
    body = {"model": "parallel-spared", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    r = httpx.post(f"{url}/chat/completions", json={**body, "moa_trace": True}, timeout=30)
    assert r.status_code == 200, r.text
    assert "proj_internal42" not in r.text and "gpt-secret" not in r.text
    if stream:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: {")]
        moa = next(e for e in map(json.loads, events) if "moa" in e)["moa"]
    else:
        moa = r.json()["moa"]
    failed = [c for c in moa["calls"] if c["error"]]
    assert len(failed) == 1 and "request rejected (403)" in failed[0]["error"]
    assert "request rejected (403)" in failed[0]["attempt_log"][0]["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_saved_by_its_retry_does_not_carry_the_providers_words(url: str, stream: bool) -> None:
    """A call whose first attempt failed and whose retry answered succeeded, so it has no error of
    its own; the failed attempt in its `attempt_log` is worded for a client all the same (the
    provider's text naming its hosts and projects was passed on: only a failed call's were)."""
    body = {"model": "retried", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    r = httpx.post(f"{url}/chat/completions", json={**body, "moa_trace": True}, timeout=30)
    assert r.status_code == 200, r.text
    # the call names its models (`openai/ok`), so only the provider's own words are looked for
    for word in ("proj_internal42", "gpt-secret", *(w for w in PROVIDER_WORDS if w != "openai/")):
        assert word not in r.text
    if stream:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: {")]
        moa = next(e for e in map(json.loads, events) if "moa" in e)["moa"]
    else:
        moa = r.json()["moa"]
    (call,) = moa["calls"]
    assert call["error"] is None and call["attempts"] == 2
    assert "(500)" in call["attempt_log"][0]["error"]
    assert "not shown to clients" in call["attempt_log"][0]["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_the_request_log_keeps_what_a_failed_runs_calls_cost(url: str, stream: bool) -> None:
    """A run that fails after calls were paid for logs their cost on its `serve.request` event, as a
    finished run does (it logged none)."""
    with capture_events() as events:
        r = _post(url, "paid-then-failed", stream=stream)
    assert r.status_code == 500, r.text
    served = [e for e in events if e["event"] == "serve.request"]
    # two workers, each 5 prompt and 1 completion tokens at $1000 per million
    assert len(served) == 1 and served[0]["cost_usd"] == pytest.approx(2 * 6 * 1000 / 1e6)


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_rate_limit_outlasting_the_retries_is_a_429_saying_when(url: str, stream: bool) -> None:
    """A provider's 429 that the agent's retries did not outlast is a 429 `upstream_rate_limited`
    whose `Retry-After` is the provider's (rounded up to whole seconds), so clients back off as
    told; it was a 502 with neither."""
    r = _post(url, "busy", stream=stream)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "upstream_rate_limited"
    assert r.headers["retry-after"] == "7"


#: the provider's words the server's log keeps for each failure the client was told less of
LOGGED = {
    "billing": "org-billing77",
    "conflict": "proj_conflict9",
    "broken": "db-prod-3",
    "busy": "org-ratelimit55",
    "parallel-billing": "org-billing77",
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "status", "said"),
    [
        ("billing", 502, "node `answer`: the provider refused the request (HTTP 402)"),
        ("conflict", 502, "node `answer`: the provider refused the request (HTTP 409)"),
        ("broken", 502, "node `answer`: the provider failed (HTTP 500)"),
        ("busy", 429, "node `answer`: the provider rate-limited the request (HTTP 429)"),
        ("parallel-billing", 503, "first failure: node `w0`: the provider refused the request (HTTP 402)"),
    ],
)
def test_other_upstream_failures_reach_the_client_in_moas_words_only(
    url: str, model: str, status: int, said: str, stream: bool
) -> None:
    """A provider's 402, 409, 429 or 5xx (and a quorum missed for one) gives the client the status
    class and a message moa wrote with the HTTP status; the provider's words, which name its
    organisation, projects and hosts, and the server's model names go to the server's log only
    (they reached the client, masked of key shapes alone)."""
    with capture_events() as events:
        r = _post(url, model, stream=stream)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert said in message, message
    for word in PROVIDER_WORDS:
        assert word not in r.text, word
    logged = [e for e in events if e["event"] == "serve.upstream_failed"]
    assert len(logged) == 1 and logged[0]["model"] == model
    assert LOGGED[model] in logged[0]["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_does_not_carry_the_words_of_a_worker_the_quorum_did_without(url: str, stream: bool) -> None:
    """A 200 whose quorum did without a worker the provider refused (402) or rate-limited (429)
    says in its `moa` calls what happened and the status, not the provider's words naming its
    organisation and projects (which only a 401/403/404 lost before)."""
    body = {"model": "parallel-short", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    r = httpx.post(f"{url}/chat/completions", json={**body, "moa_trace": True}, timeout=30)
    assert r.status_code == 200, r.text
    for word in PROVIDER_WORDS[:-1]:  # the `moa` object names the models by design (`by_model`)
        assert word not in r.text, word
    if stream:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: {")]
        moa = next(e for e in map(json.loads, events) if "moa" in e)["moa"]
    else:
        moa = r.json()["moa"]
    errors = " | ".join(c["error"] for c in moa["calls"] if c["error"])
    assert "request rejected (402)" in errors and "rate limited (429)" in errors, errors


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "finish"), [("cut", "length"), ("ok", "stop")])
def test_an_answer_cut_at_max_tokens_is_served_with_finish_reason_length(
    url: str, model: str, finish: str, stream: bool
) -> None:
    """The served answer's `finish_reason` is its call's: `length` when the provider cut it at
    max_tokens (clients continue or flag it); every reply said `stop` before."""
    r = _post(url, model, stream=stream)
    assert r.status_code == 200, r.text
    if not stream:
        assert r.json()["choices"][0]["finish_reason"] == finish
        return
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    finishes = [c["choices"][0]["finish_reason"] for c in events if c.get("choices")]
    assert finishes[-1] == finish and set(finishes[:-1]) == {None}
