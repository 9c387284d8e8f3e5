"""The ASGI app behind ``moa serve``: topologies as OpenAI-compatible chat models.

One ``Runner`` serves every request (made at startup, closed at shutdown unless the caller passed
its own), so backends, pooled connections and rate limits are shared. A client that goes away
cancels its run: a watcher task waits for the ``http.disconnect`` message and cancels the request's
task, which runs the topology (streams: the producer of the events).

Starlette routes the requests, answers errors and runs the lifespan; ``POST /v1/chat/completions``
is a plain ASGI endpoint that reads the scope and sends its reply itself. Starlette's
``Request``/``Response`` layer, racing the run in a second task and ``json.dumps`` cost about 30 µs
of CPU per request, as much as the runner spends on a zero-latency run of its own
(``benchmarks/serve_throughput.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moa import log
from moa._browser_guard import BrowserGuard
from moa._run import Runner, every_agent
from moa._run.engine import watch_run
from moa.errors import MoAError, UserError
from moa.results import CallRecord, Done, Token
from moa.scrub import scrub
from moa.serve.protocol import (
    ApiError,
    ChatRequest,
    chunk,
    completion,
    empty_user_turn,
    error_for,
    finish_reason,
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
    """The reply's body with key shapes masked: the last net before text leaves for a client (each
    attempt already masked the exact keys its request carried, whichever backend raised)."""
    body = e.body()
    body["error"]["message"] = scrub(str(body["error"]["message"]))
    return body


def _book_cost(state: dict[str, Any], calls: Sequence[CallRecord]) -> None:
    """What a run's calls cost, for the request's log event: known, and with the worst case of those
    whose usage is unknown (cut off in flight)."""
    state["cost_usd"] = sum(c.cost_usd for c in calls)
    state["cost_usd_max"] = sum(c.cost_usd_max for c in calls)


def _run_failed(e: MoAError, model: str, state: dict[str, Any]) -> ApiError:
    """The reply to a run that failed; what the client is not told (the server's configuration,
    anything unforeseen: every 500) goes to the server's log, where its operator looks. What the
    failed run's calls cost goes to the request's log event, as a finished run's does."""
    _book_cost(state, e.calls)
    failed = error_for(e, model=model)
    why = f"{type(e).__name__}: {e}"
    if failed.status == 500:
        _log_failure(logging.ERROR, "serve.run_failed", model, why)
    elif failed.message != str(e):
        # the client got moa's words for an upstream failure; the provider's are the operator's
        _log_failure(logging.WARNING, "serve.upstream_failed", model, why)
    return failed


def _log_failure(level: int, event: str, model: str, why: str) -> None:
    lg = log.logger()
    if lg is not None:
        (lg.error if level == logging.ERROR else lg.warning)(event, model=model, error=why)
    else:
        # an app built with create_app and moa's logging off: the client was told the log says
        # why, so it must reach stderr through Python's own logging at least
        logging.getLogger("moa.serve").log(level, "%s model=%s error=%s", event, model, why)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


def _error_response(
    e: ApiError, *, close: bool = False, extra: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(extra or {})
    if e.retry is not None:
        headers["x-should-retry"] = "true" if e.retry else "false"
    if e.status == 401:
        headers["www-authenticate"] = "Bearer"
    if e.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(e.retry_after_s)))
    if close:
        # the rest of an oversized body is never read, so the connection cannot be reused
        headers["connection"] = "close"
    return JSONResponse(_error_body(e), status_code=e.status, headers=headers)


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any]) -> None:
    """Wait for the client to go away, then cancel ``task``: returning at all means it went."""
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``await work`` in this task, cancelled when the client disconnects first (then
    ``_Disconnected``). One watcher task cancels this one: cheaper than racing the work in a
    task of its own against the watcher with ``asyncio.wait``. The watcher is a module-level
    coroutine made a task by the loop directly (no closure, no ``ensure_future`` layers), and
    whether it saw the disconnect is read off the task itself: about 10k instructions a request."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task(loop)
    assert me is not None  # ASGI apps run in a task
    watcher = loop.create_task(_cancel_on_disconnect(receive, me))
    try:
        return await work
    except asyncio.CancelledError:
        # cancelled by the watcher alone (it returned: the client went); a server shutdown
        # cancels too, and that goes on up
        if _saw_disconnect(watcher) and me.uncancel() == 0:
            raise _Disconnected from None
        raise
    finally:
        if not watcher.cancel() and not watcher.cancelled():
            watcher.exception()  # done already: retrieve what a receive() that failed raised


def _saw_disconnect(watcher: asyncio.Task[None]) -> bool:
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None


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
        try:
            await _unless_disconnected(receive, produce())
        except (_Disconnected, OSError):
            if isinstance(scope.get("state"), dict):
                scope["state"]["status"] = 499  # the request log's, as a plain reply's (200 was sent)


