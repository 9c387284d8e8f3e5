"""Generic items in a compiled or non-Python language: the answer's code, then the item's tests,
given either as a program (its own ``main``, Go ``TestX`` functions, or top-level JavaScript
statements) or as assert lines, each run and reported on its own by a harness in the language.

What an assert line is, per language (the harness provides ``assert`` where the language lacks it):

* C, C++: ``assert(add(1, 2) == 3);`` (a counting ``assert`` replaces ``<assert.h>``'s);
* Rust: ``assert_eq!(add(1, 2), 3);``; Java: ``assert add(1, 2) == 3;`` (run with ``-ea``);
* Go: ``assert(add(1, 2) == 3)``; JavaScript, TypeScript: ``assert.deepEqual(add(1, 2), 3);``
  (``node:assert``).

A failing line prints ``MOA-FAIL <n> <message>`` on stderr and the program exits 1 after the rest.
Every layout then gets the end-of-tests marker (``moa.eval.languages.marker``), so exiting with 0
before the last line ran is a failure.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Sequence

from moa.eval.languages.merge import JavaFile, go_imports_block, java_host, split_go, split_java, unpublic
from moa.eval.languages.program import ANSWER_MAIN, Parts, Program, cut, rename_function
from moa.eval.languages.source import Span, defines_function, line_of, mask

__all__ = ["FAIL_MARK", "assemble_generic"]

FAIL_MARK = "MOA-FAIL"

_FILES = {
    "c": "main.c",
    "cpp": "main.cpp",
    "javascript": "main.js",
    "rust": "main.rs",
    "typescript": "main.ts",
}

_GO_TEST = re.compile(r"\bfunc\s+Test\w*\s*\(\s*\w+\s+\*\s*testing\.T\s*\)")


def _c_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


@functools.cache
def _key() -> str:
    """A suffix of this process's for the names the harnesses keep their counts in, which follow
    the answer's code: under fixed names a C answer declared ``static int moa_failed_;`` (the
    harness's definition then completes it) and its ``fprintf``, which a failed assertion calls,
    reset the count; every failure passed. One per process, so identical programs share a compile."""
    return secrets.token_hex(8)


def _c_harness(lines: Sequence[str]) -> str:
    test, failed = f"moa_test_{_key()}", f"moa_failed_{_key()}"
    calls = "".join(f"    {test} = {i};\n    {line}\n" for i, line in enumerate(lines, start=1))
    return (
        "#include <stdio.h>\n#include <assert.h>\n#undef assert\n"
        f"static int {test} = 0, {failed} = 0;\n"
        f'#define assert(e) ((e) ? (void)0 : (void)({failed}++, fprintf(stderr, "{FAIL_MARK} %d %s\\n", {test}, #e)))\n'
        f"int main(void) {{\n{calls}    return {failed} ? 1 : 0;\n}}\n"
    )


def _rust_harness(lines: Sequence[str]) -> str:
    calls = "".join(
        f"    if ::std::panic::catch_unwind(|| {{ {line} }}).is_err() {{\n"
        f'        moa_failed += 1;\n        eprintln!("{FAIL_MARK} {i} {{}}", moa_last());\n    }}\n'
        for i, line in enumerate(lines, start=1)
    )
    return (
        "static MOA_LAST: ::std::sync::Mutex<String> = ::std::sync::Mutex::new(String::new());\n"
        "fn moa_last() -> String {\n"
        "    MOA_LAST.lock().map(|s| s.replace('\\n', \" \")).unwrap_or_default()\n}\n"
        "fn main() {\n"
        "    ::std::panic::set_hook(Box::new(|info| {\n"
        "        if let Ok(mut last) = MOA_LAST.lock() {\n            *last = info.to_string();\n        }\n"
        "    }));\n"
        f"    let mut moa_failed = 0;\n{calls}"
        "    if moa_failed > 0 {\n        ::std::process::exit(1);\n    }\n}\n"
    )


def _java_harness(lines: Sequence[str]) -> str:
    calls = "".join(
        f"        try {{\n            {line}\n        }} catch (Throwable moaError) {{\n"
        f'            moaFailed++;\n            System.err.println("{FAIL_MARK} {i} " + '
        'String.valueOf(moaError).replace("\\n", " "));\n        }\n'
        for i, line in enumerate(lines, start=1)
    )
    return (
        "    public static void main(String[] args) {\n"
        f"        int moaFailed = 0;\n{calls}"
        # thrown, not System.exit(1): the answer's own `class System` shadows java.lang's here
        '        if (moaFailed > 0) throw new AssertionError(moaFailed + " of the tests failed");\n    }\n'
    )


def _go_harness(lines: Sequence[str]) -> str:
    # assert counts the failure itself rather than by panic(): the answer's package-level
    # `func panic(v any) {}` shadows the builtin in the whole package, and every assert passed
    test, failed, fail, last = (f"moa{n}_{_key()}" for n in ("Test", "Failed", "Fail", "FailedLine"))
    calls = "".join(f"\tmoaRun({i}, func() {{ {line} }})\n" for i, line in enumerate(lines, start=1))
    return (
        f"var {test}, {failed}, {last} int\n\n"
        f"func {fail}(i int, why interface{{}}) {{\n\tif {last} != i {{\n\t\t{last} = i\n\t\t{failed}++\n"
        f'\t\tfmt.Fprintf(os.Stderr, "{FAIL_MARK} %d %v\\n", i, why)\n\t}}\n}}\n\n'
        f'func assert(ok bool) {{\n\tif !ok {{\n\t\t{fail}({test}, "assertion failed")\n\t}}\n}}\n\n'
        "func main() {\n"
        f"\tmoaRun := func(i int, f func()) {{\n\t\t{test} = i\n\t\tdefer func() {{\n"
        f"\t\t\tif r := recover(); r != nil {{\n\t\t\t\t{fail}(i, r)\n"
        "\t\t\t}\n\t\t}()\n\t\tf()\n\t}\n"
        f"{calls}\tif {failed} > 0 {{\n\t\tos.Exit(1)\n\t}}\n}}\n"
    )


def _js_harness(lines: Sequence[str], typescript: bool) -> str:
    calls = "".join(
        f"  try {{\n    {line}\n  }} catch (e) {{\n    moaFailed++;\n"
        f'    console.error("{FAIL_MARK} {i} " + String(e instanceof Error ? e.message : e).replace(/\\n+/g, " "));\n'
        "  }\n"
        for i, line in enumerate(lines, start=1)
    )
    declare = "declare var require: any;\ndeclare var process: any;\n" if typescript else ""
    return (
        f"{declare};(function () {{\n  const assert = require('node:assert');\n  let moaFailed = 0;\n"
        # thrown, not process.exitCode = 1: a beforeExit listener of the answer's reset the code and
        # kept the loop alive, and Node emitted beforeExit again with 0 (the token was written)
        f"{calls}  if (moaFailed > 0) throw new Error(moaFailed + ' of the tests failed');\n}})();\n"
    )


def assemble_generic(
    language: str,
    code: str,
    *,
    program: str | None = None,
    lines: Sequence[str] = (),
    entry: str | None = None,
) -> Program:
    """The answer's ``code`` with the item's test ``program``, or with its assert ``lines``."""
    if language == "go":
        return _go(code, program, lines)
    if language == "java":
        return _java(code, program, lines, entry)
    parts = Parts()
    if program is not None:
        own_main = defines_function(program, language, "main")
        parts.add(rename_function(code, language, "main", ANSWER_MAIN) if own_main else code, answer=True)
        parts.add(program)
        return parts.program(language, _FILES[language])
    parts.add(rename_function(code, language, "main", ANSWER_MAIN), answer=True)
    if language in ("c", "cpp"):
        parts.add(_c_harness(lines))
    elif language == "rust":
        parts.add(_rust_harness(lines))
    else:
        parts.add(_js_harness(lines, language == "typescript"))
    return parts.program(language, _FILES[language], tests=tuple(lines))


def _go(code: str, program: str | None, lines: Sequence[str]) -> Program:
    answer = split_go(code)
    parts = Parts()
    if program is not None:
        tests = split_go(program)
        go_test = _GO_TEST.search(tests.body) is not None and not defines_function(tests.body, "go", "main")
        body = answer.body if go_test else rename_function(answer.body, "go", "main", ANSWER_MAIN)
        parts.add("package main\n\n" + go_imports_block(answer.imports, tests.imports))
        parts.add(body, answer=True)
        parts.add(tests.body)
        return parts.program("go", "main_test.go" if go_test else "main.go", go_test=go_test)
    parts.add("package main\n\n" + go_imports_block(answer.imports, ('"fmt"', '"os"')))
    parts.add(rename_function(answer.body, "go", "main", ANSWER_MAIN), answer=True)
    parts.add(_go_harness(lines))
    return parts.program("go", "main.go", tests=tuple(lines))


_CALLED = re.compile(r"([A-Za-z_$][\w$]*)\s*\(")


def _java_called_host(answer: JavaFile, lines: Sequence[str]) -> Span | None:
    """Without an entry point, the answer's type defining a method the assert lines call (they
    call it unqualified, from the class its members join), else its first type: a correct answer
    whose helper class came first had that helper's members taken and failed to compile."""
    called = dict.fromkeys(_CALLED.findall(mask("\n".join(lines), "java")))
    for span in answer.types:
        members = answer.body[span.open + 1 : span.close]
        if any(defines_function(members, "java", name) for name in called):
            return span
    return answer.types[0] if answer.types else None


