"""MultiPL-E items: the program is ``prompt + completion + "\\n" + tests``, as MultiPL-E runs it.

An answer is either

* a completion (the function's body, what MultiPL-E's models write): it is cut at the item's first
  stop token, as MultiPL-E cuts its completions, and put after the prompt; or
* a whole program defining the prompt's function (a chat answer): it is put after the prompt's
  preamble (its includes, imports, package clause) instead of the prompt, its own ``main`` renamed
  so the tests' runs, and the tests lose the ``}`` they open with to close the prompt's function.
  Java's solution methods move into the prompt's class (``Problem``), where the tests call them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from moa.eval.languages.merge import go_imports_block, java_host, split_go, split_java, unpublic
from moa.eval.languages.program import (
    ANSWER_MAIN,
    Parts,
    Program,
    cut,
    drop_leading_brace,
    rename_function,
    without_trailing_comments,
)
from moa.eval.languages.source import defines_function, line_of, mask

__all__ = ["FILENAMES", "assemble_multiple", "entry_of"]

#: the file each language's program is written to (Java's is named after its class)
FILENAMES = {
    "c": "main.c",
    "cpp": "main.cpp",
    "go": "main_test.go",
    "javascript": "main.js",
    "rust": "main.rs",
    "typescript": "main.ts",
}

_KEYWORDS = frozenset({"if", "for", "while", "switch", "catch", "return", "sizeof", "else", "do"})

_ENTRY = {
    "rust": re.compile(r"\bfn\s+(\w+)"),
    "go": re.compile(r"\bfunc\s+(\w+)\s*\("),
    "javascript": re.compile(r"\bfunction\s*\*?\s*(\w+)"),
    "typescript": re.compile(r"\bfunction\s*\*?\s*(\w+)"),
}
_C_ENTRY = re.compile(r"(\w+)\s*\([^;{)]*\)\s*(?:const\s*)?(?:throws\s+[\w.,\s]+)?\{")

# a definition starting at column 0: the answer is a whole program, whatever it defines
_TOP_DEFINITION = {
    "rust": re.compile(r"^(pub\s+)?fn\s+\w+", re.MULTILINE),
    "go": re.compile(r"^func\s+", re.MULTILINE),
    "javascript": re.compile(r"^((export\s+)?(async\s+)?function\b|(const|let|var)\s+\w+\s*=)", re.MULTILINE),
    "typescript": re.compile(
        r"^((export\s+)?(async\s+)?function\b|(const|let|var)\s+\w+\s*[:=])", re.MULTILINE
    ),
    "java": re.compile(
        r"^\s*(((public|private|protected|static|final)\s+)+[\w<>\[\],.? ]+\s+\w+\s*\(|(\w+\s+)*class\s+\w+)",
        re.MULTILINE,
    ),
}
_C_TOP_DEFINITION = re.compile(
    r"^[A-Za-z_][\w:<>,*& \t]*[\s*&]\w+\s*\([^;]*?\)\s*(const\s*)?\{", re.MULTILINE
)


def entry_of(prompt: str, language: str) -> str | None:
    """The function ``prompt`` ends by opening (MultiPL-E prompts end with its signature)."""
    masked = mask(prompt, language)
    pattern = _ENTRY.get(language, _C_ENTRY)
    names = [m.group(1) for m in pattern.finditer(masked) if m.group(1) not in _KEYWORDS]
    return names[-1] if names else None


def _signature_start(prompt: str, language: str, entry: str) -> int:
    """Where the line declaring ``entry`` starts in ``prompt`` (Java: its class's line)."""
    masked = mask(prompt, language)
    if language == "java":
        m = re.search(r"^[^\n]*\bclass\s+\w+", masked, re.MULTILINE)
        return m.start() if m else len(prompt)
    at = -1
    for m in re.finditer(rf"\b{re.escape(entry)}\s*\(", masked):
        at = m.start()
    return len(prompt) if at < 0 else masked.rfind("\n", 0, at) + 1


def _stop_pattern(token: str) -> str:
    """``token`` as a pattern; one that ends a line (Java's ``"\\n    }\\n"``) also matches with blanks
    before that end: a correct completion whose closing ``}`` had a trailing space missed its stop
    token, ran on into the tests' own ``}`` and failed to compile (MultiPL-E has the same quirk)."""
    if token.endswith("\n"):
        return re.escape(token[:-1]) + r"[ \t]*\n"
    return re.escape(token)


def _truncate(code: str, stop_tokens: Sequence[str]) -> str:
    """``code`` up to its first stop token (MultiPL-E cuts a completion there)."""
    text = code + "\n"
    cuts = [m.start() for m in (re.search(_stop_pattern(s), text) for s in stop_tokens if s) if m]
    return text[: min(cuts)] if cuts else code


def _whole_without(code: str, language: str) -> bool:
    """Whether ``code`` is a whole program (balanced braces, a definition at column 0)."""
    masked = mask(code, language)
    if masked.count("{") != masked.count("}"):
        return False
    return _TOP_DEFINITION.get(language, _C_TOP_DEFINITION).search(masked) is not None


def _dedupe_head(head: str, code: str) -> str:
    """The prompt's preamble without the lines the answer repeats (Rust refuses a ``use`` twice)."""
    mine = {line.strip() for line in code.splitlines() if line.strip()}
    return "".join(line for line in head.splitlines(keepends=True) if line.strip() not in mine)


def assemble_multiple(
    language: str, code: str, prompt: str, tests: str, stop_tokens: Sequence[str], entry: str | None
) -> Program | str:
    """The program running ``code`` against a MultiPL-E item, or why the answer cannot run."""
    if entry and defines_function(code, language, entry):
        if language == "go":
            return _whole_go(code, prompt, tests)
        if language == "java":
            return _whole_java(code, prompt, tests, entry)
        parts = Parts()
        head = without_trailing_comments(prompt[: _signature_start(prompt, language, entry)])
        parts.add(_dedupe_head(head, code))
        parts.add(rename_function(code, language, "main", ANSWER_MAIN), answer=True)
        parts.add(drop_leading_brace(tests))
        return parts.program(language, FILENAMES[language])
    if entry and _whole_without(code, language):
        return f"the answer's code does not define `{entry}`"
    body = _truncate(code, stop_tokens)
    parts = Parts()
    parts.add(prompt)
    parts.add(body, answer=True)
    parts.add(tests)
    if language == "java":
        return parts.program(language, f"{_java_class(prompt)}.java", main_class=_java_class(prompt))
    return parts.program(language, FILENAMES[language], go_test=language == "go")


def _whole_go(code: str, prompt: str, tests: str) -> Program:
    head, answer = split_go(prompt), split_go(code)
    parts = Parts()
    parts.add(f"package {head.package or 'main'}\n\n" + go_imports_block(head.imports, answer.imports))
    parts.add(answer.body, answer=True)
    parts.add(tests)
    return parts.program("go", FILENAMES["go"], go_test=True)


def _java_class(prompt: str) -> str:
    m = re.search(r"\bclass\s+(\w+)", mask(prompt, "java"))
    return m.group(1) if m else "Problem"


def _whole_java(code: str, prompt: str, tests: str, entry: str) -> Program:
    name = _java_class(prompt)
    head = split_java(prompt[: _signature_start(prompt, "java", entry)])
    answer = split_java(code)
    host = java_host(answer, entry)
    if host is None:
        members, others, base = answer.body, "", 1
    else:
        members = answer.body[host.open + 1 : host.close]
        others = cut(answer.body, host.start, host.end)
        base = line_of(answer.body, host.open + 1)
    parts = Parts()
    parts.add("".join(f"{line}\n" for line in dict.fromkeys(head.imports + answer.imports)))
    if others.strip():
        parts.add(unpublic(others), answer=True)
    parts.add(f"class {name} {{")
    parts.add(rename_function(members, "java", "main", "moaAnswerMain"), answer=True, base=base)
    parts.add(drop_leading_brace(tests))
    if host is not None and host.name != name and "class" in answer.body[host.start : host.open].split():
        # calls written `Solution.f(...)` still resolve: static members are inherited
        parts.add(f"class {host.name} extends {name} {{}}")
    return parts.program("java", f"{name}.java", main_class=name)
