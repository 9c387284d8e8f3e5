"""Multiple-choice rows (MMLU, ARC, OpenBookQA, TruthfulQA MC1, HellaSwag, PIQA, Winogrande, GPQA, a
generic ``choices`` + ``answer``) read as one shape: the question, the choices' texts in their order,
and the index of the right one.

Every published layout is recognised by its own fields; a row is refused, naming the field, when its
answer is not one of its choices, when it has fewer than two choices, or when two choices share a
label. The prompt shows the passage the question asks about when the row has one (RACE's
``article``, AGIEval's ``passage``, a ``context``), the question, then the choices lettered ``A.``,
``B.``, ... in the row's order (``PROMPT_END`` asks for the letter), whatever labels the row used (ARC's ``1``-``4`` included), so the target is
always a letter; TruthfulQA MC1's and GPQA's, which put the right answer first, in a fixed order drawn
from the row's text. TruthfulQA's MC1 comes in two shapes: the original ``{choice: score}`` and the
Hugging Face hub's ``{"choices": [...], "labels": [...]}``; MC2 (several right answers) is no single-choice
layout and is refused, pointing at the row's MC1.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moa.safe_read import parse_json

__all__ = ["LETTERS", "PROMPT_END", "ChoiceRow", "ChoiceRowError", "is_choice_row", "read_choice_row"]

LETTERS = string.ascii_uppercase
#: the line that ends every multiple-choice prompt
PROMPT_END = "Answer with the letter of the correct choice."
#: the fields of a row holding the right choice, by layout
_ANSWER_KEYS = ("answer_idx", "answer", "answerKey", "label", "target")


class ChoiceRowError(ValueError):
    """A multiple-choice row that cannot be read: the reason names the field."""


@dataclass(frozen=True, slots=True)
class ChoiceRow:
    """A multiple-choice row: the question, the choices' texts, the right one's index."""

    question: str
    choices: tuple[str, ...]
    answer: int

    @property
    def letter(self) -> str:
        return LETTERS[self.answer]

    def prompt(self) -> str:
        """The question, a blank line, one ``X. text`` line per choice, a blank line, ``PROMPT_END``."""
        lines = [f"{LETTERS[i]}. {text}" for i, text in enumerate(self.choices)]
        return f"{self.question.strip()}\n\n" + "\n".join(lines) + f"\n\n{PROMPT_END}"


def _csv_letters(row: Mapping[str, Any]) -> list[str]:
    """The single-letter columns ``A``, ``B``, ... of MMLU's CSV form, in order from ``A``."""
    found = []
    for letter in LETTERS:
        if letter not in row:
            break
        found.append(letter)
    return found


