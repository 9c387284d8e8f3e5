"""`moa serve` tells the official clients which failures a retry cannot mend (`x-should-retry:
false`): a client retrying those re-runs the whole topology and pays its workers again. Over real
HTTP: the `openai` SDK with its default retries against a uvicorn moa server whose workers call a
loopback OpenAI-compatible provider, counting the requests that provider got."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import openai
import pytest

from moa.errors import (
    BudgetExceeded,
    MoAError,
    ProviderError,
    QuorumNotReached,
    RateLimited,
    RequestRefused,
    RequestRejected,
    TimedOut,
    UserError,
)
from moa.serve import create_app
from moa.serve.protocol import error_for
from moa.testing.sim import FaultPlan, SimModel, SimServer
from moa.topology.loader import load_data
from tests.loopback_http import send_body, threaded_server
from tests.serving import serving


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    faults = FaultPlan(1.0, kinds=("500",), models=("broken",))
    with SimServer({"w": SimModel(), "broken": SimModel()}, faults=faults) as srv:
        yield srv


def _parallel(base: str, name: str, workers: list[str], **extra: Any) -> Any:
    def agent(model: str) -> dict[str, Any]:
        return {
            "model": f"openai/{model}",
            "api_base": base,
            "transport": "openai-http",
            "retry": {"max_attempts": 1},
        }

    agents = {f"w{i}": agent(m) for i, m in enumerate(workers)} | {"agg": agent("w")}
    data = {"name": name, "kind": "parallel", "workers": list(agents)[:-1], "aggregator": "agg"}
    return load_data({**data, "agents": agents, **extra})


@pytest.fixture(scope="module")
def url(sim: SimServer) -> Iterator[str]:
    topology = _parallel(sim.base_url, "no-quorum", ["broken", "broken", "w"], quorum=2)
    with serving(create_app([topology])) as base:
        yield base


def test_a_missed_quorum_is_not_retried_by_the_openai_client(url: str, sim: SimServer) -> None:
    """A 503 `quorum_not_reached` says `x-should-retry: false`: the openai client, which retries a
    5xx twice by default, runs the topology once, so the failing workers are asked once each. Before,
    it ran it three times (six requests to the failing workers, and the one that answered paid
    three times)."""
    sim.reset_stats()
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=2)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="no-quorum", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503 and info.value.body["code"] == "quorum_not_reached"  # type: ignore[index]
    assert info.value.response.headers["x-should-retry"] == "false"
    failed = [kind for _, model, kind in sim.stats.request_log if model == "broken"]
    assert failed == ["500", "500"]


class _Refusing(BaseHTTPRequestHandler):
    """A provider refusing for good: an account out of quota (OpenAI's 429 `insufficient_quota`),
    or out of credit (402). Counts the requests it got, per model."""

    got: ClassVar[Counter[str]] = Counter()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        model = json.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        _Refusing.got[model] += 1
        if model == "quota":
            err = {"message": "You exceeded your current quota", "code": "insufficient_quota"}
            send_body(self, 429, json.dumps({"error": err}).encode())
        else:
            send_body(self, 402, json.dumps({"error": {"message": "out of credit"}}).encode())


@pytest.mark.parametrize(("model", "status"), [("quota", 429), ("credit", 502)])
def test_a_provider_failure_no_retry_mends_is_not_retried_by_the_openai_client(
    model: str, status: int
) -> None:
    """A provider's refusal no retry changes (an account out of quota or credit) says
    `x-should-retry: false`: the openai client asks once, and the provider gets one request.
    Before, the client retried the 429 and the 502 twice, each re-running the topology."""
    _Refusing.got.clear()
    with threaded_server(_Refusing) as upstream:
        agent = {"model": f"openai/{model}", "api_base": upstream + "/v1", "transport": "openai-http"}
        topology = load_data({"name": model, "kind": "single", "agent": "a", "agents": {"a": agent}})
        with serving(create_app([topology])) as base:
            client = openai.OpenAI(base_url=base, api_key="unused", max_retries=2)
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert info.value.response.headers["x-should-retry"] == "false"
    assert _Refusing.got == {model: 1}


def _spent_quota() -> RateLimited:
    error = RateLimited("quota", status_code=429)
    error.retryable = False
    return error


def _quorum(*errors: MoAError) -> QuorumNotReached:
    return QuorumNotReached("no quorum", node="agg", needed=2, answered=1, errors=errors)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        # deterministic: the same request fails the same way, and a retry pays the workers again
        (BudgetExceeded("over"), False),
        (_quorum(ProviderError("down", status_code=503), ProviderError("down", status_code=503)), False),
        (RequestRefused("unreadable", field="output_type"), False),
        (RequestRejected("too long", status_code=400), False),
        (RequestRejected("bad key", status_code=401), False),
        (UserError("key not set"), False),
        (RequestRejected("out of credit", status_code=402), False),
        (_spent_quota(), False),
        # transient upstream failures, after moa's own retries: the client may try again
        (RateLimited("slow down", status_code=429, retry_after_s=2.0), None),
        (ProviderError("down", status_code=503), None),
        (TimedOut("late"), None),
    ],
)
def test_which_failures_tell_clients_not_to_retry(error: MoAError, retry: bool | None) -> None:
    """Budget, quorum, a refused request, a provider's refusal no retry changes and the server's
    configuration carry `x-should-retry: false`; a provider's 429, 5xx or timeout leaves the retry
    to the client's own policy."""
    assert error_for(error).retry is retry
