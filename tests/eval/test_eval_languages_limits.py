"""A compile stopped by its own limits (out of memory, out of time, killed by a signal) is the
configuration's or the machine's failure, not the answer's, unless a control compile shows the
limits adequate: then the answer's code (a macro bomb) scores 0 with the reason. Otherwise it
raises ``CompileLimitReached`` naming the item and the limit to raise, an experiment leaves the
answer unscored ("could not be scored", retried by the next run), and an answer cannot dress its
own compile error up as one.

Under the real sandbox; a language whose toolchain is missing here is skipped with the reason.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from moa._run import Runner
from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async
from moa.eval.languages import CompileLimitReached, RunLimits, compile_and_run, language_program
from moa.eval.languages.control import Control, control_program
from moa.eval.languages.diagnose import compile_stopped
from moa.eval.languages.program import Program
from moa.eval.languages.toolchains import find_toolchain
from moa.experiment import Experiment
from moa.testing import FunctionModel

LIMITS = {"timeout_s": 10.0, "memory_mb": 256}


def _skip_without(language: str) -> None:
    found = find_toolchain(language)
    if isinstance(found, str):
        pytest.skip(found)


def _item(language: str, tests: list[str]) -> Item:
    return Item(id=f"{language}_gcd", input="Write gcd(a, b).", language=language, tests=tests)


def _fresh(comment: str) -> str:
    """A comment no other test compiles: the program is not in the compile cache."""
    return f"{comment} {secrets.token_hex(8)}\n"


# (language, the answer, compile_memory_mb): a correct answer whose compiler cannot work in it
_STARVED = {
    "cpp": (
        "```cpp\n" + _fresh("//") + "#include <bits/stdc++.h>\n"
        "long gcd(long a, long b) { return std::gcd(a, b); }\n```",
        128,
    ),
    "rust": (
        "```rust\n"
        + _fresh("//")
        + "fn gcd(a: u64, b: u64) -> u64 { if b == 0 { a } else { gcd(b, a % b) } }\n```",
        128,
    ),
    "go": (
        "```go\n"
        + _fresh("//")
        + "func gcd(a, b int) int {\n\tfor b != 0 {\n\t\ta, b = b, a%b\n\t}\n\treturn a\n}\n```",
        300,
    ),
    "typescript": (
        "```ts\n"
        + _fresh("//")
        + "function gcd(a: number, b: number): number { return b === 0 ? a : gcd(b, a % b); }\n```",
        200,
    ),
}
_TESTS = {
    "cpp": ["assert(gcd(12, 18) == 6);"],
    "rust": ["assert_eq!(gcd(12, 18), 6);"],
    "go": ["assert(gcd(12, 18) == 6)"],
    "typescript": ["assert.deepEqual(gcd(12, 18), 6);"],
}


@pytest.mark.parametrize("language", sorted(_STARVED))
async def test_a_compiler_out_of_memory_is_not_the_answers_failure(language: str) -> None:
    """A correct answer whose compiler ran out of memory under a small ``compile_memory_mb`` scored
    0 as `the answer's code does not compile: virtual memory exhausted` (g++), `failed to map
    segment` (rustc), `failed to reserve page summary memory` (go), `Fatal process OOM` (tsc):
    the limit is the user's. It raises, naming the item and the limit, and the same answer
    passes under the default limit."""
    _skip_without(language)
    answer, starved = _STARVED[language]
    item = _item(language, _TESTS[language])
    with pytest.raises(CompileLimitReached) as raised:
        await score_execution_async(answer, item, **LIMITS, compile_memory_mb=starved)
    message = str(raised.value)
    assert message.startswith(f"item `{language}_gcd`: the compiler "), message
    assert f"compile_memory_mb: {starved}" in message and "raise compile_memory_mb" in message
    assert ", and a control compile " in message  # stopped too, under half the limit
    assert "\n" not in message
    score = await score_execution_async(answer, item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_a_compile_past_its_time_limit_is_not_the_answers_failure() -> None:
    """A compile that ran past ``compile_timeout_s`` (a busy machine, a small limit) scored 0 as
    `the answer's code does not compile: the compiler ran past 60s`; it raises naming the item
    and ``compile_timeout_s``."""
    _skip_without("c")
    answer = "```c\n" + _fresh("//") + "long gcd(long a, long b) { return b ? gcd(b, a % b) : a; }\n```"
    item = _item("c", ["assert(gcd(12, 18) == 6);"])
    with pytest.raises(
        CompileLimitReached, match=r"^item `c_gcd`: the compiler \(gcc\) ran past compile_timeout_s: 0.001 "
    ) as raised:
        await score_execution_async(answer, item, **LIMITS, compile_timeout_s=0.001)
    control = (
        ", and a control compile did not finish within a quarter of compile_timeout_s: not the answer's fault"
    )
    assert control in str(raised.value)
    score = await score_execution_async(answer, item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


# answers whose compile error names a file after a compiler's out-of-memory line (`#line`, Go's
# `//line`) or prints one as its message: each is still the answer's own compile error
_DISGUISED = {
    "c": '```c\n#line 1 "virtual memory exhausted: Cannot allocate memory"\nlong gcd(long a, long b) { return a +; }\n```',
    "go": "```go\n//line fatal error: out of memory:1\nfunc gcd(a, b int) int {\n\treturn a +\n}\n```",
    "rust": '```rust\nfn gcd(a: u64, b: u64) -> u64 { compile_error!("memory allocation of 5 bytes failed"); a }\n```',
}
_DISGUISED_TESTS = {"c": ["assert(gcd(12, 18) == 6);"], "go": _TESTS["go"], "rust": _TESTS["rust"]}


@pytest.mark.parametrize("language", sorted(_DISGUISED))
async def test_a_compile_error_dressed_as_out_of_memory_is_still_the_answers(language: str) -> None:
    """An answer cannot turn its own compile error into an unscored item by making the compiler
    print an out-of-memory line: a compiler's diagnostic is never taken for one."""
    _skip_without(language)
    score = await score_execution_async(
        _DISGUISED[language], _item(language, _DISGUISED_TESTS[language]), **LIMITS
    )
    assert score.value == 0.0 and score.detail.startswith("the answer's code does not compile: "), score


