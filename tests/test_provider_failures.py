"""What a failing or misbehaving provider costs and how it is retried, on both transports (litellm
and the direct path), over real sockets: Retry-After on a 5xx, connections dropped before or during
a reply, replies that report no usage."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any

import pytest

import moa
from moa.topology.loader import load_data
from tests.rawhttp import http, raw_server

TRANSPORTS = ("openai-http", "litellm")
_OK = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "four"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def single(base: str, transport: str, **extra: Any) -> moa.Topology:
    agent = {
        "model": "openai/m",
        "api_base": base,
        "transport": transport,
        "pricing": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
        "retry": {"max_attempts": 1},
        **extra,
    }
    return load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": agent}})


def _overloaded(status: int, retry_after: str) -> bytes:
    return http(status, {"error": {"message": "overloaded"}}, [f"Retry-After: {retry_after}"])


# -- Retry-After on a 5xx ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_carries_its_retry_after(transport: str, status: int) -> None:
    """A 5xx with Retry-After becomes a ProviderError whose retry_after_s is the header's."""
    async with raw_server(_overloaded(status, "7")) as srv, moa.Runner() as rt:
        with pytest.raises(moa.ProviderError) as info:
            await single(srv.base_url, transport).run("hi", runner=rt)
    assert info.value.status_code == status and info.value.retry_after_s == pytest.approx(7)
    assert info.value.node == "answer" and info.value.model == "openai/m"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_503s_retry_after_is_waited_before_the_retry(transport: str) -> None:
    """The retry after a 503 saying Retry-After: 1 reaches the server no sooner than 1 s later,
    although the backoff alone would have retried within 10 ms."""
    async with raw_server(_overloaded(503, "1"), http(200, _OK)) as srv:
        retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.01}
        async with moa.Runner() as rt:
            r = await single(srv.base_url, transport, retry=retry).run("hi", runner=rt)
        first, second = srv.arrivals
    assert r.output == "four" and r.calls[0].attempts == 2
    assert second - first >= 1.0