def is_choice_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` has the fields of one of the multiple-choice layouts."""
    if _named_shape(row) is not None:
        return True
    if "question_stem" in row and "choices" in row:  # OpenBookQA
        return True
    if "endings" in row and "label" in row:
        return True
    if "choices" in row and any(k in row for k in _ANSWER_KEYS):
        return True
    # MMLU-Pro's and MedQA's `options` beside a `question`: a generic row may carry `options` as data
    if "options" in row and "question" in row and any(k in row for k in _ANSWER_KEYS):
        return True
    if isinstance(row.get("question"), Mapping) and "answerKey" in row:
        return True
    return "question" in row and "answer" in row and len(_csv_letters(row)) >= 2


def _named_shape(row: Mapping[str, Any]) -> str | None:
    """The benchmarks whose choices and answer sit in fields of their own, by their fields; None for
    the rest (a list or a labelled object of choices, and an answer naming one)."""
    if "mc1_targets" in row or "mc2_targets" in row:
        return "truthfulqa"
    if "goal" in row and "sol1" in row and "sol2" in row:
        return "piqa"
    if "sentence" in row and "option1" in row and "option2" in row:
        return "winogrande"
    if "Question" in row and "Correct Answer" in row:  # GPQA's CSV
        return "gpqa"
    return None


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ChoiceRowError(f"`{where}` must be a string, not {type(value).__name__}")
    # GPQA's cells end in spaces and line breaks, which put blank lines into the lettered list
    text = str(value).strip()
    if not text:
        raise ChoiceRowError(f"`{where}` is blank")
    return text


#: GPQA's columns for its three wrong answers
_GPQA_WRONG = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
#: Winogrande's sentence has a blank for one of its two options
WINOGRANDE_ASK = "Which choice fills the blank (_)?"


#: the fields holding the passage a question asks about (RACE's `article`, AGIEval's `passage`)
_PASSAGE_KEYS = ("article", "passage", "context")


def _question(row: Mapping[str, Any], shape: str | None) -> str:
    """The question, after the passage it asks about when the row carries one: dropped, every item
    asked about a text it did not show."""
    key = next((k for k in _PASSAGE_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    stem = _stem(row, shape)
    return f"{row[key].strip()}\n\n{stem}" if key is not None else stem


def _stem(row: Mapping[str, Any], shape: str | None) -> str:
    if shape == "winogrande":
        return f"{_text(row['sentence'], 'sentence')}\n\n{WINOGRANDE_ASK}"
    for key in ("question", "question_stem", "goal", "Question", "input", "ctx"):
        value = row.get(key)
        if isinstance(value, Mapping):  # ARC's original: {stem, choices}
            return _text(value.get("stem"), f"{key}.stem")
        if value is not None:
            return _text(value, key)
    raise ChoiceRowError("row has no `question` (a multiple-choice row needs a question and its choices)")


def _labelled(labels: Sequence[Any], texts: Sequence[Any], where: str) -> tuple[list[str], list[str]]:
    if len(labels) != len(texts):
        raise ChoiceRowError(f"`{where}` has {len(labels)} labels for {len(texts)} texts")
    names = [_text(label, f"{where}.label[{i}]").strip() for i, label in enumerate(labels)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name.upper() in seen:
            raise ChoiceRowError(f"`{where}`: the label `{name}` appears twice")
        seen[name.upper()] = i
    return names, [_text(t, f"{where}.text[{i}]") for i, t in enumerate(texts)]


def _choices(row: Mapping[str, Any], shape: str | None) -> tuple[list[str] | None, list[str]]:
    """(labels, texts): labels is None when the row has none of its own (indexed choices)."""
    question = row.get("question")
    if isinstance(question, Mapping) and "choices" in question:  # ARC's original JSONL
        items = question["choices"]
        if (
            isinstance(items, Mapping)
            and isinstance(items.get("text"), list)
            and isinstance(items.get("label"), list)
        ):
            return _labelled(items["label"], items["text"], "question.choices")  # the hub's shape, nested
        if not isinstance(items, list) or not all(isinstance(c, Mapping) for c in items):
            raise ChoiceRowError(
                "`question.choices` must be a list of {label, text} objects or {text: [...], label: [...]}"
            )
        return _labelled([c.get("label") for c in items], [c.get("text") for c in items], "question.choices")
    if shape == "gpqa":  # the right answer, then the wrong ones
        wrong = [k for k in _GPQA_WRONG if row.get(k) not in (None, "")]
        return None, [_text(row["Correct Answer"], "Correct Answer"), *(_text(row[k], k) for k in wrong)]
    if shape == "piqa":  # `label` an index from 0
        return None, [_text(row["sol1"], "sol1"), _text(row["sol2"], "sol2")]
    if shape == "winogrande":  # `answer` "1" or "2"
        return ["1", "2"], [_text(row["option1"], "option1"), _text(row["option2"], "option2")]
    key = "endings" if "endings" in row else "options" if "options" in row else "choices"
    value = row.get(key)
    if isinstance(value, str) and value.lstrip().startswith(("[", "{")):  # a CSV cell holds JSON text
        try:
            value = parse_json(value)
        except ValueError as e:  # json.JSONDecodeError included
            raise ChoiceRowError(f"`{key}` is not valid JSON: {str(e).splitlines()[0]}") from None
    if isinstance(value, Mapping) and "text" not in value and value:  # MedQA: {"A": text, ...}
        return _labelled(list(value), list(value.values()), key)
    if isinstance(value, Mapping):  # ARC on the Hugging Face hub: {text: [...], label: [...]}
        texts, labels = value.get("text"), value.get("label")
        if not isinstance(texts, list) or not isinstance(labels, list):
            raise ChoiceRowError(f"`{key}` must hold a `text` list and a `label` list")
        return _labelled(labels, texts, key)
    if isinstance(value, list):
        return None, [_text(t, f"{key}[{i}]") for i, t in enumerate(value)]
    if value is None and key == "choices" and len(_csv_letters(row)) >= 2:  # MMLU's CSV form
        letters = _csv_letters(row)
        return letters, [_text(row[k], k) for k in letters]
    raise ChoiceRowError(f"`{key}` must be a list of strings, not {type(value).__name__}")


def _mc1_targets(targets: Any) -> tuple[list[str], list[Any]]:
    """MC1's choices and their scores, from either published shape."""
    if not isinstance(targets, Mapping):
        raise ChoiceRowError("`mc1_targets` must be an object {choice: score} or {choices, labels}")
    choices, labels = targets.get("choices"), targets.get("labels")
    if set(targets) == {"choices", "labels"} and isinstance(choices, list) and isinstance(labels, list):
        if len(choices) != len(labels):
            raise ChoiceRowError(f"`mc1_targets` has {len(labels)} labels for {len(choices)} choices")
        return [_text(t, f"mc1_targets.choices[{i}]") for i, t in enumerate(choices)], labels
    return [_text(t, "mc1_targets") for t in targets], list(targets.values())


def _mc1_answer(scores: Sequence[Any]) -> int:
    right = [i for i, score in enumerate(scores) if score == 1 and not isinstance(score, bool)]
    if len(right) != 1:
        raise ChoiceRowError(f"`mc1_targets` must score exactly one choice 1, not {len(right)}")
    return right[0]


def _answer(row: Mapping[str, Any], shape: str | None, labels: list[str] | None, texts: list[str]) -> int:
    if shape == "gpqa":
        return 0
    key = next((k for k in _ANSWER_KEYS if row.get(k) is not None), None)
    if key is None:
        raise ChoiceRowError("row has no `answer` (or `answerKey`, `label`): which choice is right?")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ChoiceRowError(f"`{key}` must be a letter or a choice's index, not {type(value).__name__}")
    count = len(texts)
    shown = LETTERS[count - 1]
    if labels is not None:  # a label of the row's own (ARC's `A` or `1`, MMLU CSV's letter)
        text = str(value).strip()
        index = next((i for i, name in enumerate(labels) if name.upper() == text.upper()), None)
        if index is None and value in texts:  # the right choice's own text (MedQA's `answer`)
            index = texts.index(value)
        if index is None:
            raise ChoiceRowError(f"`{key}` {text!r} is none of the choices' labels {', '.join(labels)}")
        return index
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        index = LETTERS.index(value.strip().upper())
    elif isinstance(value, int) or value.strip().isdigit():  # an index from 0 (MMLU, HellaSwag)
        index = int(value)
    elif value in texts:  # the right choice's own text
        index = texts.index(value)
    else:
        raise ChoiceRowError(
            f"`{key}` must be a letter A-{shown}, an index from 0 or a choice's text, not {value!r}"
        )
    if not 0 <= index < count:
        raise ChoiceRowError(
            f"`{key}` {value!r} is outside the {count} choices (A-{shown}, or 0-{count - 1})"
        )
    return index


def read_choice_row(row: Mapping[str, Any]) -> ChoiceRow:
    """``row`` read as a multiple-choice item; ``ChoiceRowError`` naming the field otherwise."""
    shape = _named_shape(row)
    if shape == "truthfulqa" and "mc1_targets" not in row:
        raise ChoiceRowError(
            "`mc2_targets` (TruthfulQA MC2, several right answers) is not a single-choice layout: "
            "give the row's `mc1_targets`"
        )
    question = _question(row, shape)
    labels: list[str] | None = None
    if shape == "truthfulqa":
        texts, scores = _mc1_targets(row["mc1_targets"])
    else:
        labels, texts = _choices(row, shape)
    if len(texts) < 2:
        raise ChoiceRowError(f"a multiple-choice row needs at least 2 choices, not {len(texts)}")
    if len(texts) > len(LETTERS):
        raise ChoiceRowError(f"a multiple-choice row has at most {len(LETTERS)} choices, not {len(texts)}")
    answer = _mc1_answer(scores) if shape == "truthfulqa" else _answer(row, shape, labels, texts)
    if shape in ("truthfulqa", "gpqa"):  # the right answer listed first in the file
        texts, answer = _shuffled(question, texts, answer)
    return ChoiceRow(question, tuple(texts), answer)


def _shuffled(question: str, texts: list[str], answer: int) -> tuple[list[str], int]:
    """TruthfulQA's MC1 files and GPQA's list the right answer first, so a model that always answers ``A``
    scored 1.0. The choices are shown in an order drawn from the row's own text: the same on every
    run and machine (a resume, a second setup, the baseline all see one order), varied across rows."""
    seed = hashlib.sha256("\x1f".join((question, *texts)).encode("utf-8", "surrogatepass")).digest()
    order = list(range(len(texts)))
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return [texts[i] for i in order], order.index(answer)
