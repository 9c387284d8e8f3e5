"""Self-MoA on the embedded model: samples decoded in one llama.cpp batch vs one after another.

Two loaded copies of local/smollm2-135m: ``n_seq_max: N`` (calls running at once share each decode
step) and ``n_seq_max: 1`` (the serialised option: one sequence at a time, the others queue).

1. Samples. N sampled calls (temperature 0.7, the same prompt, seeds fixed per call) sent at once
   to each copy. A seeded call draws the same tokens batched or alone (tests/test_local_batch.py),
   so both sides do exactly the same work and the ratio of their tokens/s is the batching gain.
   Each round measures both, the order alternating, and takes their ratio within the round: the
   shared machine drifts between rounds (a whole run gave 1.02 on one day and 1.34 on another), so
   the gain is the median of the rounds' ratios, printed with their range.
2. Self-MoA. The whole topology (N samples, then an aggregator at temperature 0) on each copy:
   wall time / critical path, where the critical path adds service times (a call's latency, without
   the time it queued for the model). Serialised samples show their queue as a ratio well above 1.

Target: batched >= 1.2 x serialised tokens/s for 3 samples on 2 cores. The gain is what one
llama.cpp step of k sequences costs against k steps of one, which depends on the CPU, on what else
runs (the load average is printed before and after) and on the weights' quantization: llama.cpp's
CPU backend has matrix kernels that share work across a batch's tokens for Q4_0, Q4_K and a few
other types, not for the bundled file's Q4_1. ``--requantize q4_0`` (or ``q4_k_m``, ``q8_0``)
measures a copy of the bundled weights requantized with llama.cpp into a temporary directory.

    python benchmarks/local_batch.py [--rounds 5] [--samples 3 4] [--max-tokens 128] [--n-threads N]
                                     [--model-path X.gguf | --requantize q4_0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import median, table, verdict

import moa
from moa.models.base import ModelRequest
from moa.models.local import LocalModel, default_n_threads, resolve_local_model

MODEL = "local/smollm2-135m"
PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."
TARGET = 1.2
QUANTS = ("q4_0", "q4_k_m", "q8_0")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


async def samples_round(model: LocalModel, n: int, max_tokens: int, seed: int) -> tuple[int, float, float]:
    """N seeded samples sent at once: (completion tokens, seconds, mean sequences per decode)."""
    requests = [
        ModelRequest(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            temperature=0.7,
            max_tokens=max_tokens,
            params={"seed": seed + i},
        )
        for i in range(n)
    ]
    before = model.batch_stats
    t0 = time.perf_counter()
    replies = await asyncio.gather(*(model.complete(r) for r in requests))
    seconds = time.perf_counter() - t0
    after = model.batch_stats
    width = 1.0
    if before is not None and after is not None and after.steps > before.steps:
        width = (after.sequence_steps - before.sequence_steps) / (after.steps - before.steps)
    return sum(r.usage.completion_tokens for r in replies), seconds, width


def requantize(kind: str, into: Path) -> str:
    """The bundled GGUF requantized by llama.cpp to ``kind``; its path."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)  # quantizing logs every tensor
    ftype = {
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    }[kind]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    out = into / f"smollm2-135m-{kind}.gguf"
    source = resolve_local_model(MODEL, {}).path
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not requantize {source} to {kind}")
    return str(out)


def self_moa(n: int, params: dict[str, Any], max_tokens: int) -> moa.Topology:
    return moa.build.self_moa(
        moa.build.agent(MODEL, temperature=0.7, max_tokens=max_tokens, params=params),
        samples=n,
        aggregator=moa.build.agent(MODEL, temperature=0.0, max_tokens=64, params=params),
        name=f"self-moa-{n}",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n-threads", type=int, default=default_n_threads(), help="default: moa's own default")
    weights = ap.add_mutually_exclusive_group()
    weights.add_argument("--model-path", default=None, help="another GGUF file (default: the bundled Q4_1)")
    weights.add_argument("--requantize", choices=QUANTS, help="the bundled weights requantized to this type")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = requantize(args.requantize, Path(tmp)) if args.requantize else args.model_path
        return measure(args, path)


def measure(args: argparse.Namespace, model_path: str | None) -> int:
    base: dict[str, Any] = {"n_threads": args.n_threads}
    if model_path:
        base["model_path"] = model_path

    weights = Path(model_path).name if model_path else "bundled Q4_1"
    print(f"load average before: {load_average()}  (cores: {os.cpu_count()}, threads: {args.n_threads})")
    print(f"weights: {weights}")
    sample_rows: list[list[object]] = []
    run_rows: list[list[object]] = []
    ratios: dict[int, list[float]] = {}
    for n in args.samples:
        models = {
            "batched": resolve_local_model(MODEL, {**base, "n_seq_max": n}),
            "serialised": resolve_local_model(MODEL, {**base, "n_seq_max": 1}),
        }
        for m in models.values():  # load the weights and warm the contexts outside the measurement
            asyncio.run(samples_round(m, n, 8, 0))
        tps: dict[str, list[float]] = {k: [] for k in models}
        widths: dict[str, list[float]] = {k: [] for k in models}
        tokens: dict[str, list[int]] = {k: [] for k in models}
        for r in range(args.rounds):
            # alternate which goes first so neither always meets the same machine state
            for mode in sorted(models, reverse=r % 2 == 1):
                count, seconds, width = asyncio.run(samples_round(models[mode], n, args.max_tokens, 100 * r))
                tps[mode].append(count / seconds)
                widths[mode].append(width)
                tokens[mode].append(count)
        if tokens["batched"] != tokens["serialised"]:
            print(f"note: {n} samples drew different token counts batched and serialised: {tokens}")
        for mode in models:
            sample_rows.append(
                [n, mode, round(median(tps[mode]), 1), round(median(widths[mode]), 2), median(tokens[mode])]
            )
        ratios[n] = sorted(b / s for b, s in zip(tps["batched"], tps["serialised"], strict=True))

        for mode, n_seq_max in (("batched", n), ("serialised", 1)):
            result = self_moa(n, {**base, "n_seq_max": n_seq_max}, args.max_tokens).run_sync(PROMPT)
            samples = [c for c in result.calls if c.node.startswith("sample")]
            run_rows.append(
                [
                    n,
                    mode,
                    result.latency_s,
                    result.critical_path_s,
                    round(result.latency_s / result.critical_path_s, 2),
                    sum(c.queued_s for c in samples),
                    round(median([c.usage.completion_tokens / c.latency_s for c in samples]), 1),
                ]
            )

    print("\nSamples sent at once (same seeds, same tokens both ways; medians of rounds):\n")
    print(table(["samples", "mode", "tok/s", "sequences per decode", "tokens"], sample_rows))
    print("\nSelf-MoA runs (one each; the critical path counts service time, not queueing):\n")
    print(
        table(
            [
                "samples",
                "mode",
                "wall s",
                "critical path s",
                "wall / critical",
                "samples queued s",
                "per-sample tok/s (records)",
            ],
            run_rows,
        )
    )
    print()
    ok = True
    for n, rounds in ratios.items():
        ratio = median(rounds)
        line = (
            f"{n} samples: batched / serialised tok/s = {ratio:.2f} "
            f"(median of {len(rounds)} rounds' ratios; rounds {rounds[0]:.2f}-{rounds[-1]:.2f})"
        )
        if n == 3:
            ok = ratio >= TARGET
            line += f" (target >= {TARGET}: {verdict(ok)})"
        print(line)
    print(f"load average after: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
