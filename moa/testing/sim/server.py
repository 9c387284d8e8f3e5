"""A loopback OpenAI-compatible chat completions server with simulated models and injected faults.

Tests and benchmarks point real clients (httpx, openai, litellm) at it, so the whole path from the
socket up is exercised. HTTP/1.1 is spoken by hand on an asyncio protocol (keep-alive,
Content-Length, chunked SSE streams): a web framework would cost more than the clients under test.

::

    with SimServer({"m": SimModel(latency_s=0.05)}) as srv:     # background thread, own loop
        httpx.post(f"{srv.base_url}/chat/completions", json={...})
    async with SimServer(...) as srv: ...                       # on the running loop
    python -m moa.testing.sim --port 8000 --latency-ms 20       # foreground; prints the URL
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

from moa.errors import UserError
from moa.testing.sim.faults import MALFORMED_KINDS, OUTCOMES, FaultPlan, draw_fault
from moa.testing.sim.http11 import SSE_HEAD, Conn, Request, sse_chunk
from moa.testing.sim.models import SimModel, SimRequest, short_name
from moa.testing.sim.stats import SimStats
from moa.testing.sim.tokens import count_completion_tokens, count_prompt_tokens, count_tokens, last_user_text

__all__ = ["SimServer"]


class SimServer:
    """A loopback OpenAI-compatible server; see the module docstring."""

    def __init__(
        self,
        models: Mapping[str, SimModel] | None = None,
        *,
        default: SimModel | None = None,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._models = dict(models or {})
        # No table at all means "answer anything"; a table without default means 404 for strangers.
        self._default = default if default is not None or models is not None else SimModel()
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._plan: tuple[FaultPlan | None, random.Random] = (
            faults,
            random.Random(faults.seed if faults else 0),
        )
        self._scripts: dict[str, deque[str]] = {}
        self._calls: Counter[tuple[str, str]] = Counter()
        self._stats = SimStats()
        self._ids = itertools.count(1)
        self._conns: set[Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public surface ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> SimStats:
        """A consistent copy of the counters (safe to read from any thread)."""
        with self._lock:
            return self._stats.copy()

    def reset_stats(self) -> None:
        """Zero the counters (requests in flight stay counted as in flight)."""
        with self._lock:
            live = self._stats.in_flight
            self._stats = SimStats(in_flight=live, max_in_flight=live)

    @property
    def faults(self) -> FaultPlan | None:
        return self._plan[0]

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        with self._lock:
            self._plan = (plan, random.Random(plan.seed if plan else 0))

    def script(self, model: str, outcomes: Sequence[str]) -> None:
        """Force the next replies of `model`, in order: "ok" or a fault kind, before random faults."""
        bad = [o for o in outcomes if o not in OUTCOMES]
        if bad:
            raise UserError(f"SimServer.script({model!r}): unknown outcomes {bad}")
        found = self._resolve(model)
        with self._lock:
            self._scripts.setdefault(found[0] if found else model, deque()).extend(outcomes)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._closing = False
        self._server = await loop.create_server(
            self._connection, self.host, self.port, reuse_address=True, backlog=2048
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _connection(self) -> Conn:
        return Conn(self._handle, on_open=self._conns.add, on_lost=self._conns.discard)

    async def _aclose(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        await asyncio.gather(*(conn.wait_closed() for conn in conns))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimServer:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()

    def __enter__(self) -> SimServer:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:  # handed to the caller's thread below
                failure.append(e)
            started.set()
            if not failure:
                loop.run_forever()
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"moa-sim-server-{id(self):x}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None, "__exit__ without __enter__"
        asyncio.run_coroutine_threadsafe(self._aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop = self._thread = None

    # -- request handling --------------------------------------------------------------------

    def _resolve(self, name: str) -> tuple[str, SimModel] | None:
        if name in self._models:
            return name, self._models[name]
        short = short_name(name)
        if short in self._models:
            return short, self._models[short]
        return (short, self._default) if self._default is not None else None

    def _outcome(self, requested: str, key: str) -> tuple[str, FaultPlan | None]:
        """A scripted outcome first, else a draw from the fault plan."""
        with self._lock:
            plan, rng = self._plan
            for name in (requested, key):
                queue = self._scripts.get(name)
                if queue:
                    return queue.popleft(), plan
            return draw_fault(plan, rng, (key, requested)), plan

    def _log(self, model: str, kind: str) -> None:
        with self._lock:
            s = self._stats
            s.requests += 1
            s.request_log.append((time.monotonic(), model, kind))
            if kind not in ("ok", "not_found", "bad_request"):
                s.faults["malformed" if kind in MALFORMED_KINDS else kind] += 1

    def _lost(self) -> None:
        if not self._closing:
            with self._lock:
                self._stats.disconnects += 1

    async def _handle(self, conn: Conn, req: Request) -> None:
        """Every connection's handler: one request in, one reply out."""
        try:
            await self._route(conn, req)
        except Exception as e:  # an answer function's bug should reach the test as a 500
            conn.respond(500, _error_body(f"sim server: {type(e).__name__}: {e}", "server_error"))

    async def _route(self, conn: Conn, req: Request) -> None:
        path = req.path.split("?", 1)[0].rstrip("/")
        if req.error is not None:
            conn.respond(400, _error_body(req.error, "invalid_request_error"), close=True)
        elif req.method == "GET" and path.endswith("/models"):
            data = [{"id": k, "object": "model", "created": 0, "owned_by": "moa-sim"} for k in self._models]
            conn.respond(200, json.dumps({"object": "list", "data": data}).encode(), close=req.close)
        elif req.method == "POST" and path.endswith("/chat/completions"):
            with self._lock:
                self._stats.in_flight += 1
                self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)
            try:
                await self._complete(conn, req)
            finally:
                with self._lock:
                    self._stats.in_flight -= 1
        else:
            msg = f"no route for {req.method} {req.path}"
            conn.respond(404, _error_body(msg, "invalid_request_error", "not_found"), close=req.close)

    async def _complete(self, conn: Conn, req: Request) -> None:
        try:
            body = json.loads(req.body)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a `messages` list")
            requested = str(body.get("model", ""))
        except ValueError as e:
            self._log("", "bad_request")
            conn.respond(
                400, _error_body(f"malformed request body: {e}", "invalid_request_error"), close=req.close
            )
            return
        found = self._resolve(requested)
        if found is None:
            self._log(requested, "not_found")
            msg = f"The model `{requested}` does not exist"
            conn.respond(404, _error_body(msg, "invalid_request_error", "model_not_found"), close=req.close)
            return
        key, sim = found
        kind, plan = self._outcome(requested, key)
        self._log(key, kind)
        if kind == "ok":
            await self._answer(conn, req, body, requested, key, sim)
        elif kind in ("500", "503"):
            conn.respond(int(kind), _error_body(f"simulated {kind}", "server_error"), close=req.close)
        elif kind == "429":
            after = plan.retry_after_s if plan is not None else 0.2
            extra = ""
            if after is not None and plan is not None and plan.retry_after_http_date:
                extra = (
                    f"Retry-After: {email.utils.formatdate(math.ceil(time.time() + after), usegmt=True)}\r\n"
                )
            elif after is not None:
                extra = f"Retry-After: {after:g}\r\n"
            err = _error_body("simulated rate limit", "rate_limit_error", "rate_limit_exceeded")
            conn.respond(429, err, extra=extra, close=req.close)
        elif kind == "reset":
            conn.reset()
        elif kind == "hang":
            if await conn.wait_lost(plan.hang_s if plan is not None else 3600.0):
                self._lost()
            else:
                conn.reset()
        elif body.get("stream"):  # malformed, streamed: an event that is not JSON
            conn.write(SSE_HEAD + sse_chunk(b"{not json") + b"0\r\n\r\n")
        elif kind == "malformed_json":
            conn.respond(200, b'{"id": "chatcmpl-broken", "choices": [', close=req.close)
        else:
            conn.respond(200, b'{"id": "chatcmpl-empty", "object": "chat.completion"}', close=req.close)

    async def _answer(
        self, conn: Conn, req: Request, body: dict[str, Any], requested: str, key: str, sim: SimModel
    ) -> None:
        messages: list[Mapping[str, Any]] = [m for m in body["messages"] if isinstance(m, Mapping)]
        counter = (key, last_user_text(messages))
        with self._lock:
            index = self._calls[counter]
            self._calls[counter] += 1
        answer = sim.reply(SimRequest(key, messages, body, index))
        finish = "stop"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and 0 < limit < count_tokens(answer):
            answer, finish = " ".join(answer.split()[:limit]), "length"
        usage = {
            "prompt_tokens": count_prompt_tokens(messages),
            "completion_tokens": count_completion_tokens(answer),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        claimed = dict(sim.reported_usage) if sim.reported_usage is not None else usage
        base = {"id": f"chatcmpl-sim{next(self._ids)}", "created": int(time.time()), "model": requested}
        if body.get("stream"):
            await self._stream(conn, sim, answer, finish, usage, base, body, key, claimed)
            return
        if await conn.wait_lost(sim.latency_s):
            self._lost()
            return
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        reply = {**base, "object": "chat.completion", "choices": [choice], "usage": claimed}
        if self._served(conn, key, usage):
            conn.respond(200, json.dumps(reply).encode(), close=req.close)

    def _served(self, conn: Conn, key: str, usage: Mapping[str, int]) -> bool:
        """Account a completion about to be written whole; False (a disconnect) if the client left.

        Counted just before the last write so a client that has read its reply sees it counted.
        """
        if not conn.is_open():
            self._lost()
            return False
        with self._lock:
            s = self._stats
            s.served += 1
            s.served_by_model[key] += 1
            s.prompt_tokens += usage["prompt_tokens"]
            s.completion_tokens += usage["completion_tokens"]
        return True

    async def _stream(
        self,
        conn: Conn,
        sim: SimModel,
        answer: str,
        finish: str,
        usage: dict[str, int],
        base: dict[str, Any],
        body: dict[str, Any],
        key: str,
        claimed: Mapping[str, int],
    ) -> None:
        """Write the SSE stream, spreading the latency over its chunks."""
        pieces = _pieces(answer)
        delay = (
            sim.stream_chunk_delay_s if sim.stream_chunk_delay_s is not None else sim.latency_s / len(pieces)
        )
        opts = body.get("stream_options")
        with_usage = isinstance(opts, Mapping) and bool(opts.get("include_usage"))
        head = {**base, "object": "chat.completion.chunk"}
        if with_usage:
            head["usage"] = None
        conn.write(SSE_HEAD)
        for i, piece in enumerate(pieces):
            if await conn.wait_lost(delay):
                self._lost()
                return
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            conn.write(sse_chunk({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            await conn.drain()
        tail = sse_chunk({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if with_usage:
            tail += sse_chunk({**head, "choices": [], "usage": dict(claimed)})
        if self._served(conn, key, usage):
            conn.write(tail + sse_chunk(b"[DONE]") + b"0\r\n\r\n")


def _error_body(message: str, type_: str, code: str | None = None) -> bytes:
    """An OpenAI-shaped error reply."""
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _pieces(answer: str) -> list[str]:
    # Split before each word that follows whitespace, so the deltas concatenate back exactly.
    return re.split(r"(?<=\s)(?=\S)", answer) or [""]
