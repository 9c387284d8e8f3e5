"""`moa serve`'s socket: the address it prints takes connections at once."""

from __future__ import annotations

import socket

from moa.serve.cli import listen


def test_the_address_in_the_banner_takes_connections_before_uvicorn_runs() -> None:
    """`moa serve` printed its address once the socket was bound but not listening: a client
    connecting as soon as it read the line was refused while uvicorn started."""
    sock = listen("127.0.0.1", 0)
    try:
        with socket.create_connection(sock.getsockname(), timeout=30):
            pass  # queued by the kernel until the server accepts
    finally:
        sock.close()
