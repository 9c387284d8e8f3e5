"""A loopback OpenAI-compatible chat completions server with simulated models and injected faults.

Tests and benchmarks point real clients (httpx, openai, litellm) at it, so the whole path from the
socket up is exercised::

    from moa.testing.sim import SimModel, SimServer

    with SimServer({"m": SimModel(latency_s=0.05)}) as srv:     # background thread, own loop
        httpx.post(f"{srv.base_url}/chat/completions", json={...})
    async with SimServer(...) as srv: ...                       # on the running loop

    python -m moa.testing.sim --port 8000 --latency-ms 20       # foreground; prints the URL

Modules, from the bottom: ``tokens`` (the token counting), ``models`` (SimModel, SimRequest),
``faults`` (FaultPlan and its draw), ``stats`` (SimStats), ``http11`` (the protocol), ``server``
(SimServer), ``cli`` (the command line).
"""

from moa.testing.sim.faults import FAULT_KINDS, FaultPlan
from moa.testing.sim.models import SimModel, SimRequest
from moa.testing.sim.server import SimServer
from moa.testing.sim.stats import SimStats
from moa.testing.sim.tokens import (
    count_completion_tokens,
    count_prompt_tokens,
    count_tokens,
    last_user_text,
    message_text,
)

__all__ = [
    "FAULT_KINDS",
    "FaultPlan",
    "SimModel",
    "SimRequest",
    "SimServer",
    "SimStats",
    "count_completion_tokens",
    "count_prompt_tokens",
    "count_tokens",
    "last_user_text",
    "message_text",
]
