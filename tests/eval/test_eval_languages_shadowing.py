"""A Go or JavaScript answer shares its package or module scope with the item's tests: what it
declares there must not change what the tests call. A wrong answer redefining a Go builtin the
tests use (``const true = false``), handing the JavaScript tests a fake ``require`` or patching
``node:assert``, or ending the module before the tests with a top-level ``return``, fails; correct
answers that define helpers of those names still pass, and so do answers holding a line
separator (U+2028) in a string.

Under the real sandbox; a language whose toolchain is missing here is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async
from moa.eval.languages.toolchains import find_toolchain

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
LIMITS = {"timeout_s": 10.0, "memory_mb": 256}


def _skip_without(language: str) -> None:
    found = find_toolchain(language)
    if isinstance(found, str):
        pytest.skip(found)


def _item(language: str, item_id: str) -> Item:
    items = [*load_dataset(FIXTURES / f"{language}.jsonl"), *load_dataset(FIXTURES / "generic.jsonl")]
    return next(i for i in items if i.id == item_id)


_GO_WRONG = {
    "true": "```go\nconst true = false\n\nfunc is_palindrome(text string) bool {\n\treturn false\n}\n```",
    "false": "```go\nconst (\n\tfalse = true\n)\n\nfunc is_palindrome(text string) bool {\n\treturn true\n}\n```",
}


@pytest.mark.parametrize("name", sorted(_GO_WRONG))
async def test_a_go_answer_cannot_redefine_a_builtin_the_tests_use(name: str) -> None:
    """A wrong Go answer (always `false`) beside `const true = false` scored 1.0 on a MultiPL-E
    row: the package-level constant replaced `true` in the tests' `expected: true` too. The
    answer's own declaration of a predeclared name is renamed in its lines."""
    _skip_without("go")
    score = await score_execution_async(_GO_WRONG[name], _item("go", "go_is_palindrome"), **LIMITS)
    assert score.value == 0.0 and score.detail.startswith("tests failed: "), score


_GO_CORRECT = (
    # a helper named like Go 1.21's builtin, called by the answer
    "```go\nfunc max(a, b int) int {\n\tif a > b {\n\t\treturn a\n\t}\n\treturn b\n}\n\n"
    "func max_element(l []int) int {\n\tm := l[0]\n\tfor _, x := range l {\n\t\tm = max(m, x)\n\t}\n\treturn m\n}\n```",
    # grouped declarations, a whole program
    '```go\npackage main\n\nimport "fmt"\n\ntype (\n\tlen int\n)\n\nvar (\n\tmin = 0\n\tcap, x = 1, 2\n)\n\n'
    "func max_element(l []int) int {\n\tm := l[0]\n\tfor _, v := range l {\n\t\tif v > m {\n\t\t\tm = v\n\t\t}\n\t}\n"
    "\t_ = min + cap + x\n\tvar n len = 3\n\t_ = n\n\treturn m\n}\n\nfunc main() { fmt.Println(max_element([]int{1, 2})) }\n```",
    # a type named `string` with a method named `len`
    "```go\ntype string struct{ s []rune }\n\nfunc (s string) len() int { return 0 }\n\n"
    "func max_element(l []int) int {\n\tm := l[0]\n\tfor _, v := range l[1:] {\n\t\tif v > m {\n\t\t\tm = v\n\t\t}\n\t}\n"
    "\tvar t string\n\t_ = t.len()\n\treturn m\n}\n```",
)


