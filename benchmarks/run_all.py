"""Run every benchmark in turn and print their tables (markdown, ready for the README's Performance section).

    python benchmarks/run_all.py            # the full set (about 15 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # fewer calls, rounds and items: a smoke run

Exit status 1 when any target is missed (each script prints which).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys

from _common import ROOT, child_env

FULL = {
    "critical_path.py": [],
    "throughput.py": [],
    "fanout_server.py": [],
    "experiment_scale.py": [],
    "startup.py": [],
    "accounting.py": [],
    "serve_throughput.py": [],
    "sandbox.py": [],
    "languages.py": [],
    "linear.py": [],
    "local_batch.py": ["--rounds", "5"],
}
QUICK = {
    "critical_path.py": ["--runs", "3"],
    "throughput.py": ["--rounds", "1", "--calls", "500", "--litellm-calls", "150"],
    "fanout_server.py": ["--rounds", "1", "--runs", "3"],
    "experiment_scale.py": ["--items", "1000"],
    "startup.py": ["--runs", "3", "--litellm-runs", "1"],
    "accounting.py": ["--calls", "500", "--books", "20000", "--rounds", "1"],
    "serve_throughput.py": ["--calls", "1000", "--rounds", "1"],
    "sandbox.py": ["--quick"],
    "languages.py": ["--quick"],
    "linear.py": ["--summary", "4000", "20000", "--compare-items", "500", "--compare-runs", "1"],
    "local_batch.py": ["--rounds", "1", "--samples", "3"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{_cores()} cores\n")  # fmt: skip
    failed = []
    for script, extra in (QUICK if args.quick else FULL).items():
        p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra], env=child_env())
        print()
        if p.returncode != 0:
            failed.append(script)
    if failed:
        print(f"targets missed in: {', '.join(failed)}")
    return 1 if failed else 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
