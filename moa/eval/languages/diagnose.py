"""Turning what a compiler or a failed program printed into one line that says whose fault it is.

Compile errors are the answer's: ``the answer's code does not compile: line 3: expected ';'`` (the
line counted in the answer's code when the error lies there). A run that fails says how: ``tests
failed: ...`` for a failed assertion, ``error: ...`` for anything else the program raised, then the
limits (``timeout after 5.0s``, ``memory limit (256 MB)``) and signals.
"""

from __future__ import annotations

import re
import signal
from typing import Literal

from moa.eval.languages.generic import FAIL_MARK
from moa.eval.languages.program import Program

__all__ = ["MAX_REASON", "compile_reason", "compile_stopped", "failure_reason"]

#: the longest reason kept (a compiler can print pages)
MAX_REASON = 400

# (file line, message) per compiler; the file is the program's own (main.c, Main.java, ...)
_COMPILE_ERRORS = {
    "c": re.compile(r"^[\w./]+\.c:(\d+):\d+: (?:fatal )?error: (.*)$", re.MULTILINE),
    "cpp": re.compile(r"^[\w./]+\.cpp:(\d+):\d+: (?:fatal )?error: (.*)$", re.MULTILINE),
    "go": re.compile(r"^\.?/?[\w./]+\.go:(\d+):\d+: (.*)$", re.MULTILINE),
    "java": re.compile(r"^[\w./]+\.java:(\d+): error: (.*)$", re.MULTILINE),
    "typescript": re.compile(r"^[\w./]+\.ts\((\d+),\d+\): error (?:TS\d+: )?(.*)$", re.MULTILINE),
}
_RUST_ERROR = re.compile(r"^error(?:\[E\d+\])?: (.*)\n\s*--> [\w./]+\.rs:(\d+):\d+", re.MULTILINE)
_ANY_ERROR = re.compile(r"^.*\berror\b.*$", re.MULTILINE | re.IGNORECASE)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


# what a compiler (or its runtime: the JVM of javac, V8 and Go of tsc, the Go runtime of go, the
# dynamic linker) prints when its address space runs out, each a whole line: a diagnostic always
# goes on past its file name (`:3:1: error: ...`), so `#line "virtual memory exhausted"` or a Go
# `//line` directive naming such a file cannot make one
_OUT_OF_MEMORY = re.compile(
    "|".join(
        (
            r"^virtual memory exhausted: Cannot allocate memory$",  # gcc's cc1, cc1plus
            r"^cc1\w*: out of memory allocating \d+ bytes after a total of \d+ bytes$",
            r"^\S+: (?:fatal|internal compiler) error: \S+ signal terminated program \S+$",  # gcc's driver
            r"^collect2: fatal error: ld terminated with signal \d+ \[[\w ]+\]$",
            r"^\S+: fatal error: cannot execute '[^']+': \w+: Cannot allocate memory$",
            r"^\S+: error while loading shared libraries: \S+: (?:failed to map segment from shared object"
            r"|cannot map zero-fill pages|cannot allocate memory)$",
            r"^memory allocation of \d+ bytes failed$",  # rustc
            r"^fatal error: (?:out of memory|failed to reserve page summary memory"
            r"|out of memory allocating heap arena map|out of memory allocating allArenas)$",  # Go's runtime
            r"^runtime: out of memory: cannot allocate \d+-byte block \(\d+ in use\)$",
            r"^go build [^:]+: \S+: signal: [a-z ]+$",  # the go command's compile or link tool killed
            r"^# Fatal (?:process|JavaScript|javascript) (?:OOM|out of memory)\b[^\n]*$",  # V8
            r"^FATAL ERROR: [\w:. -]+ (?:Allocation failed - JavaScript heap out of memory|process out of memory)$",
            r"^The system is out of resources\.$",  # javac
            r"^Error occurred during initialization of VM$",
        )
    ),
    re.MULTILINE,
)
# an error the compiler located in a file (any file: a `#line` may rename it): the code is at fault
_LOCATED_ERROR = re.compile(
    r"^\S[^\n]*?(?::\d+:\d+: (?:fatal )?error\b|:\d+: error: |\(\d+,\d+\): error\b)"
    r"|^error(?:\[E\d+\])?: [^\n]*\n\s*--> ",
    re.MULTILINE,
)
_GO_LOCATED = re.compile(r"^\S[^\n]*?:\d+(?::\d+)?: ", re.MULTILINE)


