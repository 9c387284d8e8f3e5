"""A loopback OpenAI-compatible chat completions server with simulated models and injected faults.

Tests and benchmarks point real clients (httpx, openai, litellm) at it, so the whole path from the
socket up is exercised. HTTP/1.1 is spoken by hand on an asyncio protocol (keep-alive,
Content-Length, chunked SSE streams): a web framework would cost more than the clients under test.

::

    with SimServer({"m": SimModel(latency_s=0.05)}) as srv:     # background thread, own loop
        httpx.post(f"{srv.base_url}/chat/completions", json={...})
    async with SimServer(...) as srv: ...                       # on the running loop
    python -m moa.testing.server --port 8000 --latency-ms 20    # foreground; prints the URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hashlib
import itertools
import json
import math
import random
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from moa.errors import UserError

FAULT_KINDS = ("429", "500", "503", "reset", "malformed", "hang")
# `malformed` picks one of these two at random; scripts and plans may name them directly.
_EXTRA_KINDS = ("malformed_json", "no_choices")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}
_WRONG_CHOICES = 20  # independent wrong answers agree with probability 1/20
_MAX_HEAD = 65536


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def count_tokens(text: str) -> int:
    """The simulated token count of a text: its whitespace-separated words."""
    return len(text.split())


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The server's `prompt_tokens`: words of every message plus 3 per message."""
    return sum(count_tokens(message_text(m)) + 3 for m in messages)


def count_completion_tokens(answer: str) -> int:
    """The server's `completion_tokens` for an answer: its words, at least 1."""
    return max(1, count_tokens(answer))


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last `user` message, or "" when there is none."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


@dataclass(frozen=True)
class SimRequest:
    """What an answer function sees: the resolved model, the messages, the raw body."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    body: Mapping[str, Any]
    call_index: int
    """How many times this model answered this last user message before (0 for the first)."""


def _default_answer(req: SimRequest) -> str:
    words = last_user_text(req.messages).split()[:8]
    return f"answer from {req.model}: {' '.join(words)}"


@dataclass(frozen=True)
class _Accuracy:
    p: float
    answers: Mapping[str, str]
    seed: int

    def __call__(self, req: SimRequest) -> str:
        text = last_user_text(req.messages)
        correct = self.answers.get(text, self.answers.get(text.strip()))
        if correct is None:
            # Longest key first so "q12" wins over "q1" inside an aggregator's prompt.
            for key in sorted(self.answers, key=lambda k: (-len(k), k)):
                if key and key in text:
                    correct = self.answers[key]
                    break
        if correct is None:
            return _default_answer(req)
        material = f"{self.seed}\x00{req.model}\x00{text}\x00{req.call_index}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))
        if rng.random() < self.p:
            return correct
        return _wrong(correct, rng.randint(1, _WRONG_CHOICES))


def _wrong(correct: str, k: int) -> str:
    with contextlib.suppress(ValueError):
        return str(int(correct) + k)
    with contextlib.suppress(ValueError):
        value = float(correct)
        if math.isfinite(value):
            return repr(value + k)
    return f"{correct}-wrong{k}"


@dataclass(frozen=True)
class SimModel:
    """A simulated model: how long it takes and what it answers."""

    latency_s: float = 0.0
    """Time to the full answer; a stream spreads it evenly across its chunks."""
    answer: str | Callable[[SimRequest], str] | None = None
    """A fixed answer, a function of the request, or None for "answer from <model>: <words>"."""
    stream_chunk_delay_s: float | None = None
    """Delay before each streamed chunk; None means latency_s / number of chunks."""

    @classmethod
    def with_accuracy(
        cls, p: float, answers: Mapping[str, str], *, seed: int = 0, latency_s: float = 0.0
    ) -> SimModel:
        """A model right with probability `p` on the questions of `answers` (question -> answer).

        The question is the last user message (exact match, else the longest key it contains).
        Draws are reproducible: they depend on (seed, model, message, call index) only.
        """
        if not 0.0 <= p <= 1.0:
            raise UserError(f"SimModel.with_accuracy: p={p} is not within [0, 1]")
        return cls(latency_s=latency_s, answer=_Accuracy(p, dict(answers), seed))

    def reply(self, req: SimRequest) -> str:
        """The answer text for one request."""
        if self.answer is None:
            return _default_answer(req)
        return self.answer if isinstance(self.answer, str) else self.answer(req)


@dataclass(frozen=True)
class FaultPlan:
    """Random faults: each completion request gets one with probability `rate` (seeded)."""

    rate: float
    kinds: Sequence[str] = FAULT_KINDS
    retry_after_s: float | None = 0.2
    """Retry-After sent with 429; None sends none."""
    retry_after_http_date: bool = False
    """Send Retry-After as an HTTP date (whole seconds, rounded up) instead of seconds."""
    hang_s: float = 3600.0
    seed: int = 0
    models: Collection[str] | None = None
    """Only these models get faults; None means all."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"FaultPlan: rate={self.rate} is not within [0, 1]")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS + _EXTRA_KINDS]
        if unknown or not self.kinds:
            raise UserError(f"FaultPlan: kinds {unknown or '[]'} are not among {FAULT_KINDS + _EXTRA_KINDS}")


