"""The control compile: whose fault a compile stopped by its limits is.

A compile the limits stopped (out of time, out of memory, killed by a signal, with no error located
in the code) is either the answer's (a macro or template bomb: exponential expansion, runaway
instantiation) or the configuration's and the machine's (a limit set too low, a busy machine). To
tell them apart, a control program in the same language is compiled in the same sandbox, by the same
command, with a quarter of the time limit and (C, C++, Java, Rust) half the memory limit: the
program's system headers (the item's and the answer's; the item's alone when those fail) and an
empty ``main`` for C and C++ (headers are what their compiles spend), an empty program for the
others. When the control compiles, with
no error, within that, the limits were adequate on this machine just now and the answer's code is
to blame: it scores 0. Otherwise (the control stopped too or failed) the item stays unscored.

Half, not a quarter, of the memory limit, and the whole of it for Go and TypeScript: the limit is on
address space, which rustc and javac's JVM reserve by the hundreds of MB before they read a line,
and Go's runtime (go; TypeScript 7's tsc is a Go program) starts under some limits and not under
smaller, or even larger, ones (tsc: under 1024 and 1536 MB, not under 768 or 1200), so a share of
its limit says nothing of the margin; their controls compile under the answer's own limit.

The answer's program is compiled a second time beside the control, and only a second stop counts:
a first one met by a passing spell of load is not charged. A control that found the limits
inadequate is remembered for 30 seconds, per program, toolchain and limits (the stopped compiles in
that while skip their second compile: the item would stay unscored anyway); a clear one is never
reused: run beside the second compile it costs no time, and a quiet moment carried into a busy
spell would charge a correct answer with 0.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from moa.eval.languages.program import Program
from moa.eval.languages.source import split_lines

__all__ = ["CONTROL_TIME_SHARE", "Control", "ControlCache", "control_memory_mb", "control_program"]

#: the control must compile within ``compile_timeout_s`` divided by this
CONTROL_TIME_SHARE = 4
# the control compiles under ``compile_memory_mb`` divided by this (1 where not listed)
_MEMORY_SHARE = {"c": 2, "cpp": 2, "java": 2, "rust": 2}
#: how long a control's result is reused, in seconds
_CONTROL_TTL_S = 30.0

# a system header (`#include <stdio.h>`): a quoted one names a file the control does not have, and
# a path (`</dev/zero>`, `<../../dev/zero>`) could be anything
_SYSTEM_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*<([\w+.-]+(?:/[\w+.-]+)*)>[ \t]*$")
_GO_PACKAGE = re.compile(r"^package[ \t]+(\w+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Control:
    """How the control compile went."""

    compiled: bool
    """It handed back its artifact (no error, not stopped)."""
    duration_s: float
    stopped: str | None = None
    """What stopped it (``"time"``, ``"memory"``, ``"signal"``), if its limits did."""

    def clear(self, compile_timeout_s: float) -> bool:
        """Whether it shows the limits adequate: compiled within a quarter of the time limit."""
        return self.compiled and self.duration_s <= compile_timeout_s / CONTROL_TIME_SHARE

    def describe(self) -> str:
        """What the control did, for the line of a compile stopped by its limits."""
        if self.stopped == "time":
            return "a control compile did not finish within a quarter of compile_timeout_s"
        if self.stopped == "sandbox":
            return "a control compile's sandbox failed"
        if self.stopped is not None:
            return (
                "a control compile ran out of memory"
                if self.stopped == "memory"
                else "a control compile was killed"
            )
        if not self.compiled:
            return "a control compile failed"
        return f"a control compile took {self.duration_s:.1f} s, over a quarter of compile_timeout_s"


def control_memory_mb(language: str, compile_memory_mb: int) -> int:
    """The ``compile_memory_mb`` a control in ``language`` compiles under."""
    return max(1, compile_memory_mb // _MEMORY_SHARE.get(language, 1))


def _answer_lines(program: Program) -> set[int]:
    spans = [(program.first_line, program.last_line), *program.answer_elsewhere] if program.first_line else []
    return {line for first, last in spans for line in range(first, last + 1)}


def _system_includes(program: Program, *, answer: bool) -> list[str]:
    """The system headers the program includes, each once, the answer's too when ``answer``."""
    skip = set() if answer else _answer_lines(program)
    found: dict[str, None] = {}
    for number, line in enumerate(split_lines(program.source), start=1):
        m = _SYSTEM_INCLUDE.match(line)
        if m is not None and number not in skip and not {".", ".."} & set(m.group(1).split("/")):
            found[f"#include <{m.group(1)}>\n"] = None
    return list(found)


def control_program(program: Program, *, answer_headers: bool = True) -> Program:
    """The control for ``program``: same language, file name and build (``go test -c``, Java's
    class), the smallest program that compiles, with the program's system headers for C and C++:
    the answer's as well as the item's (a correct answer's `#include <bits/stdc++.h>` is a heavy
    compile, not a bomb) unless not ``answer_headers`` (one of the answer's did not compile: a
    missing one, or `<bits/stdio.h>` with its `#error`, included after a bomb would fail every
    control, and the bomb would never be charged)."""
    language = program.language
    match language:
        case "c" | "cpp":
            main = "int main(void) { return 0; }\n" if language == "c" else "int main() { return 0; }\n"
            source = "".join(_system_includes(program, answer=answer_headers)) + main
        case "go":
            m = _GO_PACKAGE.search(program.source)
            package = m.group(1) if m else "main"
            if program.go_test:
                source = f'package {package}\n\nimport "testing"\n\nfunc TestMoaControl(t *testing.T) {{}}\n'
            else:
                source = "package main\n\nfunc main() {}\n"
        case "java":
            name = program.filename.removesuffix(".java")
            source = f"class {name} {{\n    public static void main(String[] args) {{}}\n}}\n"
        case "rust":
            source = "fn main() {}\n"
        case _:
            source = "const moaControl: number = 1;\n"
    main_class = program.filename.removesuffix(".java") if language == "java" else None
    return Program(language, source, program.filename, main_class=main_class, go_test=program.go_test)


class ControlCache:
    """Controls by key for ``_CONTROL_TTL_S`` seconds, a few dozen at most (short-lived: a busy
    spell must not be frozen in)."""

    def __init__(self, ttl_s: float = _CONTROL_TTL_S, max_entries: int = 64) -> None:
        self._items: OrderedDict[str, tuple[float, Control]] = OrderedDict()
        self._lock = threading.Lock()
        self.ttl_s, self.max_entries = ttl_s, max_entries

    def get(self, key: str) -> Control | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            if time.monotonic() - found[0] > self.ttl_s:
                del self._items[key]
                return None
            return found[1]

    def put(self, key: str, control: Control) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), control)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