def _java(code: str, program: str | None, lines: Sequence[str], entry: str | None) -> Program:
    answer = split_java(code)
    parts = Parts()
    if program is not None:
        tests = split_java(unpublic(program))
        runner = next(
            (t for t in tests.types if defines_function(tests.body[t.open + 1 : t.close], "java", "main")),
            tests.types[0] if tests.types else None,
        )
        name = runner.name if runner is not None else "Main"
        parts.add("".join(f"{i}\n" for i in dict.fromkeys(answer.imports + tests.imports)))
        if answer.types or runner is None:
            parts.add(unpublic(answer.body), answer=True)
            parts.add(tests.body)
        else:
            # bare methods: they join the class that runs the tests, which calls them unqualified
            parts.add(tests.body[: runner.open + 1])
            parts.add(answer.body, answer=True)
            parts.add(tests.body[runner.open + 1 :])
        return parts.program("java", f"{name}.java", main_class=name)
    host = java_host(answer, entry) or _java_called_host(answer, lines)
    if host is None:
        members, others, base = answer.body, "", 1
    else:
        members = answer.body[host.open + 1 : host.close]
        others = cut(answer.body, host.start, host.end)
        base = line_of(answer.body, host.open + 1)
    parts.add("".join(f"{i}\n" for i in answer.imports))
    if others.strip():
        parts.add(unpublic(others), answer=True)
    parts.add("class Main {")
    parts.add(rename_function(members, "java", "main", "moaAnswerMain"), answer=True, base=base)
    parts.add(_java_harness(lines) + "}")
    if host is not None and host.name != "Main" and "class" in answer.body[host.start : host.open].split():
        parts.add(f"class {host.name} extends Main {{}}")
    return parts.program("java", "Main.java", main_class="Main", tests=tuple(lines))
