"""Answers in other languages, without compiling anything: language names, the MultiPL-E and generic
dataset layouts, choosing the code block, assembling programs, reading compiler output, and a
missing toolchain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution
from moa.eval.languages import toolchains
from moa.eval.languages.diagnose import compile_reason, failure_reason
from moa.eval.languages.evaluate import language_program
from moa.eval.languages.extract import extract_language_code
from moa.eval.languages.generic import assemble_generic
from moa.eval.languages.multiple import assemble_multiple, entry_of
from moa.eval.languages.names import LANGUAGES, canonical_language
from moa.eval.languages.program import Program, explicit_java_asserts
from moa.eval.languages.source import defines_function, mask

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
COMPILED = ("c", "cpp", "go", "java", "javascript", "rust", "typescript")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("rs", "rust"),
        ("C++", "cpp"),
        ("go_test.go", "go"),
        ("js", "javascript"),
        ("ts", "typescript"),
        ("py", "python"),
    ],
)
def test_language_names_are_canonical(name: str, canonical: str) -> None:
    """Dataset spellings (MultiPL-E's `rs`, `go_test.go`; `C++`) map to one canonical name."""
    assert canonical_language(name) == canonical
    assert canonical in LANGUAGES


def test_unknown_language_is_none() -> None:
    """A language moa does not run has no canonical name."""
    assert canonical_language("php") is None


@pytest.mark.parametrize("language", COMPILED)
def test_every_fixture_file_loads_as_multiple(language: str) -> None:
    """Each language's fixture is a MultiPL-E file: auto-detected, five items, the language
    canonical, the entry point read from the prompt, stop tokens kept."""
    ds = load_dataset(FIXTURES / f"{language}.jsonl")
    assert len(ds) >= 5
    for item, row in zip(ds, _rows(FIXTURES / f"{language}.jsonl"), strict=True):
        assert item.language == language and item.id == row["name"]
        assert item.test == row["tests"] and item.input == row["prompt"]
        assert item.meta["format"] == "multiple" and item.meta["stop_tokens"] == row["stop_tokens"]
        assert item.entry_point is not None and item.entry_point in str(row["prompt"])
        assert item.category is None


def test_generic_fixture_has_two_items_per_language() -> None:
    """The generic fixture: per language, one item with assert lines and one with a test program."""
    ds = load_dataset(FIXTURES / "generic.jsonl")
    for language in COMPILED:
        items = [i for i in ds if i.language == language]
        assert len(items) == 2
        assert sum(i.tests is not None for i in items) == 1 and sum(i.test is not None for i in items) == 1


def test_multiple_format_named_explicitly_and_python_rows(tmp_path: Path) -> None:
    """`format="multiple"` reads the layout; a Python row gets its `def` as the entry point and
    runs like HumanEval (prompt + body + tests)."""
    row = {
        "name": "HumanEval_1_add",
        "language": "py",
        "prompt": "def add(a: int, b: int) -> int:\n    '''Add.'''\n",
        "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n\ndef test_check():\n    check(add)\n\ntest_check()\n",
        "stop_tokens": ["\ndef"],
        "doctests": "keep",
    }
    path = tmp_path / "py.jsonl"
    path.write_text(json.dumps(row) + "\n")
    item = load_dataset(path, format="multiple").items[0]
    assert (item.language, item.entry_point, item.meta["doctests"]) == ("python", "add", "keep")
    assert score_execution("    return a + b\n", item, timeout_s=10).value == 1.0
    assert score_execution("    return a - b\n", item, timeout_s=10).value == 0.0


def test_multiple_row_without_language_is_a_bad_row(tmp_path: Path) -> None:
    """A MultiPL-E row with an empty `language` fails with its line."""
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"name": "x", "language": "", "prompt": "p", "tests": "t"}) + "\n")
    with pytest.raises(DatasetError, match=r"^m\.jsonl:1: `language` must be a non-empty string$"):
        load_dataset(path)


def test_generic_rows_with_a_language(tmp_path: Path) -> None:
    """Generic rows: `tests` as a string is a test program in that language, as a list assert
    lines; an unknown language is kept as written; Python rows keep the old behaviour."""
    rows = [
        {"id": "a", "input": "q", "language": "Rust", "tests": "fn main() {}"},
        {"id": "b", "input": "q", "language": "c++", "tests": ["assert(f() == 1);"]},
        {"id": "c", "input": "q", "language": "PHP", "tests": ["assert(f() == 1);"]},
        {"id": "d", "input": "q", "tests": ["assert f() == 1"]},
    ]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b, c, d = load_dataset(path).items
    assert (a.language, a.test, a.tests) == ("rust", "fn main() {}", None)
    assert (b.language, b.tests, b.test) == ("cpp", ["assert(f() == 1);"], None)
    assert c.language == "php" and d.language is None and d.tests == ["assert f() == 1"]
    assert "language" not in a.meta


