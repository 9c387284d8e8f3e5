"""The ``choice`` evaluator: the letter a reply chose, against a multiple-choice item's letter.

The reply is read after Markdown emphasis, backticks, ``$`` and ``\\boxed{}``/``\\text{}`` are taken
off and its compatibility forms read as their letters (NFKC: fullwidth ``Ｂ``, mathematical ``𝐁``);
the first rule that finds a choice decides:

1. the whole reply is one letter of the item's choices, in either case, maybe in brackets or with a
   period (``B``, ``(b)``, ``[B].``);
2. the last "final answer" (else "answer", "correct option", "correct choice", "option", "choice")
   followed by ``is``, ``:`` or ``=`` (or the line's end) and then a letter: ``Answer: B``, ``The
   answer is B) Paris``, ``answer: (c)``, ``The answer is option B`` ("Option A is wrong" is none); a lower-case letter there counts only when a bracket, punctuation or the end
   of the line follows it ("the answer is a city" names no letter); when that line names
   another letter too (``Answer: B or C``) the reply is ambiguous;
3. the reply's first line is a letter, or starts with one and ``)``, ``.`` or ``:`` (``B) Paris``,
   ``(B) Paris``, ``C. 42``), and names no other letter (an explanation may follow on later lines),
   unless other lines start with other letters too (the choices listed again: no choice of the reply's);
4. the capital letters of the choices standing alone anywhere in the reply (``I pick B``), the
   article "A" and the pronoun "I" before a lower-case word aside ("A good pick is B"; but "A or
   B" and "A is right" name A): one letter is the choice, two or more are ambiguous;
5. the choices' texts: the reply is one of them, or holds exactly one of them as whole words (a
   choice inside a longer one that is also named counts as the longer one).

An ambiguous reply, one naming no choice, or a letter past the item's choices scores 0, with the
reason in the score's detail. An item that is not multiple-choice scores 0 (``moa compare`` refuses
such a dataset under ``choice`` before any call).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from moa.eval._choice_rows import LETTERS
from moa.eval.datasets import CHOICE, Item
from moa.eval.reference import normalize
from moa.eval.types import NO_TARGET, Score

__all__ = ["ChoiceConfig", "ChoiceEvaluator", "read_choice"]

_MARKUP = re.compile(r"\*\*|__|[`$]|\\boxed\{|\\text(?:bf)?\{|\\mathrm\{")
# `is`, `:` or `=` (or the line's end) must follow: "Option A is wrong" in an explanation under
# "Answer: B" names A, it does not choose it
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|correct\s+(?:option|choice)|option|choice)\b"
    r"(?:\s*(?:is|was)\b\s*[:=]?|\s*[:=]|[ \t]*(?=\n))\s*",
    re.IGNORECASE,
)
_FINAL = re.compile(r"\bfinal\s+answer\b", re.IGNORECASE)
_AFTER_MARKER = re.compile(r"(?:(?i:option|choice|letter)\s+)?[(\[]?([A-Za-z])(?=([)\].:,;!?]|\s|$))")
_LEADING = re.compile(r"[(\[]?([A-Z])(?:[)\].:](?:\s|$)|$)|\(([a-z])\)")
_ALONE = re.compile(r"(?<![\w'’-])([A-Z])(?![\w'’-])")
_WORD = re.compile(r"\w+")
_BLANK_REST = re.compile(r"\s*$")
_NEWLINE = re.compile(r"\n")
# "A cat", "I think": the article and the pronoun; "A or B", "A is right" still name the letter A
_ARTICLE = re.compile(r"[ \t]+(?!(?:or|and|nor|vs|then|is|was|are|seems|looks)\b)[a-z]")


class ChoiceConfig(BaseModel):
    """``choice``: the letter the reply chose equals the multiple-choice item's letter."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["choice"] = "choice"


def _plain(text: str) -> str:
    return _MARKUP.sub("", text).replace("}", " ").strip()


def _letters_in(text: str, labels: str) -> list[str]:
    """The capital letters of ``labels`` standing alone in ``text``, in order, once each, without an
    article ("A cat", "I think")."""
    found: list[str] = []
    for m in _ALONE.finditer(text):
        letter = m.group(1)
        if letter not in labels or letter in found:
            continue
        if letter in "AI" and _ARTICLE.match(text, m.end()):
            continue
        found.append(letter)
    return found


