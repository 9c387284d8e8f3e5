"""The direct path to OpenAI-compatible endpoints (vLLM, llama.cpp server, local gateways, the named
providers whose API is OpenAI's): pooled keep-alive connections per event loop, no litellm between.

litellm costs about 5 ms of CPU per call (request building, response objects, cost hooks); this
path sends the JSON body itself and reads the reply with pydantic-core's ``from_json``, over aiohttp
(``openai_aiohttp``), so a call costs about what the socket costs. Given an httpx transport, it
goes through httpx instead (``openai_httpx``), which is how tests put a ``MockTransport`` in place
of the network. Both speak the protocol through ``openai_wire`` and fail exactly like the litellm
path: HTTP statuses go through ``error_for_status``, transport failures become ``TimedOut`` or
``ProviderError``, and a 2xx that cannot be read becomes ``MalformedReply``. One attempt per call:
retries belong to the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from moa._loops import PerLoop
from moa.errors import ProviderError, RequestRejected
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.openai_wire import (
    CONNECT_TIMEOUT_S,
    DEFAULT_API_BASE,
    asks_stream_usage,
    encode_body,
    endpoint,
    refuses_stream_options,
    wire_model_name,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_API_BASE", "POOL_TIMEOUT_S", "OpenAIHTTPModel", "wire_model_name"]

#: how long a request waits for a free connection of its event loop before failing
POOL_TIMEOUT_S = 60.0


class _Client(Protocol):
    """One event loop's HTTP client (``AiohttpClient`` or ``HttpxClient``)."""

    async def start(self) -> None: ...

    async def send(
        self, request: ModelRequest, body: bytes, on_token: TokenCallback | None
    ) -> ModelReply: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What a server refused of the usual body, learnt from its 400s and 422s: ``stream_options``
    (older vLLM, TGI, LM Studio and some proxies do not know it; the usage such a server does not
    send is then estimated), or ``max_tokens`` (OpenAI's reasoning models, o1 and after, take the
    same cap as ``max_completion_tokens`` only)."""

    stream_options: bool = True
    max_tokens_name: str = "max_tokens"

    def body(self, request: ModelRequest, on_token: TokenCallback | None) -> bytes:
        return encode_body(
            request,
            on_token is not None,
            stream_options=self.stream_options,
            max_tokens_name=self.max_tokens_name,
        )

    def fixed(self, error: RequestRejected, request: ModelRequest, stream: bool) -> _Dialect:
        """The dialect that meets ``error``'s refusal, which is raised when none does."""
        if stream and self.stream_options and asks_stream_usage(request) and refuses_stream_options(error):
            return dataclasses.replace(self, stream_options=False)
        if (
            request.max_tokens is not None
            and self.max_tokens_name == "max_tokens"
            and error.status_code == 400
            and "max_completion_tokens" in error.message
        ):
            return dataclasses.replace(self, max_tokens_name="max_completion_tokens")
        raise error


_USUAL = _Dialect()


