"""Pairwise judging: the prompt, the strict verdict parser and the position-swap combination.

The judge must end its reply with exactly one verdict in double square brackets, one of
``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``. Letters are case-insensitive
and spaces inside the brackets are tolerated (``[[ a > b ]]``). The same verdict may appear more
than once (judges often restate it); two *different* bracketed verdicts, or none, raise
``MalformedReply``.
"""

from __future__ import annotations

import enum
import re

from moa.errors import MalformedReply

__all__ = ["JUDGE_PROMPT", "Verdict", "combine_swapped", "format_judge_prompt", "parse_verdict"]


class Verdict(enum.Enum):
    """The five-point pairwise scale; ``score`` is answer A's share of the win."""

    A_MUCH_BETTER = "A>>B"
    A_BETTER = "A>B"
    TIE = "A=B"
    B_BETTER = "B>A"
    B_MUCH_BETTER = "B>>A"

    @property
    def score(self) -> float:
        """A's score: 1, 0.75, 0.5, 0.25 or 0."""
        return _SCORES[self]

    def swapped(self) -> Verdict:
        """The same judgment seen with A and B exchanged."""
        return _SWAP[self]


_SCORES = {
    Verdict.A_MUCH_BETTER: 1.0,
    Verdict.A_BETTER: 0.75,
    Verdict.TIE: 0.5,
    Verdict.B_BETTER: 0.25,
    Verdict.B_MUCH_BETTER: 0.0,
}
_SWAP = {
    Verdict.A_MUCH_BETTER: Verdict.B_MUCH_BETTER,
    Verdict.A_BETTER: Verdict.B_BETTER,
    Verdict.TIE: Verdict.TIE,
    Verdict.B_BETTER: Verdict.A_BETTER,
    Verdict.B_MUCH_BETTER: Verdict.A_MUCH_BETTER,
}
# any double-bracketed token that looks like an attempt at a verdict, valid or not
_BRACKETED = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]", re.IGNORECASE)
_TOKEN_TO_VERDICT = {v.value: v for v in Verdict}

JUDGE_PROMPT = """\
You are an impartial judge. Compare two answers to the user's question below and decide which \
one is better. Judge correctness first, then helpfulness, completeness and clarity. Do not let \
the order of the answers, their length or their style influence you.

[Question]
{question}

[Answer A]
{answer_a}
{execution_a}
[Answer B]
{answer_b}
{execution_b}
First explain your reasoning briefly. Then end your reply with exactly one verdict on its own \
last line, written exactly in one of these five forms:
[[A>>B]] if A is much better, [[A>B]] if A is better, [[A=B]] if they are equally good, \
[[B>A]] if B is better, [[B>>A]] if B is much better.
"""


def format_judge_prompt(
    question: str,
    answer_a: str,
    answer_b: str,
    *,
    execution_a: str | None = None,
    execution_b: str | None = None,
) -> str:
    """``JUDGE_PROMPT`` filled in; execution results, when given, follow each answer."""

    def execution(text: str | None) -> str:
        return f"\n[Execution result]\n{text}\n" if text else ""

    return JUDGE_PROMPT.format(
        question=question,
        answer_a=answer_a,
        answer_b=answer_b,
        execution_a=execution(execution_a),
        execution_b=execution(execution_b),
    )


def parse_verdict(reply: str) -> Verdict:
    """The single verdict in ``reply``; ``MalformedReply`` when there is none, an invalid one
    (``[[A>A]]``, ``[[B<A]]``) or several different ones."""
    found: set[Verdict] = set()
    for m in _BRACKETED.finditer(reply):
        token = f"{m.group(1).upper()}{m.group(2)}{m.group(3).upper()}"
        verdict = _TOKEN_TO_VERDICT.get(token)
        if verdict is None:
            raise MalformedReply(f"judge reply has an invalid verdict `[[{token}]]`")
        found.add(verdict)
    if not found:
        head = " ".join(reply.split())[:80]
        raise MalformedReply(f"judge reply has no [[A>B]]-style verdict: {head!r}")
    if len(found) > 1:
        listed = ", ".join(f"[[{v.value}]]" for v in sorted(found, key=lambda v: -v.score))
        raise MalformedReply(f"judge reply has conflicting verdicts: {listed}")
    return found.pop()


def combine_swapped(v_ab: Verdict, v_ba_swapped: Verdict) -> float:
    """Score of the setup (A in the first judgment) from two judgments, the second made with the
    answers' positions swapped (the setup was B). Opposite directions mean the judge followed
    position, not quality: a tie (0.5). Otherwise the average of the two scores."""
    first = v_ab.score
    second = v_ba_swapped.swapped().score
    if (first - 0.5) * (second - 0.5) < 0:
        return 0.5
    return (first + second) / 2
