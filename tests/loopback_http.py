"""A ``http.server`` handler served on 127.0.0.1 in a thread, for tests that need a provider whose
replies they write byte by byte (echoes, hand-cut streams) rather than the sim server's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def threaded_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yields ``http://127.0.0.1:PORT``, and stops the
    server and closes its socket on the way out."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def send_body(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    ctype: str = "application/json",
    coding: str = "",
) -> None:
    """Answer the handler's request with ``data`` whole (its length given, so the client need not
    wait for the connection to close), sent as encoded by ``coding`` when one is named."""
    handler.send_response(status)
    handler.send_header("content-type", ctype)
    if coding:
        handler.send_header("content-encoding", coding)
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def send_sse(handler: BaseHTTPRequestHandler, events: list[dict[str, object]]) -> None:
    """Answer the handler's request with ``events`` as a server-sent event stream ended by
    ``[DONE]``, then close the connection."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("connection", "close")
    handler.end_headers()
    for event in events:
        handler.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()
    handler.close_connection = True


def completion(text: str, prompt_tokens: int = 3, completion_tokens: int = 3, **extra: object) -> bytes:
    """A whole OpenAI chat completion answering ``text``, with its usage (and ``extra`` top-level
    fields), as bytes to send."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    body = {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice], "usage": usage}
    return json.dumps({**body, **extra}).encode()
