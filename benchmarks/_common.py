"""Shared by the benchmark scripts: the repo on sys.path, the loopback server subprocess, tables."""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# litellm's openai client insists on a key even for a local server; the sim server ignores it
os.environ.setdefault("MOA_BENCH_KEY", "sk-bench")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextmanager
def sim_server(latency_ms: float = 0.0) -> Iterator[str]:
    """A loopback OpenAI-compatible server in a subprocess; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "_sim.py"), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        yield printed_url(proc, "the sim server")
    finally:
        stop(proc, 10)


def printed_url(proc: subprocess.Popen[str], what: str) -> str:
    """The base URL a server process prints on its first line, or why it did not start."""
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise RuntimeError(f"{what} did not start (printed {url!r})")
    return url


def stop(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Terminate ``proc``, killed if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def drive(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> tuple[float, float]:
    """(calls/s, this process's CPU seconds per call) for ``n`` calls, ``concurrency`` at a time."""
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


class CollectorClock:
    """CPU time the cyclic garbage collector spends while this is entered (``gc.callbacks``; a pass
    runs in the thread that triggered it, so ``thread_time`` around it is its own cost)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.total_s += time.thread_time() - self._start

    def __enter__(self) -> CollectorClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (pasted as is into the README)."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 10 else f"{c:,.0f}"
    return str(c)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
