"""Question-answering rows with several accepted answers (Natural Questions' NQ-open, TriviaQA,
SQuAD, WebQuestions, a plain ``question`` + ``answer``) read as one shape: the prompt, and every
accepted answer in the row's order, duplicates removed.

A row is recognised (``is_qa_row``) by a ``question`` whose ``answer`` is a list (NQ-open) or an
object with ``value`` or ``aliases`` (TriviaQA), or whose ``answers`` is SQuAD's ``{text: [...],
answer_start: [...]}``, the original SQuAD's ``[{text, answer_start}]`` or a list of strings
(WebQuestions); a row with ``input`` stays generic, and a ``question`` with a string ``answer`` is
GSM8K's (forced ``qa``, it is one accepted answer). SimpleQA's rows (``problem``, ``answer``, and
``metadata`` with its ``topic`` and ``answer_type``, in its CSV the text of a Python dict) are QA
rows too: the ``problem`` is the question, the ``answer`` the one accepted answer, the topic the
category (read as MATH rows, their answers were held to MATH's equivalences). A ``question`` whose
``answer`` is a bool (BoolQ, StrategyQA; beside a ``passage``, BoolQ's, also the text ``True`` of
a CSV, or SuperGLUE's ``label``, a bool or 0 or 1) is a yes/no question, its accepted answer ``yes``
or ``no``; a number 0 or 1 as the ``answer`` beside a ``passage`` is refused naming BoolQ. DROP is
refused (``unread_layout``): its answers may be several spans together, which no accepted answer
stands for; so is TruthfulQA's generation task (``best_answer``, ``correct_answers``,
``incorrect_answers``), whose replies are judged against both lists. The prompt is the question; a
SQuAD row's (one with a ``context``, BoolQ's with a ``passage``) is that text, a blank line and the
question, each without surrounding whitespace. A row with no answer, a blank one or one that is not
a string is refused naming the field.

The benchmarks' own files hold one JSON object (SQuAD's ``{"data": [{"title", "paragraphs":
[{"context", "qas": [...]}]}], "version"}``, TriviaQA's ``{"Data": [{"Question", "QuestionId",
"Answer": {"Value", "Aliases"}}], "Version"}``): ``document_questions`` reads it as a row per question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moa.safe_read import lone_surrogate, parse_json

__all__ = [
    "QARow",
    "QARowError",
    "document_questions",
    "is_qa_row",
    "is_simpleqa_row",
    "read_qa_row",
    "unread_layout",
]

#: TriviaQA's test split on the Hugging Face hub: every answer's value, its answers held back
_HIDDEN = "<unk>"
#: the topic in SimpleQA's CSV metadata, the text of a Python dict: `{'topic': 'Art', ...}`
_TOPIC = re.compile(r"""['"]topic['"]\s*:\s*(?:'([^']*)'|"([^"]*)")""")


#: DROP's answers are sets of spans, numbers or dates, scored by DROP's own F1 over them
_DROP = (
    "{what}: moa does not read DROP, whose answer may be several spans together, scored by DROP's "
    "own F1; write generic rows (`input`: the passage and the question, `target`)"
)


#: TruthfulQA's generation task is scored by a model judging a reply against both lists of answers
_TRUTHFULQA_GENERATION = (
    "{what}: TruthfulQA's generation task judges a reply against its correct and incorrect answers, "
    "which no match with one accepted answer stands for; use its multiple-choice rows (`mc1_targets`: "
    "the hub's multiple_choice config, or mc_task.json), or generic rows (`input`: the question) "
    "under a pairwise judge"
)


class QARowError(ValueError):
    """A QA row that cannot be read: the reason names the field."""


@dataclass(frozen=True, slots=True)
class QARow:
    """A QA row: the prompt to send and the accepted answers (the first is the target)."""

    prompt: str
    answers: tuple[str, ...]
    #: the category the row names in a field of its own layout (SimpleQA's topic), else None
    category: str | None = None


def is_qa_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` has the fields of one of the QA layouts."""
    if is_simpleqa_row(row):
        return True
    if "input" in row or "question" not in row:
        return False
    answer = row.get("answer")
    if isinstance(answer, list | bool) or _json_text(answer, "["):  # a CSV cell holds the list as JSON
        return True
    if "passage" in row and (row.get("label") is not None or _truth_text(answer) is not None):
        return True  # SuperGLUE's BoolQ (`label`), or BoolQ written to a CSV (`answer` the text `True`)
    if _is_strategyqa(row) and _truth_text(answer) is not None:
        return True  # StrategyQA written to a CSV
    if "passage" in row and answer in (0, 1):
        return True  # refused by `read_qa_row` as BoolQ's, not as GSM8K's
    if isinstance(answer, Mapping) and ("value" in answer or "aliases" in answer):
        return True
    answers = row.get("answers")
    return isinstance(answers, list | Mapping) or _json_text(answers, "[{")


def is_simpleqa_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is SimpleQA's: `problem`, `answer`, and `metadata` naming its `answer_type`."""
    if "input" in row or "question" in row or "problem" not in row or "answer" not in row:
        return False
    meta = row.get("metadata")
    if isinstance(meta, Mapping):
        return "answer_type" in meta
    return isinstance(meta, str) and "answer_type" in meta


def _simpleqa_topic(meta: Any) -> str | None:
    if isinstance(meta, Mapping):
        topic = meta.get("topic")
    elif isinstance(meta, str) and (found := _TOPIC.search(meta)):
        topic = found.group(1) if found.group(1) is not None else found.group(2)
    else:
        topic = None
    return topic.strip() or None if isinstance(topic, str) else None


def unread_layout(row: Mapping[str, Any]) -> str | None:
    """Why ``row`` (DROP's, TruthfulQA's generation task's) is refused rather than read as a QA row,
    or None."""
    if "input" in row:
        return None
    if "answers_spans" in row and "question" in row:
        return _DROP.format(what="DROP's rows (`passage`, `question`, `answers_spans`)")
    if "question" in row and "best_answer" in row and "incorrect_answers" in row:
        return _TRUTHFULQA_GENERATION.format(what="TruthfulQA's generation rows (`best_answer`)")
    if "Question" in row and "Best Answer" in row and "Incorrect Answers" in row:
        return _TRUTHFULQA_GENERATION.format(what="TruthfulQA.csv (`Best Answer`)")
    values = list(row.values())
    if values and all(isinstance(v, Mapping) and "qa_pairs" in v for v in values):
        return _DROP.format(what="DROP's own file (passages holding `qa_pairs`)")
    return None


def _json_text(value: Any, opening: str) -> bool:
    """Whether ``value`` is text that opens a JSON list or object (``opening``): a CSV cell's."""
    return isinstance(value, str) and value.lstrip()[:1] in tuple(opening)


def read_qa_row(row: Mapping[str, Any]) -> QARow:
    """``row`` read as a QA item; ``QARowError`` naming the field otherwise."""
    if is_simpleqa_row(row):
        prompt = _text(row["problem"], "problem").strip()
        answer, where = _string(row["answer"], "answer")
        if not answer.strip():
            raise QARowError(f"`{where}` is blank")
        return QARow(prompt, (answer.strip(),), _simpleqa_topic(row.get("metadata")))
    if row.get("question") is None:
        raise QARowError("row has no `question`: a QA row needs `question` and `answer` or `answers`")
    prompt = _text(row["question"], "question").strip()
    # SQuAD's `context` (the passage the answer is a span of), BoolQ's `passage`
    passage = next((k for k in ("context", "passage") if row.get(k) is not None), None)
    if passage is not None:
        prompt = f"{_text(row[passage], passage).strip()}\n\n{prompt}"
    # BoolQ's and StrategyQA's yes/no questions (SuperGLUE's BoolQ: `label`): a reply says yes or no
    truth = _yes_no(row, beside_passage=passage == "passage")
    if truth is not None:
        return QARow(prompt, ("yes" if truth else "no",))
    found: list[tuple[str, str]] = []
    for key in ("answer", "answers"):
        if row.get(key) is not None:
            found += _listed(row[key], key)
    if not found:
        have = [k for k in ("answer", "answers") if k in row]
        if not have:
            raise QARowError("row has no `answer` or `answers`: a QA row needs its accepted answers")
        # SQuAD 2.0's unanswerable questions: `answers: {text: [], answer_start: []}`
        raise QARowError(
            f"`{have[-1]}` is empty: a QA row needs at least one accepted answer "
            "(unanswerable questions, as in SQuAD 2.0, cannot be scored)"
        )
    answers: dict[str, None] = {}  # ordered, and a set: a row of 100,000 aliases is not 10^10 steps
    for text, where in found:
        if not text.strip():
            raise QARowError(f"`{where}` is blank")
        answers.setdefault(text.strip())
    return QARow(prompt, tuple(answers))


def _truth_text(value: Any) -> bool | None:
    """A CSV cell's ``true`` or ``false`` (any case), else None."""
    text = value.strip().lower() if isinstance(value, str) else None
    return {"true": True, "false": False}.get(text) if text is not None else None


def _is_strategyqa(row: Mapping[str, Any]) -> bool:
    """A StrategyQA row: its `facts` and `decomposition` beside the question (no other layout has
    them), so its CSV's `answer` text `True` is a truth, not the word."""
    return "facts" in row and "decomposition" in row


def _yes_no(row: Mapping[str, Any], *, beside_passage: bool) -> bool | None:
    """The truth a yes/no row's answer holds, or None when the row is no yes/no question: a bool
    `answer` (BoolQ, StrategyQA); beside a `passage` (BoolQ), an `answer` written `True` (a CSV) or
    SuperGLUE's `label`, a bool or, on the Hugging Face hub, 0 or 1."""
    answer = row.get("answer")
    if isinstance(answer, bool):
        return answer
    if _is_strategyqa(row):
        return _truth_text(answer)
    if not beside_passage:
        return None
    if answer is not None:
        if answer in (0, 1):
            # a count as well as a truth: the author says which
            raise QARowError(
                f"`answer` is the number {answer} beside a `passage`: a BoolQ answer is true or false "
                "(SuperGLUE's `label`: 0 or 1); any other answer is text"
            )
        return _truth_text(answer)
    label = row.get("label")
    if label is None:
        return None
    if isinstance(label, bool):
        return label
    value = label.strip() if isinstance(label, str) else label
    if value in (0, 1, "0", "1"):
        return value in (1, "1")
    if _truth_text(value) is not None:
        return _truth_text(value)
    if value in (-1, "-1"):
        raise QARowError("`label` is -1: BoolQ's test split holds back its answers; use its validation split")
    raise QARowError(f"`label` must be true or false, or 0 or 1 (BoolQ's), not {_shown(label)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise QARowError(f"`{where}` must be a string, not {type(value).__name__}")
    if not value.strip():
        raise QARowError(f"`{where}` is blank")
    return value


def _string(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise QARowError(f"`{where}` must be a string, not {type(value).__name__}")
    return value, where


def _listed(value: Any, key: str) -> list[tuple[str, str]]:
    """The answers ``value`` holds, each with the field it came from (named when it is bad)."""
    if _json_text(value, "[{"):
        # a CSV cell, or an export that wrote the list as text; pandas' `{'text': array([...])}` is
        # refused here rather than taken for one answer that no reply can match
        text = value
        try:
            value = parse_json(text)
        except ValueError as e:  # json.JSONDecodeError included
            reason = str(e).splitlines()[0]
            raise QARowError(
                f"`{key}` is text opening a list or an object, not valid JSON: {reason}"
            ) from None
        if problem := lone_surrogate(text, value):
            raise QARowError(problem)
    if isinstance(value, str):
        return [(value, key)]
    if isinstance(value, list):
        # SQuAD's original files: `[{"text": ..., "answer_start": ...}]`
        return [
            _string(v["text"], f"{key}[{i}].text")
            if isinstance(v, Mapping) and "text" in v
            else _string(v, f"{key}[{i}]")
            for i, v in enumerate(value)
        ]
    if isinstance(value, Mapping) and "text" in value:  # SQuAD on the Hugging Face hub
        texts = value["text"]
        if isinstance(texts, str):
            return [(texts, f"{key}.text")]
        if not isinstance(texts, list):
            raise QARowError(f"`{key}.text` must be a list of strings, not {type(texts).__name__}")
        return [_string(t, f"{key}.text[{i}]") for i, t in enumerate(texts)]
    if isinstance(value, Mapping) and ("value" in value or "aliases" in value):  # TriviaQA
        aliases = value.get("aliases") or []
        if not isinstance(aliases, list):
            raise QARowError(f"`{key}.aliases` must be a list of strings, not {type(aliases).__name__}")
        if value.get("value") == _HIDDEN and not aliases:
            raise QARowError(
                f"`{key}.value` is `{_HIDDEN}`: TriviaQA's test split holds back its answers; use its "
                "validation split"
            )
        head = [] if value.get("value") is None else [_string(value["value"], f"{key}.value")]
        return head + [_string(a, f"{key}.aliases[{i}]") for i, a in enumerate(aliases)]
    if isinstance(value, Mapping):
        raise QARowError(
            f"`{key}` must be a string, a list of strings, or an object with `text` (SQuAD) or "
            "`value` and `aliases` (TriviaQA)"
        )
    raise QARowError(f"`{key}` must be a string or a list of strings, not {type(value).__name__}")


def document_questions(row: Mapping[str, Any]) -> list[dict[str, Any] | str] | None:
    """The questions of SQuAD's or TriviaQA's own file, one row each (or, for a part that is not
    one, why), or None when ``row`` is not such a file."""
    if "input" in row:  # a generic row may carry `data` and `version` of its own
        return None
    if _all_hold(row.get("data"), "paragraphs") and "version" in row:
        return _squad_questions(row["data"])
    if _all_hold(row.get("Data"), "Question") and "Version" in row:
        return [_trivia_question(q) for q in row["Data"]]
    return None


def _all_hold(value: Any, key: str) -> bool:
    """Whether ``value`` is a non-empty list of objects that each have ``key``."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) and key in v for v in value)


def _squad_questions(data: list[Any]) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    for a, article in enumerate(data):
        paragraphs = article["paragraphs"]
        if not isinstance(paragraphs, list):
            out.append(f"`data[{a}].paragraphs` must be a list")
            continue
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, Mapping) else None
            if not isinstance(qas, list):
                out.append(f"`data[{a}].paragraphs[{p}].qas` must be a list")
                continue
            for q, qa in enumerate(qas):
                if not isinstance(qa, Mapping):
                    out.append(f"`data[{a}].paragraphs[{p}].qas[{q}]` must be an object")
                    continue
                # a missing context is blank, and refused as such: the question alone is not SQuAD
                row = {"title": article.get("title"), "context": paragraph.get("context", "")}
                out.append({**row, **{k: qa[k] for k in ("id", "question", "answers") if k in qa}})
    return out


def _trivia_question(entry: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"question": entry.get("Question"), "question_id": entry.get("QuestionId")}
    answer = entry.get("Answer")
    if answer is None:  # the test files: refused as the hub's test split is, answers held back
        answer = {"Value": _HIDDEN}
    row["answer"] = answer
    if isinstance(answer, Mapping):
        row["answer"] = {"value": answer.get("Value"), "aliases": answer.get("Aliases")}
    return row