def test_unknown_language_scores_zero_naming_it() -> None:
    """An item in a language moa does not run scores 0 with a reason naming the language."""
    item = Item(id="x", input="q", tests=["assert(true);"], language="php")
    score = score_execution("```php\n<?php echo 1;\n```", item)
    assert score.value == 0.0 and score.detail is not None
    assert score.detail.startswith(
        "no runner for language `php` (moa runs c, cpp, go, html, java, javascript"
    )


def test_missing_toolchain_is_a_clear_per_item_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without rustc on PATH (nor in ~/.cargo/bin) a Rust item scores 0, saying what is missing and
    how to install it; nothing crashes."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(toolchains, "_EXTRA_DIRS", ())
    toolchains.find_toolchain.cache_clear()
    try:
        item = Item(id="x", input="q", tests=["assert_eq!(f(), 1);"], language="rust")
        score = score_execution("```rust\nfn f() -> i32 { 1 }\n```", item)
    finally:
        monkeypatch.undo()
        toolchains.find_toolchain.cache_clear()
    assert score.value == 0.0
    assert score.detail == "toolchain missing: rustc not found (install: apt-get install rustc, or rustup)"


def test_masking_ignores_braces_in_strings_comments_and_lifetimes() -> None:
    """Braces and `fn main` inside strings, comments and raw strings do not count; a Rust lifetime
    is not a character literal."""
    src = 'fn f<\'a>(s: &\'a str) -> &\'a str { let _ = "}"; let _ = r#"fn main() {"#; /* } */ s }\n'
    masked = mask(src, "rust")
    assert len(masked) == len(src) and masked.count("{") == masked.count("}") == 1
    assert not defines_function(src, "rust", "main") and defines_function(src, "rust", "f")


@pytest.mark.parametrize(
    ("language", "answer", "expected"),
    [
        ("rust", "```python\nprint(1)\n```\n```rs\nfn f() {}\n```", "fn f() {}"),
        ("cpp", "```c++\nint f() { return 1; }\n```\n```text\nlong output\n```", "int f() { return 1; }"),
        ("go", "Use this:\n\nfunc f() int {\n\treturn 1\n}", "func f() int {\n\treturn 1\n}"),
        ("java", "        return n + 1;\n    }", "        return n + 1;\n    }"),
        ("typescript", "I cannot help with that.", None),
    ],
)
def test_code_is_chosen_by_fence_language(language: str, answer: str, expected: str | None) -> None:
    """The block tagged with the language (or an alias) wins; without fences, code after prose or
    an indented body is the code; prose alone is no code."""
    assert extract_language_code(answer, language) == expected


def test_the_block_defining_the_entry_point_wins() -> None:
    """With an entry point, the last block defining it is chosen over a longer usage example."""
    answer = (
        "```cpp\nlong add(long a, long b) { return a + b; }\n```\nUsage:\n"
        '```cpp\n#include <cstdio>\nint main() { printf("%ld\\n", add(1, 2)); return 0; }\n```'
    )
    assert (
        extract_language_code(answer, "cpp", entry_point="add")
        == "long add(long a, long b) { return a + b; }"
    )


def test_entry_point_is_read_from_each_prompt() -> None:
    """The function a MultiPL-E prompt opens, in every language."""
    for language in COMPILED:
        for row in _rows(FIXTURES / f"{language}.jsonl"):
            entry = entry_of(str(row["prompt"]), language)
            assert entry is not None and re.search(rf"\b{entry}\s*\(", str(row["prompt"]))


RUST_PROMPT = "/// Add.\nfn add(a: isize, b: isize) -> isize {\n"
RUST_TESTS = "}\n\nfn main() {\n    let candidate = add;\n    assert_eq!(candidate(1, 2), 3);\n}\n"


def test_completion_is_cut_at_the_stop_token() -> None:
    """A body is put after the prompt, cut at its first stop token as MultiPL-E cuts completions,
    and its lines are counted from the body's first line."""
    program = assemble_multiple(
        "rust", "    a + b\n}\n\nfn extra() {}", RUST_PROMPT, RUST_TESTS, ["\n}"], "add"
    )
    assert isinstance(program, Program)
    assert program.source == RUST_PROMPT + "    a + b\n" + RUST_TESTS
    assert program.answer_line(3) == 1 and program.answer_line(4) is None


