"""The ASGI app behind ``moa serve``: topologies as OpenAI-compatible chat models.

One ``Runner`` serves every request (made at startup, closed at shutdown unless the caller passed
its own), so backends, pooled connections and rate limits are shared. A client that goes away
cancels its run: non-streamed requests race the run against the ``http.disconnect`` message, and
streams run inside a response that cancels its producer when the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moa import log
from moa._run import Runner
from moa.errors import MoAError, UserError
from moa.results import Done, Token
from moa.scrub import scrub
from moa.serve.protocol import (
    ApiError,
    ChatRequest,
    chunk,
    completion,
    error_for,
    invalid_body,
    moa_extension,
    new_id,
)
from moa.topology import Topology

__all__ = ["create_app"]

T = TypeVar("T")

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class _Disconnected(Exception):
    """The client went away before the reply was ready."""


def _error_body(e: ApiError) -> dict[str, Any]:
    """The reply's body with key shapes masked: the last net before text leaves for a client (the
    backends already masked the exact keys they sent when the provider's text entered moa)."""
    body = e.body()
    body["error"]["message"] = scrub(str(body["error"]["message"]))
    return body


def _error_response(e: ApiError, *, close: bool = False) -> JSONResponse:
    headers = {}
    if e.retry is not None:
        headers["x-should-retry"] = "true" if e.retry else "false"
    if e.status == 401:
        headers["www-authenticate"] = "Bearer"
    if close:
        # the rest of an oversized body is never read, so the connection cannot be reused
        headers["connection"] = "close"
    return JSONResponse(_error_body(e), status_code=e.status, headers=headers)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, cancelling it when the client disconnects first (then ``_Disconnected``)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # cancelled ourselves (server shutdown): take the run down with us
        for t in (task, watch):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if task.cancelled():
        raise _Disconnected
    return task.result()


