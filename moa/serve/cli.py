"""The ``moa serve`` subcommand. Only light modules are imported at the top: the ``moa`` command
registers this parser on every start, and the web stack loads only when ``serve`` runs."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from moa._loopback import on_loopback
from moa.errors import UserError
from moa.gc_tuning import tune_gc_for_long_runs
from moa.scrub import remember_secret

__all__ = ["add_parser", "listen", "run", "serve"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="serve topologies as an OpenAI-compatible chat completions endpoint",
        description="Serve each TOPOLOGY (a file or preset name) as a model named by its `name` at "
        "/v1/models and /v1/chat/completions (streaming included).",
    )
    p.add_argument("topologies", nargs="+", metavar="TOPOLOGY", help="topology file or preset name")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, loopback only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000; 0 picks a free one)")
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="require `Authorization: Bearer <key>` where the key is this environment variable's value",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_000_000,
        metavar="N",
        help="refuse request bodies larger than N bytes with 413 (default: 1000000)",
    )
    p.add_argument(
        "--no-trace",
        action="store_true",
        help='refuse `"moa_trace": true` with 400: a trace holds every call\'s messages, the system prompts included',
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the server; 2 with one line on stderr for bad input, 0 after a clean shutdown."""

    def fail(message: str) -> int:
        print(f"moa serve: {message}", file=sys.stderr)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"--port must be within 0..65535 (got {args.port})")
    if args.max_body_bytes < 1:
        return fail(f"--max-body-bytes must be at least 1 (got {args.max_body_bytes})")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        remember_secret(api_key)
        if not api_key:
            return fail(f"--api-key-env: environment variable `{args.api_key_env}` is not set or empty")
    try:
        from moa._run import every_agent
        from moa.calls.keys import (
            missing_keys,
            unavailable_local_models,
            unknown_local_models,
            unknown_providers,
        )
        from moa.serve import create_app, require
        from moa.topology.loader import load

        require("uvicorn")
        topologies = [load(t) for t in args.topologies]
        # every topology's keys and providers before serving: a request must never be the first to
        # find out. All of a topology's agents (a cascade's stages and judges included) are checked
        # together, so that a variable missing for several stages is still one line.
        problems: list[str] = []
        for t in topologies:
            pairs = every_agent(t)
            lines = unknown_providers(pairs) + unknown_local_models(pairs) + missing_keys(pairs)
            lines += unavailable_local_models(pairs)  # served here: the extra and weights are needed here
            problems += [f"{t.name}: {line}" for line in lines]
        if problems:
            for line in problems:
                print(f"moa serve: {line}", file=sys.stderr)
            return 2
        app = create_app(
            topologies, api_key=api_key, max_body_bytes=args.max_body_bytes, allow_trace=not args.no_trace
        )
    except UserError as e:
        lines = e.lines() if hasattr(e, "lines") else [str(e)]
        for line in lines:
            print(f"moa serve: {line}", file=sys.stderr)
        return 2
    if api_key is None and not on_loopback(args.host):
        print(f"moa serve: warning: listening on {args.host} without --api-key-env", file=sys.stderr)
    try:
        sock = listen(args.host, args.port)
    except OSError as e:
        return fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    names = ", ".join(t.name for t in topologies)
    # an IPv6 address in a URL is bracketed, or its colons read as the port's (RFC 3986)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"moa serve: {names} at http://{host}:{sock.getsockname()[1]}/v1", file=sys.stderr)
    serve(app, sock)
    return 0


UVICORN_SETTINGS: dict[str, Any] = {
    # "auto" is uvloop and httptools when they are installed, asyncio and h11 otherwise
    "loop": "auto",
    "http": "auto",
    "log_level": "warning",
    # uvicorn's access log would duplicate moa's `serve.request` events
    "access_log": False,
    # nothing moa does depends on the client's address or scheme, so X-Forwarded-* need no parsing
    "proxy_headers": False,
}
"""How ``serve`` runs uvicorn, beyond the host and port."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port`` 0: any free port), so ``moa serve`` prints the
    address it really serves and a taken port fails before the banner, as one line."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        # listening before the banner: a client that connects once it reads the address is queued
        # until uvicorn accepts, not refused while uvicorn starts
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Any, sock: socket.socket) -> None:
    """Run ``app`` as ``moa serve`` does (the benchmarks call this, so they measure the same server).

    uvicorn picks uvloop and httptools when they are installed (the ``serve`` extra installs both;
    pure-Python h11 on asyncio costs half as much CPU again per request). Unless ``--log`` asked
    for events, only warnings and errors are logged: the four events of a one-call request
    (request, run start, call, run end) cost more CPU than the request itself."""
    from moa import log
    from moa.serve import require

    uvicorn = require("uvicorn")
    if not log.enabled():
        log.configure_logging("console", level="WARNING")
    # after the web stack and the topologies are loaded, so they are frozen with the rest
    server = uvicorn.Server(uvicorn.Config(app, **UVICORN_SETTINGS))
    with tune_gc_for_long_runs():
        server.run(sockets=[sock])