@pytest.mark.parametrize(
    ("language", "output", "returncode", "expected"),
    [
        ("java", "\n\nThe system is out of resources.\nConsult the following stack trace for details.\n"
         "java.lang.OutOfMemoryError: Java heap space\n\tat jdk.compiler/...", 3,
         ("memory", "The system is out of resources.")),
        ("cpp", "g++: fatal error: Killed signal terminated program cc1plus\ncompilation terminated.", 1,
         ("memory", "g++: fatal error: Killed signal terminated program cc1plus")),
        ("go", "go build command-line-arguments: /usr/lib/go/pkg/tool/linux_amd64/compile: signal: killed", 1,
         ("memory", "go build command-line-arguments: /usr/lib/go/pkg/tool/linux_amd64/compile: signal: killed")),
        ("typescript", "\n<--- Last few GCs --->\nFATAL ERROR: Ineffective mark-compacts near heap limit "
         "Allocation failed - JavaScript heap out of memory\n", -6,
         ("memory", "FATAL ERROR: Ineffective mark-compacts near heap limit Allocation failed - JavaScript "
          "heap out of memory")),
        ("typescript", "\n#\n# Fatal process out of memory: Zone\n#\n", -5, ("memory", "# Fatal process out of memory: Zone")),
        ("rust", "Segmentation fault", -11, ("signal", "SIGSEGV")),
        ("java", "Main.java:3: error: ';' expected\nThe system is out of resources.", 1, None),
        ("cpp", "main.cpp:2:1: error: 'x' was not declared in this scope", 1, None),
        ("cpp", "/usr/bin/ld: main.o: undefined reference to `gcd'\ncollect2: error: ld returned 1 exit status", 1, None),
        ("go", "./main.go:3:2: undefined: x\nfatal error: out of memory", 1, None),
    ],
)  # fmt: skip
def test_what_stops_a_compile_is_read_from_the_compilers_own_lines(
    language: str, output: str, returncode: int, expected: tuple[str, str] | None
) -> None:
    """The compiler's or its runtime's own out-of-memory line, or a signal, stops a compile for its
    limits; an error the compiler located in the code, or a link error, stays the answer's."""
    assert compile_stopped(language, output, timed_out=False, returncode=returncode) == expected


