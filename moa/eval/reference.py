"""Reference evaluators: the answer against the item's target (exact, contains, regex, numeric, f1).

``exact``, ``contains``, ``f1``, ``numeric`` and ``regex`` score a QA item (``moa.eval.datasets.QA``)
against every answer it accepts, the best one counting; ``squad_normalize`` and ``squad_f1`` are the official SQuAD v1.1 evaluation
script's ``normalize_answer`` and ``f1_score``.

A reference evaluator given an item without a target returns ``Score(0, "item has no target")``
(``moa.eval.types.NO_TARGET``) rather than raising, so one bad item does not stop an experiment.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import Counter
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from moa.errors import UserError
from moa.eval._bounded_regex import BoundedMatcher, MatchFailed, MatchTimeout
from moa.eval.datasets import QA, Item
from moa.eval.numeric import (
    HASH_LINE,
    FinalNumber,
    NotANumber,
    answer_line,
    final_answer,
    last_boxed,
    parse_numbers,
    plain_latex,
    show_number,
)
from moa.eval.types import NO_TARGET, Score

__all__ = [
    "ContainsConfig",
    "ContainsEvaluator",
    "ExactConfig",
    "ExactEvaluator",
    "F1Config",
    "F1Evaluator",
    "NumericConfig",
    "NumericEvaluator",
    "RegexConfig",
    "RegexEvaluator",
    "accepted_answers",
    "extract_final_answer",
    "normalize",
    "parse_numbers",
    "squad_f1",
    "squad_normalize",
]

_QUOTES = "\"'`“”‘’«»"
# "final answer" first: "Final answer: Paris (my answer is based on ...)" means Paris
_MARKERS = tuple(
    re.compile(rf"\b{words}\b[\s*_]*(?:(?:is|was)\b(?:[\s*_]*:)?|[:=])", re.IGNORECASE)
    for words in (r"final\s+answer", "answer")
)
# underscores are left alone: `__init__` is an answer, not emphasis
_MARKUP_PAIRS = (("`", "`"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("*", "*"))
# what ends a marker's line before its answer: `**Final Answer:** Paris`, `*Answer:* Paris`
_MARKER_TAIL = re.compile(r"[ \t:]*(?:\*+(?=\s))?[ \t]*")
_OPTION = re.compile(r"\(([A-Za-z])\)")
# a math span opening the text after a marker, then a sentence's punctuation or the end: the answer
# is the span (Minerva's "The final answer is $5$. I hope it is correct."), not "$5$. I hope..."
_MATH_SPAN = re.compile(r"[ \t*]*(?:\$\$?([^$]+?)\$\$?|\\\((.+?)\\\))(?=[ \t*]*(?:[.,;:!]|$))")
# a unit after a number, as MATH writes it (`10 \text{ inches}`, `12\text{ cm}^2`): not the answer
_TEX_UNIT = re.compile(r"(?<=[\d}])[ \t]*\\(?:text|mbox|mathrm)\{[ \t]+[^{}]*\}(?:\^\{?[23]\}?)?[ \t.]*$")
# how MATH answers differ only in writing (hendrycks' `strip_string`, lm-eval's minerva_math):
# `\left(`, `\dfrac`, degrees, `\%`, `\$`, LaTeX spacing, `\sqrt3`, a leading `x =`, `.5`
# `\\[!,;: ]` not after a backslash: the `\\ ` of a matrix's row break (`1 \\\\ 2`) is no spacing
_TEX_SIZING = re.compile(r"\\(?:left|right)(?![a-z])|(?<!\\)\\[!,;: ]|\^\{?\\circ\}?|\\circ(?![a-z])|[$%]")
_TEX_SQRT_DIGIT = re.compile(r"\\sqrt(\d)")
_VARIABLE_IS = re.compile(r"^[a-z][a-z0-9_]?[ \t]*=[ \t]*(?=\S)")
_BARE_POINT = re.compile(r"(?<![\w.])\.(?=\d)")
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACE = re.compile(r"(?<![a-z])\s+|\s+(?![a-z])")


def normalize(text: str) -> str:
    """Casefold, collapse whitespace, and strip surrounding quotes and a trailing period."""
    text = " ".join(text.casefold().split())
    # peeled by moving two ends and cut once: a copy per layer was quadratic in a reply of quotes
    i, j = 0, len(text)
    while True:
        was = (i, j)
        i, j = _trimmed(text, i, j)
        if j - i >= 2 and text[i] in _QUOTES and text[j - 1] in _QUOTES:
            i, j = i + 1, j - 1
        if (i, j) == was:
            return text[i:j]


def _trimmed(text: str, i: int, j: int) -> tuple[int, int]:
    """``text[i:j]``'s ends moved past surrounding whitespace and one trailing period (as
    ``.strip().removesuffix(".").strip()`` would cut it)."""
    while i < j and text[i].isspace():
        i += 1
    while j > i and text[j - 1].isspace():
        j -= 1
    if j > i and text[j - 1] == ".":
        j -= 1
        while j > i and text[j - 1].isspace():
            j -= 1
    return i, j


_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower case, ASCII punctuation removed, then the articles
    a/an/the, whitespace collapsed (in that order, as the official script does)."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def squad_f1(prediction: str, truth: str) -> float:
    """SQuAD v1.1's ``f1_score``: the harmonic mean of the token precision and recall of the
    normalised texts (0 when they share no token, an empty one included)."""
    got, want = squad_normalize(prediction).split(), squad_normalize(truth).split()
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)


def accepted_answers(item: Item) -> list[str]:
    """The answers ``item`` accepts: a QA item's every one (``meta["answers"]``), else its target."""
    answers = item.meta.get("answers") if item.meta.get("format") == QA else None
    if isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers):
        return answers
    return [] if item.target is None else [item.target]