def test_a_stop_token_ending_a_line_is_found_with_blanks_before_that_end() -> None:
    """A Java completion whose closing `}` is followed by spaces or a tab missed the stop token
    `\\n    }\\n`, ran on into the tests' own `}` and did not compile: it is cut there too."""
    prompt = "class Problem {\n    public static long add(long a, long b) {\n"
    tests = (
        "    }\n    public static void main(String[] args) {\n    assert(add(1l, 2l) == 3l);\n    }\n\n}\n"
    )
    for close in ("    }  \n}\n", "    }\t\n", "    } "):
        program = assemble_multiple(
            "java", f"        return a + b;\n{close}", prompt, tests, ["\n    }\n"], "add"
        )
        assert isinstance(program, Program)
        assert program.source == prompt + "        return a + b;\n" + tests, close


def test_whole_program_replaces_the_prompt_and_renames_its_main() -> None:
    """A whole program keeps the prompt's preamble, renames its own `main`, and the tests lose the
    brace that closed the prompt's function."""
    code = 'fn add(a: isize, b: isize) -> isize {\n    a + b\n}\n\nfn main() {\n    println!("{}", add(1, 2));\n}'
    program = assemble_multiple(
        "rust", code, "use std::collections::HashMap;\n" + RUST_PROMPT, RUST_TESTS, [], "add"
    )
    assert isinstance(program, Program)
    assert program.source.startswith("use std::collections::HashMap;\nfn add(")
    assert "fn moa_answer_main() {" in program.source and program.source.count("fn main()") == 1
    assert "/// Add." not in program.source
    assert program.answer_line(2) == 1


def test_whole_program_defining_another_function_is_the_answers_fault() -> None:
    """A whole program without the prompt's function is reported as such before compiling."""
    code = "fn plus(a: isize, b: isize) -> isize {\n    a + b\n}"
    assert assemble_multiple("rust", code, RUST_PROMPT, RUST_TESTS, ["\n}"], "add") == (
        "the answer's code does not define `add`"
    )


def test_java_whole_program_moves_its_methods_into_the_prompts_class() -> None:
    """A Java answer's class (public, with its own main) is folded into the prompt's class; its
    imports come first; its name stays usable for qualified calls."""
    prompt = (
        "import java.util.*;\nclass Problem {\n    // Add.\n    public static long add(long a, long b) {\n"
    )
    tests = (
        "    }\n    public static void main(String[] args) {\n    assert(add(1l, 2l) == 3l);\n    }\n\n}\n"
    )
    code = (
        "import java.math.*;\n\npublic class Solution {\n    public static long add(long a, long b) { return a + b; }\n"
        "    public static void main(String[] args) { }\n}"
    )
    program = assemble_multiple("java", code, prompt, tests, ["\n    }\n"], "add")
    assert isinstance(program, Program) and program.filename == "Problem.java"
    assert program.source.startswith("import java.util.*;\nimport java.math.*;\nclass Problem {")
    assert "moaAnswerMain" in program.source and "class Solution extends Problem {}" in program.source
    assert "public class" not in program.source


def test_go_whole_program_merges_imports_once() -> None:
    """A Go answer's package clause goes and its imports join the prompt's, each path once."""
    prompt = (
        'package add_test\n\nimport (\n    "testing"\n    "fmt"\n)\n\n// Add.\nfunc add(a int, b int) int {\n'
    )
    code = (
        'package main\n\nimport "fmt"\nimport s "strings"\n\nfunc add(a int, b int) int {\n\treturn a + b\n}'
    )
    program = assemble_multiple("go", code, prompt, "func TestAdd(t *testing.T) {}\n", ["\nfunc"], "add")
    assert isinstance(program, Program) and program.go_test
    head = program.source.split("func add")[0]
    assert head.count('"fmt"') == 1 and 's "strings"' in head and '"testing"' in head
    assert "package main" not in program.source and program.source.startswith("package add_test")


@pytest.mark.parametrize("language", COMPILED)
def test_assert_line_harness_numbers_each_line(language: str) -> None:
    """Assert lines are each wrapped to be run and reported on their own."""
    lines = ("LINE_ONE", "LINE_TWO")
    program = assemble_generic(language, "CODE", lines=lines)
    assert program.tests == lines and program.source.index("CODE") < program.source.index("LINE_ONE")
    assert program.source.index("LINE_ONE") < program.source.index("LINE_TWO")
    assert program.answer_line(program.first_line) == 1


