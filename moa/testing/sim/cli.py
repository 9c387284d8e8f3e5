"""``python -m moa.testing.sim``: the loopback server in the foreground, and a throughput self-check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx

from moa.errors import UserError
from moa.testing.sim.faults import FaultPlan
from moa.testing.sim.models import SimModel
from moa.testing.sim.server import SimServer

PROG = "python -m moa.testing.sim"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> None:
    """Run a SimServer in the foreground; prints its base URL on one line, stops on SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
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
    # bad values and a port already taken are one line and exit 2, as `moa serve` says them
    if not 0 <= args.port <= 65535:
        parser.exit(2, f"{prog}: --port must be within 0..65535 (got {args.port})\n")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except UserError as e:
        parser.exit(2, f"{prog}: {e}\n")
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's strerror repeats the address
        parser.exit(2, f"{prog}: cannot listen on {args.host}:{args.port}: {why}\n")


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
    proc = subprocess.Popen([sys.executable, "-m", "moa.testing.sim"], stdout=subprocess.PIPE, text=True)
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
