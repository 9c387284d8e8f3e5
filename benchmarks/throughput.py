"""Calls per second at zero model latency: moa single-node runs over the direct path vs bare
aiohttp posts, raw httpx posts, the official ``openai`` client and bare ``litellm.acompletion`` (and
moa over litellm), sequential and 256 concurrent; client CPU per call (``time.process_time``) of moa
over litellm vs bare litellm; and a 32-way fan-out (32 proposers and an aggregator) against its ideal,
two call latencies, at 50 ms per call (the target's stress setting) and at 500 ms (a fast hosted
model). The fan-out's overhead over the ideal is what sending 33 requests and reading 33 replies
costs the client and the server in CPU, a few milliseconds whatever the latency: it is printed in
milliseconds, and next to bare aiohttp making the same posts, with how late after the call latency a
lone post, and the first and last of 32 concurrent replies, come back. Each contender's time inside
the cyclic garbage collector per call (CPU, ``gc.callbacks``) is printed next to its CPU.

Every contender sends the same request to the same loopback server (its own process, so its CPU is
not counted) and reads the text out of the reply. Each round measures every contender, a different
one first each round and a pause between two (the server closes the last one's sockets); a ratio
is taken within each round, so the shared machine's drift between rounds cancels out, and the
median of the rounds' ratios is reported with their range. ``moa direct backend`` is the direct
path's ``OpenAIHTTPModel.complete`` alone, without the runner: the rest of ``moa direct`` is moa's
own per-run work (records, budgets, the graph walk).

The heap that exists once every client is imported (litellm alone is ~330,000 objects) is frozen
with ``gc.freeze()`` before measuring, for every contender alike, as moa's long-run entry points do:
otherwise each full collection walks litellm's heap, a cost that lands on whichever contender
happens to allocate and that a program not using litellm never pays (``--no-freeze`` measures
without it).

Targets: direct >= 0.8 x bare aiohttp, >= 0.8 x raw httpx and >= 3 x bare litellm (calls/s); moa
over litellm <= 1.1 x bare litellm in CPU per call; 32-way fan-out wall <= 1.03 x ideal (judged at
the first latency given).

    python benchmarks/throughput.py [--calls 2000] [--litellm-calls 600] [--rounds 5] [--concurrency 256]
                                    [--fanout-runs 7] [--fanout-latency-ms 50 500] [--no-freeze]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import aiohttp
import httpx
import openai
from _common import CollectorClock, drive, median, sim_server, table, verdict

import moa
from moa.models.base import ModelRequest
from moa.models.openai_http import OpenAIHTTPModel

PROMPT = "what is the capital of france"
MESSAGES = [{"role": "user", "content": PROMPT}]
FANOUT = 32
#: the pause between contenders
SETTLE_S = 1.0

Call = Callable[[], Awaitable[str]]


def single(url: str, transport: str) -> moa.Topology:
    agent: dict[str, Any] = {"model": "openai/m", "api_base": url, "transport": transport}
    if transport == "litellm":
        agent["api_key_env"] = "MOA_BENCH_KEY"
    return moa.Topology.model_validate(
        {"name": "single", "kind": "single", "agent": "a", "agents": {"a": agent}}
    )


class Contenders:
    """The ways of making the same call. ``fresh()`` gives every client but litellm's a new pool
    before each measurement, so a pool grown by a concurrent run does not slow the next sequential
    one (litellm keeps its own client cache, which cannot be reset from outside)."""

    names = (
        "bare aiohttp",
        "raw httpx",
        "openai SDK",
        "moa direct backend",
        "moa direct",
        "bare litellm",
        "moa over litellm",
    )

    def __init__(self, url: str) -> None:
        from moa.models.litellm import import_litellm  # the same quietened module moa uses

        self.url = url
        self.litellm = import_litellm()
        self.key = os.environ["MOA_BENCH_KEY"]
        self.body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        self.endpoint = url + "/chat/completions"
        self.direct, self.over_litellm = single(url, "openai-http"), single(url, "litellm")
        self.request = ModelRequest(model="openai/m", messages=MESSAGES, api_base=url)
        self.session: aiohttp.ClientSession | None = None
        self.client: httpx.AsyncClient | None = None
        self.sdk: openai.AsyncOpenAI | None = None
        self.backend: OpenAIHTTPModel | None = None
        self.runner: moa.Runner | None = None

    async def fresh(self) -> None:
        await self.close()
        # let the server finish with the sockets just closed (256 of them after a concurrent run)
        # before the next contender starts: otherwise it pays for its predecessor
        await asyncio.sleep(SETTLE_S)
        # every pool holds the 256 connections of the concurrent run (the libraries' defaults:
        # aiohttp 100, the openai client 100 kept alive, would reconnect instead)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        self.client = httpx.AsyncClient(limits=limits, timeout=None)
        self.sdk = openai.AsyncOpenAI(
            base_url=self.url,
            api_key=self.key,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=None),
        )
        self.backend = OpenAIHTTPModel()
        self.runner = moa.Runner()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.client is not None:
            await self.client.aclose()
        if self.sdk is not None:
            await self.sdk.close()
        if self.backend is not None:
            await self.backend.aclose()
        if self.runner is not None:
            await self.runner.aclose()
        self.session = self.client = self.sdk = self.backend = self.runner = None

    def call(self, name: str) -> Call:
        session, client, sdk, backend, runner = self.session, self.client, self.sdk, self.backend, self.runner
        assert session is not None and client is not None and sdk is not None
        assert backend is not None and runner is not None

        async def bare_aiohttp() -> str:
            async with session.post(
                self.endpoint, data=self.body, headers={"content-type": "application/json"}
            ) as r:
                return str(json.loads(await r.read())["choices"][0]["message"]["content"])

        async def raw_httpx() -> str:
            r = await client.post(
                self.endpoint, content=self.body, headers={"content-type": "application/json"}
            )
            return str(json.loads(r.content)["choices"][0]["message"]["content"])

        async def openai_sdk() -> str:
            r = await sdk.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            return str(r.choices[0].message.content)

        async def direct_backend() -> str:
            return (await backend.complete(self.request)).text

        async def moa_direct() -> str:
            return (await self.direct.run(PROMPT, runner=runner)).output

        async def bare_litellm() -> str:
            # the arguments moa's litellm backend passes, so the CPU comparison isolates moa
            r = await self.litellm.acompletion(
                model="openai/m", messages=MESSAGES, api_base=self.url, api_key=self.key,
                num_retries=0, max_retries=0,
            )  # fmt: skip
            return str(r.choices[0].message.content)

        async def moa_litellm() -> str:
            return (await self.over_litellm.run(PROMPT, runner=runner)).output

        calls = (bare_aiohttp, raw_httpx, openai_sdk, direct_backend, moa_direct, bare_litellm, moa_litellm)
        return dict(zip(self.names, calls, strict=True))[name]


@dataclass(frozen=True)
class Fanout:
    """Medians over the runs, in seconds."""

    #: a 32-proposer parallel topology through moa's direct path
    moa_wall: float
    #: the same 33 posts with bare aiohttp (32 at once, then one)
    bare_wall: float
    #: one bare aiohttp post alone, over the call latency
    lone_late: float
    #: the first and the last of the 32 concurrent replies read, over the call latency
    first_late: float
    last_late: float


async def fanout(url: str, runs: int, latency_s: float) -> Fanout:
    """Wall times of the 32-way fan-out through moa and with bare aiohttp, and where bare aiohttp's
    time over the ideal goes: a lone post's lateness, and the first and last of 32 replies'."""
    agents = {f"p{i}": {"model": f"openai/p{i}", "api_base": url, "max_tokens": 64} for i in range(FANOUT)}
    agents["agg"] = {"model": "openai/agg", "api_base": url, "max_tokens": 64}
    topo = moa.Topology.model_validate(
        {"name": "fanout-32", "kind": "parallel", "workers": [f"p{i}" for i in range(FANOUT)],
         "aggregator": "agg", "agents": agents}
    )  # fmt: skip
    endpoint = url + "/chat/completions"

    async def post(session: aiohttp.ClientSession, model: str, content: str) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
        async with session.post(endpoint, data=body, headers={"content-type": "application/json"}) as r:
            return str(json.loads(await r.read())["choices"][0]["message"]["content"])

    async def timed(session: aiohttp.ClientSession, model: str, content: str, t0: float) -> str:
        text = await post(session, model, content)
        arrivals.append(time.perf_counter() - t0)
        return text

    async def bare(session: aiohttp.ClientSession, prompt: str) -> None:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(timed(session, f"p{i}", prompt, t0) for i in range(FANOUT)))
        await post(session, "agg", "\n".join(answers))

    moa_walls, bare_walls, lone, first, last = [], [], [], [], []
    arrivals: list[float] = []
    async with moa.Runner() as runner, aiohttp.ClientSession() as session:
        await topo.run("warm up the pool", runner=runner)
        await bare(session, "warm up the pool")
        for i in range(runs):
            t0 = time.perf_counter()
            await topo.run(f"question number {i}", runner=runner)
            moa_walls.append(time.perf_counter() - t0)
            arrivals.clear()
            t0 = time.perf_counter()
            await bare(session, f"question number {i}")
            bare_walls.append(time.perf_counter() - t0)
            first.append(min(arrivals) - latency_s)
            last.append(max(arrivals) - latency_s)
            t0 = time.perf_counter()
            await post(session, "p0", f"alone {i}")
            lone.append(time.perf_counter() - t0 - latency_s)
    return Fanout(median(moa_walls), median(bare_walls), median(lone), median(first), median(last))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per round for all but litellm")
    ap.add_argument(
        "--litellm-calls", type=int, default=600, help="calls per round for the litellm contenders"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--fanout-runs", type=int, default=7)
    ap.add_argument("--fanout-latency-ms", type=float, nargs="+", default=[50.0, 500.0])
    ap.add_argument("--no-freeze", action="store_true", help="leave the imported heap to the collector")
    args = ap.parse_args()
    print(f"load average at start: {_load()}\n")
    # (contender, concurrency) -> one figure per round
    rate: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    in_gc: dict[tuple[str, int], list[float]] = {}
    with sim_server(0.0) as url:
        c = Contenders(url)
        if not args.no_freeze:
            gc.freeze()
        try:
            for rnd in range(args.rounds):
                # a different contender goes first each round, so none always meets the machine
                # (or the server) in the same state
                k = rnd % len(c.names)
                order = c.names[k:] + c.names[:k]
                for conc in (1, args.concurrency):
                    for name in order:
                        await c.fresh()
                        call = c.call(name)
                        await drive(call, 2 * conc, conc)  # warm: connections, imports, first-call setup
                        n = args.litellm_calls if "litellm" in name or "openai" in name else args.calls
                        with CollectorClock() as collector:
                            r, u = await drive(call, n, conc)
                        rate.setdefault((name, conc), []).append(r)
                        cpu.setdefault((name, conc), []).append(u)
                        in_gc.setdefault((name, conc), []).append(collector.total_s / n)
        finally:
            await c.close()
    # latency (s) -> its fan-out figures
    fanouts: dict[float, Fanout] = {}
    for ms in args.fanout_latency_ms:
        with sim_server(ms) as url:
            fanouts[ms / 1000] = await fanout(url, args.fanout_runs, ms / 1000)
    med = {k: median(v) for k, v in rate.items()}
    cpu_med = {k: median(v) for k, v in cpu.items()}
    gc_med = {k: median(v) for k, v in in_gc.items()}
    rows = []
    for conc in (1, args.concurrency):
        for name in Contenders.names:
            key = (name, conc)
            rows.append([name, conc, med[key], cpu_med[key] * 1e6, f"{gc_med[key] * 1e6:.1f}"])
    heap = "left to the collector" if args.no_freeze else "frozen"
    print(f"## throughput (zero latency, median of {args.rounds} rounds, imported heap {heap})\n")
    print(
        table(["contender", "concurrency", "calls/s", "client CPU µs/call", "in the collector µs/call"], rows)
    )

    def paired(of: dict[tuple[str, int], list[float]], a: str, b: str, conc: int) -> tuple[float, str]:
        """The median over rounds of a/b within each round, and the rounds' range: the machine's
        drift between rounds cancels out of a ratio taken within one."""
        ratios = sorted(x / y for x, y in zip(of[(a, conc)], of[(b, conc)], strict=True))
        return median(ratios), f"{ratios[0]:.3g}–{ratios[-1]:.3g}"

    checks = []
    for conc in (1, args.concurrency):
        for anchor, target in (("bare aiohttp", 0.8), ("raw httpx", 0.8), ("bare litellm", 3.0)):
            v, spread = paired(rate, "moa direct", anchor, conc)
            checks.append(
                [
                    f"moa direct / {anchor} (calls/s, c={conc})",
                    v,
                    spread,
                    f">= {target:g}",
                    verdict(v >= target),
                ]
            )
        for anchor in ("bare aiohttp", "openai SDK"):
            v, spread = paired(rate, "moa direct backend", anchor, conc)
            checks.append([f"moa direct backend / {anchor} (calls/s, c={conc})", v, spread, "(shown)", ""])
        # CPU per call moves less than calls/s on a loaded machine
        for name in ("moa direct backend", "moa direct"):
            v, spread = paired(cpu, name, "bare aiohttp", conc)
            checks.append([f"{name} / bare aiohttp (CPU per call, c={conc})", v, spread, "(shown)", ""])
    for conc in (1, args.concurrency):
        v, spread = paired(cpu, "moa over litellm", "bare litellm", conc)
        checks.append(
            [
                f"moa over litellm / bare litellm (CPU per call, c={conc})",
                v,
                spread,
                "<= 1.1",
                verdict(v <= 1.1),
            ]
        )
    for k, (latency_s, f) in enumerate(fanouts.items()):
        moa_wall, bare_wall = f.moa_wall, f.bare_wall
        ideal, at = 2 * latency_s, f"{latency_s * 1e3:g} ms per call"
        v = moa_wall / ideal
        judged = ("<= 1.03", verdict(v <= 1.03)) if k == 0 else ("(shown)", "")
        checks.append(
            [f"{FANOUT}-way fan-out wall / ideal, {at} ({moa_wall * 1e3:.1f} vs {ideal * 1e3:.0f} ms: "
             f"+{(moa_wall - ideal) * 1e3:.1f} ms)", v, "", *judged]
        )  # fmt: skip
        checks.append(
            [f"bare aiohttp {FANOUT}-way fan-out wall / ideal, {at} ({bare_wall * 1e3:.1f} ms: "
             f"+{(bare_wall - ideal) * 1e3:.1f} ms)", bare_wall / ideal, "", "(shown)", ""]
        )  # fmt: skip
        checks.append(
            [f"moa / bare aiohttp, {FANOUT}-way fan-out wall, {at}", moa_wall / bare_wall, "", "(shown)", ""]
        )
    print()
    print(table(["ratio (median of rounds' ratios)", "value", "rounds", "target", "verdict"], checks))
    print(
        f"\n## where bare aiohttp's fan-out time goes (ms after the call latency, median of {args.fanout_runs})\n"
    )
    late = [
        [
            f"{ms * 1e3:g} ms",
            f"{f.lone_late * 1e3:.1f}",
            f"{f.first_late * 1e3:.1f}",
            f"{f.last_late * 1e3:.1f}",
        ]
        for ms, f in fanouts.items()
    ]
    print(table(["call latency", "a lone post", f"first of {FANOUT} replies", f"last of {FANOUT}"], late))
    print(f"\nload average at end: {_load()}")
    return 0 if all(c[-1] in ("met", "") for c in checks) else 1


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