def _json(obj: Any) -> bytes:
    """Compact UTF-8 JSON as Starlette's ``JSONResponse`` sends it, encoded by pydantic-core in a
    quarter of the time ``json.dumps`` takes (a completion with its ``moa`` object: about 4 vs 15
    µs); a NaN or an infinity becomes null, so the reply stays valid JSON."""
    return to_json(obj, inf_nan_mode="null")


def _sse(obj: Any) -> bytes:
    return b"data: " + _json(obj) + b"\n\n"


class _Server:
    """The routes' shared state: topologies by name, the runner, the limits."""

    def __init__(
        self,
        topologies: Sequence[Topology],
        api_key: str | None,
        max_body_bytes: int,
        runner: Runner | None,
        allow_trace: bool = True,
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
        self.allow_trace = allow_trace
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
            # a cascade's stage files bring agents its own `agents` does not list
            for _, agent in every_agent(t):
                with contextlib.suppress(MoAError):  # reported by the requests that need the agent
                    runner.runtime(agent)

    def check_auth(self, authorization: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
        # the header was decoded as latin-1: encoding it back gives the bytes the client sent, so
        # a key with non-ASCII characters (sent as UTF-8) matches its UTF-8 encoding
        if not hmac.compare_digest(token.strip().encode("latin-1"), self.api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    async def read_body(self, length: str | None, receive: Receive) -> bytes:
        """The body, refused with 413 as soon as it is known to be too large (never read whole)."""
        limit = self.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            if not length.isdigit():
                raise ApiError(400, f"invalid Content-Length header: {length!r}")
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def models(self, request: Request) -> Response:
        self.check_auth(request.headers.get("authorization"))
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

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions`` as a plain ASGI app; errors are raised as ``ApiError`` for
        the app's exception handlers to answer."""
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        self.check_auth(authorization)
        raw = await self.read_body(length, receive)
        try:
            body = ChatRequest.model_validate_json(raw)
        except ValidationError as err:
            raise invalid_body(err) from None
        refused = body.unsupported()
        if refused is not None:
            raise ApiError(400, refused[1], param=refused[0], code="unsupported_parameter", retry=False)
        if body.moa_trace and not self.allow_trace:
            # a trace holds every call's messages, the server's system prompts included; refused
            # out loud rather than ignored, so a client never takes a bare reply for a full trace
            raise ApiError(
                400,
                "`moa_trace` is turned off on this server (moa serve --no-trace): its calls' messages are not shared",
                param="moa_trace",
                code="unsupported_parameter",
                retry=False,
            )
        chat = body.chat()
        empty = empty_user_turn(chat)
        if empty is not None:
            param = f"messages[{empty}].content"
            raise ApiError(400, f"invalid request body: `{param}`: the user's message is empty", param=param)
        topology = self.topologies.get(body.model)
        if topology is None:
            names = ", ".join(f"`{n}`" for n in self.topologies)
            raise ApiError(
                404,
                f"the model `{body.model}` does not exist (served: {names})",
                param="model",
                code="model_not_found",
            )
        # what the request log reports (``Request.state`` keeps its values in the same dict)
        state = scope.setdefault("state", {})
        state["model"] = body.model
        state["stream"] = bool(body.stream)
        # its shape was checked by unsupported() above; what the answer's check cannot read in it
        # the run refuses before any call (RequestRefused: a 400 naming `response_format`)
        schema = body.output_schema()
        if body.stream and schema is not None:
            raise ApiError(
                400,
                "`response_format` with `stream`: a JSON answer is checked whole before it is sent, so it is not streamed",
                param="stream",
                code="unsupported_parameter",
            )
        if body.stream:
            stream = await self._stream(receive, state, topology, body, chat)
            await stream(scope, receive, send)
            return
        run = topology.run(chat, runner=self.runner, output_type=schema)
        if log.info_logger() is None:
            # no request log event will be written (moa serve's default): nothing to watch or
            # sum for it, about 30k instructions a request
            try:
                result = await _unless_disconnected(receive, run)
            except MoAError as e:
                raise _run_failed(e, body.model, state) from None
        else:
            # a client that leaves cancels the run, which raises nothing carrying its calls: the
            # watch holds them, so the request's log event still says what the workers were paid
            with watch_run() as watch:
                try:
                    result = await _unless_disconnected(receive, run)
                except MoAError as e:
                    raise _run_failed(e, body.model, state) from None
                except _Disconnected:
                    _book_cost(state, watch.calls)
                    raise
            _book_cost(state, result.calls)
        await _send_json(send, completion(body.model, result, trace=bool(body.moa_trace)))

    async def _stream(
        self,
        receive: Receive,
        state: dict[str, Any],
        topology: Topology,
        body: ChatRequest,
        chat: list[dict[str, str]],
    ) -> _EventStream:
        # typed as an iterator; it is an async generator, whose aclose() cancels the run
        events = cast("AsyncGenerator[Token | Done, None]", topology.stream(chat, runner=self.runner))
        # Wait for the first token before answering 200, so a run that fails before the answer
        # starts (budget, quorum, provider) still gets its proper status code. The run's task starts
        # here, so the watch set now (its context copied) sees the run's calls to the end.
        with watch_run() as watch:
            try:
                first = await _unless_disconnected(receive, anext(events))
            except MoAError as e:
                raise _run_failed(e, body.model, state) from None
            except BaseException:
                await events.aclose()  # cancels the run and waits for it: its calls are in
                _book_cost(state, watch.calls)
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
                        finish = finish_reason(result)
                        yield _sse(chunk(head, {}, finish=finish, with_usage=with_usage, extra=ext))
                        if with_usage:
                            yield _sse(chunk(head, None, usage=result.usage.to_dict(), with_usage=True))
                        _book_cost(state, result.calls)
                        break
                    item = await anext(events)
            except MoAError as e:
                failed = _run_failed(e, body.model, state)
                state["status"] = failed.status
                yield _sse(_error_body(failed))
            finally:
                await events.aclose()
                if "cost_usd" not in state:  # the client left mid-stream: the run was cancelled
                    _book_cost(state, watch.calls)
            yield b"data: [DONE]\n\n"

        return _EventStream(sse())


class _Endpoint:
    """A plain ASGI endpoint for a Starlette ``Route`` (a function or method would be wrapped in
    Starlette's ``Request``/``Response`` layer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _api_error_response(scope: Scope, e: ApiError) -> JSONResponse:
    """The reply to ``e``, its status kept for the request log."""
    scope.setdefault("state", {})["status"] = e.status
    return _error_response(e, close=e.status == 413)


_CHAT_PATH = "/v1/chat/completions"


class _ChatRoute:
    """``POST /v1/chat/completions`` straight to its endpoint, which answers its own ``ApiError``
    and disconnect as the app's exception handlers would; any other request (another path or
    method, a ``root_path`` to strip) goes on to Starlette's exception middleware and router. Those
    two layers cost a served request about 40k instructions (a ``Request``, two closures, a route's
    regular expression) for a route known by its path. What else the endpoint raises (a bug) goes
    up to Starlette's server-error middleware, as it did through them."""

    def __init__(self, app: ASGIApp, chat: ASGIApp) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != _CHAT_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        try:
            await self.chat(scope, receive, send)
        except ApiError as e:
            await _api_error_response(scope, e)(scope, receive, send)
        except _Disconnected:
            await Response(status_code=499)(scope, receive, send)  # nobody reads it: the client has gone


async def _send_json(send: Send, obj: Any) -> None:
    """A 200 reply of ``obj`` as JSON."""
    body = _json(obj)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    topologies: Sequence[Topology],
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    runner: Runner | None = None,
    allow_trace: bool = True,
) -> Starlette:
    """The ASGI app serving ``topologies`` by name at ``/v1/models`` and ``/v1/chat/completions``.

    ``api_key`` makes every route require ``Authorization: Bearer <api_key>``; ``runner`` (closed
    by its owner) replaces the runner the app makes at startup and closes at shutdown;
    ``allow_trace=False`` answers a request asking for ``"moa_trace": true`` (each call's messages,
    the server's system prompts included) with a 400 naming the field. Without ``api_key``, a web
    page's request (another ``Origin``, or a foreign ``Host`` on a loopback interface) gets a 403
    before any call (``moa._browser_guard``), under ``moa serve`` or any ASGI server."""
    server = _Server(topologies, api_key, max_body_bytes, runner, allow_trace)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)  # registered for ApiError only
        return _api_error_response(request.scope, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = (
            f"no route for {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else exc.detail
        )
        # a 405 carries the methods the route takes (`Allow`, which RFC 9110 requires of it)
        return _error_response(ApiError(exc.status_code, msg, code=code), extra=exc.headers)

    async def on_disconnect(_request: Request, _exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client has gone

    async def on_bug(_request: Request, exc: Exception) -> Response:
        lg = log.logger()
        if lg is not None:
            lg.error("serve.error", error=f"{type(exc).__name__}: {exc}")
        return _error_response(ApiError(500, "internal server error", type="server_error"))

    return Starlette(
        routes=[
            # first: the router tries the routes in order
            Route(_CHAT_PATH, _Endpoint(server.chat), methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
        ],
        # the log outermost: a web page's refused request is logged as any other. With an API key
        # the key is the boundary (a page cannot send it), and a reverse proxy's own Host passes
        # and the chat route innermost, in front of Starlette's exception middleware and router
        middleware=[Middleware(_RequestLog)]
        + ([Middleware(BrowserGuard)] if api_key is None else [])
        + [Middleware(_ChatRoute, chat=server.chat)],
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
        # by default moa serve logs warnings only: a request must not build an event nobody writes
        lg = log.info_logger()
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
                cost_usd_max=state.get("cost_usd_max"),
                latency_s=round(time.perf_counter() - started, 4),
            )
