"""Just enough HTTP/1.1 for the loopback server: request parsing on an asyncio protocol, keep-alive,
Content-Length and chunked SSE replies, and client-disconnect detection.

The connection knows nothing of what it serves: it hands each parsed request to the `handler` it
was built with, and tells its owner when it opens and when it is lost. The server imports this
module, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_HEAD = 65536

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
"""The head of a streamed reply; its body is `sse_chunk`s, then ``0\\r\\n\\r\\n``."""


@dataclass
class Request:
    """One parsed request; `error` says why the head could not be parsed (answer 400 and close)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    close: bool
    """The client asked to close the connection after this reply."""
    error: str | None = None


Handler = Callable[["Conn", Request], Awaitable[None]]
"""Answers one request on its connection; the connection runs one at a time, in order."""


class Conn(asyncio.Protocol):
    """One client connection: parses requests and runs them one after another through `handler`."""

    def __init__(
        self,
        handler: Handler,
        *,
        on_open: Callable[[Conn], None] | None = None,
        on_lost: Callable[[Conn], None] | None = None,
    ) -> None:
        self._handler = handler
        self._on_open = on_open
        self._on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        """Done once the client went away (or the connection was aborted)."""
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_server makes stream transports
        if self._on_open is not None:
            self._on_open(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost(self)
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

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._parse_one():
            pass
        if self._pending and (self._task is None or self._task.done()):
            self._task = self.loop.create_task(self._run())

    # -- parsing and dispatch ----------------------------------------------------------------

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
        self._pending.append(Request(parts[0], parts[1], headers, body, close))
        return True

    def _bad(self, why: str) -> None:
        self._buf.clear()
        self._pending.append(Request("", "", {}, b"", True, error=why))

    async def _run(self) -> None:
        while self._pending and not self.lost.done():
            req = self._pending.popleft()
            close = req.close
            try:
                await self._handler(self, req)
            except Exception as e:
                # A handler replies to its own failures; this only keeps a client from waiting
                # forever on one that broke. Close: the broken handler may have written half a reply.
                self.respond(500, f"{type(e).__name__}: {e}".encode(), close=True, ctype="text/plain")
                close = True
            if close and self.transport is not None:
                self.transport.close()
                return

    # -- what a handler uses -----------------------------------------------------------------

    def is_open(self) -> bool:
        """The client is still there and the connection is not closing."""
        return not self.lost.done() and self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again (or the client left)."""
        if self._drain is not None:
            await self._drain

    def respond(
        self,
        status: int,
        body: bytes,
        *,
        extra: str = "",
        close: bool = False,
        ctype: str = "application/json",
    ) -> None:
        """Write a whole reply with a Content-Length; `extra` is more header lines, each ending CRLF."""
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

    # -- what the owner uses -----------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now, whatever it is doing (the server is shutting down)."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is lost and its handler has returned (its errors are dropped)."""
        await asyncio.wait((self.lost,))
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def sse_chunk(obj: Any) -> bytes:
    """One server-sent event as an HTTP chunk: `obj` as JSON, or bytes sent as they are."""
    data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)
