"""MATH rows (MATH, MATH-500, AIME and the sets in their shape): a ``problem`` with its ``answer``, or
MATH's own ``solution`` whose last boxed answer is the target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moa.eval._row_fields import RowFields, RowProblem, opt_str, prompt_text, required_str
from moa.eval.numeric import last_boxed

__all__ = ["is_math_row", "read_math_row"]


def is_math_row(row: Mapping[str, Any]) -> bool:
    """A MATH-style row: a `problem` with its `answer` or a `solution` (no `input`: that is generic)."""
    return "problem" in row and ("answer" in row or "solution" in row) and "input" not in row


def read_math_row(row: Mapping[str, Any]) -> RowFields:
    """A MATH row: the target is its `answer` (MATH-500, AIME), else its `solution`'s last boxed
    answer (MATH's own files), compared as MATH's graders compare them (``exact`` with
    ``extract_final``)."""
    problem = prompt_text(required_str(row, "problem"), "problem")
    solution = opt_str(row, "solution")
    answer = opt_str(row, "answer", numbers=True)
    if answer is None:
        answer = last_boxed(solution or "")
        if answer is None:
            raise RowProblem("`solution` has no \\boxed{...} answer: give the row an `answer`")
    if answer.strip().startswith(("\\boxed", "\\fbox", "$\\boxed")):
        # an answer written boxed (`\boxed{5}`): its content, as a reply's is read
        answer = last_boxed(answer) or answer
    if not answer.strip():
        raise RowProblem("`answer` is blank")
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
