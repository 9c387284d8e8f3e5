"""Extracting the program from a model's answer."""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

__all__ = ["CODE_LANGUAGES", "extract_code", "parses_as_python"]

#: tags treated as source code when choosing among fenced blocks
CODE_LANGUAGES = frozenset(
    {
        "python", "py", "python3", "py3", "ipython", "pycon",
        "javascript", "js", "typescript", "ts", "java", "c", "cpp", "c++", "cs", "csharp",
        "go", "rust", "rs", "ruby", "rb", "php", "swift", "kotlin", "scala", "r", "julia",
        "sh", "bash", "shell", "zsh", "sql", "lua", "perl", "haskell", "hs",
    }
)  # fmt: skip

_ALIASES = {
    "python": {"python", "py", "python3", "py3"},
    "javascript": {"javascript", "js"},
    "typescript": {"typescript", "ts"},
}

_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")


@dataclass(frozen=True, slots=True)
class _Block:
    tag: str
    body: str


def _blocks(text: str) -> list[_Block]:
    """Fenced blocks in order; an unterminated final fence runs to the end of the text."""
    blocks: list[_Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        fence = m.group("fence")
        tag = m.group("info").split()[0].lower() if m.group("info").strip() else ""
        tag = tag.removeprefix("{").removesuffix("}").removeprefix(".")
        close = re.compile(rf"^[ \t]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and close.match(lines[j]) is None:
            j += 1
        blocks.append(_Block(tag, "\n".join(lines[i + 1 : j])))
        i = j + 1
    return blocks


def parses_as_python(source: str) -> bool:
    """Whether ``source`` is non-empty, syntactically valid Python."""
    if not source.strip():
        return False
    with warnings.catch_warnings():
        # invalid escape sequences in prose raise SyntaxWarning; they are not our concern
        warnings.simplefilter("ignore")
        try:
            ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def extract_code(answer: str, language: str = "python") -> str | None:
    """The program in ``answer``: the longest fenced block tagged with ``language``, else the
    longest untagged or code-tagged block, else the longest fenced block of any kind, else the
    whole answer when it parses as Python (only for ``language="python"``), else ``None``."""
    wanted = _ALIASES.get(language.lower(), {language.lower()})
    blocks = [b for b in _blocks(answer) if b.body.strip()]
    tiers = (
        [b for b in blocks if b.tag in wanted],
        [b for b in blocks if b.tag == "" or b.tag in CODE_LANGUAGES],
        blocks,
    )
    for tier in tiers:
        if tier:
            return max(tier, key=lambda b: len(b.body)).body.strip("\n")
    if "python" in wanted and parses_as_python(answer):
        return answer.strip("\n")
    return None
