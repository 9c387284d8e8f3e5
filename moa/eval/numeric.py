"""The final number of an answer, found the way careful math harnesses find it (GSM8K, MATH).

The first rule that yields a number wins:

1. the last ``#### N`` (the GSM8K gold format) whose line starts with a number after the hashes:
   that number (a Markdown heading such as ``#### Step 2: Money`` or ``#### 1. Count`` is not one);
2. the last ``\\boxed{...}``: the last number inside it;
3. the last "the answer is N" / "answer: N" (any case) followed at once by a number (spaces, ``**``,
   ``$``, a colon or line breaks may come between): that number, or the result after the last
   ``=`` when a calculation follows (``2^10 = 1024``); an "answer:" followed by words is skipped;
4. the last number anywhere.

Calculator annotations (``<<48/2=24>>``) are removed first, and LaTeX is read as plain text:
``\\frac{a}{b}`` is ``a/b``, ``3\\frac{1}{2}`` is 3.5, ``1{,}234`` and ``1\\,234`` are 1234 and
``\\text{...}`` is its content. A number may carry a sign, ``$``, thousands separators (``1,234``, or
a no-break or thin space), a decimal part, an exponent (``1e6``), ``%``, a unit (``12 km``) or a
trailing period: only its value counts, so ``3.50`` equals ``3.5`` and ``$1,234.`` equals ``1234``.
Values are exact fractions, so a number too large for a float still compares exactly; one with more
than ``_MAX_DIGITS`` integer digits is read as ±inf and equals nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "HASH_LINE",
    "FinalNumber",
    "answer_line",
    "boxed_contents",
    "exact_numbers",
    "final_number",
    "parse_numbers",
    "show_number",
]

# below the smallest int<->str limit Python can be configured with (640 digits), so reading a number
# never raises, and far beyond any real answer
_MAX_DIGITS = 600

_SEP = "[,\u00a0\u2009\u202f]"
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−+])?\$?\s?"
    rf"(?P<int>\d{{1,3}}(?:{_SEP}\d{{3}})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    # an exponent only when nothing word-like follows, so `2eggs` stays 2
    r"(?:[eE](?P<exp>[-+]?\d{1,3})(?!\w|\.\d))?"
    r"(?:\s?/\s?(?P<den>\d+))?"
)
_ANNOTATION = re.compile(r"<<[^<>\n]*>>")
#: a `####` line and what follows its hashes (the GSM8K answer line, or a Markdown heading)
HASH_LINE = re.compile(r"#{4,}[ \t]*([^\n]*)")
_NUMBER_FIRST = re.compile(r"[*_]*[-−+]?\$?\s?\.?\d")
# `#### 1. Count the eggs`, `#### 2) Money`, `#### 3: Total`: a numbered heading, not an answer
_NUMBERED_HEADING = re.compile(r"[*_]*\d+[.:)][ \t]*[^\W\d]")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"\banswer\b[\s*_]*(?:is\b|was\b|[:=])", re.IGNORECASE)
# what may stand between "the answer is" and its number: space, emphasis, a colon, `$`, `(`, `\(`
_LEAD = re.compile(r"(?:[\s*_:=$(\[]|\\[(\[$])*")
# after a line break the number must stand alone on its line: `Answer:` over `1. First, ...` or
# `- 16 eggs` heads a list, not an answer
_LINE_END = re.compile(r"(?:[*_$.,;!%)\]\\ \t])*(?:\n|\Z)")
# a calculation right after "the answer is": `9 * 2 = 18`, `2^10 = 1024`, `$2 x 9 = $18`
_CALCULATION = re.compile(
    r"(?:[-−+$\d.,%/*×÷·^= \t\u00a0\u2009\u202f]|(?<=[\d ])[xX](?=[ \d])|(?<=\d)[eE](?=[-+]?\d))+"
)

_TEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_TEX_FRAC_DIGITS = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_TEX_MIXED = re.compile(
    r"(?<![\w.^_])(\d{1,20})[ \t]*\\[dt]?frac\s*\{\s*(\d{1,20})\s*\}\s*\{\s*(\d{1,20})\s*\}"
)
_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEX_GROUP = re.compile(r"(?<=\d)(?:\{,\}|\\[,!;: ])(?=\d{3}(?!\d))")
_TEX_ESCAPE = re.compile(r"\\([$%])")


@dataclass(frozen=True, slots=True)
class FinalNumber:
    """A number read from a text, and the rule that found it (for a score's detail)."""

    value: float
    """The nearest float (±inf beyond a float's range)."""
    rule: str
    exact: Fraction | None = None
    """The exact value; None when the number has too many digits to read (it equals nothing)."""


_NON_DIGIT = re.compile(r"\D")


def _decimal(digits: str, frac: str, exp: str | None) -> Fraction | None:
    """``digits.frac × 10^exp`` exactly, or None beyond ``_MAX_DIGITS`` integer digits."""
    digits = _NON_DIGIT.sub("", digits).lstrip("0")
    shift = int(exp or 0)
    if len(digits) + shift > _MAX_DIGITS:
        return None
    # decimals past _MAX_DIGITS move the value by under 10^-600, far inside any tolerance
    frac = frac[:_MAX_DIGITS]
    value = Fraction(int(digits or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return value * Fraction(10) ** shift


def _read(m: re.Match[str], fractions: bool) -> list[Fraction | float]:
    """The value(s) of one ``_NUMBER`` match; a float only for ±inf (too many digits)."""
    sign = -1 if m.group("sign") in ("-", "−") else 1
    value = _decimal(m.group("int") or "", (m.group("frac") or ".")[1:], m.group("exp"))
    signed: Fraction | float = sign * math.inf if value is None else sign * value
    den = m.group("den")
    if den is None:
        return [signed]
    whole = value is not None and not m.group("frac") and not m.group("exp")
    divisor = _decimal(den, "", None)
    if fractions and whole and divisor:
        return [signed / divisor]
    # not read as a fraction: the two numbers on their own, the sign staying with the first
    return [signed, math.inf if divisor is None else divisor]


def exact_numbers(text: str, *, fractions: bool = True) -> list[Fraction | float]:
    """Every number in ``text`` as ``parse_numbers`` finds them, exactly: a ``Fraction``, or ±inf
    for one of more digits than are read (``_MAX_DIGITS``)."""
    return _values(text, fractions)


def _values(text: str, fractions: bool) -> list[Fraction | float]:
    found: list[Fraction | float] = []
    for m in _NUMBER.finditer(text):
        if m.group("int") is not None or m.group("frac") is not None:
            found.extend(_read(m, fractions))
    return found


def _to_float(value: Fraction | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def parse_numbers(text: str, *, fractions: bool = True) -> list[float]:
    """Every number in ``text``: ``1,234.5``, ``-3``, ``$40``, ``.5``, ``1e6`` and, optionally,
    ``3/4`` (else the two numbers 3 and 4); ±inf for a number beyond a float's range."""
    return [_to_float(v) for v in _values(text, fractions)]


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, braces balanced; an unclosed one runs to the end."""
    found = []
    for m in _BOXED.finditer(text):
        depth, end = 1, m.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found.append(text[m.end() : end - 1 if depth == 0 else end])
    return found


def _mixed(m: re.Match[str]) -> str:
    whole, num, den = (int(g) for g in m.groups())
    return m.group(0) if den == 0 else str(whole + Fraction(num, den))


def plain_latex(text: str) -> str:
    """``text`` with the LaTeX that wraps numbers and short answers read as plain text."""
    text = _TEX_TEXT.sub(r"\1", text)
    text = _TEX_FRAC_DIGITS.sub(r"\\frac{\1}{\2}", text)
    text = _TEX_MIXED.sub(_mixed, text)
    text = _TEX_FRAC.sub(r"\1/\2", text)
    text = _TEX_GROUP.sub(",", text)
    return _TEX_ESCAPE.sub(r"\1", text)


def _found(value: Fraction | float, rule: str) -> FinalNumber:
    exact = value if isinstance(value, Fraction) else None
    return FinalNumber(_to_float(value), rule, exact)


def answer_line(rest: str) -> bool:
    """Whether ``rest``, the text after ``####``, opens with a number as GSM8K's answer line does,
    rather than being a Markdown heading (``#### Step 2: Money``, ``#### 1. Count the eggs``)."""
    return _NUMBER_FIRST.match(rest) is not None and _NUMBERED_HEADING.match(rest) is None


def _after_hashes(text: str, fractions: bool) -> FinalNumber | None:
    for rest in reversed(HASH_LINE.findall(text)):
        if not answer_line(rest):
            continue
        if numbers := _values(rest, fractions):
            return _found(numbers[0], "after ####")
    return None


def _after_answer_is(text: str, fractions: bool) -> FinalNumber | None:
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        start = _LEAD.match(text, m.end())
        at = start.end() if start else m.end()
        if not _NUMBER_FIRST.match(text, at):
            continue  # "Answer:" heading a sentence: its first number is not the answer
        run = _CALCULATION.match(text, at)
        calculation = run.group(0) if run else text[at:]
        if "\n" in text[m.end() : at] and not _LINE_END.match(text, at + len(calculation)):
            continue
        result = calculation.rpartition("=")[2] if "=" in calculation else ""
        numbers = _values(result, fractions) or _values(calculation, fractions)
        if numbers:
            return _found(numbers[0], f"after {m.group(0).strip(' *_')!r}")
    return None


def final_number(text: str, *, fractions: bool = True) -> FinalNumber | None:
    """The final answer of ``text`` as a number (see the module's rules), or None when it has none."""
    text = plain_latex(_ANNOTATION.sub("", text))
    if found := _after_hashes(text, fractions):
        return found
    for inside in reversed(boxed_contents(text)):
        if numbers := _values(inside, fractions):
            return _found(numbers[-1], "in \\boxed{}")
    if found := _after_answer_is(text, fractions):
        return found
    numbers = _values(text, fractions)
    return _found(numbers[-1], "last number") if numbers else None


def show_number(value: float | Fraction) -> str:
    """``1234`` for a whole number, else the shortest decimal that reads back as ``value``."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        value = _to_float(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