def compile_stopped(
    language: str, output: str, *, timed_out: bool, returncode: int | None
) -> tuple[Literal["sandbox", "time", "memory", "signal"], str] | None:
    """Why a compile that failed was stopped by the machine or its limits, not by the answer's
    code, and the line that shows it: the sandbox did not start (``"sandbox"``, bwrap's line), it
    ran out of time (``"time"``), the compiler or its runtime ran out of memory (``"memory"``,
    with the line it printed), or it was killed by a signal (``"signal"``, with the signal's
    name). ``None`` when the compiler reported an error in the code first, whatever happened next:
    that code does not compile under any limit."""
    located = _GO_LOCATED if language == "go" else _LOCATED_ERROR
    if located.search(output):
        return None
    first = output.strip().splitlines()[:1]
    if first and first[0].startswith("bwrap: "):
        return "sandbox", first[0]
    if timed_out:
        return "time", ""
    if (m := _OUT_OF_MEMORY.search(output)) is not None:
        return "memory", m.group(0).strip()
    if returncode is not None and returncode < 0:
        try:
            return "signal", signal.Signals(-returncode).name
        except ValueError:
            return "signal", f"signal {-returncode}"
    return None


def compile_reason(program: Program, output: str) -> str:
    """The first compile error in ``output`` as a line blaming the answer."""
    line: int | None = None
    message: str | None = None
    if program.language == "rust":
        m = _RUST_ERROR.search(output)
        if m is not None:
            line, message = int(m.group(2)), m.group(1)
    elif (pattern := _COMPILE_ERRORS.get(program.language)) is not None and (m := pattern.search(output)):
        line, message = int(m.group(1)), m.group(2)
    if message is None:
        m = _ANY_ERROR.search(output)
        message = m.group(0).strip() if m else (output.strip().splitlines() or ["the compiler failed"])[0]
    where = program.answer_line(line) if line is not None else None
    prefix = f"line {where}: " if where is not None else ""
    return _clip(f"the answer's code does not compile: {prefix}{message}")


def _harness_failures(program: Program, stderr: str) -> str | None:
    """The harness's ``MOA-FAIL <n> <message>`` lines as ``k of n failed: test i `line`: ...``."""
    found = re.findall(rf"^{FAIL_MARK} (\d+) ?(.*)$", stderr, re.MULTILINE)
    if not found or not program.tests:
        return None
    parts = []
    for number, message in found:
        i = int(number)
        source = program.tests[i - 1].strip() if 0 < i <= len(program.tests) else "?"
        message = _strip_rust_location(message.strip())
        parts.append(f"test {i} `{source}`" + (f": {message}" if message else ""))
    return f"tests failed: {len(found)} of {len(program.tests)} failed: " + "; ".join(parts)


def _strip_rust_location(message: str) -> str:
    return re.sub(r"^panicked at [^:]+:\d+:\d+:\s*", "", message)


_C_ASSERT = re.compile(r"Assertion [`'](.*)' failed\.")
_RUST_PANIC = re.compile(r"panicked at [^\n]*?:\d+:\d+:\n(.*?)(?:\nnote:|\nstack backtrace:|\Z)", re.DOTALL)
_JAVA_EXCEPTION = re.compile(r'^Exception in thread "main" ([\w.$]+)(?::\s*(.*))?$', re.MULTILINE)
_GO_FAIL = re.compile(r"^\s*--- FAIL: (\S+)")
_GO_PANIC = re.compile(r"^panic: (.*)$", re.MULTILINE)
_JS_ERROR = re.compile(
    r"^(\w*(?:Error|Exception))(?: \[\w+\])?: ?(.*?)(?=\n\s+at |\n\s*\{|\Z)", re.MULTILINE | re.DOTALL
)


