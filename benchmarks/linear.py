"""Linear everywhere: what each stage costs per unit as its size grows, and the garbage collector.

Measured side by side in one run (printed as ratios, so a busy machine moves both sides alike):

* fan-in: one ``majority`` node reading k workers whose answers arrive one per event-loop turn (the
  worst case for a node that re-waits on its remaining inputs): microseconds per node at k = 32 and
  k = 2,048. Target: per-node cost at 2,048 <= 1.5 x that at 32 (with the collector tuned as the
  long-running entry points tune it; the default collector's figures are printed beside).
* McNemar: the exact test on n paired binary scores (half the pairs discordant) at 1k, 16k, 100k.
  Target: 100k in <= 50 ms.
* validation: a DAG where each node reads the 4 defined before it (one agent per node), validated
  into a ``Topology``: microseconds per node at 32 and 4,096 nodes. Target: <= 1.5 x.
* numeric grader: ``final_answer`` on hostile answers holding a long run of blanks (before a
  power, inside a box, before a symbol): microseconds per blank at 30,000 and 300,000 blanks.
  Target: <= 1.5 x (a pattern that retried the run at each blank took a minute at 300,000).
* summary: ``summarize`` of a baseline and two setups over n binary-scored items in 4 categories,
  with the default 2,000 bootstrap rounds, at 4k and 100k items. Target: 100k in <= 10 s.
* rate limit: one request through an endpoint's ``rpm`` and ``tpm`` limits whose one-minute windows
  already hold n requests' entries (a busy endpoint under a high limit): microseconds per request
  at 1,000 and 50,000 entries. Target: <= 1.5 x (each window searched for a request's own entry
  from its oldest end, and summed its tokens, on every request: 1.2 ms at 50,000).
* GC: an experiment of N items x (parallel-3 + aggregator vs a single-model baseline) against the
  loopback server, each run in a fresh process, with ``moa.gc_tuning`` on (the default) and off
  (``MOA_GC_TUNING=off``), alternating: the process's CPU time and the collector's share of it.
  Target: tuned / default < 1.

Times are CPU time of the measuring process (``time.process_time``), which the machine's other load
disturbs far less than the wall clock; the load average is printed with the table.

    python benchmarks/linear.py [--fan-in 32 2048] [--mcnemar 1000 16000 100000] [--nodes 32 4096]
                                [--summary 4000 100000] [--blanks 30000 300000]
                                [--tpm-window 1000 50000] [--compare-items 2000] [--compare-runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import child_env, median, sim_server, table, verdict

import moa
from moa.calls.limits import Limiter, RateLimit
from moa.eval.numeric import final_answer
from moa.gc_tuning import tune_gc_for_long_runs
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.results import Usage

#: CPU time of this process: the machine's other load slows the wall clock, not this
clock = time.process_time

FAN_IN_TARGET = 1.5
MCNEMAR_TARGET_S = 0.05
VALIDATION_TARGET = 1.5
#: the numeric grader on hostile answers: time per blank at the larger run over the smaller
BLANKS_TARGET = 1.5
#: per-request cost through a tpm limit, 50,000 window entries over 1,000
TPM_TARGET = 1.5
SUMMARY_TARGET_S = 10.0


# -- fan-in ------------------------------------------------------------------------------------------


class Drip:
    """A model that answers one call per event-loop turn, so a fan-in sees its inputs one by one."""

    local = False

    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        if len(self.waiting) == 1:
            asyncio.get_running_loop().call_soon(self._release)
        await fut
        return ModelReply("42", Usage(1, 1), request.model)

    def _release(self) -> None:
        self.waiting.popleft().set_result(None)
        if self.waiting:
            asyncio.get_running_loop().call_soon(self._release)

    async def aclose(self) -> None:
        return None


def fan_in_topology(k: int) -> moa.Topology:
    workers = [{"id": f"w{i}", "agent": "w"} for i in range(k)]
    vote = {"id": "vote", "reduce": "majority", "inputs": [f"w{i}" for i in range(k)]}
    return moa.Topology.model_validate(
        {"name": f"fan-in-{k}", "agents": {"w": {"model": "drip/w"}}, "nodes": [*workers, vote]}
    )


async def _fan_in_runs(t: moa.Topology, runs: int) -> float:
    async with moa.Runner(models={"drip/*": Drip()}) as runner:
        await t.run("q", runner=runner)  # warm-up: agent runtimes resolved once
        t0 = clock()
        for _ in range(runs):
            await t.run("q", runner=runner)
        return clock() - t0


def fan_in_us_per_node(sizes: tuple[int, int], nodes_per_round: int = 8192, rounds: int = 5) -> list[float]:
    """Per-node microseconds at each size, rounds alternating between them (the best of each, the
    figure a busy machine disturbs least)."""
    best = [float("inf")] * len(sizes)
    topologies = [fan_in_topology(k) for k in sizes]
    for _ in range(rounds):
        for j, (k, t) in enumerate(zip(sizes, topologies, strict=True)):
            runs = max(1, nodes_per_round // (k + 1))
            best[j] = min(best[j], asyncio.run(_fan_in_runs(t, runs)) / (runs * (k + 1)) * 1e6)
    return best


# -- McNemar -----------------------------------------------------------------------------------------


def binary_pairs(n: int, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    a = [float(rng.random() < 0.6) for _ in range(n)]
    b = [float(rng.random() < 0.55) for _ in range(n)]
    return a, b


def mcnemar_s(n: int) -> float:
    from moa.eval.stats import mcnemar

    a, b = binary_pairs(n)
    t0 = clock()
    mcnemar(a, b)
    return clock() - t0


# -- validation --------------------------------------------------------------------------------------


def window_dag(n: int, reads: int = 4) -> dict[str, Any]:
    """n nodes, each reading the ``reads`` nodes defined before it (so nearly every node has the
    same in-degree, and the per-node figure compares like with like), one agent per node."""
    ids = [f"n{i:05d}" for i in range(n)]
    agents = {f"a{i:05d}": {"model": f"openai/m{i:05d}"} for i in range(n)}
    nodes = [
        {"id": nid, "agent": f"a{i:05d}", "inputs": ids[max(0, i - reads) : i]} for i, nid in enumerate(ids)
    ]
    return {"name": f"window-{n}", "agents": agents, "nodes": nodes}


def validation_us_per_node(
    sizes: tuple[int, int], nodes_per_round: int = 8192, rounds: int = 5
) -> list[float]:
    """Per-node microseconds at each size, rounds alternating between them, the best of each."""
    best = [float("inf")] * len(sizes)
    data = [window_dag(n) for n in sizes]
    moa.Topology.model_validate(data[0])  # warm-up: pydantic and the template cache
    for _ in range(rounds):
        for j, (n, d) in enumerate(zip(sizes, data, strict=True)):
            reps = max(1, nodes_per_round // n)
            t0 = clock()
            for _ in range(reps):
                moa.Topology.model_validate(d)
            best[j] = min(best[j], (clock() - t0) / (reps * n) * 1e6)
    return best


# -- summary -----------------------------------------------------------------------------------------


def summary_s(n: int, rounds: int = 2000) -> float:
    from moa.experiment.analysis.summarize import summarize
    from moa.experiment.store.database import RunRow

    rng = random.Random(1)
    ids = [f"q{i}" for i in range(n)]
    setups = []
    for s, (name, p) in enumerate((("base", 0.6), ("moa-a", 0.65), ("moa-b", 0.58))):
        rows = {
            i: RunRow(s * n + j, name, i, "x", None, 0.001, 0.1 + rng.random(), 10, 5, 1, score=float(rng.random() < p))
            for j, i in enumerate(ids)
        }  # fmt: skip
        setups.append((name, s == 0, rows))
    categories = {i: f"c{j % 4}" for j, i in enumerate(ids)}
    t0 = clock()
    summarize(
        experiment="bench", evaluator={"name": "exact"}, setups=setups, item_ids=ids,
        categories=categories, rounds=rounds, seed=0,
    )  # fmt: skip
    return clock() - t0


# -- GC: a moa compare-like run in a fresh process, tuned vs default ---------------------------------


def write_experiment(folder: Path, url: str, items: int) -> Path:
    with (folder / "items.jsonl").open("w") as f:
        for i in range(items):
            f.write(
                json.dumps({"id": f"q{i}", "input": f"what is {i} plus one", "target": str(i + 1)}) + "\n"
            )
    agent = {"api_base": url, "max_tokens": 64, "transport": "openai-http"}
    base = {
        "name": "baseline",
        "kind": "single",
        "agent": "a",
        "agents": {"a": {"model": "openai/b", **agent}},
    }
    setup = {
        "name": "parallel-3", "kind": "parallel", "workers": ["a", "b", "c"], "aggregator": "agg",
        "agents": {n: {"model": f"openai/{n}", **agent} for n in ("a", "b", "c", "agg")},
    }  # fmt: skip
    (folder / "baseline.json").write_text(json.dumps(base))
    (folder / "setup.json").write_text(json.dumps(setup))
    exp = {
        "name": "gc", "dataset": "items.jsonl", "evaluator": "exact", "baseline": "baseline.json",
        "setups": ["setup.json"], "concurrency": 64,
    }  # fmt: skip
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[3])
from _common import CollectorClock
from moa.experiment import Experiment

with CollectorClock() as collector:
    t0 = time.process_time()
    Experiment.from_file(sys.argv[1], out=sys.argv[2], progress=False).run()
    print(time.process_time() - t0, collector.total_s)
"""