def test_an_experiment_leaves_a_starved_compile_unscored(tmp_path: Path) -> None:
    """Under `moa compare` a compile out of memory is no 0 for the setup: the answer is reported
    as could not be scored, naming the item and the limit, and stored without a score."""
    _skip_without("cpp")
    answer, starved = _STARVED["cpp"]
    (tmp_path / "data.jsonl").write_text(
        json.dumps({"id": "cpp_gcd", "language": "cpp", "input": "Write gcd(a, b).", "tests": _TESTS["cpp"]})
        + "\n"
    )
    for name in ("coder", "base"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}}}\n"
        )
    (tmp_path / "exp.yaml").write_text(
        "name: starved\ndataset: data.jsonl\n"
        f"evaluator: {{name: execution, timeout_s: 10, memory_mb: 256, compile_memory_mb: {starved}}}\n"
        "baseline: base.yaml\nsetups: [coder.yaml]\nbootstrap_rounds: 100\n"
    )
    light = "```cpp\nlong gcd(long a, long b) { return a; }\n```"  # wrong, and compiles in 128 MB
    models = {"sim/coder": FunctionModel(lambda req: answer), "sim/base": FunctionModel(lambda req: light)}
    out = tmp_path / "out"
    summary = Experiment.from_file(
        tmp_path / "exp.yaml", out=out, runner=Runner(models=models), progress=False
    ).run()
    note = next(n for n in summary.notes if "could not be scored" in n)
    assert "CompileLimitReached: item `cpp_gcd`:" in note and "raise compile_memory_mb" in note, note
    rows = {row["setup"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert rows["coder"]["score"] is None, rows
    assert rows["base"]["score"] == 0.0, rows


@pytest.mark.parametrize("item_id", ["go_gcd", "go_factorial", "go_sum_to_n"])
async def test_a_go_program_starts_under_the_smallest_memory_limit(item_id: str) -> None:
    """Go's runtime reserves about 650 MB of address space before `main`: under ``memory_mb`` 160
    or less (the run step's limit is that plus an allowance) every correct Go answer failed, as
    `tests failed: exit code 2` (`failed to reserve page summary memory`) or `memory limit`. The
    allowance covers the runtime's reservations at the schema's smallest ``memory_mb``, 64."""
    _skip_without("go")
    fixtures = Path(__file__).parent / "fixtures" / "languages"
    items = [*load_dataset(fixtures / "go.jsonl"), *load_dataset(fixtures / "generic.jsonl")]
    item = next(i for i in items if i.id == item_id)
    source = item.meta.get("meta", item.meta)
    score = await score_execution_async(str(source["correct"]), item, timeout_s=10.0, memory_mb=64)
    assert (score.value, score.detail) == (1.0, "passed")


# ten levels of macros, each ten of the one below: 10**9 tokens for the compiler to expand; then a
# header that never compiles alone (its `#error`), which the compile never reaches but a control
# including the answer's headers would fail on
_MACRO_BOMB = (
    "```c\n#include <stdlib.h>\n#define a0 1\n"
    + "".join(f"#define a{i} " + "+".join([f"a{i - 1}"] * 10) + "\n" for i in range(1, 10))
    + "long gcd(long a, long b) { return a9; }\n#include <bits/stdio.h>\n```"
)
# a few seconds: enough for a trivial control compile on a busy 2-core machine (it must finish
# within a quarter), and the bomb is compiled twice
_BOMB_TIMEOUT_S = 8.0


async def test_a_c_macro_bomb_scores_0_with_the_reason() -> None:
    """A wrong answer whose compile runs past ``compile_timeout_s`` (exponential macro expansion)
    raised ``CompileLimitReached``: it was never scored and retried on every run. A control compile
    under the same limits finished well within them, so the answer's code is to blame: 0, with a
    reason naming the limit and the control; a header of the answer's that fails alone does not
    fail the control. The verdict is cached under those limits."""
    _skip_without("c")
    answer = _MACRO_BOMB.replace("```c\n", "```c\n" + _fresh("//"), 1)
    item = _item("c", ["assert(gcd(12, 18) == 6);"])
    program = language_program(answer, item, "c")
    toolchain = find_toolchain("c")
    assert isinstance(program, Program) and not isinstance(toolchain, str)
    limits = RunLimits(timeout_s=10.0, memory_mb=256, compile_timeout_s=_BOMB_TIMEOUT_S)
    verdict = await compile_and_run(program, toolchain, limits)
    assert not verdict.passed and not verdict.cached, verdict
    assert verdict.reason.startswith(
        "the answer's code does not compile within the limits: the compiler (gcc) "
    ), verdict.reason
    assert " while a control compile took " in verdict.reason, verdict.reason
    assert verdict.reason.endswith("(the answer's code is to blame, e.g. a macro or template bomb)")
    again = await compile_and_run(program, toolchain, limits)
    assert (again.passed, again.reason, again.cached) == (False, verdict.reason, True)
    score = await score_execution_async(answer, item, **LIMITS, compile_timeout_s=_BOMB_TIMEOUT_S)
    assert (score.value, score.detail) == (0.0, verdict.reason)


def test_a_control_is_clear_only_well_within_the_limits() -> None:
    """A control shows the limits adequate only when it compiled within a quarter of the time
    limit; stopped, failed or slower, the stop stays the limits' and the line says why."""
    assert Control(compiled=True, duration_s=0.4).clear(60.0)
    assert not Control(compiled=True, duration_s=16.0).clear(60.0)
    assert not Control(compiled=False, duration_s=0.4).clear(60.0)
    assert not Control(compiled=False, duration_s=60.0, stopped="time").clear(60.0)
    assert Control(compiled=True, duration_s=16.0).describe() == (
        "a control compile took 16.0 s, over a quarter of compile_timeout_s"
    )
    assert Control(False, 15.0, "time").describe() == (
        "a control compile did not finish within a quarter of compile_timeout_s"
    )
    assert Control(False, 0.1, "memory").describe() == "a control compile ran out of memory"


def test_a_c_control_has_the_programs_system_headers_and_no_path() -> None:
    """The C/C++ control includes the program's system headers, the answer's too (a correct
    answer's `<bits/stdc++.h>` is a heavy compile, not a bomb) unless they failed, but never a path
    (an answer's `#include </dev/zero>` would stop the control too), a quoted header or the code."""
    source = (
        "#include </dev/zero>\n#include <../../dev/zero>\n#include <math.h>\nint f(void) { return 1; }\n"
        '#include <stdio.h>\n#include "local.h"\n#include <math.h>\nint main(void) { return f(); }\n'
    )
    program = Program("c", source, "main.c", first_line=1, last_line=4)
    control = control_program(program)
    assert control.source == "#include <math.h>\n#include <stdio.h>\nint main(void) { return 0; }\n"
    assert (control.language, control.filename) == ("c", "main.c")
    items_only = control_program(program, answer_headers=False)
    assert items_only.source == "#include <stdio.h>\n#include <math.h>\nint main(void) { return 0; }\n"


_FIXTURES = Path(__file__).parent / "fixtures" / "languages"


@pytest.mark.parametrize("language", ["c", "cpp", "go", "java", "rust", "typescript"])
async def test_every_control_compiles_under_the_default_limits(language: str) -> None:
    """The control of each item's program (go test or build, Java's class, the C/C++ headers)
    compiles under the default limits (a quarter of the time, half the memory for C, C++, Java and
    Rust): a control that failed would leave every compile bomb in that language unscored."""
    from moa.eval.languages import build

    _skip_without(language)
    toolchain = find_toolchain(language)
    assert not isinstance(toolchain, str)
    items = [*load_dataset(_FIXTURES / f"{language}.jsonl").items]
    items += [i for i in load_dataset(_FIXTURES / "generic.jsonl") if i.language == language]
    controls: dict[tuple[str, str, bool], Program] = {}
    for item in items:
        source = item.meta.get("meta", item.meta)
        program = language_program(str(source["correct"]), item, language)
        assert isinstance(program, Program), (item.id, program)
        control = control_program(program)
        controls[(control.source, control.filename, control.go_test)] = program
    assert controls
    for program in controls.values():
        result = await build._control(program, toolchain, RunLimits())
        assert result.compiled and result.stopped is None, (control_program(program), result)
        # a clear control is never reused: a quiet moment must not be carried into a busy spell
        assert build._controls.get(build._control_setup(program, toolchain, RunLimits())[3]) is None
