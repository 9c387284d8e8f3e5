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


def test_every_loopback_host_counts_as_loopback() -> None:
    """The warning about a server without --api-key-env and the browser guard read the same rule:
    `--host 127.0.0.2` (loopback, 127.0.0.0/8) was warned about as if it were public."""
    from moa._loopback import on_loopback

    for host in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert on_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.com", "localhost.example.com", ""):
        assert not on_loopback(host), host
