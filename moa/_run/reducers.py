"""Non-LLM fan-in as plain functions: ``majority`` (most common normalised answer) and ``first``
(the first answer to arrive). Each takes the inputs' outputs in arrival order."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = ["REDUCERS", "first", "majority", "normalise"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalise(text: str, vote_on: str = "text") -> str:
    """The key answers are compared by: casefolded words, the last number, or the last line."""
    if vote_on == "last_number":
        nums = _NUMBER.findall(text)
        if not nums:
            return ""
        n: str = nums[-1].replace(",", "")
        try:
            return repr(float(n))
        except ValueError:
            return n
    if vote_on == "last_line":
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return " ".join(text.casefold().split()).strip(" .!\"'`")


def majority(outputs: Sequence[tuple[str, str]], vote_on: str = "text") -> str:
    """The most common answer; ties go to the answer that arrived first."""
    keys = [normalise(t, vote_on) for _, t in outputs]
    counts = Counter(k for k in keys if k)
    if not counts:
        return outputs[0][1] if outputs else ""
    top = max(counts.values())
    for (_, text), k in zip(outputs, keys, strict=True):
        if k and counts[k] == top:
            return text
    return outputs[0][1]  # unreachable: some key has the top count


def first(outputs: Sequence[tuple[str, str]], vote_on: str = "text") -> str:
    """The first answer to arrive."""
    return outputs[0][1] if outputs else ""


REDUCERS: dict[str, Callable[[Sequence[tuple[str, str]], str], str]] = {
    "majority": majority,
    "first": first,
}
