"""The ``moa view`` subcommand. Only light modules are imported at the top: the ``moa`` command
registers this parser on every start, and the web stack loads only when ``view`` runs."""

from __future__ import annotations

import argparse
import socket
import sys
import unicodedata
from pathlib import Path

from moa._loopback import on_loopback
from moa.errors import UserError

__all__ = ["DEFAULT_PORT", "add_parser", "allowed_hosts", "run"]

DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "view",
        help="browse an experiment's results in a local web page; vote on blind A/B pairs",
        description="Serve a local web viewer over DIR: an experiment folder (the --out of `moa compare`) "
        "or a folder of them. Overview, items with filters, each item's answers, calls and verdicts. "
        "With --vote, people vote on blind A/B pairs; `moa report DIR` then adds their ratings.",
    )
    p.add_argument("dir", metavar="DIR", help="an experiment folder, or a folder holding several")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, loopback only)"
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)"
    )
    p.add_argument("--vote", action="store_true", help="show blind A/B pairs to vote on (needs --voter)")
    p.add_argument("--voter", metavar="NAME", help="the name votes are stored under")
    p.add_argument(
        "--pairs",
        choices=["baseline", "all"],
        help="with --vote: each setup against the baseline (default), or every two setups",
    )
    p.set_defaults(func=run)


def voter_problem(name: str | None) -> str | None:
    """Why ``name`` cannot be a voter's name, or None."""
    if name is None or not name.strip():
        return "--vote needs --voter NAME (the name your votes are stored under)"
    if len(name) > 64:
        return f"--voter is {len(name)} characters long; at most 64"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "--voter holds a control character"
    return None


def allowed_hosts(host: str) -> list[str] | None:
    """The Host header names the server answers when bound to ``host``: loopback names (and the
    address itself) on a loopback interface, against DNS rebinding; any name elsewhere."""
    if not on_loopback(host):
        return ["*"]
    if host in _LOOPBACK:
        return None
    return [*_LOOPBACK, "[::1]", f"[{host}]" if ":" in host else host]


def run(args: argparse.Namespace) -> int:
    """Start the viewer; 2 with one line on stderr for bad input, 0 after a clean shutdown."""

    def fail(message: str) -> int:
        print(f"moa view: {message}", file=sys.stderr)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"--port must be within 0..65535 (got {args.port})")
    for flag, value in (("--voter", args.voter), ("--pairs", args.pairs)):
        if value is not None and not args.vote:  # a vote the user meant to start, not silently a browse
            return fail(f"{flag} is only read with --vote")
    if args.vote and (problem := voter_problem(args.voter)):
        return fail(problem)
    try:
        from moa.view import create_app, require

        uvicorn = require("uvicorn")
        hosts = allowed_hosts(args.host)
        app = create_app(
            Path(args.dir),
            voter=args.voter if args.vote else None,
            pairs=args.pairs or "baseline",
            allowed_hosts=hosts,
        )
    except UserError as e:
        return fail(str(e).splitlines()[0])
    try:
        sock = _listen(args.host, args.port)
    except OSError as e:
        return fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    if not on_loopback(args.host):
        print(
            f"moa view: warning: listening on {args.host}: anyone who can reach it reads the answers"
            + (" and votes" if args.vote else ""),
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    what = f"voting as {args.voter}" if args.vote else "viewer"
    port = sock.getsockname()[1]
    print(f"moa view: {what} at http://{shown}:{port}/ (Ctrl-C to stop)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket, so a busy port is one line and ``--port 0`` prints the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
