"""Whose CPU is the 32-way fan-out's overhead: the client's or the loopback server's?

``throughput.py`` measures the fan-out (32 proposers and an aggregator, two call latencies ideal)
against the benchmarks' Python sim server, which shares the machine's cores with the client. This
script measures the same fan-out, through moa and with bare aiohttp, against that server and
against a Go server (``benchmarks/gosim/main.go``, built into a temporary folder) that answers the
same reply after the same latency while spending almost no CPU. The two servers alternate, a
different one first each round, and the figures are medians over the rounds. If the overhead over
the ideal were the server's, it would vanish against the Go server; what is left is the client's.

Needs the Go toolchain (``go`` on PATH); without it the script says so and exits 0.

    python benchmarks/fanout_server.py [--rounds 5] [--runs 7] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import median, printed_url, sim_server, stop, table
from throughput import FANOUT, fanout

GO_SOURCE = Path(__file__).resolve().parent / "gosim" / "main.go"


@contextmanager
def go_server(latency_ms: float) -> Iterator[str]:
    """The Go server, built into a temporary folder and run in its own process; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="moa-gosim-") as tmp:
        binary = Path(tmp) / "gosim"
        env = {**os.environ, "GOCACHE": str(Path(tmp) / "cache"), "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "build", "-o", str(binary), str(GO_SOURCE)], check=True, env=env, cwd=tmp)
        proc = subprocess.Popen(
            [str(binary), "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True
        )
        try:
            yield printed_url(proc, "the Go server")
        finally:
            stop(proc, 10)


async def measure(
    urls: dict[str, str], rounds: int, runs: int, latency_s: float
) -> dict[str, list[tuple[float, ...]]]:
    figures: dict[str, list[tuple[float, ...]]] = {name: [] for name in urls}
    names = list(urls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f = await fanout(urls[name], runs, latency_s)
            figures[name].append((f.moa_wall, f.bare_wall, f.first_late, f.last_late))
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=7, help="fan-outs per contender per round")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    if shutil.which("go") is None:
        print("fanout_server.py: skipped, no Go toolchain (`go`) on PATH")
        return 0
    # as throughput.py does: the imported heap frozen, so no contender pays for walking it
    gc.collect()
    gc.freeze()
    load_before = os.getloadavg()[0]
    with go_server(args.latency_ms) as go_url, sim_server(args.latency_ms) as py_url:
        urls = {"Python sim server": py_url, "Go server": go_url}
        figures = asyncio.run(measure(urls, args.rounds, args.runs, args.latency_ms / 1000))
    load_after = os.getloadavg()[0]
    ideal = 2 * args.latency_ms / 1000
    rows = []
    for name, rounds in figures.items():
        moa_wall, bare_wall = median([x[0] for x in rounds]), median([x[1] for x in rounds])
        rows.append([
            name,
            f"{moa_wall / ideal:.3f} (+{(moa_wall - ideal) * 1e3:.1f} ms)",
            f"{bare_wall / ideal:.3f} (+{(bare_wall - ideal) * 1e3:.1f} ms)",
            f"{median([x[0] / x[1] for x in rounds]):.3f}",
            f"+{median([x[2] for x in rounds]) * 1e3:.1f} / +{median([x[3] for x in rounds]) * 1e3:.1f}",
        ])  # fmt: skip
    print(
        f"## {FANOUT}-way fan-out at {args.latency_ms:g} ms per call against two servers "
        f"(median of {args.rounds} rounds of {args.runs}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after)\n"
    )
    headers = (
        "server",
        "moa wall / ideal",
        "bare aiohttp wall / ideal",
        "moa / bare aiohttp",
        "bare aiohttp: first / last of 32 replies, ms late",
    )
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