def _listed(answers: list[str]) -> str:
    """Several accepted answers as a score's detail names them: the first five, then how many more."""
    shown = ", ".join(repr(_cut(a)) for a in answers[:5])
    return shown + (f" and {len(answers) - 5} more" if len(answers) > 5 else "")


def _expected(answers: list[str]) -> str:
    """``'Paris'`` for one accepted answer, ``one of 'Paris', 'Paris, France'`` for several."""
    return repr(answers[0]) if len(answers) == 1 else f"one of {_listed(answers)}"


def _bare(text: str) -> str:
    """``text`` without the markup wrapped around an answer: Markdown emphasis and code, ``$``,
    ``\\(...\\)``, ``\\text{}``, an option's parentheses (``(B)``); ``\\frac{a}{b}`` reads ``a/b``."""
    text = plain_latex(_TEX_UNIT.sub("", text)).replace("**", "")
    # peeled by moving two ends and cut once: a copy per layer was quadratic in a reply of `$`
    i, j = 0, len(text)
    while True:
        was = (i, j)
        i, j = _trimmed(text, i, j)
        for left, right in _MARKUP_PAIRS:
            if j - i > len(left) + len(right) and text.startswith(left, i) and text.endswith(right, i, j):
                i, j = i + len(left), j - len(right)
        if option := _OPTION.fullmatch(text, i, j):
            i, j = option.span(1)
        if (i, j) == was:
            return text[i:j]


def _math_form(text: str) -> str:
    """A normalised final answer as MATH graders compare it: without ``\\left``/``\\right``,
    degrees, ``%``, ``$``, LaTeX spacing or a leading ``x =``, ``\\dfrac`` read as ``\\frac``,
    ``\\sqrt3`` as ``\\sqrt{3}``, ``.5`` as ``0.5``, ``1,234`` as ``1234``, and no spaces but
    those between words."""
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEX_SQRT_DIGIT.sub(r"\\sqrt{\1}", _TEX_SIZING.sub("", text))
    text = _BARE_POINT.sub("0.", _VARIABLE_IS.sub("", text.strip()))
    text = _SPACE.sub("", text)
    return text.replace(",", "") if _GROUPED.fullmatch(text) else text


def _after_marker(text: str) -> str | None:
    """The rest of the line after the last "final answer:" (else "answer is"), or the next
    non-empty line when the marker ends its line ("**Answer:**" over the answer)."""
    for marker in _MARKERS:
        found = list(marker.finditer(text))
        if found:
            end = found[-1].end()
            tail = _MARKER_TAIL.match(text, end)
            rest = text[tail.end() if tail else end :]
            lines = [line for line in rest.splitlines() if line.strip(" \t*")]
            return lines[0] if lines else ""
    return None


def extract_final_answer(text: str) -> str:
    """The final answer in ``text``, without its markup: the last ``#### ...`` line (when it is the
    last line or starts with a number, so a Markdown heading is not one), else the last
    ``\\boxed{...}``, else what follows the last "final answer:", else "answer is", else the last
    non-empty line."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = HASH_LINE.search(lines[-1]) if lines else None
    if last is not None:
        # `#### Final answer: Paris` heads its own answer; `#### \boxed{5}` holds it in a box
        rest = _after_marker(last.group(1)) or last.group(1)
        box = last_boxed(rest, blank=True)
        return _bare(box if box is not None else rest)
    answer_lines = [rest for rest in HASH_LINE.findall(text) if answer_line(rest)]
    if answer_lines:
        return _bare(answer_lines[-1])
    box = last_boxed(text, blank=True)
    if box is not None:
        return _bare(box)
    after = _after_marker(text)
    if after is not None:
        span = _MATH_SPAN.match(after)
        return _bare(span.group(1) or span.group(2) if span else after)
    return _bare(lines[-1]) if lines else ""


class ExactConfig(BaseModel):
    """``exact``: the normalised answer equals the normalised target."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["exact"] = "exact"
    extract_final: bool = False
    """Compare only the final answer (``####``, ``\\boxed{}``, ``answer: ...``, last line), without
    its Markdown emphasis, ``$`` and ``\\text{}``, and as MATH's graders compare answers
    (``\\left(``, ``\\dfrac``, degrees, a unit, ``x =`` and spacing do not count)."""
    numbers: bool = False
    """When the two texts differ but each reads as one number (``numeric``'s rules), compare their
    values exactly: ``0.5`` and ``\\frac{1}{2}``, ``033`` and ``33``, ``4\\frac{2}{3}`` and
    ``\\frac{14}{3}`` agree; a tuple or an expression (``(1, 2)``, ``2\\sqrt{3}``) is no number."""
    squad: bool = False
    """Normalise both sides as SQuAD's evaluation does (``squad_normalize``: case, punctuation and
    the articles a/an/the do not count) instead of moa's own (and, with ``extract_final``, instead of
    MATH's equivalences)."""