@dataclass
class SimStats:
    """Counters of a SimServer; `SimServer.stats` hands out a consistent copy."""

    served: int = 0
    """200 completions (plain or streamed) written in full."""
    served_by_model: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Every completion request, including faults and rejected ones."""
    faults: Counter[str] = field(default_factory=Counter)
    request_log: list[tuple[float, str, str]] = field(default_factory=list)
    """(time.monotonic(), model, fault kind or "ok" / "not_found" / "bad_request")."""
    in_flight: int = 0
    max_in_flight: int = 0
    disconnects: int = 0
    """Requests whose client went away before the reply was complete."""

    def copy(self) -> SimStats:
        by_model, faults, log = Counter(self.served_by_model), Counter(self.faults), list(self.request_log)
        return replace(self, served_by_model=by_model, faults=faults, request_log=log)


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    close: bool
    error: str | None = None


class _Conn(asyncio.Protocol):
    """One client connection: parses requests and runs them one after another."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_server makes stream transports
        self.server._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    async def drain(self) -> None:
        if self._drain is not None:
            await self._drain

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._parse_one():
            pass
        if self._pending and (self._task is None or self._task.done()):
            self._task = self.loop.create_task(self._run())

    def _parse_one(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._bad("request head too large")
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0")
        if len(parts) != 3 or not length.isdigit() or "transfer-encoding" in headers:
            self._bad(f"unsupported request head: {lines[0][:80]!r}")
            return False
        total = end + 4 + int(length)
        if len(self._buf) < total:
            return False
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        conn = headers.get("connection", "").lower()
        close = "close" in conn or (parts[2] == "HTTP/1.0" and "keep-alive" not in conn)
        self._pending.append(_Request(parts[0], parts[1], headers, body, close))
        return True

    def _bad(self, why: str) -> None:
        self._buf.clear()
        self._pending.append(_Request("", "", {}, b"", True, error=why))

    async def _run(self) -> None:
        while self._pending and not self.lost.done():
            req = self._pending.popleft()
            try:
                await self.server._handle(self, req)
            except Exception as e:  # an answer function's bug should reach the test as a 500
                self.respond(500, _error_body(f"sim server: {type(e).__name__}: {e}", "server_error"))
            if req.close and self.transport is not None:
                self.transport.close()
                return

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def respond(
        self,
        status: int,
        body: bytes,
        *,
        extra: str = "",
        close: bool = False,
        ctype: str = "application/json",
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        self.write(head.encode("latin-1") + body)

    async def wait_lost(self, delay: float) -> bool:
        """Sleep `delay`; True (early) when the client went away meanwhile."""
        if self.lost.done():
            return True
        if delay <= 0:
            return False
        done, _ = await asyncio.wait((self.lost,), timeout=delay)
        return bool(done)

    def reset(self) -> None:
        """Close with a TCP RST rather than a FIN, as a crashed proxy would."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _short(model: str) -> str:
    """The model name without a `provider/` prefix, as litellm sends it."""
    return model.split("/", 1)[1] if "/" in model else model


def _error_body(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _pieces(answer: str) -> list[str]:
    # Split before each word that follows whitespace, so the deltas concatenate back exactly.
    return re.split(r"(?<=\s)(?=\S)", answer) or [""]


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)


def _chunk(obj: Any) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


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
        self._conns: set[_Conn] = set()
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
        bad = [o for o in outcomes if o != "ok" and o not in FAULT_KINDS + _EXTRA_KINDS]
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
            lambda: _Conn(self), self.host, self.port, reuse_address=True, backlog=2048
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _aclose(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abort()
        tasks = [c._task for c in conns if c._task is not None]
        if conns:
            await asyncio.wait([c.lost for c in conns])
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
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
        short = _short(name)
        if short in self._models:
            return short, self._models[short]
        return (short, self._default) if self._default is not None else None

    def _outcome(self, requested: str, key: str) -> tuple[str, FaultPlan | None]:
        with self._lock:
            plan, rng = self._plan
            for name in (requested, key):
                queue = self._scripts.get(name)
                if queue:
                    return queue.popleft(), plan
            if plan is None or rng.random() >= plan.rate:
                return "ok", plan
            if plan.models is not None and not {key, requested} & {*plan.models, *map(_short, plan.models)}:
                return "ok", plan
            kind = rng.choice(list(plan.kinds))
            if kind == "malformed":
                kind = rng.choice(_EXTRA_KINDS)
            return kind, plan

    def _log(self, model: str, kind: str) -> None:
        with self._lock:
            s = self._stats
            s.requests += 1
            s.request_log.append((time.monotonic(), model, kind))
            if kind not in ("ok", "not_found", "bad_request"):
                s.faults["malformed" if kind in _EXTRA_KINDS else kind] += 1

    def _lost(self) -> None:
        if not self._closing:
            with self._lock:
                self._stats.disconnects += 1

    async def _handle(self, conn: _Conn, req: _Request) -> None:
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

    async def _complete(self, conn: _Conn, req: _Request) -> None:
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
            conn.write(_SSE_HEAD + _chunk(b"{not json") + b"0\r\n\r\n")
        elif kind == "malformed_json":
            conn.respond(200, b'{"id": "chatcmpl-broken", "choices": [', close=req.close)
        else:
            conn.respond(200, b'{"id": "chatcmpl-empty", "object": "chat.completion"}', close=req.close)

    async def _answer(
        self, conn: _Conn, req: _Request, body: dict[str, Any], requested: str, key: str, sim: SimModel
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
        base = {"id": f"chatcmpl-sim{next(self._ids)}", "created": int(time.time()), "model": requested}
        if body.get("stream"):
            await self._stream(conn, sim, answer, finish, usage, base, body, key)
            return
        if await conn.wait_lost(sim.latency_s):
            self._lost()
            return
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        reply = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        if self._served(conn, key, usage):
            conn.respond(200, json.dumps(reply).encode(), close=req.close)

    def _served(self, conn: _Conn, key: str, usage: Mapping[str, int]) -> bool:
        """Account a completion about to be written whole; False (a disconnect) if the client left.

        Counted just before the last write so a client that has read its reply sees it counted.
        """
        if conn.lost.done() or conn.transport is None or conn.transport.is_closing():
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
        conn: _Conn,
        sim: SimModel,
        answer: str,
        finish: str,
        usage: dict[str, int],
        base: dict[str, Any],
        body: dict[str, Any],
        key: str,
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
        conn.write(_SSE_HEAD)
        for i, piece in enumerate(pieces):
            if await conn.wait_lost(delay):
                self._lost()
                return
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            conn.write(_chunk({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            await conn.drain()
        tail = _chunk({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if with_usage:
            tail += _chunk({**head, "choices": [], "usage": usage})
        if self._served(conn, key, usage):
            conn.write(tail + _chunk(b"[DONE]") + b"0\r\n\r\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Run a SimServer in the foreground; prints its base URL on one line, stops on SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m moa.testing.server", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="time to the full answer")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of requests given a random fault"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--self-check", action="store_true", help="measure calls/s with raw httpx, then exit")
    args = parser.parse_args(argv)
    if args.self_check:
        asyncio.run(_self_check())
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> None:
    faults = FaultPlan(args.fault_rate, seed=args.seed) if args.fault_rate > 0 else None
    default = SimModel(latency_s=args.latency_ms / 1000.0)
    async with SimServer(default=default, faults=faults, host=args.host, port=args.port) as srv:
        print(srv.base_url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


async def _self_check(calls: int = 6000, concurrent: int = 256, clients: int = 32) -> None:
    """256 concurrent zero-latency posts against a server in a subprocess; prints calls/s.

    Spread over several httpx clients: one httpx pool scans all its connections for every
    request, so a single 256-connection client measures httpx rather than this server.
    """
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "moa.testing.server"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        per = httpx.Limits(max_connections=concurrent // clients)
        pool = [httpx.AsyncClient(base_url=url, limits=per) for _ in range(clients)]
        gate = asyncio.Semaphore(concurrent)
        body = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}

        async def one(i: int) -> None:
            async with gate:
                (await pool[i % clients].post("/chat/completions", json=body)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(concurrent)))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        rate = calls / (time.perf_counter() - start)
        await asyncio.gather(*(c.aclose() for c in pool))
        print(f"{rate:.0f} calls/s ({calls} posts, {concurrent} concurrent, {clients} httpx clients)")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