def _go_failures(output: str) -> dict[str, str]:
    """``go test``'s failed tests (subtests as ``Test/name``) and the lines each logged."""
    failures: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        m = _GO_FAIL.match(line)
        if m is not None:
            current = m.group(1)
            failures[current] = ""
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            failures[current] = " ".join([failures[current], line.strip()]).strip()
        else:
            current = None
    return failures


def _language_failure(program: Program, stdout: str, stderr: str) -> str | None:
    """A failed assertion or an uncaught error, as each language prints it."""
    language = program.language
    if language in ("c", "cpp") and (m := _C_ASSERT.search(stderr)):
        return f"tests failed: assertion `{m.group(1)}` failed"
    if language == "rust" and (m := _RUST_PANIC.search(stderr)):
        text = m.group(1).strip()
        kind = "tests failed" if text.startswith("assertion") else "error: panicked"
        return f"{kind}: {text}"
    if language == "java" and (m := _JAVA_EXCEPTION.search(stderr)):
        name, detail = m.group(1).rsplit(".", 1)[-1], (m.group(2) or "").strip()
        text = f"{name}: {detail}" if detail else name
        return f"tests failed: {text}" if name == "AssertionError" else f"error: {text}"
    if language == "go":
        output = stdout + "\n" + stderr
        if m := _GO_PANIC.search(output):
            return f"error: panic: {m.group(1)}"
        if failures := _go_failures(output):
            leaves = [n for n in failures if not any(o.startswith(n + "/") for o in failures)]
            shown = "; ".join(f"{n}: {failures[n]}" if failures[n] else n for n in leaves[:3])
            return f"tests failed: {len(leaves)} failed: {shown}"
    if language in ("javascript", "typescript") and (m := _JS_ERROR.search(stderr)):
        name, detail = m.group(1), m.group(2).strip()
        text = f"{name}: {detail}" if detail else name
        return f"tests failed: {text}" if name == "AssertionError" else f"error: {text}"
    return None


def failure_reason(
    program: Program,
    *,
    returncode: int | None,
    stdout: str,
    stderr: str,
    timed_out: bool,
    timeout_s: float,
    killed_by: str | None,
    memory_mb: int,
    cpu_s: int | None = None,
    file_size_mb: int | None = None,
) -> str:
    """Why a run that did not exit 0 failed."""
    if timed_out:
        return f"timeout after {timeout_s:.1f}s"
    if killed_by == "SIGXCPU":
        return f"cpu limit ({cpu_s}s)" if cpu_s else "cpu limit"
    if killed_by == "SIGXFSZ":
        return f"file size limit ({file_size_mb} MB)" if file_size_mb else "file size limit"
    if killed_by == "memory" or _out_of_memory(program.language, stderr):
        return f"memory limit ({memory_mb} MB)"
    found = _harness_failures(program, stderr) or _language_failure(program, stdout, stderr)
    if found is not None:
        return _clip(found)
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    if killed_by:
        return f"killed: {killed_by}"
    # a compiled test program reports failure by its exit status, often after a line of its own
    tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or [""]
    detail = f": {tail[0]}" if tail[0] else ""
    return _clip(f"tests failed: exit code {returncode}{detail}")


_OOM = {
    "java": "java.lang.OutOfMemoryError",
    "javascript": "JavaScript heap out of memory",
    "typescript": "JavaScript heap out of memory",
    "go": "runtime: out of memory",
    "rust": "memory allocation of",
    "cpp": "std::bad_alloc",
}


def _out_of_memory(language: str, stderr: str) -> bool:
    marker = _OOM.get(language)
    return marker is not None and marker in stderr