class ContainsConfig(BaseModel):
    """``contains``: the normalised target (for a QA item, any accepted answer) occurs in the
    normalised answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["contains"] = "contains"
    case_sensitive: bool = False
    """Compare without casefolding."""


class F1Config(BaseModel):
    """``f1``: SQuAD's token-level F1 of the answer against the target, the best over a QA item's
    accepted answers (a score between 0 and 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["f1"] = "f1"
    extract_final: bool = False
    """Score only the final answer (as ``exact``'s ``extract_final`` finds it), not the whole reply."""


class RegexConfig(BaseModel):
    """``regex``: the pattern (from here, else the item's target) matches the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["regex"] = "regex"
    pattern: str | None = None
    """The pattern; when absent each item's target is its pattern."""
    ignore_case: bool = False
    """Match case-insensitively."""
    full_match: bool = False
    """Require the whole (stripped) answer to match rather than a search."""


class NumericConfig(BaseModel):
    """``numeric``: the answer's final number equals the target's within tolerance, compared as exact
    fractions; the final number is the one after a ``#### N`` line, else in ``\\boxed{}``, else
    right after "the answer is", else the last one (``moa.eval.numeric``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["numeric"] = "numeric"
    abs_tol: float = Field(default=1e-6, ge=0, allow_inf_nan=False)
    """Absolute tolerance."""
    rel_tol: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Relative tolerance (of the target)."""
    fractions: bool = True
    """Read ``3/4`` as 0.75 (when False, as the two numbers 3 and 4)."""


def _shown(found: FinalNumber) -> str:
    shown = show_number(found.value if found.exact is None else found.exact)
    # a 600-digit number would swamp the report's list of reasons
    return shown if len(shown) <= 40 else f"{shown[:12]}...{shown[-6:]} ({len(shown)} characters)"


def _cut(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:57]}..."


class ExactEvaluator:
    name = "exact"

    def __init__(self, config: ExactConfig | None = None) -> None:
        self.config = config or ExactConfig()

    async def score(self, item: Item, answer: str) -> Score:
        answers = accepted_answers(item)
        if not answers:
            return Score(0.0, NO_TARGET)
        got = self._final(answer, True)
        form = self._form(got)
        value = _one_number(got) if self.config.numbers else None  # read once, not per answer
        ok = any(
            form == self._form(want := self._final(text, False))
            or (value is not None and value == _one_number(want))
            for text in answers
        )
        return Score(1.0 if ok else 0.0, None if ok else f"expected {_expected(answers)}")

    def _final(self, text: str, reply: bool) -> str:
        """The part of ``text`` (the reply, or an accepted answer) that is compared."""
        if self.config.extract_final:
            # the target unwrapped the same way, so a target written `(B)` or `$42$` still matches
            return extract_final_answer(text) if reply else _bare(text)
        return text

    def _form(self, text: str) -> str:
        """``text``'s final part as it is compared."""
        if self.config.squad:
            return squad_normalize(text)
        return normalize(_math_form(normalize(text)) if self.config.extract_final else text)


def _one_number(text: str) -> Fraction | None:
    """``text``'s value when it reads as one number (``numeric``'s rules), else None."""
    found = final_answer(text, whole=True)
    return found.exact if isinstance(found, FinalNumber) else None


class ContainsEvaluator:
    name = "contains"

    def __init__(self, config: ContainsConfig | None = None) -> None:
        self.config = config or ContainsConfig()

    async def score(self, item: Item, answer: str) -> Score:
        answers = accepted_answers(item)
        if not answers:
            return Score(0.0, NO_TARGET)
        if self.config.case_sensitive:
            text, wants = " ".join(answer.split()), [" ".join(want.split()) for want in answers]
        else:
            text, wants = normalize(answer), [normalize(want) for want in answers]
        # a blank target (an empty cell, `""`) is in every answer: it names nothing to find
        if not any(wants):
            return Score(0.0, NO_TARGET)
        if any(want and want in text for want in wants):
            return Score(1.0)
        return Score(
            0.0, f"{answers[0]!r} not found" if len(answers) == 1 else f"none of {_listed(answers)} found"
        )


