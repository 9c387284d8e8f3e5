"""Answers in C, C++, Go, Java, JavaScript, Rust and TypeScript compiled and run in the sandbox:
every fixture's correct answer passes and its wrong one fails on the tests, broken code is a
compile error of the answer's, an endless loop a timeout, hostile code stays contained, and an
experiment stores the scores. A language whose toolchain is missing here is skipped with the reason.

Every answer is scored once per session, two at a time (the machine has two cores); identical
compiles inside experiments come from the evaluator's compile cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async
from moa.eval.isolation import isolation_available
from moa.eval.languages import CompileLimitReached
from moa.eval.languages.toolchains import find_toolchain
from moa.eval.types import Score
from moa.experiment import Experiment
from moa.testing import FunctionModel

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
LANGUAGES = ("c", "cpp", "go", "java", "javascript", "rust", "typescript")
LIMITS: Mapping[str, Any] = {"timeout_s": 10.0, "memory_mb": 256}

# the first MultiPL-E problem of each fixture (sum_to_n) answered with broken code or an endless loop
BROKEN = {
    "c": "    return n +;\n}",
    "cpp": "    return n +;\n}",
    "go": "    return n +\n}\n",
    "java": "        return n +;\n    }",
    "javascript": "  return n +;\n}",
    "rust": '    let x: i32 = "a";\n    n\n}',
    "typescript": "  return n +;\n}",
}
ENDLESS = {
    "c": "    for (;;) {}\n}",
    "cpp": "    while (true) {}\n}",
    "go": "    for {\n    }\n}\n",
    "java": "        while (true) {}\n    }",
    "javascript": "  while (true) {}\n}",
    "rust": "    loop {}\n}",
    "typescript": "  while (true) {}\n}",
}
TIMEOUT_S = 2.0

# answers whose function ends the program with status 0 before any test could fail: a completion
# of the first MultiPL-E problem, then whole programs for the generic assert-line (gcd) and
# test-program (factorial) items
_JS_EXIT = "process.exit(0);"
_TS_EXIT = "(globalThis as any).process.exit(0);"
EARLY_EXIT: dict[str, tuple[str, str, str]] = {
    "c": (
        "    extern void exit(int);\n    exit(0);\n}",
        "```c\n#include <stdlib.h>\nint gcd(int a, int b) { exit(0); }\n```",
        "```c\n#include <stdlib.h>\nlong factorial(int n) { exit(0); }\n```",
    ),
    "cpp": (
        "    exit(0);\n}",
        "```cpp\n#include <cstdlib>\nint gcd(int a, int b) { std::exit(0); }\n```",
        "```cpp\n#include <cstdlib>\nlong factorial(int n) { std::exit(0); }\n```",
    ),
    "go": (
        '```go\nimport "os"\n\nfunc sum_to_n(n int) int {\n\tos.Exit(0)\n\treturn 0\n}\n```',
        '```go\nimport "os"\n\nfunc gcd(a int, b int) int {\n\tos.Exit(0)\n\treturn 0\n}\n```',
        '```go\npackage main\n\nimport "os"\n\nfunc factorial(n int) int {\n\tos.Exit(0)\n\treturn 0\n}\n```',
    ),
    "java": (
        "        System.exit(0);\n        return 0;\n    }",
        "```java\nclass Solution {\n    static int gcd(int a, int b) {\n        System.exit(0);\n        return 0;\n    }\n}\n```",
        "```java\npublic class Solution {\n    public static long factorial(int n) {\n        System.exit(0);\n"
        "        return 0;\n    }\n}\n```",
    ),
    "javascript": (
        f"  {_JS_EXIT}\n}}",
        f"```javascript\nfunction gcd(a, b) {{ {_JS_EXIT} }}\n```",
        f"```javascript\nfunction factorial(n) {{ {_JS_EXIT} }}\n```",
    ),
    "rust": (
        "    std::process::exit(0)\n}",
        "```rust\nfn gcd(_a: i64, _b: i64) -> i64 {\n    std::process::exit(0)\n}\n```",
        "```rust\nfn factorial(_n: u64) -> u64 {\n    std::process::exit(0)\n}\n```",
    ),
    "typescript": (
        f"  {_TS_EXIT}\n  return 0;\n}}",
        f"```ts\nfunction gcd(a: number, b: number): number {{ {_TS_EXIT} return 0; }}\n```",
        f"```ts\nfunction factorial(n: number): number {{ {_TS_EXIT} return 0; }}\n```",
    ),
}


def _missing(language: str) -> str | None:
    found = find_toolchain(language)
    return found if isinstance(found, str) else None


def _skip_without(language: str) -> None:
    if (why := _missing(language)) is not None:
        pytest.skip(why)


def _items(language: str) -> list[Item]:
    multiple = load_dataset(FIXTURES / f"{language}.jsonl").items
    generic = [i for i in load_dataset(FIXTURES / "generic.jsonl") if i.language == language]
    return [*multiple, *generic]


def _answer(item: Item, kind: str) -> str:
    source = item.meta.get("meta", item.meta)
    return str(source[kind])


async def _score_all() -> dict[tuple[str, str], Score]:
    jobs: list[tuple[tuple[str, str], str, Item, dict[str, Any]]] = []
    for language in LANGUAGES:
        if _missing(language) is not None:
            continue
        items = _items(language)
        for item in items:
            for kind in ("correct", "wrong"):
                jobs.append(((item.id, kind), _answer(item, kind), item, dict(LIMITS)))
        first = items[0]
        jobs.append(((first.id, "broken"), BROKEN[language], first, dict(LIMITS)))
        jobs.append(((first.id, "endless"), ENDLESS[language], first, {**LIMITS, "timeout_s": TIMEOUT_S}))
        generic = {i.id.split("_", 1)[1]: i for i in items if i.meta.get("format") != "multiple"}
        targets = (first, generic["gcd"], generic["factorial"])
        for target, answer in zip(targets, EARLY_EXIT[language], strict=True):
            jobs.append(((target.id, "early-exit"), answer, target, dict(LIMITS)))
    slots = asyncio.Semaphore(2)

    async def one(answer: str, item: Item, limits: dict[str, Any]) -> Score:
        async with slots:
            return await score_execution_async(answer, item, **limits)

    scores = await asyncio.gather(*(one(a, i, lim) for _, a, i, lim in jobs))
    return {key: score for (key, *_), score in zip(jobs, scores, strict=True)}


@pytest.fixture(scope="session")
def scored() -> dict[tuple[str, str], Score]:
    """Every fixture answer's score, computed once."""
    return asyncio.run(_score_all())


def _cases() -> list[Any]:
    out = []
    for language in LANGUAGES:
        for item in _items(language):
            out.append(pytest.param(language, item.id, id=item.id))
    return out


@pytest.mark.parametrize(("language", "item_id"), _cases())
def test_correct_answer_passes(scored: dict[tuple[str, str], Score], language: str, item_id: str) -> None:
    """The fixture's correct answer (a completion or a whole fenced program) passes its tests."""
    _skip_without(language)
    score = scored[(item_id, "correct")]
    assert (score.value, score.detail) == (1.0, "passed")


