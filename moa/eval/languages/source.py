"""Reading C-family source (C, C++, Java, Go, Rust, JavaScript, TypeScript) just enough to assemble
programs: comments and literals masked out, braces matched, top-level functions and classes found.

Everything works on a *masked* copy of the source: the same length, the same line breaks, with
every comment and the inside of every string or character literal replaced by spaces, so a brace or
a ``fn main`` inside a string never counts and an index in the mask is an index in the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Span",
    "brace_depths",
    "defines_function",
    "find_function",
    "line_of",
    "mask",
    "match_brace",
    "split_lines",
    "top_level_types",
]

# a Rust character literal (a lone quote is a lifetime: `'a`)
_RUST_CHAR = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F]{1,6}\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'")
_RUST_RAW = re.compile(r'b?r(#*)"')


def _blank(chars: list[str], start: int, end: int) -> None:
    for i in range(start, min(end, len(chars))):
        if chars[i] != "\n":
            chars[i] = " "


def _string_end(source: str, i: int, quote: str) -> int:
    """The index just past the literal opened by ``quote`` at ``i`` (escapes honoured; a plain
    quote ends at the end of its line, so an unterminated one cannot swallow the file)."""
    j = i + len(quote)
    multiline = quote in ("`", '"""')
    while j < len(source):
        if source.startswith(quote, j):
            return j + len(quote)
        c = source[j]
        if c == "\\":
            j += 2
            continue
        if c == "\n" and not multiline:
            return j
        j += 1
    return len(source)


def mask(source: str, language: str) -> str:
    """``source`` with comments and literal contents blanked (quotes kept, line breaks kept)."""
    chars = list(source)
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            _blank(chars, i, end)
            i = end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            _blank(chars, i, end)
            i = end
        elif (
            language == "rust" and (m := _RUST_RAW.match(source, i)) and (i == 0 or not _word(source[i - 1]))
        ):
            close = '"' + m.group(1)
            end = source.find(close, m.end())
            end = n if end < 0 else end + len(close)
            _blank(chars, m.end(), end - len(close))
            i = end
        elif c == "'" and language == "rust":
            m = _RUST_CHAR.match(source, i)
            if m is None:
                i += 1  # a lifetime
            else:
                _blank(chars, i + 1, m.end() - 1)
                i = m.end()
        elif c in "\"'`":
            if c == "`" and language not in ("javascript", "typescript", "go"):
                i += 1
                continue
            quote = '"""' if language == "java" and source.startswith('"""', i) else c
            if c == "`" and language == "go":
                end = source.find("`", i + 1)  # a raw string: no escapes
                end = n if end < 0 else end + 1
            else:
                end = _string_end(source, i, quote)
            _blank(chars, i + len(quote), end - len(quote))
            i = end
        else:
            i += 1
    return "".join(chars)


def brace_depths(masked: str) -> list[int]:
    """The brace depth at each character of ``masked`` (``mask``'s output, so braces in strings and
    comments do not count): 0 at the top level."""
    depth, depths = 0, []
    for c in masked:
        depths.append(depth)
        depth += 1 if c == "{" else -1 if c == "}" else 0
    return depths