def _by_marker(text: str, labels: str) -> tuple[str | None, str | None]:
    """(letter, problem) from the last answer marker followed by a letter; (None, None) if none."""
    finals = [m for m in _MARKER.finditer(text) if _FINAL.match(m.group(0))]
    # each marker's line is matched in place, its end looked up: a copy of (or a search along) the
    # rest of the line per marker was quadratic in a reply of many markers on one line
    ends = [n.start() for n in _NEWLINE.finditer(text)] + [len(text)]
    for m in reversed(finals or list(_MARKER.finditer(text))):
        end = ends[bisect.bisect_left(ends, m.end())]
        hit = _AFTER_MARKER.match(text, m.end(), end)
        if hit is None:
            continue
        letter, after = hit.group(1), hit.group(2)
        if letter.islower() and not (
            (after and after in ")].:,;!?") or _BLANK_REST.match(text, hit.end(), end)
        ):
            continue  # "the answer is a city"
        # after a marker a capital A is the letter ("Answer: A because ..."); an I is "I think"
        if letter == "I" and _ARTICLE.match(text, hit.end(), end):
            continue
        rest = text[hit.end() : end]
        letter = letter.upper()
        if letter not in labels:
            return None, f"the answer names `{letter}`, past the choices (A-{labels[-1]})"
        others = [x for x in _letters_in(rest, labels) if x != letter]
        if others:
            return None, f"ambiguous: the answer names {letter} and {others[0]}"
        return letter, None
    return None, None


def _by_text(text: str, choices: Sequence[str]) -> tuple[str | None, str | None]:
    said = " ".join(_WORD.findall(normalize(text)))
    texts = [" ".join(_WORD.findall(normalize(c))) for c in choices]
    exact = [i for i, t in enumerate(texts) if t and t == said]
    if exact:
        return LETTERS[exact[0]], None
    named = [i for i, t in enumerate(texts) if t and f" {t} " in f" {said} "]
    # "Paris" inside "Paris, Texas" when the reply names the latter: the longer one is meant
    named = [i for i in named if not any(i != j and f" {texts[i]} " in f" {texts[j]} " for j in named)]
    if len(named) == 1:
        return LETTERS[named[0]], None
    if len(named) > 1:
        return None, f"ambiguous: the answer names the texts of {LETTERS[named[0]]} and {LETTERS[named[1]]}"
    return None, None


def read_choice(reply: str, choices: Sequence[str]) -> tuple[str | None, str]:
    """(the letter ``reply`` chose, how it was read) or (None, why none was)."""
    labels = LETTERS[: len(choices)]
    # compatibility forms are their letters: fullwidth `Ｂ` and `（Ｂ）` as CJK replies write them,
    # mathematical `𝐁`; read as they came, a right `Ｂ` scored 0 as "past the choices"
    text = _plain(unicodedata.normalize("NFKC", reply))
    choices = [unicodedata.normalize("NFKC", c) for c in choices]
    whole = text.strip(" \t\r\n.:!").strip("()[]").strip()
    if len(whole) == 1 and whole.isalpha():
        if whole.upper() in labels:
            return whole.upper(), "the reply is the letter"
        return None, f"the reply `{whole}` is past the choices (A-{labels[-1]})"
    letter, problem = _by_marker(text, labels)
    if letter is not None:
        return letter, "after the answer marker"
    if problem is not None:
        return None, problem
    line = text.split("\n", 1)[0].strip()
    lead = _LEADING.match(line)
    if lead is not None and not _lists_choices(text, labels):
        first = str(lead.group(1) or lead.group(2)).upper()
        others = [x for x in _letters_in(line[lead.end() :], labels) if x != first]
        if first in labels and not others:
            return first, "the reply's first letter"
    alone = _letters_in(text, labels)
    if len(alone) == 1:
        return alone[0], "the only choice letter in the reply"
    if len(alone) > 1:
        return None, f"ambiguous: the reply names {alone[0]} and {alone[1]}"
    named, problem = _by_text(text, choices)
    if named is not None:
        return named, "the choice's text"
    return None, problem or "the reply names no choice"


def _lists_choices(text: str, labels: str) -> bool:
    """Whether lines of the reply start with two or more different letters: the choices listed (a
    reply repeating the prompt's list), whose first line names no choice of the model's."""
    leading = set()
    for line in text.split("\n"):
        lead = _LEADING.match(line.strip())
        if lead is not None:
            leading.add(str(lead.group(1) or lead.group(2)).upper())
    return len(leading & set(labels)) >= 2


class ChoiceEvaluator:
    """Scores 1 when the reply chose the item's letter (``read_choice``), else 0 with the reason."""

    name = "choice"

    def __init__(self, config: ChoiceConfig | None = None) -> None:
        self.config = config or ChoiceConfig()

    async def score(self, item: Item, answer: str) -> Score:
        if item.target is None:
            return Score(0.0, NO_TARGET)
        choices = item.meta.get("choices") if item.meta.get("format") == CHOICE else None
        if not isinstance(choices, list):
            return Score(0.0, f"item `{item.id}` is not a multiple-choice item")
        texts = [str(c) for c in choices]
        letter, how = read_choice(answer, texts)
        # the right choice's text beside its letter: a report reader need not look the item up
        index = LETTERS.find(item.target) if len(item.target) == 1 else -1
        expected = f"{item.target} ({_cut(texts[index])})" if 0 <= index < len(texts) else item.target
        if letter is None:
            return Score(0.0, f"{how}; expected {expected}")
        if letter == item.target:
            return Score(1.0, how)
        return Score(0.0, f"chose {letter} ({how}), expected {expected}")


def _cut(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