def compare_s(path: Path, out: Path, tuned: bool) -> tuple[float, float]:
    """(CPU seconds, of which in the collector) of one experiment run in a fresh process."""
    env = child_env()
    env["MOA_GC_TUNING"] = "on" if tuned else "off"
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(out), str(Path(__file__).resolve().parent)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"the experiment child failed: {p.stderr[-2000:]}")
    cpu, in_gc = p.stdout.split()[-2:]
    return float(cpu), float(in_gc)


def gc_runs(items: int, runs: int) -> dict[bool, tuple[float, float]]:
    """tuned -> median (CPU s, GC CPU s) over ``runs`` experiments each."""
    got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp, sim_server(0.0) as url:
        folder = Path(tmp)
        path = write_experiment(folder, url, items)
        for r in range(runs):
            # alternate which goes first, so a machine getting busier penalises both alike
            for tuned in (True, False) if r % 2 == 0 else (False, True):
                got[tuned].append(compare_s(path, folder / f"out-{r}-{tuned}", tuned))
    return {k: (median([c for c, _ in v]), median([g for _, g in v])) for k, v in got.items()}


def _hostile_answers(blanks: int) -> list[str]:
    """Answers with a long run of blanks where the grader's patterns once retried the whole run at
    each blank (a power, a unit or a symbol after it)."""
    gap = " " * blanks
    return ["1" + gap + "^2", r"\boxed{1" + gap + "cm^2 x}", "The answer is 2" + gap + r"\pi"]


