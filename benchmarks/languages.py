"""Programs per second per language: a MultiPL-E-sized answer compiled and run against its tests
through the execution evaluator, under bubblewrap and under the fallback isolation, side by side.

Two figures per language and isolation, each from programs run one at a time (the two isolations
interleaved, so machine load hits both alike):

* cold: compile + run, the compile cache cleared before every program (a new answer);
* warm: the run alone, the compile served from the cache (the same answer sampled again).

Reported as programs per second (1 / median seconds), with what bwrap adds to one warm run in
milliseconds (its fixed cost: namespaces, the tmpfs, the files copied in). Target: at most 100 ms in
every language. Cold figures are dominated by the compilers and vary with the machine's load.

    python benchmarks/languages.py [--programs 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import ROOT, median, table, verdict

from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async
from moa.eval.isolation import isolation_available
from moa.eval.languages import clear_compile_cache, find_toolchain

TARGET_MS = 100.0
FIXTURES = ROOT / "tests" / "eval" / "fixtures" / "languages"
LANGUAGES = ("c", "cpp", "go", "java", "javascript", "rust", "typescript")
ISOLATIONS = ("bwrap", "fallback")


def _problem(language: str) -> tuple[Item, str]:
    """The fixture's fib problem and its correct answer."""
    item = next(i for i in load_dataset(FIXTURES / f"{language}.jsonl") if i.id.endswith("_fib"))
    return item, str(item.meta["correct"])


async def _one(item: Item, answer: str, isolation: str, *, cold: bool) -> float:
    if cold:
        clear_compile_cache()
    t0 = time.perf_counter()
    score = await score_execution_async(answer, item, isolation=isolation, timeout_s=30)
    elapsed = time.perf_counter() - t0
    if score.value != 1.0:
        raise RuntimeError(f"{isolation}: {score.detail}")
    return elapsed


async def _measure(language: str, isolations: tuple[str, ...], programs: int) -> dict[tuple[str, str], float]:
    item, answer = _problem(language)
    times: dict[tuple[str, str], list[float]] = {(i, m): [] for i in isolations for m in ("cold", "warm")}
    for isolation in isolations:  # warm-up: toolchain discovery, Go's shared build cache
        await _one(item, answer, isolation, cold=True)
    for _ in range(programs):
        for isolation in isolations:
            times[(isolation, "cold")].append(await _one(item, answer, isolation, cold=True))
            times[(isolation, "warm")].append(await _one(item, answer, isolation, cold=False))
    return {key: 1.0 / median(values) for key, values in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 programs per language and isolation")
    args = ap.parse_args()
    programs = 2 if args.quick else args.programs
    bwrap, why = isolation_available()
    isolations = ISOLATIONS if bwrap else ("fallback",)
    print(
        f"## Languages: programs per second (cold: compile + run; warm: run, compile cached), n={programs}\n"
    )
    if not bwrap:
        print(f"bwrap unavailable here ({why}): fallback only\n")
    rows = []
    ok = True
    for language in LANGUAGES:
        missing = find_toolchain(language)
        if isinstance(missing, str):
            rows.append([language, missing, "", "", "", ""])  # reported, not measured
            continue
        rate = asyncio.run(_measure(language, isolations, programs))
        added = 1000 * (1 / rate[("bwrap", "warm")] - 1 / rate[("fallback", "warm")]) if bwrap else 0.0
        ok = ok and added <= TARGET_MS
        rows.append(
            [
                language,
                *(
                    f"{rate[(i, m)]:.2f}" if (i, m) in rate else "-"
                    for m in ("cold", "warm")
                    for i in ISOLATIONS
                ),
                f"{added:+.0f}" if bwrap else "-",
            ]
        )
    headers = [
        "language",
        "cold/s bwrap",
        "cold/s fallback",
        "warm/s bwrap",
        "warm/s fallback",
        "bwrap ms/run",
    ]
    print(table(headers, rows))
    print(f"\nTarget: bwrap adds <= {TARGET_MS:.0f} ms to a run in every language: {verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