class _Gate:
    """The cap on one event loop's requests in flight: free slots, and the requests waiting in line.

    ``asyncio.Semaphore`` made every request pay for a coroutine (``acquire``) and two walks of its
    waiters (``locked``, asked by the caller and again by ``acquire``); a free slot costs one
    comparison here. A slot given back goes straight to the first request in line."""

    __slots__ = ("free", "waiters")

    def __init__(self, capacity: int) -> None:
        self.free = capacity
        self.waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A slot now, if one is free and no request waits for one."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def wait(self) -> None:
        """A slot, once the requests in line before this one have theirs."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                # still in line, unless a release has passed over it already
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            else:  # handed a slot as it was cancelled: the next in line gets it
                self.release()
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class _Loop:
    """One event loop's client and the cap on that loop's requests in flight."""

    __slots__ = ("client", "gate")

    def __init__(self, client: _Client, capacity: int) -> None:
        self.client = client
        self.gate = _Gate(capacity)


class OpenAIHTTPModel:
    """POSTs ``{api_base}/chat/completions`` once per attempt over pooled keep-alive connections.

    ``transport`` replaces the network (an ``httpx.MockTransport`` or any ``AsyncBaseTransport``),
    for tests; ``max_connections`` caps the requests one event loop has in flight; a request waits
    at most ``pool_timeout_s`` for a free connection (that wait is not latency: see
    ``reports_send``)."""

    local = False
    #: calls ``ModelRequest.on_sent`` once a connection is free, so the runner's timeout and
    #: latency start there
    reports_send = True

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
        keepalive_expiry_s: float = 30.0,
        pool_timeout_s: float = POOL_TIMEOUT_S,
    ) -> None:
        self._transport = transport
        self._capacity = max(1, max_connections)
        self._keepalive_expiry_s = keepalive_expiry_s
        self._pool_timeout_s = pool_timeout_s
        # A client per loop: a pool's sockets belong to the loop that opened them, and `run_sync`
        # makes a fresh loop per call (the client closes its session as its loop ends)
        self._loops: PerLoop[_Loop] = PerLoop()
        #: what the endpoints' models refused of the usual body (``_Dialect``), by URL and model
        self._dialects: dict[tuple[str, str], _Dialect] = {}

    def _new_client(self) -> _Client:
        # imported here: the network client (aiohttp, ~160 ms to import) only once a call is made
        if self._transport is not None:
            from moa.models.openai_httpx import HttpxClient

            return HttpxClient(
                self._transport,
                max_connections=self._capacity,
                keepalive_expiry_s=self._keepalive_expiry_s,
                pool_timeout_s=self._pool_timeout_s,
            )
        from moa.models.openai_aiohttp import AiohttpClient

        return AiohttpClient(
            max_connections=self._capacity,
            keepalive_expiry_s=self._keepalive_expiry_s,
            pool_timeout_s=self._pool_timeout_s,
        )

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Loop:
        # a shared Runner kept every run_sync's loop (and its closed session) until the process ended
        state = self._loops.set(loop, _Loop(self._new_client(), self._capacity))
        await state.client.start()
        return state

    async def _wait_for_connection(self, gate: _Gate, request: ModelRequest) -> None:
        """Every connection of this loop is busy: wait for one, within ``pool_timeout_s``."""
        try:
            async with asyncio.timeout(self._pool_timeout_s):
                await gate.wait()
        except TimeoutError:
            raise ProviderError(
                f"no free connection within pool_timeout_s={self._pool_timeout_s} "
                f"({self._capacity} requests already in flight on this event loop)",
                model=request.model,
                node=request.node or None,
            ) from None

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        key = (endpoint(request.api_base), request.model)
        dialect = self._dialects.get(key, _USUAL)
        body = dialect.body(request, on_token)
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = await self._open(loop)
        gate = state.gate
        # the cap is moa's, not the client's, so the wait for a connection ends before on_sent
        if not gate.take():
            await self._wait_for_connection(gate, request)
        try:
            if request.before_send is not None:
                await request.before_send()
            if request.on_sent is not None:
                request.on_sent()
            while True:  # each refusal changes one thing of the dialect once: two resends at most
                try:
                    reply = await state.client.send(request, body, on_token)
                except RequestRejected as e:
                    # a strict server's 4xx for a field, which sent nothing billable: once more as
                    # the server asks, and so from now on to this endpoint's model
                    dialect = dialect.fixed(e, request, on_token is not None)
                    body = dialect.body(request, on_token)
                    if request.before_send is not None:
                        await request.before_send()
                    continue
                if dialect is not _USUAL:
                    self._dialects[key] = dialect
                return reply
        finally:
            gate.release()

    async def aclose(self) -> None:
        """Close this loop's client; clients of other loops are dropped (their loops are gone or
        close them as they end)."""
        loops = self._loops.forget_all()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        state = loops.get(current) if current is not None else None
        if state is not None:
            await state.client.aclose()
