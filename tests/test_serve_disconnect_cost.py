"""`moa serve`: a client that leaves mid-run cancels it, and the request's `serve.request` event still
says what the run's calls cost (`cost_usd`, and `cost_usd_max` with the worst case of the calls cut
off in flight), as the engine's `run.cancelled` (or a cascade's `cascade.cancelled`) does. Over real
HTTP: a uvicorn moa server on fake models, a client that disconnects."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from moa import log
from moa._run import Runner
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.serve import create_app
from moa.testing import FunctionModel
from moa.topology.loader import load_data
from tests.serving import serving

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


class _Stalling:
    """A model that streams one token (when streamed), then never finishes."""

    local = False

    def __init__(self) -> None:
        self.calls: list[ModelRequest] = []

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        self.calls.append(request)
        if on_token is not None:
            on_token("first ")
        await asyncio.sleep(60)
        raise AssertionError("the client's disconnect should have cancelled this call")

    async def aclose(self) -> None:
        return None


def _topology(name: str, **shape: Any) -> Any:
    agents = {
        "w": {"model": "fake/w", "pricing": PRICE, "retry": {"max_attempts": 1}},
        "slow": {"model": "fake/slow", "pricing": PRICE, "retry": {"max_attempts": 1}, "max_tokens": 50},
    }
    return load_data({"name": name, "agents": agents, **shape})


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[str, _Stalling]]:
    slow = _Stalling()
    runner = Runner(models={"fake/w": FunctionModel(lambda r: "0.1"), "fake/slow": slow})
    topologies = [
        _topology("quick", kind="single", agent="w"),
        _topology("parallel", kind="parallel", workers=["w", "w"], aggregator="slow"),
        # a worker stalls: a stream is still waiting for its first token when the client leaves
        _topology("stalled-worker", kind="parallel", workers=["w", "slow"], aggregator="w"),
        # stage 1 and its judge are paid, then the last stage stalls
        _topology(
            "cascade",
            kind="cascade",
            stages=[
                {"agent": "w", "accept": {"judge": {"agent": "w", "threshold": 0.99}}},
                {"agent": "slow"},
            ],
        ),
    ]
    with serving(create_app(topologies, runner=runner)) as base:
        yield base, slow
    asyncio.run(runner.aclose())


@contextmanager
def _events() -> Iterator[io.StringIO]:
    """moa's JSON events of the block, readable while the server (in its thread) writes them."""
    out, previous = io.StringIO(), log.logger()
    log.configure_logging("json", stream=out)
    try:
        yield out
    finally:
        log.use_logger(previous)


def _read(out: io.StringIO, event: str, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """The ``event`` events written so far, waiting (generously) for the first."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == event]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


async def _leave_once_stalled(base: str, model: str, slow: _Stalling, *, stream: bool) -> None:
    """Send a request and disconnect once the stalling model has been called (every call before it
    has been paid for by then), after the first streamed token when streaming."""
    before = len(slow.calls)
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi there"}]}
    async with httpx.AsyncClient(timeout=30) as client:
        if stream and model == "parallel":
            # the aggregator's first token is on the wire: the client leaves mid-stream
            async with client.stream("POST", f"{base}/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if '"content":"first' in line:
                        break
            return
        task = asyncio.ensure_future(client.post(f"{base}/chat/completions", json=body))
        deadline = time.monotonic() + 15
        while len(slow.calls) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(slow.calls) > before, "the stalling model was never called"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["parallel", "stalled-worker"])
def test_a_client_that_leaves_a_run_gets_its_cost_logged(
    app: tuple[str, _Stalling], model: str, stream: bool
) -> None:
    """Workers were paid before the client left (mid-run, before a stream's first token, or
    mid-stream): `serve.request` carries their cost and the cut-off call's worst case, as
    `run.cancelled` does; its status is 499 (a client that left mid-stream was logged 200)."""
    base, slow = app
    with _events() as out:
        asyncio.run(_leave_once_stalled(base, model, slow, stream=stream))
        (served,) = _read(out, "serve.request")
        (cancelled,) = _read(out, "run.cancelled")
    assert served["status"] == 499
    assert served["cost_usd"] is not None and served["cost_usd"] > 0
    assert served["cost_usd"] == pytest.approx(cancelled["cost_usd"])
    assert served["cost_usd_max"] == pytest.approx(cancelled["cost_usd_max"])
    assert served["cost_usd_max"] > served["cost_usd"]  # the stalled call may be billed


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_a_cascade_gets_every_stage_logged(
    app: tuple[str, _Stalling], stream: bool
) -> None:
    """A cascade left in its last stage logs what every stage cost, the judge's and the stage cut
    off in flight included: the totals of `cascade.cancelled`."""
    base, slow = app
    with _events() as out:
        asyncio.run(_leave_once_stalled(base, "cascade", slow, stream=stream))
        (served,) = _read(out, "serve.request")
        (cancelled,) = _read(out, "cascade.cancelled")
    assert cancelled["calls"] == 3 and served["cost_usd"] > 0
    assert served["cost_usd"] == pytest.approx(cancelled["cost_usd"])
    assert served["cost_usd_max"] == pytest.approx(cancelled["cost_usd_max"])
    assert served["cost_usd_max"] > served["cost_usd"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_finished_run_logs_its_cost_bound_too(app: tuple[str, _Stalling], stream: bool) -> None:
    """A run that answers logs `cost_usd_max` beside `cost_usd` (equal: every usage is known)."""
    base, _ = app
    with _events() as out:
        body = {"model": "quick", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{base}/chat/completions", json=body, timeout=30)
        (served,) = _read(out, "serve.request")
    assert r.status_code == 200
    assert served["cost_usd"] > 0 and served["cost_usd_max"] == pytest.approx(served["cost_usd"])
