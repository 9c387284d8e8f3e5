"""`moa serve` tells the official clients which failures a retry cannot mend (`x-should-retry:
false`): a client retrying those re-runs the whole topology and pays its workers again. Over real
HTTP: the `openai` SDK with its default retries against a uvicorn moa server whose workers call a
loopback OpenAI-compatible provider, counting the requests that provider got."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import Iterator
from typing import Any

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
        # transient upstream failures, after moa's own retries: the client may try again
        (RateLimited("slow down", status_code=429, retry_after_s=2.0), None),
        (ProviderError("down", status_code=503), None),
        (TimedOut("late"), None),
    ],
)
def test_which_failures_tell_clients_not_to_retry(error: MoAError, retry: bool | None) -> None:
    """Budget, quorum, a refused request and the server's configuration carry `x-should-retry:
    false`; a provider's 429, 5xx or timeout leaves the retry to the client's own policy."""
    assert error_for(error).retry is retry
