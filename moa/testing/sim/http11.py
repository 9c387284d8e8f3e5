"""Just enough HTTP/1.1 for the loopback server: request parsing on an asyncio protocol, keep-alive,
Content-Length and chunked SSE replies, and client-disconnect detection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from moa.testing.server import SimServer

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_HEAD = 65536


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