def split_lines(text: str, *, keepends: bool = False) -> list[str]:
    """``text``'s lines, broken at ``\\n`` alone, as ``Program`` counts them: ``str.splitlines``
    also breaks at a form feed, U+2028 and others, so its line ``n`` was another line of the
    program (the edits after the answer's last line landed inside it)."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [part + "\n" for part in parts] if keepends else parts
    if last:
        lines.append(last)
    return lines


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def match_brace(masked: str, open_index: int) -> int | None:
    """The index of the brace closing the one at ``open_index`` in masked source, else ``None``."""
    depth = 0
    for i in range(open_index, len(masked)):
        c = masked[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def line_of(text: str, index: int) -> int:
    """The 1-based line of ``index`` in ``text``."""
    return text.count("\n", 0, index) + 1


@dataclass(frozen=True, slots=True)
class Span:
    """A definition in source: ``start`` (its line's start, or its doc comment's), ``open`` and
    ``close`` (its body's braces); ``end`` is just past the closing brace."""

    name: str
    start: int
    open: int
    close: int

    @property
    def end(self) -> int:
        return self.close + 1


def _signature(language: str, name: str) -> re.Pattern[str]:
    """A definition of the function ``name`` up to its body's opening brace."""
    n = re.escape(name)
    if language == "rust":
        return re.compile(rf"\bfn\s+{n}\s*(<[^{{;]*?>)?\s*\([^{{;]*?\)[^{{;]*?\{{", re.DOTALL)
    if language == "go":
        return re.compile(rf"\bfunc\s+{n}\s*(\[[^{{;]*?\])?\s*\([^{{]*?\)[^{{;\n]*\{{", re.DOTALL)
    if language in ("javascript", "typescript"):
        return re.compile(
            rf"(\bfunction\s*\*?\s*{n}\s*(<[^{{;]*?>)?\s*\([^{{]*?\)[^{{;]*?\{{"
            rf"|\b(const|let|var)\s+{n}\s*(:[^=;]*)?=\s*(async\s*)?(function\b[^{{]*?|\([^)]*\)[^{{;]*?=>\s*)\{{)",
            re.DOTALL,
        )
    # C, C++, Java: a return type (or a modifier) before the name, the parameters, then the body
    return re.compile(
        rf"(?<![\w.])(?<=[\w>\]*&\s]){n}\s*\([^;{{]*?\)\s*(const\s*)?(noexcept\s*)?"
        rf"(throws\s+[\w.,\s]+)?(->\s*[^{{;]+)?\{{",
        re.DOTALL,
    )


def _depth_at(masked: str, index: int) -> int:
    return masked.count("{", 0, index) - masked.count("}", 0, index)


def find_function(source: str, language: str, name: str, *, depth: int | None = 0) -> Span | None:
    """The last definition of the function ``name`` (at brace depth ``depth``; any depth when
    ``None``), with its body's braces matched."""
    masked = mask(source, language)
    found: Span | None = None
    for m in _signature(language, name).finditer(masked):
        if depth is not None and _depth_at(masked, m.start()) != depth:
            continue
        open_index = m.end() - 1
        close = match_brace(masked, open_index)
        if close is None:
            continue
        start = masked.rfind("\n", 0, m.start()) + 1
        found = Span(name, start, open_index, close)
    return found


def defines_function(source: str, language: str, name: str) -> bool:
    """Whether ``source`` defines the function ``name`` (at any depth: Java's are in a class), even
    when it is cut off before its closing brace."""
    masked = mask(source, language)
    if _signature(language, name).search(masked) is not None:
        return True
    if language in ("javascript", "typescript") and _js_bound(name).search(masked) is not None:
        return True
    return find_function(source, language, name, depth=None) is not None


def _js_bound(name: str) -> re.Pattern[str]:
    """A function bound to ``name`` without a body in braces: ``const f = (x) => x * 2``,
    ``let f = x => ...``, ``const f: (x: number) => number = ...``. A correct answer written so read
    as one that `does not define` its function."""
    n = re.escape(name)
    return re.compile(
        rf"\b(?:const|let|var)\s+{n}\s*(?::[^;]*?)?=\s*(?:async\s*)?"
        rf"(?:function\b|\([^)]*\)\s*(?::[^=;]*?)?=>|[A-Za-z_$][\w$]*\s*=>)",
        re.DOTALL,
    )


_TYPE = re.compile(
    r"^[ \t]*((?:public|private|protected|static|final|abstract|sealed|non-sealed|strictfp)\s+)*"
    r"(class|interface|enum|record)\s+(\w+)[^{;]*\{",
    re.MULTILINE,
)


def top_level_types(source: str) -> list[Span]:
    """Java: the top-level classes, interfaces, enums and records, in order."""
    masked = mask(source, "java")
    spans: list[Span] = []
    for m in _TYPE.finditer(masked):
        if spans and m.start() < spans[-1].end:
            continue
        if _depth_at(masked, m.start()) != 0:
            continue
        open_index = m.end() - 1
        close = match_brace(masked, open_index)
        if close is None:
            continue
        spans.append(Span(m.group(3), m.start(), open_index, close))
    return spans
