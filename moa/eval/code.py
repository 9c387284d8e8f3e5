"""Extracting the program from a model's answer."""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

__all__ = ["CODE_LANGUAGES", "defines", "extract_code", "fence_tags", "fenced_blocks", "parses_as_python"]

#: tags treated as source code when choosing among fenced blocks
CODE_LANGUAGES = frozenset(
    {
        "python", "py", "python3", "py3", "ipython", "pycon",
        "javascript", "js", "node", "typescript", "ts", "java", "c", "h", "cpp", "c++", "cc", "cxx",
        "hpp", "cs", "csharp", "go", "golang", "rust", "rs", "ruby", "rb", "php", "swift", "kotlin", "scala", "r", "julia",
        "sh", "bash", "shell", "zsh", "sql", "lua", "perl", "haskell", "hs",
    }
)  # fmt: skip

_ALIASES = {
    "python": {"python", "py", "python3", "py3"},
    "javascript": {"javascript", "js", "node"},
    "typescript": {"typescript", "ts"},
    "c": {"c", "h"},
    "cpp": {"cpp", "c++", "cc", "cxx", "hpp"},
    "go": {"go", "golang"},
    "rust": {"rust", "rs"},
}


def fence_tags(language: str) -> frozenset[str]:
    """The fence tags that mean ``language`` (``cpp``: ``cpp``, ``c++``, ``cc``, ...)."""
    return frozenset(_ALIASES.get(language.lower(), {language.lower()}))


# a byte order mark opening the answer or a block: Python (and the C, Go and Java compilers) skip one
# at the start of a file, but mid-text it hid the opening fence or failed to compile
_BOM = "\ufeff"


def _opening(line: str) -> tuple[int, str, str] | None:
    """(indentation, fence, info string) of a line opening a fenced block, else None: 3 or more
    backticks or tildes, at any indentation (a fence inside a list item is indented by the item's
    marker), then an info string holding no backtick."""
    # read by hand: the regex it replaces backtracked over the blanks between a fence and a backtick,
    # in time cubic in their number (minutes for one line of a long reply)
    body = line.lstrip(" \t")
    mark = body[:1]
    if mark not in ("`", "~"):
        return None
    length = len(body) - len(body.lstrip(mark))
    info = body[length:].strip(" \t")
    if length < 3 or "`" in info:
        return None
    return len(line) - len(body), body[:length], info


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lines_of(text: str) -> list[str]:
    """``text``'s lines, broken where Python, C and JavaScript break them (``\\n``, ``\\r\\n``,
    ``\\r``): ``str.splitlines`` also breaks at a form feed, U+2028, U+0085 and others, which sit
    inside a line (or a string literal) of code, and a correct answer holding ``'\\u2028'`` in a
    string came back with a line break there (a syntax error)."""
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()  # as splitlines: a final line break opens no line
    return lines


@dataclass(frozen=True, slots=True)
class _Block:
    tag: str
    body: str


