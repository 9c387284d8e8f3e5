"""A loopback HTTP server on 127.0.0.1 that answers each request with bytes a test wrote by hand: the
replies no well-behaved server library would send (a 2xx cut mid-body, a stream that stops, fields
of the wrong type), so the clients meet them over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RawServer", "chunked", "http", "raw_server", "sse_delta", "sse_head"]

#: one reply: bytes written whole, or a function of the request's number (1-based) giving them
Reply = bytes | Callable[[int], bytes]


@dataclass
class RawServer:
    base_url: str
    #: the event loop's time at which each request's body had arrived
    arrivals: list[float] = field(default_factory=list)


def http(status: int, body: Any, extra_headers: Sequence[str] = ()) -> bytes:
    """A whole reply; ``Connection: close``, as the server closes every connection after one reply."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [*extra_headers, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def sse_head(chunked_body: bool) -> bytes:
    """A 200 event-stream head: a chunked body, or one delimited by closing the connection."""
    framing = "Transfer-Encoding: chunked" if chunked_body else "Connection: close"
    return f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{framing}\r\n\r\n".encode()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_delta(text: str | None = None, finish: str | None = None, usage: Any = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text} if text is not None else {}}
    choice["finish_reason"] = finish
    event: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@contextlib.asynccontextmanager
async def raw_server(*replies: Reply) -> AsyncIterator[RawServer]:
    """Answer the n-th request with ``replies[n-1]`` (the last one for every later request), then
    close the connection: a reply cut short is a close in the middle of its body."""
    loop = asyncio.get_running_loop()
    state = RawServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            state.arrivals.append(loop.time())
            reply = replies[min(len(state.arrivals), len(replies)) - 1]
            writer.write(reply(len(state.arrivals)) if callable(reply) else reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        yield state
    finally:
        server.close()
        if hasattr(server, "close_clients"):
            server.close_clients()
