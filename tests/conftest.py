"""Shared fixtures. litellm reads its offline price map (never fetched) wherever it is imported."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator, Iterator

import pytest

from moa.calls.limits import clear_rate_limits
from moa.testing.sim import SimModel, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A loopback OpenAI-compatible server answering any model name, in a background thread."""
    with SimServer(default=SimModel()) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_global_rate_limits() -> Iterator[None]:
    """Rate limits are process-wide: each test starts and ends without any."""
    clear_rate_limits()
    yield
    clear_rate_limits()


@pytest.fixture
async def litellm_imported() -> AsyncIterator[None]:
    """One call through litellm before the test, against a server of its own: litellm's first call
    in a process imports most of it, seconds of CPU on a busy machine that hold the event loop, so
    a test timing litellm's attempts in a fresh worker process saw every attempt time out before it
    was sent (and its seeded faults would be spent on the warm-up if it shared the server)."""
    import moa
    from moa.topology.loader import load_data

    with SimServer(default=SimModel()) as srv:
        agent = {"model": "openai/warm", "api_base": srv.base_url, "transport": "litellm", "timeout_s": 300}
        warm = load_data({"name": "warm", "kind": "single", "agent": "a", "agents": {"a": agent}})
        async with moa.Runner() as runner:
            await warm.run("warm up", runner=runner)
    yield
