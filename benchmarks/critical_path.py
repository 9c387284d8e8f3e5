"""Wall time / critical path for parallel-3, moa-2x3 (layered) and hierarchical at 100 ms latency.

The critical path is the longest chain of actual call latencies through the graph (what the run
would take if moa cost nothing between calls); the ratio is the orchestration overhead. Also shown:
wall time / the ideal (model latency x graph depth), which includes the HTTP stack's own time.
Target: wall / critical path <= 1.05 for every topology. The server runs in a subprocess.

    python benchmarks/critical_path.py [--runs 7] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import median, sim_server, table, verdict

import moa

TARGET = 1.05


def _agent(url: str, model: str, transport: str) -> dict[str, Any]:
    a: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": url,
        "transport": transport,
        "max_tokens": 64,
    }
    if transport == "litellm":
        a["api_key_env"] = "MOA_BENCH_KEY"
    return a


def topologies(url: str, transport: str) -> dict[str, tuple[moa.Topology, int]]:
    """name -> (topology, depth in calls)."""
    ag = {n: _agent(url, n, transport) for n in ("a", "b", "c", "agg", "manager")}
    par = {"name": "parallel-3", "kind": "parallel", "workers": ["a", "b", "c"], "aggregator": "agg"}
    lay = {
        "name": "moa-2x3",
        "kind": "layered",
        "layers": 2,
        "proposers": ["a", "b", "c"],
        "aggregator": "agg",
    }
    hier = {"name": "hierarchical", "kind": "hierarchical", "manager": "manager", "workers": ["a", "b", "c"]}
    out = {}
    for spec, depth in ((par, 2), (lay, 3), (hier, 3)):
        out[str(spec["name"])] = (moa.Topology.model_validate({**spec, "agents": ag}), depth)
    return out


async def measure(url: str, transport: str, runs: int, latency_s: float) -> list[list[object]]:
    rows: list[list[object]] = []
    async with moa.Runner() as runner:
        for name, (topo, depth) in topologies(url, transport).items():
            await topo.run("warm up the pool", runner=runner)
            ratios, ideal, walls = [], [], []
            for i in range(runs):
                r = await topo.run(f"question number {i}", runner=runner)
                ratios.append(r.latency_s / r.critical_path_s)
                ideal.append(r.latency_s / (depth * latency_s))
                walls.append(r.latency_s)
            ratio = median(ratios)
            rows.append(
                [name, transport, median(walls) * 1000, ratio, median(ideal), verdict(ratio <= TARGET)]
            )
    return rows


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--transports", default="openai-http,litellm")
    args = ap.parse_args()
    rows: list[list[object]] = []
    with sim_server(args.latency_ms) as url:
        for transport in args.transports.split(","):
            rows += await measure(url, transport, args.runs, args.latency_ms / 1000)
    print(f"## critical path ({args.latency_ms:g} ms per call, median of {args.runs} runs)\n")
    print(
        table(
            ["topology", "transport", "wall ms", "wall / critical path", "wall / ideal", "target <= 1.05"],
            rows,
        )
    )
    return 0 if all(r[-1] == "met" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
