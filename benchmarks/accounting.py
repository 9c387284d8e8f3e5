"""The cost of accounting every attempt (``attempt_log``, unknown-usage worst cases, the usage
plausibility check, retry-budget deposits) against the call it accounts for.

Measured side by side in one process, alternating rounds: the booking of one attempt alone
(``moa.calls.attempt._book`` on a fresh record: the Attempt entry, the plausibility check, the budget
settle) vs one whole moa call over the direct path to a loopback server at zero latency (the
cheapest real call there is). Their ratio is the share of a call that accounting costs.

Target: booking <= 2% of a zero-latency direct call (within the run-to-run noise of that call).

    python benchmarks/accounting.py [--calls 2000] [--books 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import median, sim_server, table, verdict

import moa
from moa.calls.attempt import CallPlan, _book, _SendClock
from moa.calls.budget import Budget
from moa.calls.pricing import Price
from moa.models.base import ModelReply
from moa.models.openai_http import OpenAIHTTPModel
from moa.results import CallRecord, Usage

TARGET = 0.02
MESSAGES = [{"role": "user", "content": "what is the capital of france"}]


def single(url: str) -> moa.Topology:
    agent: dict[str, Any] = {
        "model": "openai/m",
        "api_base": url,
        "transport": "openai-http",
        "max_tokens": 64,
    }
    return moa.Topology.model_validate(
        {"name": "single", "kind": "single", "agent": "a", "agents": {"a": agent}}
    )


async def calls_per_s(t: moa.Topology, rt: moa.Runner, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await t.run("what is the capital of france", runner=rt, budget_usd=10.0)
    return n / (time.perf_counter() - t0)


def book_us(n: int) -> float:
    """Microseconds to book one successful attempt with a budget hold, as the attempt layer does."""
    price = Price.per_token(1e-6, 2e-6)
    plan = CallPlan("n", MESSAGES, 64, 200, None, None)
    reply = ModelReply("Paris", Usage(12, 3), "m", "stop")
    budget = Budget(1e9)
    t0 = time.perf_counter()
    for _ in range(n):
        rec = CallRecord(node="n", model="m")
        held = [(budget, budget.reserve(0.001))]
        clock = _SendClock(OpenAIHTTPModel, None)  # the direct path's clock: it reports sending
        clock.enter()
        _book(rec, clock, price, held, 0.001, plan, "ok", reply, None)
    return (time.perf_counter() - t0) / n * 1e6


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--books", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    call_us: list[float] = []
    booking_us: list[float] = []
    with sim_server() as url:
        t = single(url)
        async with moa.Runner() as rt:
            await calls_per_s(t, rt, 50)  # warm the pool
            for _ in range(args.rounds):
                call_us.append(1e6 / await calls_per_s(t, rt, args.calls))
                booking_us.append(book_us(args.books))
    call, book = median(call_us), median(booking_us)
    ratio = book / call
    print("## Accounting overhead per attempt\n")
    print(
        table(
            ["measure", "µs", "share of a call", "target"],
            [
                ["one moa call, direct path, zero latency", call, 1.0, ""],
                [
                    "booking one attempt (attempt_log, checks, budget)",
                    book,
                    ratio,
                    f"<= {TARGET} ({verdict(ratio <= TARGET)})",
                ],
            ],
        )
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