def blanks_us_per_blank(sizes: tuple[int, int], rounds: int = 3) -> list[float]:
    """The numeric grader's CPU microseconds per blank on the hostile answers, at each run length."""
    out = []
    for n in sizes:
        answers = _hostile_answers(n)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for a in answers:
                final_answer(a)
            best = min(best, time.process_time() - t0)
        out.append(best / (len(answers) * n) * 1e6)
    return out


async def _through_limits(limiter: Limiter, requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        async with limiter.slot(1) as permit:
            await permit.renew()
            permit.sent()
            permit.settle(2)  # the reply's real total replaces the estimate in the tpm window
    return time.process_time() - start


def limits_us_per_request(sizes: tuple[int, int], requests: int = 2000, rounds: int = 3) -> list[float]:
    """Microseconds per request through ``rpm`` and ``tpm`` limits whose windows hold n entries."""
    out: list[float] = []
    for n in sizes:
        best = float("inf")
        for _ in range(rounds):
            limiter = Limiter("bench", RateLimit(rpm=1e12, tpm=10**12))
            asyncio.run(_through_limits(limiter, n))  # fills the window: its entries stay for a minute
            best = min(best, asyncio.run(_through_limits(limiter, requests)))
        out.append(best / requests * 1e6)
    return out


def growth_rows(
    name: str,
    what: str,
    sizes: tuple[int, int],
    measure: Callable[[tuple[int, int]], list[float]],
    target: float,
) -> tuple[list[list[object]], bool]:
    """Per-node cost at both sizes with the collector as it comes and as the entry points tune it;
    the target is on the tuned ratio (the default one shows what the collector adds)."""
    default = measure(sizes)
    with tune_gc_for_long_runs():
        tuned = measure(sizes)
    rows: list[list[object]] = []
    for label, (small, large) in (("GC default", default), ("GC tuned", tuned)):
        rows.append([f"{name} µs per node, {sizes[0]:,} {what}, {label}", small, "", ""])
        rows.append([f"{name} µs per node, {sizes[1]:,} {what}, {label}", large, "", ""])
    ratio = f"{name} ratio {sizes[1]:,} / {sizes[0]:,}"
    rows.append([f"{ratio}, GC default", default[1] / default[0], "", ""])
    ok = tuned[1] / tuned[0] <= target
    rows.append([f"{ratio}, GC tuned", tuned[1] / tuned[0], f"<= {target}", verdict(ok)])
    return rows, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fan-in", type=int, nargs=2, default=[32, 2048], metavar=("SMALL", "LARGE"))
    ap.add_argument("--mcnemar", type=int, nargs="+", default=[1000, 16_000, 100_000])
    ap.add_argument("--nodes", type=int, nargs=2, default=[32, 4096], metavar=("SMALL", "LARGE"))
    ap.add_argument("--summary", type=int, nargs="+", default=[4000, 100_000])
    ap.add_argument("--blanks", type=int, nargs=2, default=[30_000, 300_000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--tpm-window", type=int, nargs=2, default=[1000, 50_000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--compare-items", type=int, default=2000)
    ap.add_argument("--compare-runs", type=int, default=2)
    args = ap.parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(f"## linear everywhere (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
    rows: list[list[object]] = []
    ok: list[bool] = []

    fan_rows, fan_ok = growth_rows("fan-in", "inputs", tuple(args.fan_in), fan_in_us_per_node, FAN_IN_TARGET)
    rows += fan_rows
    ok.append(fan_ok)

    for n in args.mcnemar:
        s = mcnemar_s(n)
        last = n == max(args.mcnemar)
        if last:
            ok.append(s <= MCNEMAR_TARGET_S)
        rows.append([f"McNemar ms, {n:,} items", s * 1000, f"<= {MCNEMAR_TARGET_S * 1000:g}" if last else "",
                     verdict(ok[-1]) if last else ""])  # fmt: skip

    small, large = blanks_us_per_blank(tuple(args.blanks))
    ok.append(large / small <= BLANKS_TARGET)
    rows.append([f"numeric grader µs per blank, hostile answers, {args.blanks[0]:,} blanks", small, "", ""])
    rows.append([f"numeric grader µs per blank, hostile answers, {args.blanks[1]:,} blanks", large, "", ""])
    rows.append([f"numeric grader ratio {args.blanks[1]:,} / {args.blanks[0]:,}", large / small,
                 f"<= {BLANKS_TARGET}", verdict(ok[-1])])  # fmt: skip

    val_rows, val_ok = growth_rows(
        "validation", "nodes", tuple(args.nodes), validation_us_per_node, VALIDATION_TARGET
    )
    rows += val_rows
    ok.append(val_ok)

    for n in args.summary:
        s = summary_s(n)
        last = n == max(args.summary)
        if last:
            ok.append(s <= SUMMARY_TARGET_S)
        rows.append([f"summary s, {n:,} items x 3 setups, 2,000 rounds", s,
                     f"<= {SUMMARY_TARGET_S:g}" if last else "", verdict(ok[-1]) if last else ""])  # fmt: skip

    small, large = limits_us_per_request(tuple(args.tpm_window))
    ok.append(large / small <= TPM_TARGET)
    for n, us in zip(args.tpm_window, (small, large), strict=True):
        rows.append([f"rate limit µs per request, windows of {n:,} entries", us, "", ""])
    rows.append([f"rate limit ratio {args.tpm_window[1]:,} / {args.tpm_window[0]:,}", large / small,
                 f"<= {TPM_TARGET}", verdict(ok[-1])])  # fmt: skip

    if args.compare_items and args.compare_runs:
        by = gc_runs(args.compare_items, args.compare_runs)
        (cpu_t, gc_t), (cpu_d, gc_d) = by[True], by[False]
        label = f"experiment of {args.compare_items:,} items"
        rows.append(
            [f"{label}: CPU s, GC default (of which collecting)", f"{cpu_d:.2f} ({gc_d:.2f})", "", ""]
        )
        rows.append([f"{label}: CPU s, GC tuned (of which collecting)", f"{cpu_t:.2f} ({gc_t:.2f})", "", ""])
        ok.append(cpu_t / cpu_d < 1.0)
        rows.append(["experiment CPU ratio tuned / default", cpu_t / cpu_d, "< 1", verdict(ok[-1])])
    print(table(["figure", "value", "target", "verdict"], rows))
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
