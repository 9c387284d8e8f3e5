"""A JavaScript or TypeScript answer must not read the tests' text or the harness's secrets.

Each attack here is a wrong answer to a MultiPL-E row (``is_palindrome``) that looks its result up
in the tests' source whenever it can reach it, and answers wrong otherwise: it scores 0 only when
no route reaches the tests. The answer and the tests used to be one CommonJS module, so the
answer's top-level ``arguments.callee.toString()``, its own file, or ``Function.caller`` of the
tests' sloppy functions handed it every expected value (1.0 while wrong). Correct answers in
sloppy-mode shapes, and ones exporting or importing, still pass.

Under the real sandbox; a language whose toolchain is missing here is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async
from moa.eval.languages.toolchains import find_toolchain

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
LIMITS = {"timeout_s": 20.0, "memory_mb": 256}


def _skip_without(language: str) -> None:
    found = find_toolchain(language)
    if isinstance(found, str):
        pytest.skip(found)


def _item(language: str) -> Item:
    item_id = "js_is_palindrome" if language == "javascript" else "ts_is_palindrome"
    return next(i for i in load_dataset(FIXTURES / f"{language}.jsonl") if i.id == item_id)


# the tests read `assert.deepEqual(candidate("aba"),true);`: the expected value follows the call
_LOOKUP = (
    "function moaLookup(src, text) {\n"
    "  const at = String(src).indexOf('candidate(' + JSON.stringify(text) + '),');\n"
    "  return at < 0 ? 'not found' : String(src).slice(at).split(',')[1].trim().startsWith('true');\n"
    "}\n"
)

#: (code before the answer's function, the expression giving the text it searches; None: the code
#: defines the function itself)
_JS_ATTACKS: dict[str, tuple[str, str | None]] = {
    "arguments.callee at the top level": (
        "let leaked = '';\ntry { leaked = arguments.callee.toString(); } catch (e) {}\n",
        "leaked",
    ),
    "eval of arguments.callee at the top level": (
        "let leaked = '';\ntry { leaked = eval('arguments.callee.toString()'); } catch (e) {}\n",
        "leaked",
    ),
    "Function.caller": ("", "is_palindrome.caller"),
    "arguments.callee.caller": ("", "arguments.callee.caller"),
    "the callers' frames": (
        "function callerFrames() {\n  const saved = Error.prepareStackTrace;\n"
        "  Error.prepareStackTrace = (e, sites) => sites;\n  const sites = new Error().stack;\n"
        "  Error.prepareStackTrace = saved;\n"
        "  return sites.map((s) => String(s.getFunction()) + String(s.getThis())).join('\\n');\n}\n",
        "callerFrames()",
    ),
    "its own file": (
        "let leaked = '';\ntry { leaked = require('fs').readFileSync(__filename, 'utf8'); } catch (e) {}\n",
        "leaked",
    ),
    "process.argv": (
        "let leaked = '';\n"
        "try { leaked = process.argv.slice(1).map((f) => require('fs').readFileSync(f, 'utf8')).join(''); }"
        " catch (e) {}\n",
        "leaked",
    ),
    "require.main": (
        "let leaked = '';\ntry { leaked = require('fs').readFileSync(require.main.filename, 'utf8'); } catch (e) {}\n",
        "leaked",
    ),
    "the files beside it, and stdin": (
        "let leaked = '';\nconst fs = require('fs');\n"
        "for (const f of ['main.js', 'prog.js', 'tests.js', 'moa_end.js', '/proc/self/cmdline',"
        " '/proc/self/fd/0', '/proc/self/fd/3', '/proc/self/environ']) {\n"
        "  try { leaked += fs.readFileSync(f, 'latin1'); } catch (e) {}\n}\n"
        "try { for (const f of fs.readdirSync('.')) leaked += fs.readFileSync(f, 'latin1'); } catch (e) {}\n"
        "try { leaked += fs.readFileSync(0, 'latin1'); } catch (e) {}\n",
        "leaked",
    ),
    "process.binding": (
        "let leaked = '';\ntry { const b = process.binding('fs'); leaked = String(Object.keys(b)); } catch (e) {}\n",
        "leaked",
    ),
    "a global getter the tests read": (
        "let leaked = '';\nconst named = function is_palindrome(text) { return false; };\n"
        "Object.defineProperty(globalThis, 'is_palindrome', { configurable: true, get: function () {\n"
        "  try { leaked = String(arguments.callee.caller); } catch (e) {}\n"
        "  return (text) => moaLookup(leaked, text) === 'not found' ? text.length === 0 : moaLookup(leaked, text);\n"
        "} });\n",
        None,
    ),
    "a Proxy the tests look names up in": (
        "let leaked = '';\nconst named = function is_palindrome(text) { return false; };\n"
        "const answer = (text) => (moaLookup(leaked, text) === 'not found' ? text.length === 0 : moaLookup(leaked, text));\n"
        "Object.setPrototypeOf(globalThis, new Proxy(Object.getPrototypeOf(globalThis), {\n"
        "  has: function (target, key) { return key === 'is_palindrome' || Reflect.has(target, key); },\n"
        "  get: function (target, key, receiver) {\n"
        "    if (key !== 'is_palindrome') return Reflect.get(target, key, receiver);\n"
        "    try { leaked = String(arguments.callee.caller); } catch (e) {}\n    return answer;\n  },\n}));\n",
        None,
    ),
    "the harness's listeners": (
        "let leaked = '';\n"
        "try { leaked = ['beforeExit', 'exit'].flatMap((e) => process.listeners(e)).map(String).join(''); }"
        " catch (e) {}\n",
        "leaked",
    ),
}


def _js_attack(language: str, before: str, source: str | None) -> str:
    if source is None:
        return f"```javascript\n{_LOOKUP}{before}```"
    if language == "typescript":
        head = "declare var __filename: any;\ndeclare var process: any;\n"
        return (
            f"```ts\n{head}{_LOOKUP.replace('(src, text)', '(src: any, text: string): any')}{before}"
            f"function is_palindrome(text: string): boolean {{\n  const found = moaLookup({source}, text);\n"
            "  return found === 'not found' ? text.length === 0 : found;\n}\n```"
        )
    return (
        f"```javascript\n{_LOOKUP}{before}function is_palindrome(text) {{\n"
        f"  const found = moaLookup({source}, text);\n"
        "  return found === 'not found' ? text.length === 0 : found;\n}\n```"
    )


@pytest.mark.parametrize("attack", sorted(_JS_ATTACKS))
async def test_a_javascript_answer_cannot_read_the_tests_expected_values(attack: str) -> None:
    """A wrong answer (right only for "") that reads the tests' text by each route there is and
    returns the expected value it finds scored 1.0 by most of them; now 0: no route reaches it."""
    _skip_without("javascript")
    before, source = _JS_ATTACKS[attack]
    score = await score_execution_async(
        _js_attack("javascript", before, source), _item("javascript"), **LIMITS
    )
    assert score.value == 0.0 and score.detail.startswith("tests failed"), score


# tsc emits strict code, where `caller` and `callee` throw: these are the routes left to TypeScript
_TS_ATTACKS = ("eval of arguments.callee at the top level", "its own file", "process.argv", "require.main",
               "the files beside it, and stdin", "process.binding", "the harness's listeners")  # fmt: skip


@pytest.mark.parametrize("attack", _TS_ATTACKS)
async def test_a_typescript_answer_cannot_read_the_tests_expected_values(attack: str) -> None:
    """The same in TypeScript, compiled with its tests by tsc and then run apart from them: the
    compiled program, whose file it could read, held the tests (1.0 while wrong)."""
    _skip_without("typescript")
    before, source = _JS_ATTACKS[attack]
    before = before.replace("(f)", "(f: any)").replace("(e) => process", "(e: any) => process")
    score = await score_execution_async(
        _js_attack("typescript", before, source), _item("typescript"), **LIMITS
    )
    assert score.value == 0.0 and score.detail.startswith("tests failed"), score


_JS_SKIP_TESTS = {
    "forged end of the tests": (
        "const done = Object.getOwnPropertyNames(globalThis).find((n) => n.startsWith('moa_done_'));\n"
        "if (done) {\n  const lines = require('fs').readFileSync(__filename, 'utf8').replace(/\\s+$/, '')"
        ".split('\\n').length;\n"
        "  require('vm').runInThisContext(done + '()', { filename: __filename, lineOffset: lines - 1 });\n}\nreturn;"
    ),
    "the launcher's vm": "require('vm').Script.prototype.runInThisContext = function () { return () => {}; };",
    "Function.prototype.call": "Function.prototype.call = function () { return () => {}; };",
}


@pytest.mark.parametrize("attack", sorted(_JS_SKIP_TESTS))
async def test_a_javascript_answer_cannot_skip_the_tests_through_the_harness(attack: str) -> None:
    """The harness's names were globals an answer could list (`moa_done_<key>`): calling that one
    from a line faked as the program's last, then `return`, passed without a test run. No harness
    global exists now, and what the launcher calls after the answer ran it took before."""
    _skip_without("javascript")
    answer = f"```javascript\nfunction is_palindrome(text) {{ return false; }}\n{_JS_SKIP_TESTS[attack]}\n```"
    score = await score_execution_async(answer, _item("javascript"), **LIMITS)
    assert score.value == 0.0, score


async def test_the_harness_leaves_no_name_on_the_global_object() -> None:
    """A correct answer that answers only when no global name of the harness's (`moa_...`) exists
    passes: nothing there tells an answer the harness's key."""
    _skip_without("javascript")
    answer = (
        "```javascript\nfunction is_palindrome(text) {\n"
        "  const harness = Object.getOwnPropertyNames(globalThis).filter((n) => /moa/i.test(n));\n"
        "  return harness.length === 0 && text === [...text].reverse().join('');\n}\n```"
    )
    score = await score_execution_async(answer, _item("javascript"), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


_JS_CORRECT = {
    "assignment to an undeclared name": "function is_palindrome(text) {\n"
    "  reversed = text.split('').reverse().join('');\n  return reversed === text;\n}",
    "with": "function is_palindrome(text) {\n  with (Math) { var n = floor(text.length / 2); }\n"
    "  for (var i = 0; i < n; i++) if (text[i] !== text[text.length - 1 - i]) return false;\n  return true;\n}",
    "octal literal, arguments.callee": "function is_palindrome(text) {\n  if (text.length < 2) return 010 === 8;\n"
    "  return text[0] === text[text.length - 1] && arguments.callee(text.slice(1, -1));\n}",
    "top-level let, const, class": "const rev = (t) => [...t].reverse().join('');\nlet calls = 0;\n"
    "class Checker { check(t) { calls++; return rev(t) === t; } }\n"
    "function is_palindrome(text) { return new Checker().check(text); }",
    "module.exports": "function is_palindrome(text) { return text === [...text].reverse().join(''); }\n"
    "module.exports = { is_palindrome };\nexports.also = 1;\n"
    "if (require.main === module) console.log(is_palindrome('aba'));",
    "ES module imports and exports": "import { strict as assert } from 'node:assert';\n"
    "import * as util from 'util';\nimport fs, { readFileSync as read } from 'fs';\nimport 'path';\n"
    "export function is_palindrome(text) {\n  assert.ok(typeof util.format === 'function' && typeof read === 'function');\n"
    "  assert.ok(typeof fs.readFileSync === 'function');\n  return text === [...text].reverse().join('');\n}\n"
    "export default is_palindrome;\nexport { is_palindrome as isPalindrome };\nexport const unused = 1;",
    "__filename, __dirname, this": "const here = __filename + __dirname;\nthis.unused = 1;\n"
    "function is_palindrome(text) { return here.length > 0 && text === [...text].reverse().join(''); }",
    "a dynamic import": "import('node:fs').then((m) => {\n"
    "  if (typeof m.readFileSync !== 'function') throw new Error('no fs');\n});\n"
    "function is_palindrome(text) { return text === [...text].reverse().join(''); }",
    "its own require": "var require = (id) => ({ reverse: (t) => [...t].reverse().join('') });\n"
    "function is_palindrome(text) { return require('mine').reverse(text) === text; }",
}


@pytest.mark.parametrize("shape", sorted(_JS_CORRECT))
async def test_a_correct_sloppy_or_module_shaped_answer_still_passes(shape: str) -> None:
    """Run as a script of its own, a correct answer keeps what it had as a CommonJS module in
    sloppy mode (undeclared assignments, `with`, octal literals, `arguments.callee`), its top-level
    declarations (seen by the tests), `module.exports`, `require`, `__filename`, and an ES module's
    `import` and `export` statements, which become `require` calls and plain declarations."""
    _skip_without("javascript")
    score = await score_execution_async(
        f"```javascript\n{_JS_CORRECT[shape]}\n```", _item("javascript"), **LIMITS
    )
    assert (score.value, score.detail) == (1.0, "passed")


_TS_CORRECT = {
    "export": "export function is_palindrome(text: string): boolean {\n"
    "  return text === [...text].reverse().join('');\n}",
    "top-level let, const, class": "const rev = (t: string): string => [...t].reverse().join('');\n"
    "let calls = 0;\nclass Checker { check(t: string): boolean { calls++; return rev(t) === t; } }\n"
    "function is_palindrome(text: string): boolean { return new Checker().check(text); }",
    "a string like the harness's marker": "function is_palindrome(text: string): boolean {\n"
    "  const marker = 'moa tests';\n  return marker.length > 0 && text === [...text].reverse().join('');\n}",
}


@pytest.mark.parametrize("shape", sorted(_TS_CORRECT))
async def test_a_correct_typescript_answer_still_passes(shape: str) -> None:
    """Type-checked with its tests by tsc, then run apart from them, a correct TypeScript answer
    (a module's `export`, top-level declarations the tests read) passes."""
    _skip_without("typescript")
    score = await score_execution_async(f"```ts\n{_TS_CORRECT[shape]}\n```", _item("typescript"), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


def test_the_launcher_holds_no_secret() -> None:
    """The launcher's file is readable by the program: no key of the harness's is in it."""
    from moa.eval.languages.jsrun import js_key, launcher_source

    assert js_key() not in launcher_source() and "moa_require" not in launcher_source()


# tests that fail later than their function returns: after an await, and after a timer
_ASYNC_TESTS = {
    "await": "const assert = require('node:assert');\n\nasync function test() {\n  let candidate = is_palindrome;\n"
    "  assert.deepEqual(await candidate('ab'), false);\n}\n\ntest();\n",
    "timer": "const assert = require('node:assert');\n\nfunction test() {\n  let candidate = is_palindrome;\n"
    "  setTimeout(() => assert.deepEqual(candidate('ab'), false), 200);\n}\n\ntest();\n",
}
_EARLY_EXIT = {
    "a bound emit, then exit": "Promise.resolve().then(process.emit.bind(process, 'beforeExit', 0))"
    ".then(process.exit.bind(process, 0));",
    "a bound emit, then exit on a timer": "Promise.resolve().then(process.emit.bind(process, 'beforeExit', 0))"
    ".then(() => setTimeout(process.exit.bind(process, 0), 20));",
}


@pytest.mark.parametrize("tests", sorted(_ASYNC_TESTS))
@pytest.mark.parametrize("attack", sorted(_EARLY_EXIT))
async def test_an_answer_cannot_end_async_tests_early_with_a_fake_event(tests: str, attack: str) -> None:
    """A wrong answer emitting `beforeExit` through a bound `process.emit` (none of its frames on
    the stack) and exiting with 0 before an async test failed got the token (1.0): the launcher
    writes it one turn of the loop later, when no timer or request is left."""
    _skip_without("javascript")
    item = Item(id="p", input="Write is_palindrome(text).", language="javascript", test=_ASYNC_TESTS[tests])
    correct = "```javascript\nfunction is_palindrome(t) { return t === [...t].reverse().join(''); }\n```"
    assert (await score_execution_async(correct, item, **LIMITS)).value == 1.0
    wrong = f"```javascript\nfunction is_palindrome(t) {{ return true; }}\n{_EARLY_EXIT[attack]}\n```"
    score = await score_execution_async(wrong, item, **LIMITS)
    assert score.value == 0.0, score
