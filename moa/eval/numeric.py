"""The final number of an answer, found the way careful math harnesses find it (GSM8K, MATH).

The first rule that yields a number wins:

1. the last ``#### N`` (the GSM8K gold format) whose line starts with a number after the hashes:
   that number (a Markdown heading such as ``#### Step 2: Money`` or ``#### 1. Count`` is not one);
2. the last non-empty ``\\boxed{...}``: its value after its last ``=`` (or ``\\approx``), which must
   be one number, a unit (``12 cm^2``) or degrees allowed; an expression or a tuple
   (``2\\sqrt{3}``, ``3\\pi``, ``(2, 5)``) is not a number and equals nothing;
3. the last "the answer is N" / "answer: N" (any case) followed at once by a number (spaces, ``**``,
   ``$``, a colon or line breaks may come between): that number, or the result after the last
   ``=`` when a calculation follows (``9 \\times 2 = 18``); an "answer:" followed by words is
   skipped, and "the answer is 2\\sqrt{3}" is not a number;
4. the last number anywhere.

A target is read by the same rules, except that one with none of the first three must be one number
as a whole (``1 000`` or ``2\\sqrt{3}`` is not a number, rather than 0 or 3).

Calculator annotations (``<<48/2=24>>``) are removed first, and LaTeX is read as plain text:
``\\frac{a}{b}`` is ``a/b``, ``3\\frac{1}{2}`` and ``3 1/2`` are 3.5, ``1{,}234``, ``1,\\!234`` and
``1\\,234`` are 1234, ``\\text{...}`` is its content, ``2^{10}`` is 1024 and ``3 \\times 10^5`` is
300000. A number may carry a sign, ``$``, thousands separators (``1,234``, or a no-break or thin
space), a decimal part, an exponent (``1e6``), ``%``, a unit (``12 km``) or a
trailing period: only its value counts, so ``3.50`` equals ``3.5`` and ``$1,234.`` equals ``1234``.
Values are exact fractions, so a number too large for a float still compares exactly; one with more
than ``_MAX_DIGITS`` integer digits (``1e1000`` too) is read as ±inf and equals nothing, and one
below ``10^-_MAX_DIGITS`` as 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "HASH_LINE",
    "FinalNumber",
    "NotANumber",
    "answer_line",
    "exact_numbers",
    "final_answer",
    "final_number",
    "last_boxed",
    "parse_numbers",
    "show_number",
]

# below the smallest int<->str limit Python can be configured with (640 digits), so reading a number
# never raises, and far beyond any real answer
_MAX_DIGITS = 600

# the Arabic thousands separator (U+066C) too, and its decimal separator (U+066B) below
_SEP = "[,\u00a0\u2009\u202f\u066c]"
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−－+])?\$?\s?"
    rf"(?P<int>\d{{1,3}}(?:{_SEP}\d{{3}})+(?!\d)|\d+)?(?P<frac>[.\u066b]\d+)?"
    # an exponent only when nothing word-like follows, so `2eggs` stays 2
    r"(?:[eE](?P<exp>[-+]?\d+)(?!\w|\.\d))?"
    r"(?:\s?/\s?(?P<den>\d+))?"
)
_ANNOTATION = re.compile(r"<<[^<>\n]*>>")
#: a `####` line and what follows its hashes (the GSM8K answer line, or a Markdown heading)
HASH_LINE = re.compile(r"#{4,}[ \t]*([^\n]*)")
_NUMBER_FIRST = re.compile(r"[*_]*[-−－+]?\$?\s?\.?\d")
# `#### 1. Count the eggs`, `#### 2) Money`, `#### 3: Total`: a numbered heading, not an answer
_NUMBERED_HEADING = re.compile(r"[*_]*\d+[.:)][ \t]*[^\W\d]")
# `\boxed 5` without braces too, as MATH's solutions write it (its graders read it up to the `$`),
# but not before a word: "in \boxed form" names no answer
_BOXED = re.compile(r"\\(?:boxed|fbox)(?:\s*\{|[ \t]+(?=[^\s{a-zA-Z]|[a-zA-Z](?![a-zA-Z])))")
_UNBRACED_END = re.compile(r"\$|\n|\\[\])]")
_BRACE = re.compile(r"[{}]")
_ANSWER_IS = re.compile(r"\banswer\b[\s*_]*(?:is\b|was\b|[:=])", re.IGNORECASE)
# what may stand between "the answer is" and its number: space, emphasis, a colon, `$`, `(`, `\(`
_LEAD = re.compile(r"(?:[\s*_:=$(\[]|\\[(\[$])*")
# after a line break the number must stand alone on its line: `Answer:` over `1. First, ...` or
# `- 16 eggs` heads a list, not an answer
_LINE_END = re.compile(r"(?:[*_$.,;!%)\]\\ \t])*(?:\n|\Z)")
# a calculation right after "the answer is": `9 * 2 = 18`, `2^10 = 1024`, `$2 x 9 = $18`
_CALCULATION = re.compile(
    r"(?:[-−－+$\d.,%/*×÷·^= \t\u00a0\u2009\u202f\u066b\u066c]|\\(?:times|cdot|div)\b|(?<=[\d ])[xX](?=[ \d])"
    r"|(?<=\d)[eE](?=[-+]?\d))+"
)

_TEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_TEX_FRAC_DIGITS = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_TEX_MIXED = re.compile(
    r"(?<![\w.^_])(\d{1,20})[ \t]*\\[dt]?frac\s*\{\s*(\d{1,20})\s*\}\s*\{\s*(\d{1,20})\s*\}"
)
# `2 1/2 hours`: a whole number and a proper fraction, as people write 2.5
_PLAIN_MIXED = re.compile(r"(?<![\w.,/^])(\d{1,20})[ \t]+(\d{1,20})/(\d{1,20})(?![\d/]|\.\d)")
_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
# `1{,}234`, `1\,234` and MATH's `1,\!234`
_TEX_GROUP = re.compile(r"(?<=\d)(?:\{,\}|,?\\[,!;: ])(?=\d{3}(?!\d))")
_TEX_ESCAPE = re.compile(r"\\([$%])")

_EXPONENT = r"[-+−]?\d{1,4}"
_RAISED = rf"[ \t]*\^[ \t]*(?:\{{[ \t]*(?P<exp>{_EXPONENT})[ \t]*\}}|(?P<bare>{_EXPONENT})(?!\d|\.\d))"
# `3 \times 10^5`, `1.2 x 10^{-3}`: scientific notation, read as `3e5`
_SCIENTIFIC = re.compile(
    rf"(?<![\w.^])(?P<base>\d+(?:\.\d+)?)[ \t]*(?:\\times|\\cdot|[×·*xX])[ \t]*10{_RAISED}"
)
# `2^{10}`, `2^10`: a power of a number (read as `2`, then `10`, before)
_POWER = re.compile(rf"(?<![\w.^])(?P<base>\d+(?:\.\d+)?){_RAISED}")
# where a final answer's value starts: after its last `=` or `\approx` (`\boxed{x = 5}`)
_RELATION = re.compile(r"=|\\approx(?![A-Za-z])|≈")
# no leading `[ \t]*`: tried at each blank of a long run, it would take quadratic time
# what separates two answers (`x = 2, y = 3`), not a thousands separator
_LIST = re.compile(r"[,;](?!\d{3}(?!\d))|\band\b")
_DEGREES = re.compile(r"\^[ \t]*\{?[ \t]*\\circ[ \t]*\}?|\\circ(?![A-Za-z])")
# `12 cm^2`, `36 \text{ m}^{3}`: the power of a unit after the number, not a number of its own (a
# lone x, y, z or n is a variable: `2x^2` is not 2)
_UNIT_POWER = re.compile(
    r"(?<=\d)((?:[ \t~]|\\[ ,;:!])*(?![xyzn](?![A-Za-z]))[A-Za-z]{1,5})[ \t]*\^[ \t]*\{?[ \t]*[23][ \t]*\}?"
    r"(?![ \t]*[-+*/^=\d])"
)
# what makes a final answer an expression rather than a number: a LaTeX command left after the
# plain reading (`\sqrt`, `\pi`, `\times` between two numbers), a power, a root, pi, infinity
_NOT_A_NUMBER = re.compile(
    r"\\(?!(?:left|right|displaystyle|textstyle|quad|qquad)(?![A-Za-z]))[A-Za-z]+|[\^√π∞±]"
)
# what, right after "the answer is 2", makes it `2\sqrt{3}` or `3\pi` rather than 2
_EXPRESSION_NEXT = re.compile(r"[ \t]*(?:\\(?:sqrt|pi|infty)(?![A-Za-z])|[√π∞^])")


@dataclass(frozen=True, slots=True)
class NotANumber:
    """A final answer that is there but is not one number: ``\\boxed{2\\sqrt{3}}``, ``\\boxed{(2, 5)}``,
    "the answer is 3\\pi". Its last number is not its value, so it equals no target."""

    text: str
    rule: str


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
    """``digits.frac × 10^exp`` exactly, or None beyond ``_MAX_DIGITS`` integer digits (0 below
    ``10^-_MAX_DIGITS``)."""
    digits = _NON_DIGIT.sub("", digits).lstrip("0")
    if not digits and not frac.strip("0"):
        return Fraction(0)  # `0e999` is 0, not too large to read
    # `1e999999` is past the bounds below, not 1 (an exponent was read to three digits); an
    # exponent of thousands of digits is not converted (`int()` raises past 4,300)
    power = (exp or "0").lstrip("+-").lstrip("0")
    shift = int(exp or 0) if len(power) < 9 else (-1 if (exp or "").startswith("-") else 1) * 10**9
    if len(digits) + shift > _MAX_DIGITS:
        return None
    if len(digits) + shift < -_MAX_DIGITS:
        return Fraction(0)  # under 10^-600: inside any tolerance, as the decimals cut below
    # decimals past _MAX_DIGITS move the value by under 10^-600, far inside any tolerance
    frac = frac[:_MAX_DIGITS]
    value = Fraction(int(digits or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return value * Fraction(10) ** shift


def _read(m: re.Match[str], fractions: bool) -> list[Fraction | float]:
    """The value(s) of one ``_NUMBER`` match; a float only for ±inf (too many digits)."""
    # the fullwidth minus of CJK text too: `－５` read as 5 scored right against 5
    sign = -1 if m.group("sign") in ("-", "−", "－") else 1
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


def last_boxed(text: str, *, blank: bool = False) -> str | None:
    """The contents of the last ``\\boxed{...}`` (braces balanced; an unclosed one runs to the end)
    or ``\\boxed 5`` (up to its ``$`` or line end), passing over blank ones unless ``blank``; None
    when there is none."""
    # read from the last box back, each scan stopping where its box ends: a blank box holds no other,
    # so the scans never overlap. Every box's contents, each scanned to its end, was quadratic in
    # time and memory: a reply of 28,000 unclosed `\boxed{` took minutes to score
    for m in reversed(list(_BOXED.finditer(text))):
        inside = _box_at(text, m)
        if blank or inside.strip():
            return inside
    return None


def _box_at(text: str, m: re.Match[str]) -> str:
    if not m.group(0).endswith("{"):
        stop = _UNBRACED_END.search(text, m.end())
        return text[m.end() : stop.start() if stop else len(text)].strip().removesuffix(".")
    depth = 1
    for brace in _BRACE.finditer(text, m.end()):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return text[m.end() : brace.start()]
    return text[m.end() :]


def _mixed(m: re.Match[str]) -> str:
    whole, num, den = (int(g) for g in m.groups())
    return m.group(0) if den == 0 else str(whole + Fraction(num, den))


def _plain_mixed(m: re.Match[str]) -> str:
    whole, num, den = (int(g) for g in m.groups())
    return str(whole + Fraction(num, den)) if 0 < num < den else m.group(0)


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


def _unclosed(text: str) -> str:
    """``text`` without the math delimiters and punctuation closing it (``3\\pi\\).``: ``3\\pi``)."""
    while (shorter := text.rstrip(" \t$.,;!").removesuffix("\\)").removesuffix("\\]")) != text:
        text = shorter
    return text.strip()


def _after_answer_is(text: str, fractions: bool) -> FinalNumber | NotANumber | None:
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        start = _LEAD.match(text, m.end())
        at = start.end() if start else m.end()
        if not _NUMBER_FIRST.match(text, at):
            continue  # "Answer:" heading a sentence: its first number is not the answer
        run = _CALCULATION.match(text, at)
        calculation = run.group(0) if run else text[at:]
        if "\n" in text[m.end() : at] and not _LINE_END.match(text, at + len(calculation)):
            continue
        rule = f"after {m.group(0).strip(' *_')!r}"
        if "^" in calculation or _EXPRESSION_NEXT.match(text, at + len(calculation)):
            return NotANumber(_unclosed(text[at:].split("\n", 1)[0]), rule)
        result = calculation.rpartition("=")[2] if "=" in calculation else ""
        numbers = _values(result, fractions) or _values(calculation, fractions)
        if numbers:
            return _found(numbers[0], rule)
    return None


def _exact_text(value: Fraction) -> str | None:
    """``value`` written as a decimal, digit for digit; None when it has no finite decimal."""
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return None
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return sign + (f"{digits[:-places]}.{digits[-places:]}" if places else digits)


def _power(m: re.Match[str]) -> str:
    base, exp = m.group("base"), int((m.group("exp") or m.group("bare")).replace("−", "-"))
    if m.re is _SCIENTIFIC:
        # `_NUMBER` reads the exponent exactly, and reads one past _MAX_DIGITS digits as inf
        return f"{base}e{exp}" if abs(exp) < 1000 else (m.group(0) if exp < 0 else "1e999")
    whole, _, decimals = base.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > _MAX_DIGITS:  # too large to read, as `_NUMBER` reads it (`int()` raises past 4,300)
        return m.group(0) if exp < 0 else ("1e999" if exp else "1")
    value = Fraction(f"{whole or 0}.{decimals[:_MAX_DIGITS] or 0}")
    if value == 0:
        return m.group(0) if exp < 0 else str(int(exp == 0))
    size = exp * math.log10(value)  # the result's order of magnitude, before computing it
    if size > _MAX_DIGITS:
        return "1e999"
    if size < -_MAX_DIGITS or abs(exp) * len(base) > 10 * _MAX_DIGITS:
        return m.group(0)
    return _exact_text(value**exp) or m.group(0)


def _powers(text: str) -> str:
    """``text`` with powers of numbers and scientific notation written out: ``2^{10}`` is 1024,
    ``3 \\times 10^5`` is 3e5."""
    if "^" not in text:
        return text
    return _POWER.sub(_power, _SCIENTIFIC.sub(_power, text))


def _one_number(text: str, fractions: bool, rule: str) -> FinalNumber | NotANumber:
    """``text``, a final answer on its own (a ``\\boxed{}``'s content, a target), as one number:
    the value after its last ``=``, with a unit (``12 cm^2``) or degrees; else it is not a number
    (``2\\sqrt{3}``, ``(2, 5)``, ``5 hours and 30 minutes``)."""
    value = _UNIT_POWER.sub(r"\1", _RELATION.split(text)[-1])
    numbers = _values(value, fractions)
    if len(numbers) == 1 and not _NOT_A_NUMBER.search(value):
        return _found(numbers[0], rule)
    return NotANumber(" ".join(text.split()), rule)


def final_answer(
    text: str, *, fractions: bool = True, whole: bool = False
) -> FinalNumber | NotANumber | None:
    """The final answer of ``text`` (see the module's rules): a number, an answer that is not one
    number (``\\boxed{2\\sqrt{3}}``), or None when ``text`` has no number. With ``whole`` (a
    target: the answer itself), a text without a marked answer must be one number as a whole."""
    text = _powers(_DEGREES.sub("", plain_latex(_ANNOTATION.sub("", text))))
    if fractions:
        text = _PLAIN_MIXED.sub(_plain_mixed, text)
    if found := _after_hashes(text, fractions):
        return found
    box = last_boxed(text)
    if box is not None:
        if any(_LIST.search(part) for part in _RELATION.split(box)[1:-1]):
            # `\\boxed{x = 2, y = 3}`: two answers, not 3 (a target's sentences may hold lists)
            return NotANumber(" ".join(box.split()), "in \\boxed{}")
        return _one_number(box, fractions, "in \\boxed{}")
    if said := _after_answer_is(text, fractions):
        return said
    if whole and text.strip():
        return _one_number(text, fractions, "the whole text")
    numbers = _values(text, fractions)
    return _found(numbers[-1], "last number") if numbers else None


def final_number(text: str, *, fractions: bool = True) -> FinalNumber | None:
    """The final answer of ``text`` as a number (see the module's rules), or None when it has none
    or it is not one number."""
    found = final_answer(text, fractions=fractions)
    return found if isinstance(found, FinalNumber) else None


def show_number(value: float | Fraction) -> str:
    """``1234`` for a whole number, else the shortest decimal that reads back as ``value``."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        value = _to_float(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