@pytest.mark.parametrize(("language", "item_id"), _cases())
def test_wrong_answer_fails_on_the_tests(
    scored: dict[tuple[str, str], Score], language: str, item_id: str
) -> None:
    """The fixture's wrong answer compiles, runs, and fails with a reason naming the failed test."""
    _skip_without(language)
    score = scored[(item_id, "wrong")]
    assert score.value == 0.0 and score.detail is not None
    assert score.detail.startswith("tests failed: "), score.detail


def _early_exit_cases() -> list[Any]:
    out = []
    for language in LANGUAGES:
        items = _items(language)
        generic = [i for i in items if i.meta.get("format") != "multiple"]
        for item, kind in ((items[0], "multiple"), *((i, "generic") for i in generic)):
            out.append(pytest.param(language, item.id, id=f"{language}-{kind}-{item.id}"))
    return out


@pytest.mark.parametrize(("language", "item_id"), _early_exit_cases())
def test_exiting_zero_before_the_tests_end_fails(
    scored: dict[tuple[str, str], Score], language: str, item_id: str
) -> None:
    """An answer that exits with status 0 from inside the tested function fails: the harness never
    wrote its end-of-tests token (the correct answers passing is test_correct_answer_passes)."""
    _skip_without(language)
    score = scored[(item_id, "early-exit")]
    assert (score.value, score.detail) == (0.0, "exited with code 0 before the end of the tests")


@pytest.mark.parametrize("language", LANGUAGES)
def test_broken_code_is_the_answers_compile_error(
    scored: dict[tuple[str, str], Score], language: str
) -> None:
    """Code that does not compile says so, counting the line in the answer (JavaScript, which has
    no compile step, fails with its SyntaxError)."""
    _skip_without(language)
    score = scored[(_items(language)[0].id, "broken")]
    assert score.value == 0.0 and score.detail is not None
    if language == "javascript":
        assert score.detail.startswith("error: SyntaxError: "), score.detail
    else:
        assert re.match(r"^the answer's code does not compile: line [12]: \S", score.detail), score.detail


@pytest.mark.parametrize("language", LANGUAGES)
def test_endless_loop_times_out(scored: dict[tuple[str, str], Score], language: str) -> None:
    """An endless loop is stopped at the run's time limit and says so."""
    _skip_without(language)
    score = scored[(_items(language)[0].id, "endless")]
    assert (score.value, score.detail) == (0.0, f"timeout after {TIMEOUT_S:.1f}s")


HOSTILE = [
    # the compiler must not read the host's secrets into an error message or the binary
    ("c", '#include "/etc/shadow"\nint f(void) { return 1; }', "does not compile"),
    ("rust", 'fn f() -> i32 { let _s = include_str!("/etc/shadow"); 1 }', "does not compile"),
    # a fork bomb is bounded by the process limit, then the timeout
    (
        "c",
        "#include <unistd.h>\nint f(void) { for (;;) fork(); return 1; }\nint main(void) { return f(); }",
        "",
    ),
    # a huge allocation fails inside the memory limit
    ("cpp", "#include <vector>\nint f() { std::vector<long> v(1L << 33); return v[1] + 1; }", ""),
    (
        "go",
        'import "os"\n\nfunc f() int { b, _ := os.ReadFile("/etc/shadow"); return len(b) }',
        "tests failed",
    ),
]


@pytest.mark.parametrize(("language", "code", "expected"), HOSTILE)
def test_hostile_code_stays_contained(language: str, code: str, expected: str) -> None:
    """Code reaching for the host's files, forking without end or allocating 64 GB scores 0 with one
    line and never shows the host's /etc/shadow."""
    _skip_without(language)
    line = "assert(f() == 1)" + ("" if language == "go" else ";")
    if language == "rust":
        line = "assert_eq!(f(), 1);"
    if language == "go":
        line = "assert(f() == 12345)"
    item = Item(id="h", input="q", tests=[line], language=language)
    fence = f"```{language}\n{code}\n```"
    score = asyncio.run(score_execution_async(fence, item, timeout_s=3.0, memory_mb=256, max_procs=32))
    assert score.value == 0.0 and score.detail is not None and "\n" not in score.detail
    assert expected in score.detail, score.detail
    assert "root:" not in score.detail


def _prompt_answers(language: str, kind: str) -> dict[str, str]:
    return {item.input: _answer(item, kind) for item in load_dataset(FIXTURES / f"{language}.jsonl")}


def _experiment(folder: Path, language: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "coder"):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}}}\n"
        )
    (folder / "data.jsonl").write_text((FIXTURES / f"{language}.jsonl").read_text())
    (folder / "exp.yaml").write_text(
        f"name: {language}\ndataset: data.jsonl\nevaluator: {{name: execution, timeout_s: 10, memory_mb: 256}}\n"
        "baseline: base.yaml\nsetups: [coder.yaml]\nconcurrency: 2\nbootstrap_rounds: 100\n"
    )
    return folder / "exp.yaml"


@pytest.mark.parametrize("language", LANGUAGES)
def test_experiment_stores_each_languages_scores(
    scored: dict[tuple[str, str], Score], tmp_path: Path, language: str
) -> None:
    """`moa compare` over a language's MultiPL-E file: the model answering right scores 1 on every
    item, the one answering wrong 0 with a failed test as its reason, stored and summarised."""
    _skip_without(language)
    right, wrong = _prompt_answers(language, "correct"), _prompt_answers(language, "wrong")

    def answer(table: dict[str, str]) -> FunctionModel:
        return FunctionModel(lambda req: table[str(req.messages[-1]["content"])])

    models = {"sim/coder": answer(right), "sim/base": answer(wrong)}
    out = tmp_path / "out"
    summary = Experiment.from_file(
        _experiment(tmp_path / "e", language), out=out, runner=Runner(models=models), progress=False
    ).run()
    assert summary.complete
    assert summary.setup("coder").quality == 1.0 and summary.setup("base").quality == 0.0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(right)
    for row in rows:
        if row["setup"] == "coder":
            assert (row["score"], row["score_detail"]) == (1.0, "passed")
        else:
            assert row["score"] == 0.0 and row["score_detail"].startswith("tests failed: "), row


def test_toolchains_here_are_reported() -> None:
    """Which languages this machine runs (the others' tests above are skipped with the reason)."""
    found = {language: _missing(language) for language in LANGUAGES}
    assert all(why is None or why.startswith("toolchain missing: ") for why in found.values())
    if os.environ.get("MOA_REQUIRE_TOOLCHAINS"):
        assert all(why is None for why in found.values()), found


JAVA_PROMPT = (
    "import java.util.*;\nimport org.javatuples.*;\nclass Problem {\n    public static {ret} f() {{\n"
)
JAVA_TESTS = (
    "    }\n    public static void main(String[] args) {\n    assert(f().equals({expected}));\n    }\n\n}\n"
)