class F1Evaluator:
    name = "f1"

    def __init__(self, config: F1Config | None = None) -> None:
        self.config = config or F1Config()

    async def score(self, item: Item, answer: str) -> Score:
        answers = accepted_answers(item)
        if not answers:
            return Score(0.0, NO_TARGET)
        got = extract_final_answer(answer) if self.config.extract_final else answer
        # the official script's metric_max_over_ground_truths: the best answer counts
        scores = [squad_f1(got, want) for want in answers]
        value = max(scores)
        if value == 1.0:
            return Score(1.0)
        if value == 0.0:
            return Score(0.0, f"no word in common with {_expected(answers)}")
        return Score(value, f"F1 {value:.3f}, best against {_cut(answers[scores.index(value)])!r}")


def _compile(pattern: str, flags: int, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as e:
        raise UserError(f"{where}: invalid regex `{pattern}`: {e}") from None


class RegexEvaluator:
    name = "regex"

    def __init__(self, config: RegexConfig | None = None) -> None:
        self.config = config or RegexConfig()
        self._flags = re.IGNORECASE if self.config.ignore_case else 0
        self._pattern = (
            _compile(self.config.pattern, self._flags, "evaluator `regex`")
            if self.config.pattern is not None
            else None
        )
        # a dataset's pattern can backtrack for centuries, and `re` cannot be stopped in-process
        self._matcher = BoundedMatcher()

    def patterns_of(self, item: Item) -> list[re.Pattern[str]]:
        """The patterns ``item`` is scored with, any one matching (the evaluator's, else every
        answer the item accepts, none when it has none); ``UserError`` naming the item when one
        does not compile."""
        if self._pattern is not None:
            return [self._pattern]
        return [_compile(want, self._flags, f"item `{item.id}` target") for want in accepted_answers(item)]

    async def score(self, item: Item, answer: str) -> Score:
        patterns = self.patterns_of(item)
        if not patterns:
            return Score(0.0, NO_TARGET)
        text = answer.strip()
        for p in patterns:
            try:
                found = await asyncio.to_thread(
                    self._matcher.matches, p.pattern, p.flags, text, self.config.full_match
                )
            except MatchFailed as e:
                hint = (
                    " (catastrophic backtracking, as in `(a+)+$`): simplify the pattern"
                    if isinstance(e, MatchTimeout)
                    else ""
                )
                raise UserError(
                    f"item `{item.id}`: regex /{_cut(p.pattern)}/ {e} on an answer of {len(text)} characters{hint}"
                ) from None
            if found:
                return Score(1.0)
        shown = " or ".join(f"/{p.pattern}/" for p in patterns[:5])
        more = f" or {len(patterns) - 5} more" if len(patterns) > 5 else ""
        return Score(0.0, f"no match for {shown}{more}")


class NumericEvaluator:
    name = "numeric"

    def __init__(self, config: NumericConfig | None = None) -> None:
        self.config = config or NumericConfig()

    async def score(self, item: Item, answer: str) -> Score:
        answers = accepted_answers(item)
        if not answers:
            return Score(0.0, NO_TARGET)
        # a QA item's accepted answers that are numbers, any one matching ("four" and "4": the 4)
        read = [final_answer(want, fractions=self.config.fractions, whole=True) for want in answers]
        wants = [w for w in read if isinstance(w, FinalNumber)]
        if not wants:
            if len(answers) == 1:
                return Score(0.0, f"target {answers[0]!r} is not a number")
            return Score(0.0, f"no accepted answer is a number: {_listed(answers)}")
        shown = list(dict.fromkeys(_shown(w) for w in wants))  # `4` and `4.0` are one number
        expected = shown[0] if len(shown) == 1 else "one of " + ", ".join(shown[:5])
        got = final_answer(answer, fractions=self.config.fractions)
        if got is None:
            return Score(0.0, f"no number in the answer, expected {expected}")
        if isinstance(got, NotANumber):
            return Score(
                0.0, f"the final answer {_cut(got.text)!r} ({got.rule}) is not a number, expected {expected}"
            )
        for want in wants:
            if got.exact is not None and want.exact is not None:
                # exact fractions: floats would call 17-digit neighbours equal and overflow past 1e308
                tol = max(Fraction(self.config.abs_tol), Fraction(self.config.rel_tol) * abs(want.exact))
                if abs(got.exact - want.exact) <= tol:
                    return Score(1.0)
        return Score(0.0, f"got {_shown(got)} ({got.rule}), expected {expected}")
