"""The direct path to OpenAI-compatible endpoints (vLLM, llama.cpp server, local gateways): one
pooled ``httpx.AsyncClient`` per event loop with HTTP keep-alive, no litellm in between.

litellm costs about 5 ms of CPU per call (request building, response objects, cost hooks); this
path sends the JSON body itself and reads the reply with ``json.loads``, so a call costs what
httpx costs. It fails exactly like the litellm path: HTTP statuses go through
``error_for_status``, transport failures become ``TimedOut`` or ``ProviderError``, and a 200 that
cannot be read becomes ``MalformedReply``. One attempt per call: retries belong to the runner.

When the server reports no usage (some streaming servers ignore ``stream_options``), usage is
estimated as UTF-8 bytes / 4 of the messages (prompt) and of the text (completion); nothing else
marks the record as estimated.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from moa.errors import MalformedReply, ModelError, ProviderError, TimedOut
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.errors import error_for_status
from moa.models.providers import NAMED_OPENAI_ENDPOINTS, OPENAI_COMPATIBLE_PREFIXES
from moa.results import Usage
from moa.scrub import scrub_clip

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_API_BASE", "POOL_TIMEOUT_S", "OpenAIHTTPModel", "wire_model_name"]

#: where a model with no ``api_base`` is sent (as litellm does for ``openai/`` models)
DEFAULT_API_BASE = "https://api.openai.com/v1"

_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes ~25 ms: once per process, not once per client (``run_sync``
    makes a loop, hence a client, per call)."""
    return httpx.create_ssl_context()


#: connecting is bounded even when the agent sets no timeout_s (reading is not: a local model may
#: take minutes, and the runner bounds attempts whose agent sets timeout_s)
CONNECT_TIMEOUT_S = 30.0


#: how long a request waits for a free connection of its event loop before failing
POOL_TIMEOUT_S = 60.0


@functools.lru_cache(maxsize=64)
def _timeout(timeout_s: float | None, pool_s: float) -> httpx.Timeout:
    # pool: a backstop only; requests wait for a free connection in _acquire, before httpx
    if timeout_s is None:
        return httpx.Timeout(None, connect=CONNECT_TIMEOUT_S, pool=pool_s)
    return httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S), pool=pool_s)


@functools.lru_cache(maxsize=64)
def _endpoint(api_base: str | None) -> httpx.URL:
    """The parsed completions URL of an api_base: parsed once, not per call."""
    return httpx.URL((api_base or DEFAULT_API_BASE).rstrip("/") + "/chat/completions")


def wire_model_name(model: str) -> str:
    """The model name the server expects: the litellm provider prefix (``openai/``,
    ``hosted_vllm/``...) removed, as litellm itself sends it."""
    prefix, sep, rest = model.partition("/")
    return (
        rest if sep and (prefix in OPENAI_COMPATIBLE_PREFIXES or prefix in NAMED_OPENAI_ENDPOINTS) else model
    )


