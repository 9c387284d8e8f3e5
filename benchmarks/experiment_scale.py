"""An experiment of 10,000 items x a 4-call topology (parallel-3 + aggregator) against a baseline
single model, at zero model latency: items/s and resident memory.

RSS is sampled when the calls made reach 1k, 5k and 10k items' worth (5 calls per item: 4 for the
setup, 1 for the baseline), then after scoring and the report, and the peak (``ru_maxrss``) is read
at the end. Results stream to the SQLite store as they finish, so memory must not grow with the
item count. Target: peak RSS <= 300 MB and flat across the samples.

    python benchmarks/experiment_scale.py [--items 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import sim_server, table, verdict

import moa
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.openai_http import OpenAIHTTPModel

CALLS_PER_ITEM = 5
TARGET_MB = 300.0


def rss_mb() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


class Sampling:
    """The direct backend, plus an RSS sample each time the calls reach a milestone."""

    local = False

    def __init__(self, milestones: list[int]) -> None:
        self.inner = OpenAIHTTPModel()
        self.calls = 0
        self.todo = sorted(m * CALLS_PER_ITEM for m in milestones)
        self.samples: list[tuple[int, float, float]] = []  # (items, seconds, rss MB)
        self.t0 = time.perf_counter()
        self.last = self.t0

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        reply = await self.inner.complete(request, on_token)
        self.calls += 1
        self.last = time.perf_counter()
        if self.todo and self.calls >= self.todo[0]:
            self.samples.append((self.todo.pop(0) // CALLS_PER_ITEM, self.last - self.t0, rss_mb()))
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()


def write_files(folder: Path, url: str, items: int, concurrency: int, store_text: bool = True) -> Path:
    with (folder / "items.jsonl").open("w") as f:
        for i in range(items):
            f.write(
                json.dumps(
                    {"id": f"q{i}", "input": f"question {i}: what is {i} plus one", "target": str(i + 1)}
                )
            )
            f.write("\n")
    agent = {"api_base": url, "max_tokens": 64}
    baseline = {
        "name": "baseline",
        "kind": "single",
        "agent": "a",
        "agents": {"a": {"model": "openai/base", **agent}},
    }
    setup = {
        "name": "parallel-3", "kind": "parallel", "workers": ["a", "b", "c"], "aggregator": "agg",
        "agents": {n: {"model": f"openai/{n}", **agent} for n in ("a", "b", "c", "agg")},
    }  # fmt: skip
    (folder / "baseline.json").write_text(json.dumps(baseline))
    (folder / "setup.json").write_text(json.dumps(setup))
    exp = {
        "name": "scale", "dataset": "items.jsonl", "evaluator": "exact", "baseline": "baseline.json",
        "setups": ["setup.json"], "concurrency": concurrency, "bootstrap_rounds": 200,
        "store_text": store_text,
    }  # fmt: skip
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


async def run(path: Path, out: Path, milestones: list[int]) -> tuple[Sampling, float]:
    from moa.experiment import Experiment

    backend = Sampling(milestones)
    runner = moa.Runner(models={"openai/*": backend})
    t0 = time.perf_counter()
    backend.t0 = t0
    try:
        await Experiment.from_file(path, out=out, runner=runner, progress=False).arun()
    finally:
        await runner.aclose()
        await backend.aclose()
    return backend, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-text", action="store_true", help="store_text: false (numbers only, no traces)")
    args = ap.parse_args()
    milestones = sorted({m for m in (1000, 5000, 10_000, args.items) if m <= args.items})
    start_rss = rss_mb()
    with tempfile.TemporaryDirectory() as tmp, sim_server(0.0) as url:
        folder = Path(tmp)
        path = write_files(folder, url, args.items, args.concurrency, store_text=not args.no_text)
        backend, total = run_result = asyncio.run(run(path, folder / "out", milestones))
        del run_result
        db = folder / "out" / "experiment.sqlite"
        db_mb = db.stat().st_size / 2**20 if db.exists() else 0.0
    answer_s = backend.last - backend.t0
    rows: list[list[object]] = [["before the experiment", 0, 0.0, start_rss]]
    rows += [[f"{n:,} items answered", n, s, mb] for n, s, mb in backend.samples]
    rows.append(["after scoring and the report", args.items, total, rss_mb()])
    peak = peak_mb()
    first, last = backend.samples[0][2], backend.samples[-1][2]
    growth = last - first
    print(f"## experiment scale ({args.items:,} items x (4-call setup + 1-call baseline), zero latency, "
          f"concurrency {args.concurrency})\n")  # fmt: skip
    print(table(["moment", "items", "seconds", "RSS MB"], rows))
    print()
    checks = [
        ["items/s (answer phase, both setups)", args.items / answer_s, "", ""],
        ["calls/s (answer phase)", backend.calls / answer_s, "", ""],
        ["items/s (whole experiment incl. scoring, report)", args.items / total, "", ""],
        ["peak RSS MB (ru_maxrss)", peak, f"<= {TARGET_MB:g}", verdict(peak <= TARGET_MB)],
        [f"RSS growth MB from {backend.samples[0][0]:,} to {backend.samples[-1][0]:,} items", growth,
         "flat (< 10% of the first sample)", verdict(growth < 0.1 * first)],
        ["store size MB", db_mb, "", ""],
    ]  # fmt: skip
    print(table(["figure", "value", "target", "verdict"], checks))
    return 0 if all(c[-1] in ("", "met") for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
