"""Non-LLM fan-in as plain functions: ``majority`` (most common normalised answer) and ``first``
(the first answer to arrive). ``majority`` takes the inputs' outputs in input order, so a tie goes
the same way every run; ``first`` takes them in arrival order, which is what it picks by."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from moa.eval.numeric import exact_numbers

__all__ = ["BY_ARRIVAL", "REDUCERS", "first", "majority", "normalise"]


#: what a model wraps an answer in without changing it: Markdown emphasis, quotes (curly ones
#: too), closing punctuation. `**Paris**`, `“Paris”` and `Paris.` are one vote.
_WRAPPING = " .,;:!?\"'`*_“”‘’"


def normalise(text: str, vote_on: str = "text") -> str:
    """The key answers are compared by: casefolded words, the last number, or the last line.

    The last number is read as the numeric evaluator reads numbers (``moa.eval.numeric``), so a
    vote and a score agree on what equals what: ``1,000``, ``1000.0`` and ``$1,000`` are one
    answer, ``−7`` (a Unicode minus) is -7, the ``15`` of ``12-15`` is not -15, and a number of
    more digits than are read is no vote."""
    if vote_on == "last_number":
        nums = exact_numbers(_last_number_span(text))
        # a float here is ±inf, a number of more digits than are read: it equals nothing
        return str(nums[-1]) if nums and not isinstance(nums[-1], float) else ""
    if vote_on == "last_line":
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return " ".join(text.casefold().split()).strip(_WRAPPING)


#: how far before its last digit the last number is looked for: a number longer than this has more
#: digits than ``moa.eval.numeric`` reads, so it is ±inf however much of it the span holds
_NUMBER_SPAN = 4096


def _last_number_span(text: str) -> str:
    """The end of ``text`` that holds its last number. Reading every number of a long answer (a
    reply of a million digits) as an exact fraction takes seconds, with the event loop blocked."""
    last_digit = max(text.rfind(d) for d in "0123456789")
    return text[max(0, last_digit - _NUMBER_SPAN) :] if last_digit >= 0 else ""


def majority(
    outputs: Sequence[tuple[str, str]], vote_on: str = "text", key: Callable[[str], str] | None = None
) -> str:
    """The most common answer; a tie goes to the answer earliest in ``outputs`` (the runner passes
    them in input order). ``key`` replaces ``normalise`` as what answers are compared by (typed
    output compares parsed values); an empty key is no vote."""
    keys = [normalise(t, vote_on) if key is None else key(t) for _, t in outputs]
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

#: the reducers that read the outputs in arrival order; the others read them in input order
BY_ARRIVAL = frozenset({"first"})
