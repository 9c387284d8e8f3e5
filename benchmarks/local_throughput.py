"""Tokens per second of moa's LocalModel against llama-cpp-python called directly.

Same GGUF (the bundled SmolLM2-135M unless --model-path), same prompt, same max_tokens, temperature
0, rounds alternating between the two paths in one process so both see the same machine state.
The target is moa >= 0.95 x direct: the engine thread, streaming and token counting must cost
next to nothing next to decoding.

Each direct round runs in a thread of its own, as moa's engine does. llama.cpp built with OpenMP
keeps a team of worker threads for every thread that has decoded; a team left on the main thread
slows every other thread's decoding (1.6-3x on 2 cores), which would measure the benchmark's own
interference rather than moa.

    python benchmarks/local_throughput.py [--rounds 5] [--max-tokens 128] [--model-path X.gguf] [--n-threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable

from moa.models.base import ModelRequest
from moa.models.local import LocalModel, default_n_threads, resolve_local_model

PROMPT = "Explain in a few paragraphs how a bicycle works, from the pedals to the wheels."


def in_fresh_thread(fn: Callable[[], tuple[int, float]]) -> tuple[int, float]:
    out: list[tuple[int, float]] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def direct_round(llama: object, max_tokens: int) -> tuple[int, float]:
    def once() -> tuple[int, float]:
        t0 = time.perf_counter()
        out = llama.create_chat_completion(  # type: ignore[attr-defined]
            messages=[{"role": "user", "content": PROMPT}], temperature=0.0, max_tokens=max_tokens, seed=1
        )
        return int(out["usage"]["completion_tokens"]), time.perf_counter() - t0

    return in_fresh_thread(once)


async def moa_round(model: LocalModel, max_tokens: int) -> tuple[int, float]:
    req = ModelRequest(
        model=model.name,
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0.0,
        max_tokens=max_tokens,
    )
    t0 = time.perf_counter()
    reply = await model.complete(req)
    return reply.usage.completion_tokens, time.perf_counter() - t0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--n-threads", type=int, default=default_n_threads(), help="default: moa's own default")
    args = ap.parse_args()

    from llama_cpp import Llama

    n_threads = args.n_threads
    params: dict[str, object] = {"n_threads": n_threads}
    if args.model_path:
        params["model_path"] = args.model_path
    model = resolve_local_model("local/smollm2-135m", params)
    direct = Llama(
        model_path=str(model.path),
        n_ctx=model.n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
    # warm both (load, first-call allocations) outside the measurement
    direct_round(direct, 8)
    await moa_round(model, 8)

    rates: dict[str, list[float]] = {"moa": [], "direct": []}
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"model {model.path.name}, n_ctx {model.n_ctx}, threads {n_threads}, max_tokens {args.max_tokens}")
    print(f"{'round':>5}  {'moa tok/s':>10}  {'direct tok/s':>12}  {'tokens (moa/direct)':>20}")
    for i in range(args.rounds):
        # alternate which goes first so neither always gets the warmer cache
        if i % 2 == 0:
            m = await moa_round(model, args.max_tokens)
            d = direct_round(direct, args.max_tokens)
        else:
            d = direct_round(direct, args.max_tokens)
            m = await moa_round(model, args.max_tokens)
        rates["moa"].append(m[0] / m[1])
        rates["direct"].append(d[0] / d[1])
        print(f"{i + 1:>5}  {rates['moa'][-1]:>10.1f}  {rates['direct'][-1]:>12.1f}  {f'{m[0]}/{d[0]}':>20}")
    # The median is the headline; the best round is less sensitive to other processes on the machine.
    for label, pick in (("median", statistics.median), ("best", max)):
        rm, rd = pick(rates["moa"]), pick(rates["direct"])
        verdict = "ok" if rm / rd >= 0.95 else "BELOW TARGET"
        print(
            f"{label:<6}  moa {rm:.1f} tok/s   direct {rd:.1f} tok/s   "
            f"ratio {rm / rd:.3f} (target >= 0.95: {verdict})"
        )
    await model.aclose()
    direct.close()


if __name__ == "__main__":
    asyncio.run(main())