def _blocks(text: str) -> list[_Block]:
    """Fenced blocks in order; an unterminated final fence runs to the end of the text. As in
    CommonMark, each body line loses up to as much indentation as its opening fence had, and the
    closing fence may be indented up to 3 spaces more than the opening one."""
    blocks: list[_Block] = []
    lines = lines_of(text.removeprefix(_BOM))
    i = 0
    while i < len(lines):
        opening = _opening(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening
        tag = info.split()[0].lower() if info.strip() else ""
        tag = tag.removeprefix("{").removesuffix("}").removeprefix(".")
        j = i + 1
        while j < len(lines) and not _closes(lines[j], fence, indent):
            j += 1
        body = [_unindent(line, indent) for line in lines[i + 1 : j]]
        blocks.append(_Block(tag, "\n".join(body).removeprefix(_BOM)))
        i = j + 1
    return blocks


def _closes(line: str, fence: str, indent: int) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` indented ``indent``: the fence's
    character at least as many times, alone, indented at most 3 more."""
    body = line.lstrip(" \t")
    mark = body.rstrip(" \t")
    return len(line) - len(body) <= indent + 3 and len(mark) >= len(fence) and mark == fence[0] * len(mark)


def _unindent(line: str, indent: int) -> str:
    """``line`` without up to ``indent`` leading spaces or tabs."""
    return line[min(indent, len(line) - len(line.lstrip(" \t"))) :]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of ``text`` in order, as (tag, body); the tag is lower case, ``""`` when
    the fence has none."""
    return [(b.tag, b.body) for b in _blocks(text)]


def parses_as_python(source: str) -> bool:
    """Whether ``source`` is non-empty, syntactically valid Python."""
    return bool(source.strip()) and _parse(source) is not None


def _parse_or_error(source: str) -> ast.Module | int:
    """The tree of ``source``, or the 1-based line of its syntax error (0 when unknown)."""
    with warnings.catch_warnings():
        # invalid escape sequences in prose raise SyntaxWarning; they are not our concern
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except SyntaxError as e:
            return e.lineno or 0
        except (ValueError, RecursionError, MemoryError):
            return 0


def _parse(source: str) -> ast.Module | None:
    tree = _parse_or_error(source)
    return tree if isinstance(tree, ast.Module) else None


def defines(source: str, name: str) -> bool:
    """Whether ``source`` defines the function ``name`` at its top level (by its ``def`` line when
    the source does not parse, e.g. code cut off by ``max_tokens``)."""
    tree = _parse(source)
    if tree is None:
        return (
            re.search(rf"^(async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", source, re.MULTILINE) is not None
        )
    return any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == name
        for n in tree.body
    )


def _names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The names a module defines at its top level and the names it reads anywhere."""
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return defined, read


_DEFINITIONS = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def _with_helpers(main: _Block, pool: list[_Block], blocks: list[_Block]) -> str:
    """``main`` joined, in answer order, with the blocks of ``pool`` holding only definitions
    (imports, functions, classes, constants) that ``main`` uses, directly or through each other."""
    tree = _parse(main.body)
    if tree is None:
        return main.body.strip("\n")
    defined, reads = _names(tree)
    in_pool = {id(b) for b in pool}
    providers: dict[str, list[int]] = {}
    reads_of: dict[int, set[str]] = {}
    for i, b in enumerate(blocks):
        t = _parse(b.body) if b is not main and id(b) in in_pool else None
        if t is not None and t.body and all(isinstance(n, _DEFINITIONS) for n in t.body):
            gives, reads_of[i] = _names(t)
            for name in gives:
                providers.setdefault(name, []).append(i)
    seen = reads | defined
    todo = list(reads - defined)
    chosen: set[int] = set()
    while todo:
        for i in providers.get(todo.pop(), []):
            if i not in chosen:
                chosen.add(i)
                todo.extend(reads_of[i] - seen)
                seen |= reads_of[i]
    keep = [b for i, b in enumerate(blocks) if b is main or i in chosen]
    return "\n\n".join(b.body.strip("\n") for b in keep)


# a line that starts Python code after leading prose in an unfenced answer
_CODE_START = re.compile(
    r"^(from[ \t]+\S+[ \t]+import[ \t]|import[ \t]|(async[ \t]+)?def[ \t]|class[ \t]|@)", re.MULTILINE
)


# a bound on the parses spent finding where an answer's code ends; each cut is before a column-0
# line at or above the last syntax error, so real answers need one to three (code, a block header
# left without its body, prose); each parse reads the whole code again, and 20 of them took seconds
# over a long reply whose tail was a column-0 line after line that never completes (`@x`)
_MAX_CUTS = 6


def _syntax_error_line(source: str) -> int | None:
    """The 1-based line of ``source``'s syntax error, 0 when unknown, None when it parses."""
    tree = _parse_or_error(source)
    if not isinstance(tree, ast.Module):
        return tree
    # a lone word at the top level after the code ("Explanation") parses, but is prose: the first of
    # the words ending the code, all at once (cut one at a time, each cost a parse of the whole code)
    first = None
    for node in reversed(tree.body):
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Name) and node.col_offset == 0):
            break
        first = node.lineno
    return first


def _code_prefix(code: str, head: str = "") -> str | None:
    """The longest run of ``code``'s lines from its start that parses after ``head`` (the whole of
    it when it parses), cut before a line at column 0, where prose after the code would start; None
    when no such run parses, or when what it leaves out holds a definition or an import (code cut
    off by ``max_tokens`` is the answer's fault, not prose to drop)."""
    lines = lines_of(code)
    cut, shift = len(lines), head.count("\n")
    for _ in range(_MAX_CUTS):
        error = _syntax_error_line(head + "\n".join(lines[:cut]))
        if error is None:
            if _CODE_START.search("\n".join(lines[cut:])):
                return None
            return "\n".join(lines[:cut]).rstrip()
        limit = min(cut - 1, error - shift - 1) if error else cut - 1
        cut = next((k for k in range(limit, 0, -1) if lines[k][:1] not in ("", " ", "\t")), 0)
        if cut == 0:
            return None
    return None


def _without_prose_after(code: str, entry_point: str) -> str:
    """``code`` up to where prose after it starts ("This runs in O(n) time."), when what comes
    before parses and still defines ``entry_point``; else all of it, so code cut off by
    ``max_tokens`` is reported as the answer's syntax error."""
    prefix = _code_prefix(code)
    if prefix is not None and (defines(prefix, entry_point) or not defines(code, entry_point)):
        return prefix
    return code


def _raw(answer: str, entry_point: str) -> str | None:
    """An unfenced answer as code: the whole of it when it parses, starts with an import or a
    definition (even cut off) or is an indented function body (the official completion format);
    after leading prose, the code from its first import or definition on when that defines
    ``entry_point``. Prose after the code is left out."""
    text = answer.strip("\n")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if parses_as_python(text) or _CODE_START.match(text):
        return _without_prose_after(text, entry_point)
    if first[:1] in (" ", "\t"):
        # a body parses inside a function; the prompt's own `def` line is not ours to use here
        return _code_prefix(text, "def _():\n") or text
    m = _CODE_START.search(text)
    if m is not None and defines(text[m.start() :], entry_point):
        return _without_prose_after(text[m.start() :].strip("\n"), entry_point)
    return None


def extract_code(answer: str, language: str = "python", *, entry_point: str | None = None) -> str | None:
    """The program in ``answer``: the longest fenced block tagged with ``language``, else the
    longest untagged or code-tagged block, else the longest fenced block of any kind, else the
    whole answer when it parses as Python (only for ``language="python"``), else ``None``.

    With ``entry_point`` (a function the tests call): the last block defining it (searched in the
    same order of tags) joined with the blocks of definitions it uses; without fences, the
    answer's code even when it is an indented function body or does not parse (cut off)."""
    answer = answer.removeprefix(_BOM)
    wanted = fence_tags(language)
    blocks = [b for b in _blocks(answer) if b.body.strip()]
    tiers = (
        [b for b in blocks if b.tag in wanted],
        [b for b in blocks if b.tag == "" or b.tag in CODE_LANGUAGES],
        blocks,
    )
    if entry_point is not None:
        for tier in tiers:
            defining = [b for b in tier if defines(b.body, entry_point)]
            if defining:
                pool = [b for b in blocks if b.tag in wanted or b.tag == ""]
                return _with_helpers(defining[-1], pool, blocks)
        if "python" in wanted and blocks:
            # no block defines it, but the unfenced answer may: its fences are then inside the
            # code (a docstring's example), and the longest of them is not the program
            raw = _raw(answer, entry_point)
            if raw is not None and defines(raw, entry_point):
                return raw
    for tier in tiers:
        if tier:
            return max(tier, key=lambda b: len(b.body)).body.strip("\n")
    if "python" in wanted and entry_point is not None and not blocks:
        return _raw(answer, entry_point)
    if "python" in wanted and parses_as_python(answer):
        return answer.strip("\n")
    return None
