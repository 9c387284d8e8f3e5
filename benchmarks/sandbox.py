"""Sandbox cost: Python programs per second under bubblewrap vs the fallback isolation, side by side.

Each program is a HumanEval-sized answer plus three assert tests, run through ``run_python_async``
(harness, verdict pipe, limits) the way the execution evaluator runs answers. The two isolations are
interleaved program by program, so machine load hits both alike; one by one (latency, median) and
4 at a time (throughput). A bare ``python -I -S -c pass`` process is shown for reference, and
``/bin/true`` through ``run_isolated`` isolates the cost of building the sandbox from Python's.
Target: bwrap adds <= 30 ms per Python program (median, one at a time).

    python benchmarks/sandbox.py [--programs 40] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import median, table, verdict

from moa.eval.isolation import Limits, isolation_available, run_isolated
from moa.eval.sandbox import run_python_async

TARGET_MS = 30.0
CONCURRENCY = 4
ANSWER = "def add(a, b):\n    '''Return a + b.'''\n    return a + b\n"
TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]


async def one(isolation: str) -> float:
    t0 = time.perf_counter()
    result = await run_python_async(ANSWER, tests=TESTS, isolation=isolation, timeout_s=60, cpu_s=60)
    elapsed = time.perf_counter() - t0
    if not result.passed or result.isolation != isolation:
        raise RuntimeError(f"{isolation}: {result.reason} (ran under {result.isolation})")
    return elapsed


async def sequential(modes: list[str], n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in modes}
    for m in modes:
        await one(m)  # warm: the bwrap probe, page cache
    for i in range(n):
        for m in modes if i % 2 == 0 else modes[::-1]:
            times[m].append(await one(m))
    return times


async def empty_program(modes: list[str], n: int) -> dict[str, float]:
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(n):
        for m in modes if i % 2 == 0 else modes[::-1]:
            t0 = time.perf_counter()
            outcome, _ = await run_isolated(["/bin/true"], files={}, limits=Limits(timeout_s=60), isolation=m)
            times[m].append(time.perf_counter() - t0)
            if outcome.returncode != 0:
                raise RuntimeError(f"{m}: /bin/true ended with {outcome.returncode}: {outcome.stderr}")
    return {m: median(t) for m, t in times.items()}


async def concurrent(isolation: str, n: int) -> float:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated() -> float:
        async with gate:
            return await one(isolation)

    t0 = time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(n)))
    return n / (time.perf_counter() - t0)


def bare_python(n: int) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
        out.append(time.perf_counter() - t0)
    return median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="10 programs")
    args = ap.parse_args()
    n = 10 if args.quick else args.programs
    works, why = isolation_available()
    if not works:
        print(f"## sandbox\n\nbubblewrap unavailable here ({why}): nothing to compare")
        return 0
    modes = ["fallback", "bwrap"]
    times = asyncio.run(sequential(modes, n))
    rates = {m: asyncio.run(concurrent(m, n)) for m in modes}
    seq = {m: median(times[m]) for m in modes}
    overhead_ms = (seq["bwrap"] - seq["fallback"]) * 1000
    bare = bare_python(max(3, n // 4))
    empty = asyncio.run(empty_program(modes, n))
    rows: list[list[object]] = [
        ["python -I -S -c pass (bare process)", bare * 1000, 1 / bare, "", ""],
        ["fallback (rlimits + audit hook)", seq["fallback"] * 1000, 1 / seq["fallback"], rates["fallback"], ""],
        ["bwrap (namespaces, tmpfs, uid)", seq["bwrap"] * 1000, 1 / seq["bwrap"], rates["bwrap"],
         f"+{overhead_ms:.1f} ms, <= {TARGET_MS:g}: {verdict(overhead_ms <= TARGET_MS)}"],
        ["/bin/true via run_isolated, fallback", empty["fallback"] * 1000, 1 / empty["fallback"], "", ""],
        ["/bin/true via run_isolated, bwrap", empty["bwrap"] * 1000, 1 / empty["bwrap"], "",
         f"+{(empty['bwrap'] - empty['fallback']) * 1000:.1f} ms"],
    ]  # fmt: skip
    print(f"## sandbox (median of {n} programs each, interleaved; {CONCURRENCY} at a time for the rate)\n")
    print(table(["isolation", "ms per program", "programs/s one at a time", f"programs/s x{CONCURRENCY}",
                 "bwrap overhead"], rows))  # fmt: skip
    return 0 if overhead_ms <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