@pytest.mark.parametrize("answer", _GO_CORRECT)
async def test_a_correct_go_answer_defining_builtin_names_still_passes(answer: str) -> None:
    """Correct Go answers declaring helpers or types under predeclared names (`max`, `len`,
    `string`, grouped `var (...)`) keep their meaning after the renaming and pass."""
    _skip_without("go")
    score = await score_execution_async(answer, _item("go", "go_max_element"), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


_FAKE_ASSERT = "{ deepEqual() {}, strictEqual() {}, equal() {}, ok() {} }"
_JS_WRONG = {
    "function require": f"function require() {{ return {_FAKE_ASSERT}; }}",
    "var require": f"var require = () => ({_FAKE_ASSERT});",
    "require =": f"require = () => ({_FAKE_ASSERT});",
    "patched assert": "const a = require('node:assert'); a.deepEqual = a.strictEqual = () => {};",
    "top-level return": "return;",
}


@pytest.mark.parametrize("item_id", ["js_is_palindrome", "js_gcd"])
@pytest.mark.parametrize("attack", sorted(_JS_WRONG))
async def test_a_javascript_answer_cannot_change_what_the_tests_call(item_id: str, attack: str) -> None:
    """Each of these beside a wrong function scored 1.0 (a MultiPL-E row and an assert-line row):
    the tests called the answer's `require`, the shared `node:assert` the answer patched, or never
    ran after a `return` at the module's top level. The tests reach a frozen `node:assert` through
    the preload, and only their own last line tells it they ran."""
    _skip_without("javascript")
    wrong = (
        "function is_palindrome(text) { return false; }"
        if item_id == "js_is_palindrome"
        else ("function gcd(a, b) { return 1; }")
    )
    answer = f"```javascript\n{wrong}\n{_JS_WRONG[attack]}\n```"
    score = await score_execution_async(answer, _item("javascript", item_id), **LIMITS)
    assert score.value == 0.0, score


@pytest.mark.parametrize("attack", ["require =", "patched assert"])
async def test_a_typescript_answer_cannot_change_what_the_tests_call(attack: str) -> None:
    """The same in TypeScript, whose tests `declare var require: any`."""
    _skip_without("typescript")
    answer = (
        f"```ts\nfunction is_palindrome(text: string): boolean {{ return false; }}\n{_JS_WRONG[attack]}\n```"
    )
    score = await score_execution_async(answer, _item("typescript", "ts_is_palindrome"), **LIMITS)
    assert score.value == 0.0, score


_JS_CORRECT = {
    "javascript": "```javascript\nconst fs = require('fs');\nconst { strict } = require('assert');\n"
    "function is_palindrome(text) {\n  strict.ok(typeof fs.readFileSync === 'function');\n"
    "  return text.split('').reverse().join('') === text;\n}\n```",
    "typescript": "```ts\nconst util = require('util');\nfunction is_palindrome(text: string): boolean {\n"
    "  return util.format('%s', text.split('').reverse().join('')) === text;\n}\n```",
}


@pytest.mark.parametrize("language", sorted(_JS_CORRECT))
async def test_a_correct_answer_requiring_modules_still_passes(language: str) -> None:
    """A correct answer that calls `require` itself (node:fs, node:assert, util) still passes."""
    _skip_without(language)
    item = _item(language, "js_is_palindrome" if language == "javascript" else "ts_is_palindrome")
    score = await score_execution_async(_JS_CORRECT[language], item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


_SEPARATOR_IN_A_STRING = {
    "javascript": "```javascript\nfunction is_palindrome(text) {\n  const unused = '\u2028';\n"
    "  return text.split('').reverse().join('') === text;\n}\n```",
    "typescript": "```ts\nfunction is_palindrome(text: string): boolean {\n  const unused = '\u2029';\n"
    "  return text.split('').reverse().join('') === text;\n}\n```",
    "go": '```go\nfunc is_palindrome(text string) bool {\n\t_ = "\u2028"\n\tr := []rune(text)\n'
    "\tfor i := 0; i < len(r)/2; i++ {\n\t\tif r[i] != r[len(r)-1-i] {\n\t\t\treturn false\n\t\t}\n\t}\n\treturn true\n}\n```",
}


@pytest.mark.parametrize("language", sorted(_SEPARATOR_IN_A_STRING))
async def test_a_line_separator_inside_a_string_is_kept(language: str) -> None:
    """A correct answer holding U+2028 (or U+2029) in a string literal failed (`SyntaxError:
    Invalid or unexpected token`, `Unterminated string literal`): reading its fenced block broke
    lines where `str.splitlines` does, which a compiler reads inside a string. Only `\\n`, `\\r\\n`
    and `\\r` break lines now."""
    _skip_without(language)
    item_id = {"javascript": "js_is_palindrome", "typescript": "ts_is_palindrome", "go": "go_is_palindrome"}
    score = await score_execution_async(
        _SEPARATOR_IN_A_STRING[language], _item(language, item_id[language]), **LIMITS
    )
    assert (score.value, score.detail) == (1.0, "passed")


_REAL_SHAPES = {
    "own assert and a demo": "```javascript\nconst assert = require('assert');\n\nfunction is_palindrome(text) {\n"
    "  return text.split('').reverse().join('') === text;\n}\n\nassert.strictEqual(is_palindrome('aba'), true);\n"
    "console.log('ok');\n```",
    "own test function": "```javascript\nfunction is_palindrome(text) {\n  return text.split('').reverse().join('') === text;\n"
    "}\n\nconst test = () => is_palindrome('aba');\nconsole.log(test());\n```",
    "arrow function": "```javascript\nconst is_palindrome = (text) => text.split('').reverse().join('') === text;\n```",
    "arrow, one parameter": "```javascript\nlet is_palindrome = text => [...text].reverse().join('') === text;\n```",
    "typed arrow": "```typescript\nconst is_palindrome: (text: string) => boolean = (text) =>\n"
    "  text.split('').reverse().join('') === text;\n```",
}


@pytest.mark.parametrize("shape", sorted(_REAL_SHAPES))
async def test_a_correct_javascript_answer_in_a_common_shape_passes(shape: str) -> None:
    """Correct MultiPL-E answers failed: one bringing its own `const assert = require('assert')`
    with a demo (`Identifier 'assert' has already been declared`, the tests declare it too), one
    declaring `const test`, and one whose function is an arrow bound by `const` (`the answer's
    code does not define`)."""
    language = "typescript" if "typed" in shape else "javascript"
    _skip_without(language)
    item = _item(language, "ts_is_palindrome" if language == "typescript" else "js_is_palindrome")
    score = await score_execution_async(_REAL_SHAPES[shape], item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


# an item's own test program defining a helper, and a correct answer defining one of the same name
_SHARED_HELPER = {
    "go": (
        'import "testing"\n\nfunc abs(x int) int {\n\tif x < 0 {\n\t\treturn -x\n\t}\n\treturn x\n}\n\n'
        'func TestDist(t *testing.T) {\n\tif abs(dist(1, 4)) != 3 {\n\t\tt.Fatal("bad")\n\t}\n}\n',
        "```go\nfunc abs(x int) int {\n\tif x < 0 {\n\t\treturn -x\n\t}\n\treturn x\n}\n\n"
        "func dist(a, b int) int {\n\treturn abs(a - b)\n}\n```",
    ),
    "c": (
        "#include <assert.h>\nstatic int abs_(int x) { return x < 0 ? -x : x; }\n"
        "int main(void) { assert(abs_(dist(1, 4)) == 3); return 0; }\n",
        "```c\nstatic int abs_(int x) { return x < 0 ? -x : x; }\nint dist(int a, int b) { return abs_(a - b); }\n```",
    ),
    "cpp": (
        "#include <cassert>\nint abs_(int x) { return x < 0 ? -x : x; }\n"
        "int main() { assert(abs_(dist(1, 4)) == 3); }\n",
        "```cpp\nint abs_(int x) { return x < 0 ? -x : x; }\nint dist(int a, int b) { return abs_(a - b); }\n```",
    ),
    "rust": (
        "fn abs_(x: i64) -> i64 { if x < 0 { -x } else { x } }\n\nfn main() {\n    assert_eq!(abs_(dist(1, 4)), 3);\n}\n",
        "```rust\nfn abs_(x: i64) -> i64 { x.abs() }\n\nfn dist(a: i64, b: i64) -> i64 { abs_(a - b) }\n```",
    ),
}


@pytest.mark.parametrize("language", sorted(_SHARED_HELPER))
async def test_a_helper_named_like_one_of_the_tests_does_not_clash(language: str) -> None:
    """A correct answer defining a helper the item's test program defines too failed to compile
    (`abs redeclared in this block`, `redefinition of 'abs_'`): the tests' own is renamed in their
    lines, and each side calls its own."""
    _skip_without(language)
    tests, answer = _SHARED_HELPER[language]
    item = Item(id=f"{language}_dist", input="Write dist(a, b) = |a - b|.", language=language, test=tests)
    score = await score_execution_async(answer, item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


_REPLACE_TESTS = {
    "completion": "  return 0;\n}\ntest = () => {};",
    "whole program": "```js\nfunction sum_to_n(n) {\n  return 0;\n}\ntest = function () {};\n```",
}


@pytest.mark.parametrize("language", ["javascript", "typescript"])
@pytest.mark.parametrize("shape", sorted(_REPLACE_TESTS))
async def test_an_answer_cannot_replace_the_tests_function(language: str, shape: str) -> None:
    """A wrong answer assigning the tests' `function test()` (`test = () => {}`, no declaration of
    its own) replaced it before the tests called it, and passed MultiPL-E's rows; the tests'
    assignable top-level names are keyed, so the answer assigns a name of its own."""
    _skip_without(language)
    answer = _REPLACE_TESTS[shape]
    if language == "typescript":
        answer = answer.replace("```js", "```ts").replace("(n)", "(n: number): number")
        answer = answer.replace("\ntest = ", "\n(test as any) = ")
    item = next(i for i in load_dataset(FIXTURES / f"{language}.jsonl") if i.meta.get("format") == "multiple")
    score = await score_execution_async(answer, item, **LIMITS)
    # TypeScript: the tests' name is no longer the answer's to name (`Cannot find name 'test'`)
    assert score.value == 0.0 and score.detail.startswith(
        ("tests failed", "the answer's code does not compile")
    ), score


@pytest.mark.parametrize("language", ["javascript", "typescript"])
async def test_a_tests_name_spread_is_renamed_too(language: str) -> None:
    """The tests' keyed top-level names were renamed everywhere but after a spread (the regular
    expression took `...pair` for a property): `[...pair(1)]` threw `pair is not defined`, and a
    correct answer failed."""
    _skip_without(language)
    tests = (
        "const assert = require('assert');\nfunction pair(n) { return [n, n + 1]; }\n"
        "let more = [3];\nassert.deepEqual(solve(1), [...pair(1)]);\nassert.deepEqual(solve(...more), pair(3));\n"
    )
    if language == "typescript":
        tests = tests.replace("function pair(n)", "function pair(n: number): number[]").replace(
            "let more", "let more: [number]"
        )
        tests = "declare var require: any;\n" + tests
        answer = "```ts\nfunction solve(n: number): number[] {\n  return [n, n + 1];\n}\n```"
    else:
        answer = "```javascript\nfunction solve(n) {\n  return [n, n + 1];\n}\n```"
    item = Item(id=f"{language}_pair", input="Write solve(n): [n, n + 1].", language=language, test=tests)
    score = await score_execution_async(answer, item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed"), score
