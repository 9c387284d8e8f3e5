"""The benchmarks' loopback server, run in its own process so its CPU is not the client's.

Like ``python -m moa.testing.sim`` (prints its base URL on one line, stops on SIGTERM), with one
extra model: ``manager`` answers a JSON plan, so hierarchical topologies can run against it.

    python benchmarks/_sim.py --latency-ms 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moa.testing.sim import SimModel, SimServer

PLAN = json.dumps({"instructions": [f"work on part {i} of the question" for i in range(1, 9)]})


async def serve(latency_s: float) -> None:
    models = {"manager": SimModel(latency_s=latency_s, answer=PLAN)}
    async with SimServer(models, default=SimModel(latency_s=latency_s)) as srv:
        print(srv.base_url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.latency_ms / 1000.0))


if __name__ == "__main__":
    main()
