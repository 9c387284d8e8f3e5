"""Calls per second at zero model latency: moa single-node runs over the direct path vs raw httpx
posts vs bare ``litellm.acompletion`` (and moa over litellm), sequential and 256 concurrent; plus
client CPU per call (``time.process_time``) of moa over litellm vs bare litellm.

Every contender sends the same request to the same loopback server (its own process, so its CPU is
not counted) and reads the text out of the reply. Rounds alternate between contenders so each sees
the same machine state; the figure is the median of the rounds.

Targets: direct >= 0.8 x raw httpx and >= 3 x bare litellm (calls/s); moa over litellm <= 1.1 x
bare litellm in CPU per call.

    python benchmarks/throughput.py [--calls 2000] [--litellm-calls 600] [--rounds 3] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import httpx
from _common import median, sim_server, table, verdict

import moa

PROMPT = "what is the capital of france"
MESSAGES = [{"role": "user", "content": PROMPT}]

Call = Callable[[], Awaitable[str]]


async def drive(call: Call, n: int, concurrency: int) -> tuple[float, float]:
    """(calls/s, client CPU seconds per call) for ``n`` calls, ``concurrency`` at a time."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return n / wall, cpu / n


def single(url: str, transport: str) -> moa.Topology:
    agent: dict[str, Any] = {"model": "openai/m", "api_base": url, "transport": transport}
    if transport == "litellm":
        agent["api_key_env"] = "MOA_BENCH_KEY"
    return moa.Topology.model_validate(
        {"name": "single", "kind": "single", "agent": "a", "agents": {"a": agent}}
    )


class Contenders:
    """The four ways of making the same call. ``fresh()`` gives httpx and moa new pools before each
    measurement, so a pool grown by a concurrent run does not slow the next sequential one (litellm
    keeps its own client cache, which cannot be reset from outside)."""

    names = ("raw httpx", "moa direct", "bare litellm", "moa over litellm")

    def __init__(self, url: str) -> None:
        from moa.models.litellm import import_litellm  # the same quietened module moa uses

        self.url = url
        self.litellm = import_litellm()
        self.key = os.environ["MOA_BENCH_KEY"]
        self.body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        self.endpoint = url + "/chat/completions"
        self.direct, self.over_litellm = single(url, "openai-http"), single(url, "litellm")
        self.client: httpx.AsyncClient | None = None
        self.runner: moa.Runner | None = None

    async def fresh(self) -> None:
        await self.close()
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        self.client = httpx.AsyncClient(limits=limits, timeout=None)
        self.runner = moa.Runner()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.runner is not None:
            await self.runner.aclose()
        self.client = self.runner = None

    def call(self, name: str) -> Call:
        client, runner = self.client, self.runner
        assert client is not None and runner is not None

        async def raw_httpx() -> str:
            r = await client.post(
                self.endpoint, content=self.body, headers={"content-type": "application/json"}
            )
            return str(json.loads(r.content)["choices"][0]["message"]["content"])

        async def bare_litellm() -> str:
            # the arguments moa's litellm backend passes, so the CPU comparison isolates moa
            r = await self.litellm.acompletion(
                model="openai/m", messages=MESSAGES, api_base=self.url, api_key=self.key,
                num_retries=0, max_retries=0,
            )  # fmt: skip
            return str(r.choices[0].message.content)

        async def moa_direct() -> str:
            return (await self.direct.run(PROMPT, runner=runner)).output

        async def moa_litellm() -> str:
            return (await self.over_litellm.run(PROMPT, runner=runner)).output

        return dict(zip(self.names, (raw_httpx, moa_direct, bare_litellm, moa_litellm), strict=True))[name]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per round for httpx and moa direct")
    ap.add_argument(
        "--litellm-calls", type=int, default=600, help="calls per round for the litellm contenders"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    rate: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    with sim_server(0.0) as url:
        c = Contenders(url)
        try:
            for _ in range(args.rounds):
                for conc in (1, args.concurrency):
                    for name in c.names:
                        await c.fresh()
                        call = c.call(name)
                        await drive(call, 2 * conc, conc)  # warm: connections, imports, first-call setup
                        n = args.litellm_calls if "litellm" in name else args.calls
                        r, u = await drive(call, n, conc)
                        rate.setdefault((name, conc), []).append(r)
                        cpu.setdefault((name, conc), []).append(u)
        finally:
            await c.close()
    med = {k: median(v) for k, v in rate.items()}
    cpu_med = {k: median(v) for k, v in cpu.items()}
    rows = []
    for conc in (1, args.concurrency):
        for name in Contenders.names:
            rows.append([name, conc, med[(name, conc)], cpu_med[(name, conc)] * 1e6])
    print(f"## throughput (zero latency, median of {args.rounds} rounds)\n")
    print(table(["contender", "concurrency", "calls/s", "client CPU µs/call"], rows))
    checks = []
    for conc in (1, args.concurrency):
        d = med[("moa direct", conc)]
        v1 = d / med[("raw httpx", conc)]
        v2 = d / med[("bare litellm", conc)]
        checks.append([f"moa direct / raw httpx (calls/s, c={conc})", v1, ">= 0.8", verdict(v1 >= 0.8)])
        checks.append([f"moa direct / bare litellm (calls/s, c={conc})", v2, ">= 3", verdict(v2 >= 3)])
    for conc in (1, args.concurrency):
        v = cpu_med[("moa over litellm", conc)] / cpu_med[("bare litellm", conc)]
        checks.append(
            [f"moa over litellm / bare litellm (CPU per call, c={conc})", v, "<= 1.1", verdict(v <= 1.1)]
        )
    print()
    print(table(["ratio", "value", "target", "verdict"], checks))
    return 0 if all(c[-1] == "met" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
