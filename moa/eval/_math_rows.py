"""MATH rows (MATH, MATH-500, AIME and the sets in their shape): a ``problem`` with its ``answer``, or
MATH's own ``solution`` whose last boxed answer is the target. AIME's files on the Hugging Face hub
capitalise them: ``Problem``, ``Answer``, ``Solution`` and ``ID`` (AIME 2024), or ``Question`` and
``Answer`` beside ``Year`` and ``Problem Number`` (AIME 1983-2024)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moa.eval._row_fields import RowFields, RowProblem, opt_str, prompt_text, required_str
from moa.eval.numeric import last_boxed

__all__ = ["is_math_row", "read_math_row"]


#: (problem, answer, solution) as MATH names them, as AIME 2024 on the hub does, and as AIME 1983-2024
#: does (whose `Question` is a MATH problem only beside its `Problem Number`)
_SPELLINGS = (("problem", "answer", "solution"), ("Problem", "Answer", "Solution"))
_AIME_ALL_YEARS = ("Question", "Answer", "Solution")


def _names(row: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The names of ``row``'s problem, answer and solution fields, or None when it is no MATH row."""
    if "input" in row:
        return None
    for names in _SPELLINGS:
        if names[0] in row and (names[1] in row or names[2] in row):
            return names
    if "Problem Number" in row and all(k in row for k in _AIME_ALL_YEARS[:2]):
        return _AIME_ALL_YEARS
    return None


def is_math_row(row: Mapping[str, Any]) -> bool:
    """A MATH-style row: a `problem` with its `answer` or a `solution` (no `input`: that is generic)."""
    return _names(row) is not None


def read_math_row(row: Mapping[str, Any]) -> RowFields:
    """A MATH row: the target is its `answer` (MATH-500, AIME), else its `solution`'s last boxed
    answer (MATH's own files), compared as MATH's graders compare them (``exact`` with
    ``extract_final``)."""
    problem_key, answer_key, solution_key = _names(row) or _SPELLINGS[0]
    if row.get(problem_key) is None:
        raise RowProblem(
            f"row has no `{problem_key}`: a MATH row needs `{problem_key}` and `{answer_key}` or `{solution_key}`"
        )
    if row.get(answer_key) is None and row.get(solution_key) is None:
        raise RowProblem(
            f"row has no `{answer_key}` or `{solution_key}`: a MATH row needs `{problem_key}` and either"
        )
    problem = prompt_text(required_str(row, problem_key), problem_key)
    solution = opt_str(row, solution_key)
    answer = opt_str(row, answer_key, numbers=True)
    if answer is None:
        answer = last_boxed(solution or "")
        if answer is None:
            raise RowProblem(f"`{solution_key}` has no \\boxed{{...}} answer: give the row an `{answer_key}`")
    if answer.strip().startswith(("\\boxed", "\\fbox", "$\\boxed")):
        # an answer written boxed (`\boxed{5}`): its content, as a reply's is read
        answer = last_boxed(answer) or answer
    if not answer.strip():
        raise RowProblem(f"`{answer_key}` is blank")
    meta: dict[str, Any] = {}
    if solution is not None:
        meta["solution"] = solution
    if isinstance(row.get("level"), str | int) and not isinstance(row.get("level"), bool):
        meta["level"] = row["level"]
    category = row.get("subject", row.get("type"))
    return RowFields(
        input=problem,
        target=answer.strip(),
        category=category if isinstance(category, str) and category else None,
        meta=meta,
    )