@pytest.mark.parametrize(
    ("language", "output", "expected"),
    [
        ("c", "main.c:5:12: error: expected ';' before '}' token", "line 2: expected ';' before '}' token"),
        ("rust", "error[E0308]: mismatched types\n --> main.rs:4:5\n", "line 1: mismatched types"),
        ("java", "Problem.java:6: error: cannot find symbol", "line 3: cannot find symbol"),
        (
            "typescript",
            "main.ts(5,3): error TS2322: Type 'string' is not assignable",
            "line 2: Type 'string'",
        ),
        ("go", "# command-line-arguments\n./main.go:9:2: undefined: x", "undefined: x"),
    ],
)
def test_compile_errors_name_the_answers_line(language: str, output: str, expected: str) -> None:
    """The first compile error, its line counted in the answer's code when it lies there."""
    program = Program(language, "", "main", first_line=4, last_line=6)
    reason = compile_reason(program, output)
    assert reason.startswith(f"the answer's code does not compile: {expected}"), reason


@pytest.mark.parametrize(
    ("language", "stderr", "returncode", "expected"),
    [
        ("cpp", "prog: main.cpp:9: int main(): Assertion `candidate(2) == (5)' failed.", -6,
         "tests failed: assertion `candidate(2) == (5)` failed"),
        ("rust", "thread 'main' panicked at main.rs:8:5:\nassertion `left == right` failed\n  left: 4\n right: 5\n"
         "note: run with `RUST_BACKTRACE=1`", 101, "tests failed: assertion `left == right` failed left: 4 right: 5"),
        ("rust", "thread 'main' panicked at main.rs:2:5:\nindex out of bounds: the len is 0 but the index is 3\n", 101,
         "error: panicked: index out of bounds"),
        ("java", 'Exception in thread "main" java.lang.AssertionError\n\tat Problem.main(Problem.java:8)', 1,
         "tests failed: AssertionError"),
        ("java", 'Exception in thread "main" java.lang.ArithmeticException: / by zero\n', 1,
         "error: ArithmeticException: / by zero"),
        ("javascript", "node:assert:90\n\nAssertionError [ERR_ASSERTION]: Expected values to be loosely deep-equal:\n\n4"
         "\n\nshould loosely deep-equal\n\n5\n    at test (/sandbox/main.js:9:10)", 1,
         "tests failed: AssertionError: Expected values to be loosely deep-equal: 4 should loosely deep-equal 5"),
        ("go", "--- FAIL: TestAdd (0.00s)\n    --- FAIL: TestAdd/test_num__1 (0.00s)\n        main_test.go:25: expected"
         " '5', got '4'\nFAIL\n", 1, "tests failed: 1 failed: TestAdd/test_num__1: main_test.go:25: expected '5'"),
        ("c", "", -11, "killed by SIGSEGV"),
        ("java", 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space', 1, "memory limit (256 MB)"),
    ],
)  # fmt: skip
def test_run_failures_say_how(language: str, stderr: str, returncode: int, expected: str) -> None:
    """Each language's failed assertion, uncaught error, crash and heap exhaustion in one line."""
    reason = failure_reason(
        Program(language, "", "main"),
        returncode=returncode,
        stdout="",
        stderr=stderr,
        timed_out=False,
        timeout_s=5,
        killed_by=None,
        memory_mb=256,
    )
    assert reason.startswith(expected), reason
    assert "\n" not in reason


def test_harness_failures_quote_their_lines() -> None:
    """The harness's failure marks become `k of n failed: test i `line`: message`."""
    program = Program("go", "", "main.go", tests=("assert(f() == 1)", "assert(f() == 2)"))
    reason = failure_reason(
        program,
        returncode=1,
        stdout="",
        stderr="MOA-FAIL 2 assertion failed\n",
        timed_out=False,
        timeout_s=5,
        killed_by=None,
        memory_mb=256,
    )
    assert reason == "tests failed: 1 of 2 failed: test 2 `assert(f() == 2)`: assertion failed"


def test_item_without_tests_or_code() -> None:
    """No tests: `None`; prose only: no code found."""
    assert language_program("```go\nfunc f() {}\n```", Item(id="x", input="q", language="go"), "go") is None
    item = Item(id="x", input="q", tests=["assert(f() == 1)"], language="go")
    assert language_program("I would rather not.", item, "go") == "no code found in the answer"


@pytest.mark.parametrize("depth", [10_000])
def test_hostile_nesting_does_not_break_the_reader(depth: int) -> None:
    """Deeply nested braces, an unterminated string and a lone block comment: read without error."""
    code = "int f() " + "{" * depth + '"unterminated\n/* never closed ' + "}" * (depth - 1)
    assert not defines_function(code, "cpp", "main")
    program = assemble_multiple("cpp", code, "int f() {\n", "}\nint main() {}\n", ["\n}"], "f")
    assert isinstance(program, Program | str)


def test_compile_cache_is_bounded_least_recently_used_first() -> None:
    """The compile cache evicts the least recently used entries once over its byte bound."""
    from moa.eval.languages.build import _Cache, _Compiled

    cache = _Cache(max_bytes=100, max_entries=10)
    for key in "abc":
        cache.put(key, _Compiled(b"x" * 40, "", False, 0.0, "bwrap"))
    assert cache.get("a") is None and cache.get("b") is not None and cache.get("c") is not None
    cache.put("big", _Compiled(b"x" * 101, "", False, 0.0, "bwrap"))
    assert cache.get("big") is None


def test_execution_config_takes_compile_limits_and_names_a_wrong_field() -> None:
    """The evaluator's configuration has the compile limits and the isolation; a misspelt field is
    refused naming it."""
    from moa.errors import UserError
    from moa.eval.registry import make_evaluator

    evaluator = make_evaluator(
        {"name": "execution", "compile_timeout_s": 30, "compile_memory_mb": 1024, "isolation": "fallback"}
    )
    assert evaluator.name == "execution"
    with pytest.raises(UserError, match="evaluator `execution`: field `compile_timeout`"):
        make_evaluator({"name": "execution", "compile_timeout": 30})


def test_node_without_a_permission_model_gets_no_permission_flags(tmp_path: Path) -> None:
    """A Node that refuses every permission flag (older than 20) runs programs without them, rather
    than failing every JavaScript answer on a bad option; one that accepts a spelling gets it."""
    old = tmp_path / "node18"
    old.write_text('#!/bin/sh\necho "node: bad option: $1" >&2\nexit 9\n')
    old.chmod(0o755)
    assert toolchains.node_permission_flags(str(old)) == ()
    new = tmp_path / "node22"
    new.write_text('#!/bin/sh\n[ "$1" = --experimental-permission ] && [ "$#" = 4 ] && exit 0\nexit 9\n')
    new.chmod(0o755)
    flags = ("--experimental-permission", "--disable-warning=ExperimentalWarning")
    assert toolchains.node_permission_flags(str(new)) == flags


def test_java_assert_statements_outside_the_answer_become_explicit_checks() -> None:
    """The tests' ``assert`` statements become ``if``/``throw`` (a message, a conditional's own
    ``:``, ``::`` and strings kept apart); the answer's lines and the line numbers stay as they were."""
    answer = "    static int f(int x) { assert x > 0; return x; }\n"
    tests = (
        "    public static void main(String[] args) {\n"
        "        assert(f(1) == 1);\n"
        '        assert f(1) > 0 ? true : false : "a: b";\n'
        "        assert java.util.stream.Stream.of(1)\n            .map(String::valueOf).count() == 1;\n"
        '        if (f(1) == 1) assert f(1) == 1 : f(1); else System.out.println("assert x;");\n'
        "    }\n}\n"
    )
    source = "class Problem {\n" + answer + tests
    program = Program("java", source, "Problem.java", first_line=2, last_line=2)
    rewritten = explicit_java_asserts(program).source
    assert rewritten.splitlines()[:2] == source.splitlines()[:2]
    assert rewritten.count("\n") == source.count("\n")
    assert rewritten.splitlines()[3:] == [
        "        { if (!((f(1) == 1))) throw new java.lang.AssertionError(); }",
        '        { if (!( f(1) > 0 ? true : false )) throw new java.lang.AssertionError( "a: b"); }',
        "        { if (!( java.util.stream.Stream.of(1)",
        "            .map(String::valueOf).count() == 1)) throw new java.lang.AssertionError(); }",
        "        if (f(1) == 1) { if (!( f(1) == 1 )) throw new java.lang.AssertionError( f(1)); }"
        ' else System.out.println("assert x;");',
        "    }",
        "}",
    ]