def _estimate_usage(request: ModelRequest, text: str) -> Usage:
    prompt = sum(len(m.get("content", "").encode()) for m in request.messages) // 4
    return Usage(prompt, len(text.encode()) // 4)


def _usage(u: Any) -> Usage | None:
    if not isinstance(u, dict) or u.get("prompt_tokens") is None:
        return None
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def _error_message(body: bytes) -> str:
    """The server's ``error.message`` when the body is OpenAI-shaped, else the body's text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return body.decode("utf-8", "replace")


class _Slot:
    """One small client and the requests it has in flight. A client whose request was cancelled is
    retired: httpcore cleans up a cancelled request inside an anyio shield that does not hold
    against a second ``Task.cancel()`` (a run cancels its tasks, and their TaskGroup cancels them
    again), which can leave a connection marked active forever and the pool waiting on it. A
    retired client takes no new request and is closed, sockets and all, once its last one ends."""

    __slots__ = ("busy", "client", "retired")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0
        self.retired = False


class _Shards:
    """One event loop's clients, a cap on this loop's requests in flight, and retired clients
    being closed.

    httpcore's pool does O(connections^2) work each time a request enters or leaves it (it counts
    idle connections once per idle connection, and polls every idle socket), so one pool of a few
    hundred connections spends milliseconds per request. Small pools, filled least-busy first, keep
    that cost flat; sequential calls all go to the first one and share its keep-alive connection.
    The cap means a request only ever reaches a client with a free connection, so waiting for one
    happens here, bounded and before the request counts as sent."""

    __slots__ = ("closing", "gate", "slots")

    def __init__(self, capacity: int) -> None:
        self.slots: list[_Slot] = []
        self.gate = asyncio.Semaphore(capacity)
        self.closing: set[asyncio.Task[None]] = set()


class OpenAIHTTPModel:
    """POSTs ``{api_base}/chat/completions`` once per attempt over pooled keep-alive connections.

    ``transport`` replaces the network (an ``httpx.MockTransport`` or any ``AsyncBaseTransport``),
    for tests; ``max_connections`` caps the requests one event loop has in flight, spread over
    pools of ``shard_size`` connections; a request waits at most ``pool_timeout_s`` for a free
    connection (that wait is not latency: see ``reports_send``)."""

    local = False
    #: calls ``ModelRequest.on_sent`` once a connection is free, so the runner's timeout and
    #: latency start there
    reports_send = True

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
        shard_size: int = 2,
        keepalive_expiry_s: float = 30.0,
        pool_timeout_s: float = POOL_TIMEOUT_S,
    ) -> None:
        self._transport = transport
        self._shard_size = max(1, min(shard_size, max_connections))
        # a given transport is one connection pool already: sharding it would share it anyway
        self._max_shards = 1 if transport is not None else max(1, max_connections // self._shard_size)
        self._capacity = max_connections if transport is not None else self._max_shards * self._shard_size
        size = max_connections if transport is not None else self._shard_size
        self._limits = httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=keepalive_expiry_s
        )
        self._pool_timeout_s = pool_timeout_s
        # Clients per loop: an httpx pool's sockets belong to the loop that opened them, and
        # `run_sync` makes a fresh loop per call.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shards] = (
            weakref.WeakKeyDictionary()
        )

    def _new_client(self) -> httpx.AsyncClient:
        # timeout=None: the timeout is set per request (and the runner bounds every attempt too)
        return httpx.AsyncClient(
            transport=self._transport, limits=self._limits, timeout=None, verify=_ssl_context()
        )

    def _shards(self) -> _Shards:
        loop = asyncio.get_running_loop()
        shards = self._loops.get(loop)
        if shards is None:
            shards = self._loops[loop] = _Shards(self._capacity)
        return shards

    async def _acquire(self, shards: _Shards, request: ModelRequest) -> _Slot:
        """A connection slot: at once when one is free, else within ``pool_timeout_s``."""
        if shards.gate.locked():
            try:
                async with asyncio.timeout(self._pool_timeout_s):
                    await shards.gate.acquire()
            except TimeoutError:
                raise ProviderError(
                    f"no free connection within pool_timeout_s={self._pool_timeout_s} "
                    f"({self._capacity} requests already in flight on this event loop)",
                    model=request.model,
                    node=request.node or None,
                ) from None
        else:
            await shards.gate.acquire()
        return self._pick(shards)

    def _pick(self, shards: _Shards) -> _Slot:
        """The least busy client of this loop, or a new one while there is room for more."""
        slots = shards.slots
        if slots:
            best = min(slots, key=lambda s: s.busy) if len(slots) > 1 else slots[0]
            if best.busy < self._shard_size or len(slots) >= self._max_shards:
                best.busy += 1
                return best
        slot = _Slot(self._new_client())
        slots.append(slot)
        slot.busy += 1
        return slot

    def _release(self, shards: _Shards, slot: _Slot, cancelled: bool) -> None:
        slot.busy -= 1
        shards.gate.release()
        if cancelled and not slot.retired:
            slot.retired = True
            shards.slots[shards.slots.index(slot)] = _Slot(self._new_client())
        if slot.retired and slot.busy == 0:
            task = asyncio.get_running_loop().create_task(slot.client.aclose())
            shards.closing.add(task)
            task.add_done_callback(shards.closing.discard)

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = dict(request.params)
        body["model"] = wire_model_name(request.model)
        body["messages"] = [m if isinstance(m, dict) else dict(m) for m in request.messages]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def _headers(self, request: ModelRequest, base: Mapping[str, str]) -> dict[str, str]:
        headers = dict(base)
        if request.api_key:
            headers["authorization"] = f"Bearer {request.api_key}"
        return headers

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        url = _endpoint(request.api_base)
        body = self._body(request)
        timeout = _timeout(request.timeout_s, self._pool_timeout_s)
        shards = self._shards()
        slot = await self._acquire(shards, request)
        cancelled = False
        try:
            if request.on_sent is not None:
                request.on_sent()
            client = slot.client
            if on_token is None:
                content = json.dumps(body, separators=(",", ":")).encode()
                headers = self._headers(request, _JSON_HEADERS)
                resp = await client.post(url, content=content, headers=headers, timeout=timeout)
                if not 200 <= resp.status_code < 300:
                    raise self._status_error(resp, resp.content, request)
                return _parse_reply(resp.content, request)
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            content = json.dumps(body, separators=(",", ":")).encode()
            headers = self._headers(request, _SSE_HEADERS)
            async with client.stream("POST", url, content=content, headers=headers, timeout=timeout) as resp:
                if not 200 <= resp.status_code < 300:
                    raise self._status_error(resp, await resp.aread(), request)
                return await _consume(resp, request, on_token)
        except ModelError:
            raise
        except asyncio.CancelledError:
            cancelled = True
            raise
        except httpx.TimeoutException as e:
            raise TimedOut(
                f"timed out: {type(e).__name__}", model=request.model, node=request.node or None
            ) from e
        except httpx.HTTPError as e:  # connect, read, write, reset, protocol errors
            # h11 quotes an illegal header value whole, the bearer key with it
            detail = scrub_clip(str(e) or type(e).__name__, 500, (request.api_key,))
            raise ProviderError(
                f"connection failed: {detail}", model=request.model, node=request.node or None
            ) from e
        finally:
            self._release(shards, slot, cancelled)

    @staticmethod
    def _status_error(resp: httpx.Response, content: bytes, request: ModelRequest) -> ModelError:
        return error_for_status(
            resp.status_code,
            _error_message(content),
            model=request.model,
            node=request.node,
            headers=resp.headers,
            secrets=(request.api_key,),
        )

    async def aclose(self) -> None:
        """Close this loop's clients; clients of other loops are dropped (their loops are gone or
        own them)."""
        loops, self._loops = dict(self._loops), weakref.WeakKeyDictionary()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        shards = loops.get(current) if current is not None else None
        if shards is None:
            return
        for slot in shards.slots:
            await slot.client.aclose()
        if shards.closing:
            await asyncio.gather(*shards.closing, return_exceptions=True)


def _malformed(why: str, request: ModelRequest) -> MalformedReply:
    return MalformedReply(f"malformed reply: {why}", model=request.model, node=request.node or None)


def _parse_reply(content: bytes, request: ModelRequest) -> ModelReply:
    try:
        data = json.loads(content)
    except ValueError:
        snippet = scrub_clip(content[:2048].decode("utf-8", "replace"), 80, (request.api_key,))
        raise _malformed(f"not JSON: {snippet!r}", request) from None
    if not isinstance(data, dict):
        raise _malformed("not a JSON object", request)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _malformed("no choices", request)
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        raise _malformed("no message content", request)
    text = str(text)
    usage = _usage(data.get("usage")) or _estimate_usage(request, text)
    return ModelReply(text, usage, str(data.get("model") or ""), choices[0].get("finish_reason"))


async def _consume(resp: httpx.Response, request: ModelRequest, on_token: TokenCallback) -> ModelReply:
    parts: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    model = ""
    events = 0
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, `event:` and `:` comment lines
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            snippet = scrub_clip(payload, 80, (request.api_key,))
            raise _malformed(f"stream event is not JSON: {snippet!r}", request) from None
        if not isinstance(chunk, dict):
            raise _malformed("stream event is not a JSON object", request)
        events += 1
        if "error" in chunk and not chunk.get("choices"):
            detail = scrub_clip(_error_message(payload.encode()), 500, (request.api_key,))
            raise ProviderError(
                f"provider error in stream: {detail}",
                model=request.model,
                node=request.node or None,
            )
        model = str(chunk.get("model") or model)
        usage = _usage(chunk.get("usage")) or usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
            if piece:
                parts.append(piece)
                on_token(piece)
            finish = choice.get("finish_reason") or finish
    if not events:
        raise _malformed("the stream carried no events", request)
    text = "".join(parts)
    return ModelReply(text, usage or _estimate_usage(request, text), model, finish)
