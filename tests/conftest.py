"""Shared fixtures. litellm reads its offline price map (never fetched) wherever it is imported."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import Iterator

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
