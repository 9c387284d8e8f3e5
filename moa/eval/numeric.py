"""The final number of an answer, found the way careful math harnesses find it (GSM8K, MATH).

The first rule that yields a number wins:

1. the last ``#### N`` (the GSM8K gold format): the first number after it on its line;
2. the last ``\\boxed{...}``: the last number inside it (``\\frac{a}{b}`` reads as ``a/b``);
3. the last "the answer is N" / "answer: N" (any case): the first number after it;
4. the last number anywhere.

Calculator annotations (``<<48/2=24>>``) are removed first. A number may carry a sign, ``$``,
thousands separators (``1,234``), a decimal part, ``%``, a unit (``12 km``) or a trailing period:
only its value counts, so ``3.50`` equals ``3.5`` and ``$1,234.`` equals ``1234``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["FinalNumber", "final_number", "parse_numbers", "show_number"]

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−+])?\$?\s?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+))?"
)
_ANNOTATION = re.compile(r"<<[^<>\n]*>>")
_HASHES = re.compile(r"####([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"\banswer\b[\s*]*(?:is\b|was\b|[:=])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FinalNumber:
    """A number read from a text, and the rule that found it (for a score's detail)."""

    value: float
    rule: str


def parse_numbers(text: str, *, fractions: bool = True) -> list[float]:
    """Every number in ``text``: ``1,234.5``, ``-3``, ``$40``, ``.5`` and, optionally, ``3/4``."""
    found: list[float] = []
    for m in _NUMBER.finditer(text):
        if m.group("int") is None and m.group("frac") is None:
            continue
        value = Fraction((m.group("int") or "0").replace(",", "") + (m.group("frac") or ""))
        if m.group("den") is not None:
            if not fractions or m.group("frac") or int(m.group("den")) == 0:
                found.append(float(value))
                continue
            value /= int(m.group("den"))
        found.append(float(-value if m.group("sign") in ("-", "−") else value))
    return found


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, braces balanced; an unclosed one runs to the end."""
    found = []
    for m in _BOXED.finditer(text):
        depth, end = 1, m.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found.append(text[m.end() : end - 1 if depth == 0 else end])
    return found


def final_number(text: str, *, fractions: bool = True) -> FinalNumber | None:
    """The final answer of ``text`` as a number (see the module's rules), or None when it has none."""
    text = _ANNOTATION.sub("", text)
    for after in reversed(_HASHES.findall(text)):
        if numbers := parse_numbers(after, fractions=fractions):
            return FinalNumber(numbers[0], "after ####")
    for inside in reversed(_boxed_contents(text)):
        inside = _FRAC.sub(r"\1/\2", inside)
        if numbers := parse_numbers(inside, fractions=fractions):
            return FinalNumber(numbers[-1], "in \\boxed{}")
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        if numbers := parse_numbers(text[m.end() :], fractions=fractions):
            return FinalNumber(numbers[0], f"after {m.group(0).strip(' *')!r}")
    numbers = parse_numbers(text, fractions=fractions)
    return FinalNumber(numbers[-1], "last number") if numbers else None


def show_number(value: float) -> str:
    """``1234`` for a whole number, else the shortest decimal that reads back as ``value``."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