@pytest.mark.parametrize(
    ("ret", "body", "expected", "reason"),
    [
        ("Long", "        return 1l;\n    }", "1l", "passed"),
        ("Pair<Long, Long>", "        return Pair.with(1l, 2l);\n    }", "Pair.with(1l, 2l)",
         "toolchain missing: javatuples not found (install: apt-get install libjavatuples-java)"),
    ],
)  # fmt: skip
def test_java_without_the_javatuples_jar(
    monkeypatch: pytest.MonkeyPatch, ret: str, body: str, expected: str, reason: str
) -> None:
    """Without the javatuples jar, MultiPL-E's unused `import org.javatuples.*` is dropped and the
    program runs; one that uses a tuple says which library is missing."""
    _skip_without("java")
    from moa.eval.languages import build

    monkeypatch.setattr(build, "javatuples_jar", lambda: None)
    prompt = JAVA_PROMPT.replace("{ret}", ret).replace("{{", "{")
    item = Item(
        id="t",
        input=prompt,
        test=JAVA_TESTS.replace("{expected}", expected),
        entry_point="f",
        language="java",
        meta={"prompt": prompt, "stop_tokens": ["\n    }\n"], "format": "multiple"},
    )
    score = asyncio.run(score_execution_async(body, item, **LIMITS))
    assert score.detail == reason


async def test_writing_a_fake_token_to_every_descriptor_fails() -> None:
    """A C answer that exits 0 after writing a made-up token to every descriptor fails: it cannot
    know the run's token, and anything else in the end-of-tests pipe is tampering (the Python
    sandbox's wording)."""
    _skip_without("c")
    item = next(i for i in _items("c") if i.id == "c_gcd")
    answer = (
        "```c\n#include <stdlib.h>\n#include <unistd.h>\n"
        "int gcd(int a, int b) {\n    for (int fd = 1; fd < 64; fd++) {\n"
        '        ssize_t w = write(fd, "0123456789abcdef0123456789abcdef\\n", 33);\n        (void)w;\n    }\n'
        "    exit(0);\n}\n```"
    )
    score = await score_execution_async(answer, item, **LIMITS)
    assert (score.value, score.detail) == (0.0, "the program wrote to the sandbox's verdict channel")


@pytest.mark.parametrize(
    ("item_id", "ending"),
    [
        ("c_factorial", ("    return 0;\n}", "    exit(0);\n}")),
        ("js_factorial", ("2432902008176640000);\n", "2432902008176640000);\nprocess.exit(0);\n")),
    ],
)
async def test_a_test_program_that_exits_zero_itself_still_passes_a_correct_answer(
    item_id: str, ending: tuple[str, str]
) -> None:
    """An item whose own test program ends with `exit(0)` never returns to the harness: the exit
    status alone decides for it (every correct answer failed "exited with code 0 before the end of
    the tests"), while a wrong answer still fails the item's tests."""
    item = next(i for i in _items(item_id.split("_")[0].replace("js", "javascript")) if i.id == item_id)
    assert item.test is not None and ending[0] in item.test
    _skip_without(item.language or "")
    item = item.model_copy(update={"test": item.test.replace(ending[0], ending[1])})
    right = await score_execution_async(_answer(item, "correct"), item, **LIMITS)
    wrong = await score_execution_async(_answer(item, "wrong"), item, **LIMITS)
    assert (right.value, right.detail) == (1.0, "passed") and wrong.value == 0.0


_CALL_THE_HARNESS = {
    "c_gcd": "```c\n#include <stdlib.h>\nvoid moa_returned_(int *);\nlong gcd(long a, long b) { moa_returned_(0); exit(0); }\n```",
    "cpp_gcd": "```cpp\n#include <cstdlib>\nvoid moa_returned_(int *);\nlong gcd(long a, long b) { moa_returned_(0); std::exit(0); }\n```",
    "js_gcd": "```javascript\nfunction gcd(a, b) { process.emit('beforeExit', 0); process.exit(0); }\n```",
    "ts_gcd": "```ts\nfunction gcd(a: number, b: number): number {\n  const p = (globalThis as any).process;\n"
    "  p.listeners('beforeExit').forEach((f: any) => f(0));\n  p.exit(0);\n  return 0;\n}\n```",
}


@pytest.mark.parametrize("item_id", sorted(_CALL_THE_HARNESS))
async def test_calling_the_harness_from_the_answer_fails(item_id: str) -> None:
    """An answer that triggers the end-of-tests harness itself, then exits 0, fails: the C harness's
    functions have names no answer can know (calling them under the old fixed names wrote the
    token), and the JavaScript listener writes only when Node, not the program, calls it."""
    language = {"c": "c", "cpp": "cpp", "js": "javascript", "ts": "typescript"}[item_id.split("_")[0]]
    _skip_without(language)
    item = next(i for i in _items(language) if i.id == item_id)
    score = await score_execution_async(_CALL_THE_HARNESS[item_id], item, **LIMITS)
    assert score.value == 0.0, score.detail


# wrong answers that find the run's token in the program's own memory, write it to the pipe and
# exit 0: each scored 1.0 before the permission model and the preload's stubs
_FIND_IN_MEMORY = r"""
  const fs = require('fs');
  const maps = fs.readFileSync('/proc/self/maps', 'latin1').split('\n');
  const mem = fs.openSync('/proc/self/mem', 'r');
  for (const line of maps) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) rw/.exec(line);
    for (let p = m ? parseInt(m[1], 16) : 0, end = m ? parseInt(m[2], 16) : 0; p < end; p += 1 << 20) {
      const buf = Buffer.alloc(Math.min(1 << 20, end - p));
      try { fs.readSync(mem, buf, 0, buf.length, p); } catch (e) { continue; }
      const hit = /(\d+) ([0-9a-f]{32})\n/.exec(buf.toString('latin1'));
      if (hit) { fs.writeSync(Number(hit[1]), hit[2] + '\n'); process.exit(0); }
    }
  }
"""
_FROM_SNAPSHOT = r"""
  const h = /"(\d+) ([0-9a-f]{32})/.exec(SNAPSHOT);
  require('fs').writeSync(Number(h[1]), h[2] + '\n');
  process.exit(0);
"""
_READ_THE_HARNESS = {
    "proc-self-mem": _FIND_IN_MEMORY,
    "write-heap-snapshot": _FROM_SNAPSHOT.replace(
        "SNAPSHOT", "require('fs').readFileSync(require('v8').writeHeapSnapshot(), 'latin1')"
    ),
    "get-heap-snapshot": """
  let d = '';
  const s = require('v8').getHeapSnapshot();
  s.on('data', (c) => { d += c.toString('latin1'); });
  s.on('end', () => {"""
    + _FROM_SNAPSHOT.replace("SNAPSHOT", "d")
    + "  });\n  return 1;\n",
    "inspector": r"""
  const s = new (require('inspector').Session)();
  s.connect();
  const post = (m, p) => { let r; s.post(m, p, (e, v) => { r = v; }); return r; };
  globalThis.moaL = process.listeners('beforeExit');
  const fn = post('Runtime.evaluate', { expression: 'moaL[moaL.length - 1]' }).result.objectId;
  const own = post('Runtime.getProperties', { objectId: fn, ownProperties: true });
  const scopes = own.internalProperties.find((p) => p.name === '[[Scopes]]').value.objectId;
  const found = {};
  for (const sc of post('Runtime.getProperties', { objectId: scopes, ownProperties: true }).result) {
    for (const v of post('Runtime.getProperties', { objectId: sc.value.objectId, ownProperties: true }).result) {
      if (v.value) found[v.name] = v.value.value;
    }
  }
  require('fs').writeSync(Number(found.fd), found.token + '\n');
  process.exit(0);
""",
    # the child reads its parent's memory and prints what it found
    "child-process": """
  const child = CHILD;
  const [fd, token] = require('child_process')
    .execFileSync(process.execPath, ['-e', child], { encoding: 'latin1' }).split(' ');
  require('fs').writeSync(Number(fd), token + '\\n');
  process.exit(0);
""".replace(
        "CHILD",
        json.dumps(
            _FIND_IN_MEMORY.replace("/proc/self/", "/proc/' + process.ppid + '/").replace(
                "fs.writeSync(Number(hit[1]), hit[2] + '\\n')", "process.stdout.write(hit[1] + ' ' + hit[2])"
            )
        ),
    ),
}


