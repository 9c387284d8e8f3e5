"""The program a HumanEval-style item runs: the prompt's preamble, the answer's code, the tests.

Assembled the way the official harness and evalplus run answers:

* a function body (the official completion format): ``prompt + body``, then the tests (a body
  indented its own way, 2 spaces or tabs, at the prompt's indentation);
* code defining the entry point (a chat answer's function, or the whole program): the prompt's
  preamble (everything but the entry point: its imports, constants and helper functions), then
  the answer's code, which may redefine any of them, then the tests.

Code that does not parse is the answer's fault and is reported before anything runs, with the line
counted in the answer's code.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass

from moa.eval.code import defines, lines_of

__all__ = ["AnswerProgram", "assemble", "preamble"]

_FUTURE = re.compile(r"^from[ \t]+__future__[ \t]+import[ \t]", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class AnswerProgram:
    """The program to run and where the answer's code sits in it (1-based, inclusive)."""

    source: str
    first_line: int
    last_line: int
    tests: tuple[str, ...] = ()
    """Test sources the sandbox runs after ``source``, each as its own step (assert lines)."""

    def answer_line(self, line: int) -> int | None:
        """The line of the answer's code that is ``line`` of the program, else ``None``."""
        if self.first_line <= line <= self.last_line:
            return line - self.first_line + 1
        return None


def _parse(source: str) -> ast.Module | SyntaxError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except SyntaxError as e:
            return e
        except (ValueError, RecursionError, MemoryError) as e:
            return SyntaxError(str(e) or type(e).__name__)


def _syntax(e: SyntaxError, offset: int = 0) -> str:
    line = (e.lineno or 0) - offset
    where = f"line {line}: " if line >= 1 else ""
    return f"the answer's code does not parse: {where}{e.msg}"


def preamble(prompt: str, entry_point: str) -> str:
    """``prompt`` without the definition of ``entry_point``: its imports, constants and helpers."""
    tree = _parse(prompt)
    if isinstance(tree, SyntaxError):
        tree = _parse(prompt.rstrip() + "\n    pass\n")
    if isinstance(tree, ast.Module):
        lines = prompt.splitlines(keepends=True)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                end = min(node.end_lineno or len(lines), len(lines))
                return "".join(lines[: start - 1] + lines[end:])
    m = re.search(rf"^(async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", prompt, re.MULTILINE)
    return prompt[: m.start()] if m else prompt


def _hoist_future(code: str) -> tuple[str, str]:
    """``from __future__`` imports must open the program: blank them in ``code`` (keeping its line
    numbers) and return them apart."""
    tree = _parse(code)
    if isinstance(tree, SyntaxError) or not _FUTURE.search(code):
        return "", code
    lines = lines_of(code)
    hoisted: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            end = node.end_lineno or node.lineno
            hoisted.append(" ".join(x.strip() for x in lines[node.lineno - 1 : end]))
            for i in range(node.lineno - 1, end):
                lines[i] = ""
    return "".join(h + "\n" for h in hoisted), "\n".join(lines)


def _has_return(tree: ast.Module) -> bool:
    """Whether a statement at the top level (outside any function) is ``return``/``yield``: a body."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Return | ast.Yield | ast.YieldFrom):
                return True
    return False


_LEADING = re.compile(r"^[ \t]+", re.MULTILINE)


def _reindented(code: str, prompt: str) -> str | None:
    """``code``, a function body, at the indentation of the prompt's last line (its docstring's),
    tabs counted as 8 columns; None when the prompt's last line is not indented."""
    last = next((line for line in reversed(prompt.splitlines()) if line.strip()), "")
    indent = last[: len(last) - len(last.lstrip(" \t"))]
    if not indent:
        return None
    expanded = _LEADING.sub(lambda m: m.group(0).expandtabs(8), code)
    return textwrap.indent(textwrap.dedent(expanded), indent)


def assemble(code: str, prompt: str, entry_point: str, tests: str) -> AnswerProgram | str:
    """The program running ``code`` (extracted from an answer) against ``tests`` and
    ``check(entry_point)``, or why the answer cannot run (a line naming the answer's fault)."""
    tail = f"\n\n{tests}\n\ncheck({entry_point})\n"
    first = next((line for line in code.splitlines() if line.strip()), "")
    if defines(code, entry_point):
        tree = _parse(code)
        if isinstance(tree, SyntaxError):
            return _syntax(tree)
        future, body = _hoist_future(code)
        head = future + preamble(prompt, entry_point).rstrip("\n") + "\n\n"
        start = head.count("\n") + 1
        return AnswerProgram(head + body + tail, start, start + body.count("\n"))
    if first[:1] not in (" ", "\t"):
        tree = _parse(code)
        if isinstance(tree, SyntaxError):
            return _syntax(tree)
        if not _has_return(tree):
            return f"the answer's code does not define `{entry_point}`"
        code = textwrap.indent(code, "    ")  # a body written without its indentation
    offset = prompt.count("\n")
    whole = prompt + code
    tree = _parse(whole)
    if isinstance(tree, IndentationError):
        # a body indented its own way (2 spaces, tabs) is still the function's body: the official
        # harness fails it, though the code is right
        fixed = _reindented(code, prompt)
        if fixed is not None and not isinstance(_parse(prompt + fixed), SyntaxError):
            return AnswerProgram(prompt + fixed + tail, offset + 1, offset + 1 + fixed.count("\n"))
    if isinstance(tree, SyntaxError):
        return _syntax(tree, offset)
    return AnswerProgram(whole + tail, offset + 1, offset + 1 + code.count("\n"))
