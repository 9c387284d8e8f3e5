"""The direct path over a given httpx transport: an ``httpx.MockTransport`` in tests, or any
``httpx.AsyncBaseTransport`` a user plugs in (a recorder, an in-process ASGI app). The network
itself goes through ``openai_aiohttp``; this client exists so fakes keep httpx's shape.

A transport that pools real connections is the caller's: moa neither retires nor rebuilds it, so
its behaviour under cancellation is its own.
"""

from __future__ import annotations

import functools

import httpx

from moa.errors import ModelError, TimedOut
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.openai_wire import (
    CONNECT_TIMEOUT_S,
    connect_timed_out,
    connection_failed,
    consume_sse,
    endpoint,
    headers_for,
    parse_reply,
    read_error_body,
    read_reply_body,
    status_error,
)

__all__ = ["HttpxClient"]


@functools.lru_cache(maxsize=64)
def _timeout(timeout_s: float | None, pool_s: float) -> httpx.Timeout:
    if timeout_s is None:
        return httpx.Timeout(None, connect=CONNECT_TIMEOUT_S, pool=pool_s)
    return httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S), pool=pool_s)


class HttpxClient:
    """One event loop's ``httpx.AsyncClient`` over the given transport."""

    __slots__ = ("_client", "_pool_timeout_s")

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        max_connections: int,
        keepalive_expiry_s: float,
        pool_timeout_s: float,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry_s,
        )
        # timeout=None: the timeout is set per request (and the runner bounds every attempt too)
        self._client = httpx.AsyncClient(transport=transport, limits=limits, timeout=None)
        self._pool_timeout_s = pool_timeout_s

    async def start(self) -> None:
        """Nothing to arm: the transport is the caller's, and so is closing it with its loop."""

    async def send(self, request: ModelRequest, body: bytes, on_token: TokenCallback | None) -> ModelReply:
        url = endpoint(request.api_base)
        headers = headers_for(request, on_token is not None)
        timeout = _timeout(request.timeout_s, self._pool_timeout_s)
        client = self._client
        try:
            async with client.stream("POST", url, content=body, headers=headers, timeout=timeout) as resp:
                if not 200 <= resp.status_code < 300:
                    error_body = await read_error_body(resp.aiter_bytes())
                    raise status_error(resp.status_code, error_body, resp.headers, request)
                if on_token is None:
                    content = await read_reply_body(resp.aiter_bytes(), None, request)
                    return parse_reply(content, request)
                return await consume_sse(resp.aiter_bytes(), request, on_token)
        except ModelError:
            raise
        except httpx.ConnectError as e:  # no connection, so no byte of the request left
            raise connection_failed(e, request, never_sent=True) from e
        except httpx.ConnectTimeout as e:
            raise connect_timed_out(e, request) from e
        except httpx.TimeoutException as e:
            raise TimedOut(
                f"timed out: {type(e).__name__}", model=request.model, node=request.node or None
            ) from e
        except httpx.HTTPError as e:  # connect, read, write, reset, protocol errors
            raise connection_failed(e, request) from e

    async def aclose(self) -> None:
        await self._client.aclose()