@pytest.mark.parametrize("attack", sorted(_READ_THE_HARNESS))
async def test_reading_the_harnesss_memory_in_javascript_fails(attack: str) -> None:
    """A JavaScript answer that reads the token out of its own process (``/proc/self/mem``, a ``v8``
    heap snapshot, the ``inspector``, a child process reading the parent's memory) and writes it
    to the end-of-tests pipe fails: Node's permission model lets the program read its own files
    only and start no process, and the preload replaced the heap snapshot and inspector calls with
    ones that throw. Each forged a pass before."""
    _skip_without("javascript")
    item = next(i for i in _items("javascript") if i.id == "js_gcd")
    answer = f"```javascript\nfunction gcd(a, b) {{{_READ_THE_HARNESS[attack]}  return 1;\n}}\n```"
    # room for a heap snapshot: under 256 MB one would fail on memory, proving nothing
    score = await score_execution_async(answer, item, **{**LIMITS, "memory_mb": 512})
    assert score.value == 0.0, score.detail
    assert score.detail is not None and score.detail.startswith("tests failed: "), score.detail


async def test_a_node_without_a_permission_model_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Node older than 20 has no permission model, so nothing stopped an answer's child process
    (one that reads the parent's memory finds the token): the run gets the seccomp filter instead.
    The control, the same right answer without the child, passes on that Node."""
    _skip_without("javascript")
    toolchain = find_toolchain("javascript")
    assert not isinstance(toolchain, str)
    folder = Path(tempfile.mkdtemp(prefix="moa-old-node-"))
    folder.chmod(0o755)  # bwrap as root runs the program as another uid
    old = folder / "node"
    old.write_text(f'#!/bin/sh\ncase "$1" in --*permission) exit 9;; esac\nexec {toolchain["node"]} "$@"\n')
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    find_toolchain.cache_clear()
    item = next(i for i in _items("javascript") if i.id == "js_gcd")
    gcd = "  while (b) { [a, b] = [b, a % b]; }\n  return a;\n}\n```"
    spawn = "  require('child_process').execFileSync(process.execPath, ['-e', '0']);\n"
    try:
        assert find_toolchain("javascript") != toolchain  # the old Node is the one used
        spawned = await score_execution_async(
            f"```javascript\nfunction gcd(a, b) {{\n{spawn}{gcd}", item, **LIMITS
        )
        plain = await score_execution_async(f"```javascript\nfunction gcd(a, b) {{\n{gcd}", item, **LIMITS)
    finally:
        find_toolchain.cache_clear()
        shutil.rmtree(folder)
    assert (plain.value, plain.detail) == (1.0, "passed")
    assert spawned.value == 0.0 and spawned.detail is not None and "EPERM" in spawned.detail, spawned.detail


_SWALLOW = "process.on('uncaughtException', () => {});\n"
_TAMPER_WITH_THE_HARNESS = {
    "swallow": "  return 0;\n}\n" + _SWALLOW,
    "swallow-unmonitored": "  return 0;\n}\nprocess.removeAllListeners('uncaughtExceptionMonitor');\n"
    + _SWALLOW,
    "swallow-unmonitored-events": "  return 0;\n}\nprocess._events.uncaughtExceptionMonitor = undefined;\n"
    + _SWALLOW,
    "swallow-uncaptured": "  return 0;\n}\nprocess.setUncaughtExceptionCaptureCallback(null);\n" + _SWALLOW,
    "stack-accessor": "  Object.defineProperty(Error, 'prepareStackTrace', "
    "{ get() { return () => []; }, set(v) {}, configurable: true });\n"
    "  process.listeners('beforeExit').forEach((f) => f(0));\n  process.exit(0);\n}\n",
    "global-error": "  globalThis.Error = { get prepareStackTrace() { return () => []; }, set prepareStackTrace(v) {} };\n"
    "  process.listeners('beforeExit').forEach((f) => f(0));\n  process.exit(0);\n}\n",
}


@pytest.mark.parametrize("attack", sorted(_TAMPER_WITH_THE_HARNESS))
async def test_tampering_with_the_javascript_harness_fails(attack: str) -> None:
    """A JavaScript answer that swallows its failed test (an uncaughtException listener, with the
    harness's monitor removed or the capture callback unset) or answers the harness's stack check
    itself (``Error.prepareStackTrace`` made an accessor, ``Error`` replaced) and calls the
    harness's listener fails: an uncaught error ends the program with status 1 whatever its
    listeners, and ``Error`` and its stack hooks can no longer be redefined. All but the first
    scored 1.0 before."""
    _skip_without("javascript")
    item = _items("javascript")[0]
    score = await score_execution_async(_TAMPER_WITH_THE_HARNESS[attack], item, **LIMITS)
    assert score.value == 0.0, score.detail


_MACRO_ATTACKS = [
    ("cpp", 0, "    return 0;\n#undef assert\n#define assert(x) (void)0\n}"),
    ("c", 0, "    return 0;\n#define NDEBUG\n#include <assert.h>\n}"),
    ("c", 0, "    return 0;\n%:undef assert\n# /* */ define assert(x) \\\n (void)0\n}"),
    ("c", "c_gcd", "```c\nlong gcd(long a, long b) { return 1; }\n#define return return 0&&\n```"),
    ("c", "c_factorial", "```c\nlong factorial(int n) { return 1; }\n#define return return 0&&\n```"),
]


@pytest.mark.parametrize(
    ("language", "target", "answer"),
    _MACRO_ATTACKS,
    ids=["cpp-empty-assert", "c-ndebug", "c-digraph-continued", "c-return-gcd", "c-return-factorial"],
)
async def test_macros_of_the_answer_do_not_reach_the_tests(
    language: str, target: int | str, answer: str
) -> None:
    """A wrong C/C++ answer whose macros would rewrite the tests that follow it (an empty
    ``assert``, ``NDEBUG`` before reading ``<assert.h>`` again, a ``return`` that always gives 0)
    fails on those tests: its macros are undefined right after its lines (each scored 1.0 before)."""
    _skip_without(language)
    items = _items(language)
    item = items[target] if isinstance(target, int) else next(i for i in items if i.id == target)
    score = await score_execution_async(answer, item, **LIMITS)
    assert score.value == 0.0 and score.detail is not None
    assert score.detail.startswith("tests failed: "), score.detail


_ASSERT_FAIL = "void __assert_fail(const char *e, const char *f, unsigned int l, const char *fn)"
_ASSERT_FAIL_ATTACKS = {
    "c": (
        "c",
        0,
        f"```c\n#include <assert.h>\n{_ASSERT_FAIL} {{}}\nlong sum_to_n(long n) {{ return n; }}\n```",
    ),
    "cpp": (
        "cpp",
        0,
        f'```cpp\n#include <cassert>\nextern "C" {_ASSERT_FAIL} noexcept {{}}\nlong sum_to_n(long n) {{ return n; }}\n```',
    ),
    # <cassert> comes with the tests, after the answer's lines
    "cpp-tests-include": (
        "cpp",
        "cpp_factorial",
        f'```cpp\nextern "C" {_ASSERT_FAIL} noexcept {{}}\nlong factorial(int n) {{ return n; }}\n```',
    ),
    # its own abort() and _exit() return too, and a macro would undo the harness's renaming
    "c-abort-and-macro": (
        "c",
        0,
        f"```c\n#include <assert.h>\n{_ASSERT_FAIL} {{}}\nvoid abort(void) {{}}\nvoid _exit(int s) {{}}\n"
        "#define __assert_fail __assert_fail\nlong sum_to_n(long n) { return n; }\n```",
    ),
}


@pytest.mark.parametrize(
    ("language", "target", "answer"), _ASSERT_FAIL_ATTACKS.values(), ids=_ASSERT_FAIL_ATTACKS
)
async def test_an_answer_defining_assert_fail_still_fails_the_asserts(
    language: str, target: int | str, answer: str
) -> None:
    """``assert`` calls glibc's global ``__assert_fail``: a wrong C/C++ answer defining one that
    returns made every failed assertion pass (1.0); the tests now call the harness's own."""
    _skip_without(language)
    items = _items(language)
    item = items[target] if isinstance(target, int) else next(i for i in items if i.id == target)
    score = await score_execution_async(answer, item, **LIMITS)
    assert score.value == 0.0 and score.detail is not None
    assert score.detail.startswith("tests failed: assertion `"), score.detail


# wrong answers (gcd returns 1) that take over what the assert-line harness after them calls: the
# harness's failure count (a C tentative definition, then fprintf, which a failure calls), a
# `mod std` whose catch_unwind is always Ok, Go's builtin panic, Java's System.exit
_HARNESS_TAKEOVERS = {
    "c_gcd": (
        "```c\n#include <stdio.h>\nstatic int moa_failed_;\n"
        "int fprintf(FILE *s, const char *f, ...) { moa_failed_ = -1; return 0; }\n"
        "long gcd(long a, long b) { return 1; }\n```"
    ),
    "rust_gcd": (
        "```rust\nmod std {\n    pub use ::std::{process, sync};\n    pub mod panic {\n"
        "        pub use ::std::panic::set_hook;\n"
        "        pub fn catch_unwind<F: FnOnce()>(f: F) -> Result<(), ()> {\n"
        "            let _ = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(f));\n"
        "            Ok(())\n        }\n    }\n}\nfn gcd(_a: u64, _b: u64) -> u64 {\n    1\n}\n```"
    ),
    # a test program of the item's own, failing by std::process::exit(1)
    "rust_factorial": (
        "```rust\nmod std {\n    pub mod process {\n        pub fn exit(_code: i32) {}\n    }\n}\n"
        "fn factorial(_n: u64) -> u64 {\n    1\n}\n```"
    ),
    "go_gcd": "```go\nfunc panic(v interface{}) {}\n\nfunc gcd(a, b int) int {\n\treturn 1\n}\n```",
    # a beforeExit listener ahead of the harness's resets the exit code and keeps the loop alive:
    # Node emits beforeExit again, with 0
    "js_gcd": (
        "```js\nlet once = false;\nprocess.prependListener('beforeExit', () => {\n"
        "  if (!once) {\n    once = true;\n    process.exitCode = 0;\n    setTimeout(() => {}, 0);\n  }\n});\n"
        "function gcd(a, b) {\n  return 1;\n}\n```"
    ),
    "ts_gcd": (
        "```ts\nlet once = false;\nconst p = (globalThis as any).process;\np.prependListener('beforeExit', () => {\n"
        "  if (!once) {\n    once = true;\n    p.exitCode = 0;\n    setTimeout(() => {}, 0);\n  }\n});\n"
        "function gcd(a: number, b: number): number {\n  return 1;\n}\n```"
    ),
    "java_gcd": (
        "```java\nclass Solution {\n    static long gcd(long a, long b) {\n        return 1;\n    }\n}\n"
        "class System {\n    static java.io.InputStream in = java.lang.System.in;\n"
        "    static java.io.PrintStream err = java.lang.System.err;\n    static void exit(int code) {}\n}\n```"
    ),
}


@pytest.mark.parametrize("item_id", sorted(_HARNESS_TAKEOVERS))
async def test_an_answer_cannot_take_over_what_the_tests_call(item_id: str) -> None:
    """A wrong answer redefining what the tests after it call to report a failure (the C harness's
    count under its fixed name, Rust's ``std`` by a ``mod std``, Go's ``panic``, Java's
    ``System``, Node's exit code) scored 1.0; the harness's names are keyed, Rust's paths
    absolute, Go's assert counts without panic, and the Java and JavaScript harnesses throw."""
    languages = {"c": "c", "rust": "rust", "go": "go", "java": "java", "js": "javascript", "ts": "typescript"}
    language = languages[item_id.split("_")[0]]
    _skip_without(language)
    item = next(i for i in _items(language) if i.id == item_id)
    if item_id == "rust_factorial":
        assert item.test is not None
        item = item.model_copy(
            update={
                "test": "fn main() {\n    if factorial(5) != 120 {\n        std::process::exit(1);\n    }\n}\n"
            }
        )
    score = await score_execution_async(_HARNESS_TAKEOVERS[item_id], item, **LIMITS)
    assert score.value == 0.0, score.detail
    assert score.detail is not None and score.detail.startswith("tests failed: "), score.detail


_JAVA_ASSERTIONS_OFF = """```java
class Problem {
    static {
        try {
            java.lang.reflect.Field u = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
            u.setAccessible(true);
            sun.misc.Unsafe unsafe = (sun.misc.Unsafe) u.get(null);
            java.lang.reflect.Field off = Problem.class.getDeclaredField("$assertionsDisabled");
            unsafe.putBoolean(unsafe.staticFieldBase(off), unsafe.staticFieldOffset(off), true);
        } catch (Exception e) {
        }
    }
    public static long sumToN(long n) {
        return n + 1;
    }
}
```"""


async def test_a_java_answer_cannot_switch_the_tests_assertions_off() -> None:
    """A wrong Java answer whose static initializer sets the tests' class's
    ``$assertionsDisabled`` (``sun.misc.Unsafe``) made every ``assert`` a no-op and scored 1.0; the
    tests' asserts are explicit checks now."""
    _skip_without("java")
    score = await score_execution_async(_JAVA_ASSERTIONS_OFF, _items("java")[0], **LIMITS)
    assert (score.value, score.detail) == (0.0, "tests failed: AssertionError")


# a wrong answer that knows nothing: each call forks, the copy returns a guess and runs the rest of
# the tests, and the original ends with 0 as soon as one copy got through them
_FORK_ORACLE = {
    "c": (
        "```c\n#include <unistd.h>\n#include <sys/wait.h>\nlong sum_to_n(long n) {\n"
        "    for (long guess = 0; guess < 100000; guess++) {\n        pid_t pid = fork();\n"
        "        if (pid == 0) return guess;\n        if (pid < 0) return -1;\n        int st;\n"
        "        waitpid(pid, &st, 0);\n        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) _exit(0);\n"
        "    }\n    return 0;\n}\n```"
    ),
    "rust": (
        '```rust\nextern "C" {\n    fn fork() -> i32;\n    fn waitpid(p: i32, s: *mut i32, o: i32) -> i32;\n'
        "    fn _exit(c: i32) -> !;\n}\nfn sum_to_n(_n: isize) -> isize {\n    for guess in 0..100000 {\n"
        "        let pid = unsafe { fork() };\n        if pid == 0 {\n            return guess;\n        }\n"
        "        if pid < 0 {\n            return -1;\n        }\n        let mut st = 0;\n"
        "        unsafe { waitpid(pid, &mut st, 0) };\n        if st == 0 {\n            unsafe { _exit(0) }\n"
        "        }\n    }\n    0\n}\n```"
    ),
}
# threads stay allowed
_THREADED = {
    "cpp": (
        "```cpp\n#include <thread>\n#include <atomic>\nlong sum_to_n(long n) {\n    std::atomic<long> s{0};\n"
        "    std::thread a([&] { for (long i = 1; i <= n; i += 2) s += i; });\n"
        "    std::thread b([&] { for (long i = 2; i <= n; i += 2) s += i; });\n"
        "    a.join();\n    b.join();\n    return s;\n}\n```"
    ),
    "rust": "```rust\nfn sum_to_n(n: isize) -> isize {\n    std::thread::spawn(move || (1..=n).sum()).join().unwrap()\n}\n```",
    "go": (
        "```go\nfunc sum_to_n(n int) int {\n\tch := make(chan int)\n"
        "\tgo func() {\n\t\ts := 0\n\t\tfor i := 1; i <= n; i++ {\n\t\t\ts += i\n\t\t}\n\t\tch <- s\n\t}()\n"
        "\treturn <-ch\n}\n```"
    ),
}


@pytest.mark.parametrize("isolation", ["bwrap", "fallback"])
@pytest.mark.parametrize("language", sorted(_FORK_ORACLE))
async def test_an_answer_cannot_fork_to_try_values_against_the_tests(
    language: str, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong C or Rust answer forking at each call, trying a value in the copy and keeping the one
    whose copy got past the tests, scored 1.0 in two seconds; new processes are refused (seccomp,
    under bwrap and in the fallback alike), so it fails."""
    _skip_without(language)
    if isolation == "bwrap" and not isolation_available()[0]:
        pytest.skip("bubblewrap unavailable")
    monkeypatch.setenv("MOA_SANDBOX_ISOLATION", isolation)
    score = await score_execution_async(_FORK_ORACLE[language], _items(language)[0], **LIMITS)
    assert score.value == 0.0, score.detail


# the same in Java, where a process cannot be copied: each call starts the JVM again on the program's
# own classes, answering the earlier calls as found and this one with a guess, and keeps the guess
# whose run reached the next call (a boolean function needs two runs a call)
_JAVA_ORACLE = (
    '        String g = System.getenv("MOA_GUESS");\n'
    '        int calls = Integer.parseInt(System.getProperty("moa.calls", "0")) + 1;\n'
    '        System.setProperty("moa.calls", "" + calls);\n'
    '        String known = System.getProperty("moa.known", "");\n'
    "        if (g != null) {\n"
    "            if (calls <= g.length()) return g.charAt(calls - 1) == 't';\n"
    "            System.exit(0);\n"
    "        }\n"
    "        for (char c : new char[] {'t', 'f'}) {\n"
    "            try {\n"
    '                ProcessBuilder pb = new ProcessBuilder(System.getProperty("java.home") + "/bin/java",\n'
    '                    "-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",\n'
    '                    "-XX:CompressedClassSpaceSize=32m", "-XX:ReservedCodeCacheSize=32m", "-cp",\n'
    '                    System.getProperty("java.class.path"), System.getProperty("sun.java.command"));\n'
    '                pb.environment().put("MOA_GUESS", known + c);\n'
    "                pb.redirectErrorStream(true);\n"
    "                Process p = pb.start();\n"
    "                p.getOutputStream().close();\n"
    "                p.getInputStream().readAllBytes();\n"
    "                if (p.waitFor() == 0) {\n"
    '                    System.setProperty("moa.known", known + c);\n'
    "                    return c == 't';\n"
    "                }\n"
    "            } catch (Exception e) {\n"
    "                return false;\n"
    "            }\n"
    "        }\n"
    "        return false;\n"
    "    }"
)


@pytest.mark.parametrize("isolation", ["bwrap", "fallback"])
async def test_a_java_answer_cannot_start_a_jvm_to_try_values_against_the_tests(
    isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong Java answer starting a JVM on its own classes for each guess, keeping the guess whose
    run got past that call, scored 1.0 (the run step went through a shell, so Java had no seccomp
    filter); the JVM now runs under it, and the answer fails."""
    _skip_without("java")
    if isolation == "bwrap" and not isolation_available()[0]:
        pytest.skip("bubblewrap unavailable")
    monkeypatch.setenv("MOA_SANDBOX_ISOLATION", isolation)
    item = next(i for i in _items("java") if i.id == "java_is_palindrome")
    # time enough for the eight JVMs the attack starts on a busy machine: a timeout proves nothing
    score = await score_execution_async(_JAVA_ORACLE, item, **{**LIMITS, "timeout_s": 120.0})
    assert (score.value, score.detail) == (0.0, "tests failed: AssertionError")


@pytest.mark.parametrize("language", sorted(_THREADED))
async def test_threads_still_run_where_processes_are_refused(language: str) -> None:
    """The control: a right answer computing on threads (goroutines) passes."""
    _skip_without(language)
    score = await score_execution_async(_THREADED[language], _items(language)[0], **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_an_answer_with_its_own_macros_still_passes_and_names_its_lines() -> None:
    """The control: a right answer using macros of its own passes, and a compile error in an
    answer with macros still names the answer's own line (the reset keeps line numbers)."""
    _skip_without("c")
    item = next(i for i in _items("c") if i.id == "c_gcd")
    right = "```c\n#define SWAP(x, y) do { long t = x; x = y; y = t; } while (0)\n#define assert(e) e\n"
    right += "long gcd(long a, long b) {\n    while (b) { a %= b; SWAP(a, b); }\n    return a;\n}\n```"
    broken = "```c\n#define STEP 1\nlong gcd(long a, long b) {\n    return a +;\n}\n```"
    passed = await score_execution_async(right, item, **LIMITS)
    failed = await score_execution_async(broken, item, **LIMITS)
    assert (passed.value, passed.detail) == (1.0, "passed")
    assert failed.detail is not None and failed.detail.startswith(
        "the answer's code does not compile: line 3:"
    )


@pytest.mark.parametrize(
    ("target", "answer"),
    [
        (0, "    0 } macro_rules! assert_eq { ($($t:tt)*) => {} } fn shadow() -> isize { 0\n}"),
        (
            "rust_gcd",
            "```rust\nfn gcd(_a: i64, _b: i64) -> i64 { 1 }\nmacro_rules! assert_eq { ($($t:tt)*) => {} }\n```",
        ),
    ],
    ids=["multiple", "generic"],
)
async def test_rust_macros_of_the_answer_do_not_shadow_the_tests_asserts(
    target: int | str, answer: str
) -> None:
    """A wrong Rust answer defining an empty ``assert_eq!`` (a ``macro_rules!`` shadows the
    standard one for the rest of the file) fails: the tests call ``::std::assert_eq!``."""
    _skip_without("rust")
    items = _items("rust")
    item = items[target] if isinstance(target, int) else next(i for i in items if i.id == target)
    score = await score_execution_async(answer, item, **LIMITS)
    assert score.value == 0.0 and score.detail is not None
    assert score.detail.startswith("tests failed: "), score.detail


_GO_NO_TESTS = {
    "init-args": '\nfunc init() {\n\tos.Args = append(os.Args, "-test.run=^$")\n}\n',
    "own-TestMain": "\nfunc TestMain(m *testing.M) {\n\tos.Exit(0)\n}\n",
}


@pytest.mark.parametrize("trick", sorted(_GO_NO_TESTS))
async def test_a_go_answer_cannot_run_no_tests(trick: str) -> None:
    """A wrong Go answer that selects no test (``-test.run=^$`` appended to ``os.Args`` by its
    ``init``) or brings a ``TestMain`` that runs none fails: the harness's ``TestMain`` drops
    the answer's arguments and stays in place (an empty run, or the answer's ``TestMain`` taken
    for the tests' own, scored 1.0)."""
    _skip_without("go")
    item = _items("go")[0]
    answer = '```go\nimport "os"\n\nfunc sum_to_n(n int) int {\n\treturn 0\n}\n' + _GO_NO_TESTS[trick] + "```"
    score = await score_execution_async(answer, item, **{**LIMITS, "timeout_s": 30.0})
    assert score.value == 0.0, score.detail


# code of the answer's that runs before main (a C constructor, a Go init, a Java static initializer,
# a Rust .init_array entry) reads the token line from stdin, writes the token, and exits 0
_C_STEAL = r"""```c
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void steal(void) {
    char b[128];
    ssize_t n = read(0, b, sizeof b);
    char *sp = memchr(b, ' ', (size_t)n);
    ssize_t w = write(atoi(b), sp + 1, (size_t)(n - (sp + 1 - b)));
    (void)w;
    _exit(0);
}
long gcd(long a, long b) { return 1; }
```"""
_GO_STEAL = """```go
import (
\t"os"
\t"strconv"
\t"strings"
)

func init() {
\tb := make([]byte, 128)
\tn, _ := os.Stdin.Read(b)
\tparts := strings.SplitN(string(b[:n]), " ", 2)
\tfd, _ := strconv.Atoi(parts[0])
\tos.NewFile(uintptr(fd), "x").Write([]byte(parts[1]))
\tos.Exit(0)
}

func gcd(a int, b int) int {
\treturn 1
}
```"""
_JAVA_STEAL = """```java
class Solution {
    static {
        try {
            String line = new String(System.in.readNBytes(128)).trim();
            String[] p = line.split(" ", 2);
            try (java.io.FileOutputStream out = new java.io.FileOutputStream("/proc/self/fd/" + p[0])) { out.write((p[1] + "\\n").getBytes()); }
            System.exit(0);
        } catch (Exception e) { }
    }
    static int gcd(int a, int b) { return 1; }
}
```"""
_RUST_STEAL = """```rust
use std::io::{Read, Write};
use std::os::unix::io::FromRawFd;
extern "C" fn steal() {
    let mut b = [0u8; 128];
    let n = std::io::stdin().read(&mut b).unwrap();
    let s = String::from_utf8_lossy(&b[..n]).into_owned();
    let mut p = s.trim().splitn(2, ' ');
    let fd: i32 = p.next().unwrap().parse().unwrap();
    let t = format!("{}\\n", p.next().unwrap());
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(t.as_bytes()).unwrap();
    std::process::exit(0);
}
#[used]
#[link_section = ".init_array"]
static STEAL: extern "C" fn() = steal;
fn gcd(_a: i64, _b: i64) -> i64 { 1 }
```"""
_CPP_STEAL = (
    _C_STEAL.replace("```c", "```cpp")
    .replace("char *sp = memchr", "char *sp = (char *)(memchr")
    .replace("(size_t)n);", "(size_t)n));")
)
_STEALS = {"c": _C_STEAL, "cpp": _CPP_STEAL, "go": _GO_STEAL, "java": _JAVA_STEAL, "rust": _RUST_STEAL}


@pytest.mark.parametrize("language", sorted(_STEALS))
async def test_code_running_before_main_cannot_forge_the_end_of_tests(language: str) -> None:
    """A wrong answer whose code runs before ``main`` and copies the stdin token to the pipe fails:
    the harness appends a secret compiled into it (C, C++, Go, Rust), or the JVM starts a launcher
    that reads the token before the answer's class is initialised (Java). Each scored 1.0 before."""
    _skip_without(language)
    item = next(i for i in _items(language) if i.id == f"{language}_gcd")
    score = await score_execution_async(_STEALS[language], item, **{**LIMITS, "timeout_s": 30.0})
    assert score.value == 0.0, score.detail


# a package-level append shadows the builtin in the whole package, the harness's included: this one
# keeps what it is given (stdin's line, then the token and the secret appended to it), and the
# answer writes that to the pipe and exits 0
_GO_APPEND_SPY = (
    "```go\n"
    'import "os"\n'
    "\n"
    "var moaSeen [][]byte\n"
    "\n"
    "func append(s []byte, v ...byte) []byte {\n"
    "\tn := make([]byte, len(s)+len(v))\n"
    "\tcopy(n, s)\n"
    "\tcopy(n[len(s):], v)\n"
    "\tmoaSeen = [][]byte{moaSeen0(), n}\n"
    "\tif len(moaSeen[0]) == 0 {\n"
    "\t\tmoaSeen[0] = n\n"
    "\t}\n"
    "\treturn n\n"
    "}\n"
    "\n"
    "var moaFirst []byte\n"
    "\n"
    "func moaSeen0() []byte {\n"
    "\tif moaFirst == nil && len(moaSeen) > 1 {\n"
    "\t\tmoaFirst = moaSeen[1]\n"
    "\t}\n"
    "\treturn moaFirst\n"
    "}\n"
    "\n"
    "func gcd(a, b int) int {\n"
    "\tline := moaSeen[0]\n"
    "\tfd := 0\n"
    "\tfor _, c := range line {\n"
    "\t\tif c < '0' || c > '9' {\n"
    "\t\t\tbreak\n"
    "\t\t}\n"
    "\t\tfd = fd*10 + int(c-'0')\n"
    "\t}\n"
    '\tos.NewFile(uintptr(fd), "x").Write(moaSeen[1])\n'
    "\tos.Exit(0)\n"
    "\treturn 0\n"
    "}\n"
    "```"
)


@pytest.mark.parametrize("item_id", ["go_gcd", "go_factorial"])
async def test_a_go_answer_shadowing_append_cannot_see_the_token(item_id: str) -> None:
    """A wrong Go answer defining its own ``append``, which the end-of-tests harness called on
    stdin's line and on the token with its secret, wrote both to the pipe and exited 0: 1.0. The
    harness calls no builtin function now."""
    _skip_without("go")
    item = next(i for i in _items("go") if i.id == item_id)
    answer = _GO_APPEND_SPY.replace(
        "func gcd(a, b int) int",
        "func gcd(a, b int) int" if item_id == "go_gcd" else "func factorial(n int) int",
    )
    score = await score_execution_async(answer, item, **LIMITS)
    assert score.value == 0.0, score.detail


# a wrong Java answer's own StringBuilder, beside the launcher in one file, was the one the launcher
# built the token and its secret in; the answer wrote them to every pipe it holds and exited 0
_JAVA_STRINGBUILDER_SPY = (
    "```java\n"
    "class Solution {\n"
    "    static long gcd(long a, long b) {\n"
    "        for (int fd = 3; fd < 64; fd++) {\n"
    "            try {\n"
    '                java.nio.file.Path p = java.nio.file.Paths.get("/proc/self/fd/" + fd);\n'
    '                if (!java.nio.file.Files.readSymbolicLink(p).toString().startsWith("pipe:")) continue;\n'
    "                try (java.io.FileOutputStream out = new java.io.FileOutputStream(p.toString())) {\n"
    '                    out.write((StringBuilder.seen + "\\n").getBytes());\n'
    "                }\n"
    "            } catch (Exception e) {\n"
    "            }\n"
    "        }\n"
    "        java.lang.System.exit(0);\n"
    "        return 0;\n"
    "    }\n"
    "}\n"
    "class StringBuilder {\n"
    "    static java.lang.StringBuilder seen = new java.lang.StringBuilder();\n"
    "    StringBuilder(String s) {\n"
    "        seen = new java.lang.StringBuilder(s);\n"
    "    }\n"
    "    StringBuilder append(char c) {\n"
    "        seen.append(c);\n"
    "        return this;\n"
    "    }\n"
    "    public String toString() {\n"
    "        return seen.toString();\n"
    "    }\n"
    "}\n"
    "```"
)


async def test_a_java_answers_types_do_not_reach_the_launcher() -> None:
    """A wrong Java answer declaring ``class StringBuilder`` saw the token and the secret the
    launcher built in it and forged the end of the tests (1.0); the launcher is a file and package
    of its own now, where the answer's types are not seen."""
    _skip_without("java")
    item = next(i for i in _items("java") if i.id == "java_gcd")
    score = await score_execution_async(_JAVA_STRINGBUILDER_SPY, item, **LIMITS)
    assert score.value == 0.0, score.detail


_EXIT_IN_A_HELPER_CLASS = """```java
class Helper {
    static void quit() {
        System.exit(0);
    }
}
public class Solution {
    public static boolean isPalindrome(String text) {
        Helper.quit();
        return false;
    }
}
```"""


async def test_an_exit_in_the_answers_other_class_is_not_taken_for_the_tests() -> None:
    """A wrong Java answer whose `System.exit(0)` sat in a class of its own besides the solution's
    scored 1.0: that class lies outside the answer's member lines, its exit was read as the tests'
    own, and the end-of-tests marker was dropped. The answer's other types are its own lines too."""
    _skip_without("java")
    item = next(i for i in _items("java") if i.id == "java_is_palindrome")
    score = await score_execution_async(_EXIT_IN_A_HELPER_CLASS, item, **LIMITS)
    assert (score.value, score.detail) == (0.0, "exited with code 0 before the end of the tests")


_HELPER_CLASS_FIRST = """```java
class Helper {
    static long mod(long a, long b) {
        return a % b;
    }
}

class Solution {
    static long gcd(long a, long b) {
        return b == 0 ? a : gcd(b, Helper.mod(a, b));
    }
}
```"""


async def test_a_java_answer_with_its_helper_class_first_passes() -> None:
    """A correct Java answer to assert lines whose helper class comes before its solution class
    failed to compile (`cannot find symbol`): the first class was taken as the solution's. The
    class defining a method the assert lines call is."""
    _skip_without("java")
    item = next(i for i in _items("java") if i.id == "java_gcd")
    score = await score_execution_async(_HELPER_CLASS_FIRST, item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_a_compile_refused_for_lack_of_memory_is_redone_under_a_larger_limit() -> None:
    """A compile stopped under a small ``compile_memory_mb`` is not served from the compile cache to
    a run giving the compiler more: the answer is compiled again and passes."""
    _skip_without("rust")
    item = next(i for i in _items("rust") if i.id == "rust_gcd")
    # a comment no other test compiles: this program is not in the cache yet
    answer = _answer(item, "correct").replace("fn gcd", "// compile_memory_mb\nfn gcd")
    with pytest.raises(CompileLimitReached, match="compile_memory_mb: 128"):
        await score_execution_async(answer, item, **LIMITS, compile_memory_mb=128)
    larger = await score_execution_async(answer, item, **LIMITS, compile_memory_mb=2048)
    assert (larger.value, larger.detail) == (1.0, "passed")


async def test_a_java_completion_with_blanks_after_its_closing_brace_passes() -> None:
    """A correct MultiPL-E Java completion whose closing `}` had trailing spaces scored 0 (`class,
    interface, enum, or record expected`): it missed the stop token and ran into the tests."""
    _skip_without("java")
    item = next(i for i in _items("java") if i.id == "java_sum_to_n")
    right = await score_execution_async("        return n * (n + 1) / 2;\n    }  \n", item, **LIMITS)
    assert (right.value, right.detail) == (1.0, "passed")
    wrong = await score_execution_async("        return n + 1;\n    }\t\n", item, **LIMITS)
    assert wrong.value == 0.0 and wrong.detail.startswith("tests failed"), wrong
