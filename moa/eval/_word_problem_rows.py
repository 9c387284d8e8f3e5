"""Math word problems split in two (SVAMP's ``Body``, ``Question``, ``Answer``; ASDiv's, in its
converted files ``body``, ``question``, ``answer``): the prompt is the body and the question joined
by a space, as the benchmarks' own code joins them, the target the number answered.

Read as a GSM8K row (``question`` + ``answer``), ASDiv's question was sent without the body that
holds its numbers; read as a generic row, SVAMP's was refused for want of an ``input``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from moa.eval._row_fields import RowFields, RowProblem, number_text, prompt_text, required_str

__all__ = ["is_word_problem_row", "read_word_problem_row"]

#: a masked number in the preprocessed folds' problems, its value in the row's `Numbers`
_PLACEHOLDER = re.compile(r"\bnumber\d+\b")
_WHOLE = re.compile(r"[-+]?\d+\.0+")

#: the two spellings of the fields: SVAMP's (and ASDiv's XML) capitalised, ASDiv's converted files lower case
_SPELLINGS = (("Body", "Question", "Answer"), ("body", "question", "answer"))


def _fields(row: Mapping[str, Any]) -> tuple[str, str, str] | None:
    if "input" in row:
        return None
    return next((names for names in _SPELLINGS if all(n in row for n in names)), None)


def _without_unit(answer: str) -> str:
    """ASDiv's answer without the unit it writes after it in brackets: `9 (apples)` is `9`."""
    # not a regex anchored at the end, which tries every start: quadratic on a long run of blanks
    text = answer.strip()
    opening = text.rfind("(")
    if text.endswith(")") and opening > 0 and ")" not in text[opening + 1 : -1]:
        return text[:opening].rstrip()
    return text


def is_word_problem_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is SVAMP's or ASDiv's: a body, a question and an answer."""
    return _fields(row) is not None


def read_word_problem_row(row: Mapping[str, Any]) -> RowFields:
    """``row`` as an item: the body and question as the prompt, the answer's number as the target."""
    names = _fields(row)
    if names is None:
        raise RowProblem("row has no `Body`, `Question` and `Answer`: a SVAMP or ASDiv row needs all three")
    body_key, question_key, answer_key = names
    body = prompt_text(required_str(row, body_key), body_key)
    question = prompt_text(required_str(row, question_key), question_key)
    if "Numbers" in row and _PLACEHOLDER.search(f"{body} {question}"):
        # SVAMP's and ASDiv-A's folds for training (`cv_svamp`, `cv_asdiv-a`): the numbers masked
        raise RowProblem(
            f"`{body_key}` holds placeholders (`number0`) for `Numbers`: a preprocessed fold, not the "
            "benchmark; use SVAMP.json (or ASDiv's own file), whose problems hold their numbers"
        )
    answer = row[answer_key]
    if answer is None:
        raise RowProblem(f"row has no `{answer_key}`")
    if isinstance(answer, float) and answer.is_integer() and abs(answer) < 1e16:
        target = str(int(answer))  # SVAMP's 51.0: the 51 a reply gives, under `exact` too
    elif isinstance(answer, int | float) and not isinstance(answer, bool):
        target = number_text(answer_key, answer)
    elif isinstance(answer, str):
        target = _without_unit(answer)
        if _WHOLE.fullmatch(target):  # a CSV's `51.0`, as SVAMP's JSON 51.0 reads
            target = target.split(".")[0]
        if not target:
            raise RowProblem(f"`{answer_key}` is blank")
    else:
        raise RowProblem(f"`{answer_key}` must be a number or a string, not {type(answer).__name__}")
    category = next((row[k] for k in ("Type", "solution_type", "Solution-Type") if row.get(k)), None)
    return RowFields(
        input=f"{body.strip()} {question.strip()}",
        target=target,
        category=category if isinstance(category, str) else None,
    )