class _EventStream(StreamingResponse):
    """Server-sent events from ``events``; a client disconnect cancels the producer (and so the run),
    whatever ASGI spec version the server speaks."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(events, headers=_SSE_HEADERS, media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def produce() -> None:
            try:
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            finally:
                # cancelled during a send: the generator sits at a yield, so close it here
                await self.events.aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        # the client left (or its socket died under a write, on ASGI spec 2.4 servers): the run
        # was cancelled with the producer, and there is nobody left to answer
        with contextlib.suppress(_Disconnected, OSError):
            await _unless_disconnected(receive, produce())


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Server:
    """The routes' shared state: topologies by name, the runner, the limits."""

    def __init__(
        self, topologies: Sequence[Topology], api_key: str | None, max_body_bytes: int, runner: Runner | None
    ) -> None:
        self.topologies: dict[str, Topology] = {}
        for t in topologies:
            if t.name in self.topologies:
                raise UserError(f"two served topologies are named `{t.name}`: names must be unique")
            self.topologies[t.name] = t
        if not self.topologies:
            raise UserError("moa serve needs at least one topology")
        if api_key is not None and not api_key:
            raise UserError("the API key is empty")
        if max_body_bytes < 1:
            raise UserError(f"max_body_bytes must be at least 1 (got {max_body_bytes})")
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.own_runner = runner is None
        self._runner = runner
        self.created = int(time.time())

    @property
    def runner(self) -> Runner:
        if self._runner is None:  # a request before startup (lifespan off): make it now
            self._runner = Runner()
        return self._runner

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self._runner is None:
            self._runner = Runner()
        self._warm_up(self._runner)
        try:
            yield
        finally:
            if self.own_runner and self._runner is not None:
                await self._runner.aclose()
                self._runner = None

    def _warm_up(self, runner: Runner) -> None:
        """Resolve every agent now, so the first request does not pay for importing litellm."""
        for t in self.topologies.values():
            for agent in t.agents.values():
                with contextlib.suppress(MoAError):  # reported by the requests that need the agent
                    runner.runtime(agent)

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be too large (never read whole)."""
        limit = self.max_body_bytes
        too_large = ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            if not length.isdigit():
                raise ApiError(400, f"invalid Content-Length header: {length!r}")
            raise too_large
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise too_large
            parts.append(part)
        return b"".join(parts)

    async def models(self, request: Request) -> Response:
        self.check_auth(request)
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "moa",
                "description": t.description,
            }
            for name, t in self.topologies.items()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        self.check_auth(request)
        raw = await self.read_body(request)
        try:
            body = ChatRequest.model_validate_json(raw)
        except ValidationError as err:
            raise invalid_body(err) from None
        refused = body.unsupported()
        if refused is not None:
            raise ApiError(400, refused[1], param=refused[0], code="unsupported_parameter", retry=False)
        topology = self.topologies.get(body.model)
        if topology is None:
            names = ", ".join(f"`{n}`" for n in self.topologies)
            raise ApiError(
                404,
                f"the model `{body.model}` does not exist (served: {names})",
                param="model",
                code="model_not_found",
            )
        request.state.model = body.model
        request.state.stream = bool(body.stream)
        # validated by unsupported() above, so it does not raise here
        schema = body.output_schema()
        if body.stream and schema is not None:
            raise ApiError(
                400,
                "`response_format` with `stream`: a JSON answer is checked whole before it is sent, so it is not streamed",
                param="stream",
                code="unsupported_parameter",
            )
        if body.stream:
            return await self._stream(request, topology, body)
        try:
            result = await _unless_disconnected(
                request.receive,
                topology.run(body.chat(), runner=self.runner, output_type=schema),
            )
        except MoAError as e:
            raise error_for(e) from None
        request.state.cost_usd = result.cost_usd
        return JSONResponse(completion(body.model, result, trace=bool(body.moa_trace)))

    async def _stream(self, request: Request, topology: Topology, body: ChatRequest) -> Response:
        # typed as an iterator; it is an async generator, whose aclose() cancels the run
        events = cast("AsyncGenerator[Token | Done, None]", topology.stream(body.chat(), runner=self.runner))
        # Wait for the first token before answering 200, so a run that fails before the answer
        # starts (budget, quorum, provider) still gets its proper status code.
        try:
            first = await _unless_disconnected(request.receive, anext(events))
        except MoAError as e:
            raise error_for(e) from None
        except BaseException:
            await events.aclose()
            raise
        head = {"id": new_id(), "created": int(time.time()), "model": body.model}
        with_usage = body.include_usage

        async def sse() -> AsyncGenerator[bytes, None]:
            streamed = False
            try:
                yield _sse(chunk(head, {"role": "assistant", "content": ""}, with_usage=with_usage))
                item: Token | Done = first
                while True:
                    if isinstance(item, Token):
                        if item.text:
                            streamed = True
                            yield _sse(chunk(head, {"content": item.text}, with_usage=with_usage))
                    else:
                        result = item.result
                        if not streamed and result.output:  # a reduce output node decodes no tokens
                            yield _sse(chunk(head, {"content": result.output}, with_usage=with_usage))
                        ext = {"moa": moa_extension(result, trace=bool(body.moa_trace))}
                        yield _sse(chunk(head, {}, finish="stop", with_usage=with_usage, extra=ext))
                        if with_usage:
                            yield _sse(chunk(head, None, usage=result.usage.to_dict(), with_usage=True))
                        request.state.cost_usd = result.cost_usd
                        break
                    item = await anext(events)
            except MoAError as e:
                request.state.status = error_for(e).status
                yield _sse(_error_body(error_for(e)))
            finally:
                await events.aclose()
            yield b"data: [DONE]\n\n"

        return _EventStream(sse())


def create_app(
    topologies: Sequence[Topology],
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    runner: Runner | None = None,
) -> Starlette:
    """The ASGI app serving ``topologies`` by name at ``/v1/models`` and ``/v1/chat/completions``.

    ``api_key`` makes every route require ``Authorization: Bearer <api_key>``; ``runner`` (closed
    by its owner) replaces the runner the app makes at startup and closes at shutdown."""
    server = _Server(topologies, api_key, max_body_bytes, runner)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)  # registered for ApiError only
        request.state.status = exc.status
        return _error_response(exc, close=exc.status == 413)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        code = "not_found" if exc.status_code == 404 else None
        msg = (
            f"no route for {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else exc.detail
        )
        return _error_response(ApiError(exc.status_code, msg, code=code))

    async def on_disconnect(_request: Request, _exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client has gone

    async def on_bug(_request: Request, exc: Exception) -> Response:
        lg = log.logger()
        if lg is not None:
            lg.error("serve.error", error=f"{type(exc).__name__}: {exc}")
        return _error_response(ApiError(500, "internal server error", type="server_error"))

    return Starlette(
        routes=[
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
        ],
        middleware=[Middleware(_RequestLog)],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_disconnect,
            _Disconnected: on_disconnect,
            Exception: on_bug,
        },
        lifespan=server.lifespan,
    )


class _RequestLog:
    """One log event per request: method, path, model, status, latency. Never headers or bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lg = log.logger()
        if scope["type"] != "http" or lg is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state") or {}
            lg.info(
                "serve.request",
                method=scope["method"],
                path=scope["path"],
                status=state.get("status", status[0]),
                model=state.get("model"),
                stream=state.get("stream"),
                cost_usd=state.get("cost_usd"),
                latency_s=round(time.perf_counter() - started, 4),
            )
