"""Start-up cost: ``import moa``, ``moa --help`` and ``moa validate`` against ``import litellm``.

Each figure is the median of several fresh interpreters. Imports are timed inside the child (from
just before the import statement to just after), so interpreter start-up is not counted; the CLI
commands are timed as whole processes, with a bare ``python -c pass`` shown for reference.
Target: ``import moa`` <= 0.1 x ``import litellm``.

    python benchmarks/startup.py [--runs 7] [--litellm-runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import ROOT, child_env, median, table, verdict

TARGET = 0.1
TIMED = "import time; t0 = time.perf_counter(); {stmt}; print(time.perf_counter() - t0)"
CLI = "import sys; from moa.cli import main; sys.argv = ['moa', *sys.argv[1:]]; sys.exit(main())"


def import_time(stmt: str, runs: int) -> float:
    out = []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", TIMED.format(stmt=stmt)], capture_output=True, text=True,
                           env=child_env(), cwd=ROOT, check=True)  # fmt: skip
        out.append(float(p.stdout.strip().splitlines()[-1]))
    return median(out)


def process_time(argv: list[str], runs: int) -> float | None:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, *argv], capture_output=True, env=child_env(), cwd=ROOT)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            return None
    return median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--litellm-runs", type=int, default=3)
    args = ap.parse_args()
    lit = import_time("import litellm", args.litellm_runs)
    moa_bare = import_time("import moa", args.runs)
    moa_used = import_time("import moa; moa.Topology; moa.Runner; moa.load", args.runs)
    python = process_time(["-c", "pass"], args.runs)
    presets = sorted((ROOT / "topologies").glob("*.yaml"))
    cli_help = process_time(["-c", CLI, "--help"], args.runs)
    cli_validate = process_time(["-c", CLI, "validate", str(presets[0])], args.runs) if presets else None
    ratio = moa_bare / lit
    rows: list[list[object]] = [
        ["import litellm (in process)", lit * 1000, 1.0, ""],
        ["import moa (in process)", moa_bare * 1000, ratio, f"<= {TARGET}: {verdict(ratio <= TARGET)}"],
        ["import moa + Topology, Runner, load", moa_used * 1000, moa_used / lit, ""],
        ["python -c pass (whole process)", (python or 0) * 1000, (python or 0) / lit, ""],
    ]
    for label, t in (
        ("moa --help (whole process)", cli_help),
        ("moa validate PRESET (whole process)", cli_validate),
    ):
        rows.append(
            [label, t * 1000, t / lit, ""]
            if t is not None
            else [label, "n/a", "n/a", "moa.cli failed or missing"]
        )
    print(f"## start-up (median of {args.runs} fresh interpreters; litellm: {args.litellm_runs})\n")
    print(table(["what", "ms", "x import litellm", "target"], rows))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
