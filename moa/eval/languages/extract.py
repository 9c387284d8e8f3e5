"""Choosing the code of an answer written in a given language.

Fenced blocks are chosen by their tag: the blocks tagged with the language (``rs`` counts as
``rust``, ``c++`` as ``cpp``), else the untagged or code-tagged ones, else any. Among them, the
last one defining the item's function wins, else the longest. An answer without fences is code
when it starts like code in that language (after leading prose, from its first such line) or is an
indented function body, the completion MultiPL-E's models write.
"""

from __future__ import annotations

import re

from moa.eval.code import CODE_LANGUAGES, fence_tags, fenced_blocks
from moa.eval.languages.source import defines_function

__all__ = ["extract_language_code"]

_START = {
    "c": r"#\s*include\b|#\s*define\b|typedef\b|struct\b|static\b|const\b|(unsigned\s+|signed\s+)?"
    r"(int|long|short|double|float|char|bool|void|size_t)\b",
    "cpp": r"#\s*include\b|#\s*define\b|using\b|namespace\b|template\b|typedef\b|struct\b|class\b|static\b"
    r"|const\b|auto\b|std::|vector\b|string\b|(unsigned\s+|signed\s+)?(int|long|short|double|float|char|bool|void)\b",
    "go": r"package\b|import\b|func\b|type\b|var\b|const\b",
    "java": r"import\b|package\b|public\b|private\b|protected\b|static\b|final\b|abstract\b|class\b"
    r"|interface\b|enum\b|record\b",
    "javascript": r"function\b|const\b|let\b|var\b|class\b|async\s+function\b|module\.exports|export\b|import\b"
    r"|['\"]use strict['\"]",
    "rust": r"use\b|fn\b|pub\b|struct\b|enum\b|impl\b|trait\b|mod\b|const\b|static\b|#!?\[|extern\b",
    "typescript": r"function\b|const\b|let\b|var\b|class\b|async\s+function\b|export\b|import\b|interface\b"
    r"|type\s+\w+\s*=|declare\b|enum\b",
}


def _unfenced(answer: str, language: str) -> str | None:
    text = answer.strip("\n")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first:
        return None
    if first[:1] in (" ", "\t") or first.lstrip().startswith(("}", "return")):
        return text  # a completion: the function's body
    start = re.compile(rf"^(?:{_START[language]})", re.MULTILINE)
    m = start.search(text)
    if m is None:
        return None
    return text[m.start() :].strip("\n")


def extract_language_code(answer: str, language: str, *, entry_point: str | None = None) -> str | None:
    """The code in ``answer`` for ``language``, ``None`` when there is none."""
    blocks = [(tag, body) for tag, body in fenced_blocks(answer) if body.strip()]
    if not blocks:
        return _unfenced(answer, language)
    wanted = fence_tags(language)
    tiers = (
        [body for tag, body in blocks if tag in wanted],
        [body for tag, body in blocks if tag == "" or tag in CODE_LANGUAGES],
        [body for _, body in blocks],
    )
    if entry_point:
        for tier in tiers:
            defining = [body for body in tier if defines_function(body, language, entry_point)]
            if defining:
                return defining[-1].strip("\n")
    for tier in tiers:
        if tier:
            return max(tier, key=len).strip("\n")
    return None
