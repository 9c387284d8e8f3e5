"""A JavaScript or TypeScript answer must not pass by patching the built-ins its tests call.

The answer's script runs before the tests, in the same realm, so it could replace what they
compare with: ``JSON.stringify = () => 'x'`` made every ``JSON.stringify(a) === JSON.stringify(b)``
true, and so did ``Object.prototype.toJSON``, ``Array.prototype.join``, ``Math.abs``, a global
``JSON`` replaced outright or an answer's function patching them when the tests called it. Each
attack here is a wrong answer (``solve(n)`` gives ``[0, 0]``, not ``[n, n + 1]``) that scored 1.0
before the launcher's guard (``moa.eval.languages.jsguard``) and scores 0 now. Correct answers
adding to the built-ins, in sloppy mode, or naming their helpers like Node's globals, still pass.

Under the real sandbox (``MOA_REQUIRE_TOOLCHAINS=1`` fails a missing toolchain instead of skipping).
"""

from __future__ import annotations

import pytest

from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.languages.build import RunLimits, compile_and_run
from moa.eval.languages.jsrun import split_js
from moa.eval.languages.program import Program
from moa.eval.languages.toolchains import find_toolchain

LIMITS = {"timeout_s": 20.0, "memory_mb": 256}


def _skip_without(language: str) -> None:
    found = find_toolchain(language)
    if isinstance(found, str):
        pytest.skip(found)


# how the tests compare `solve(n)` with `[n, n + 1]`: each a way real test programs do it
_STYLES = {
    "stringify": "return JSON.stringify(got) === JSON.stringify(exp);",
    "join": "return got.join(',') === exp.join(',');",
    "every": "return got.length === exp.length && got.every((v, i) => v === exp[i]);",
    "map": "return got.map(String).join() === exp.map(String).join();",
    "sort": "return got.slice().sort().join() === exp.slice().sort().join();",
    "lower": "return String(got).toLowerCase() === String(exp).toLowerCase();",
    "keys": "const a = Object.keys(got), b = Object.keys(exp);\n  if (a.length !== b.length) return false;\n"
    "  for (let i = 0; i < a.length; i++) if (got[a[i]] !== exp[a[i]]) return false;\n  return true;",
    "is": "return Object.is(got[0], exp[0]) && Object.is(got[1], exp[1]);",
    "abs": "return Math.abs(got[0] - exp[0]) < 1e-9 && Math.abs(got[1] - exp[1]) < 1e-9;",
    "isNaN": "for (let i = 0; i < exp.length; i++) {\n"
    "    if (Number.isNaN(exp[i]) ? !Number.isNaN(got[i]) : exp[i] !== got[i]) return false;\n  }\n  return true;",
    "string": "return Array.isArray(got) && String(got) === String(exp);",
    "concat": "return '' + got === '' + exp;",
    "call": "return got.length === exp.length && Array.prototype.every.call(got, (v, i) => v === exp[i]);",
}


def _tests(style: str) -> str:
    return (
        f"function check(got, exp) {{\n  {_STYLES[style]}\n}}\n"
        "for (const n of [1, 2, 3]) {\n"
        "  if (!check(solve(n), [n, n + 1])) throw new Error('solve(' + n + ') is wrong');\n}\n"
    )


def _item(style: str, language: str = "javascript") -> Item:
    test = _tests(style)
    if language == "typescript":
        test = test.replace("check(got, exp)", "check(got: any, exp: any): boolean")
    return Item(id=f"solve-{style}", input="Write solve(n): [n, n + 1].", language=language, test=test)


#: (the comparison the tests make, code after the wrong answer's `solve`)
_ATTACKS: dict[str, tuple[str, str]] = {
    "JSON.stringify": ("stringify", "JSON.stringify = () => 'x';"),
    "Object.prototype.toJSON": ("stringify", "Object.prototype.toJSON = function () { return 1; };"),
    "the global JSON replaced": ("stringify", "JSON = { stringify: () => 'x' };"),
    "an accessor on globalThis": (
        "stringify",
        "Object.defineProperty(globalThis, 'JSON', { get: () => ({ stringify: () => 'x' }) });",
    ),
    "Array.prototype[Symbol.iterator]": ("stringify", "Array.prototype[Symbol.iterator] = function* () {};"),
    "Array.prototype.every": ("every", "Array.prototype.every = () => true;"),
    "Array.prototype.join": ("join", "Array.prototype.join = () => '';"),
    "Array.prototype.map": ("map", "Array.prototype.map = () => [];"),
    "Array.prototype.sort": ("sort", "Array.prototype.sort = () => [];"),
    "String.prototype.toLowerCase": ("lower", "String.prototype.toLowerCase = () => '';"),
    "Object.keys": ("keys", "Object.keys = () => [];"),
    "the global Object replaced": ("keys", "Object = { keys: () => [] };"),
    "Object.is": ("is", "Object.is = () => true;"),
    "Math.abs": ("abs", "Math.abs = () => 0;"),
    "the global Math replaced": ("abs", "Math = { abs: () => 0 };"),
    "Number.isNaN": ("isNaN", "Number.isNaN = () => true;"),
    "Array.isArray and Array.prototype.toString": (
        "string",
        "Array.isArray = () => true;\nArray.prototype.toString = () => 'x';",
    ),
    "Object.prototype[Symbol.toPrimitive]": (
        "concat",
        "Object.prototype[Symbol.toPrimitive] = () => 'x';",
    ),
    "Object.prototype.valueOf": ("concat", "Object.prototype.valueOf = () => 'x';"),
    "Array.prototype.valueOf over Object.prototype's": ("concat", "Array.prototype.valueOf = () => 'x';"),
    "a getter on Object.prototype": (
        "stringify",
        "Object.defineProperty(Object.prototype, 'toJSON', { get: () => () => 1, configurable: true });",
    ),
    "Array.prototype's prototype replaced": (
        "stringify",
        "Object.setPrototypeOf(Array.prototype, { __proto__: Object.prototype, toJSON() { return 1; } });",
    ),
}

_WRONG = "function solve(n) {\n  return [0, 0];\n}\n"


@pytest.mark.parametrize("attack", sorted(_ATTACKS))
async def test_a_wrong_answer_patching_a_built_in_the_tests_call_fails(attack: str) -> None:
    """Each patch, made by the wrong answer's top level, made its comparison true (1.0): the
    guard puts the built-in back (or the tests see the clean global) before the tests run."""
    _skip_without("javascript")
    style, patch = _ATTACKS[attack]
    answer = f"```javascript\n{_WRONG}{patch}\n```"
    score = await score_execution_async(answer, _item(style), **LIMITS)
    assert score.value == 0.0, score


#: patches of what the guard itself uses after the answer ran, beside a patch of JSON.stringify
_GUARD_ATTACKS = {
    "getters on Object.prototype a descriptor lacks": "for (const k of ['value', 'get', 'set', 'writable']) {\n"
    "  Object.defineProperty(Object.prototype, k, { __proto__: null, get() { throw new Error('the guard ran it'); },"
    " configurable: true });\n}",
    "Reflect, Map, iteration and Symbol.prototype.description": "Reflect.apply = () => 0;\n"
    "Reflect.defineProperty = () => true;\nReflect.ownKeys = () => [];\nMap.prototype.get = () => undefined;\n"
    "Array.prototype[Symbol.iterator] = function* () {};\n"
    "Object.defineProperty(Symbol.prototype, 'description', { get() { throw new Error('the guard ran it'); } });",
}


@pytest.mark.parametrize("attack", sorted(_GUARD_ATTACKS))
async def test_the_guard_runs_none_of_the_answers_code(attack: str) -> None:
    """What the guard calls after the answer ran it took before, and it reads descriptors with no
    prototype where Object.prototype could answer for them: a getter there ran inside the guard
    (which could then re-patch what it had put back). The tests run, and fail."""
    _skip_without("javascript")
    answer = f"```javascript\n{_WRONG}{_GUARD_ATTACKS[attack]}\nJSON.stringify = () => 'x';\n```"
    score = await score_execution_async(answer, _item("stringify"), **LIMITS)
    assert (score.value, score.detail) == (0.0, "error: Error: solve(1) is wrong"), score


#: (the comparison, the patch made unremovable, the name the failure gives)
_UNREMOVABLE: dict[str, tuple[str, str, str]] = {
    "made non-configurable": (
        "stringify",
        "Object.defineProperty(JSON, 'stringify', { value: () => 'x', writable: false, configurable: false });",
        "JSON.stringify was made unchangeable",
    ),
    "frozen": ("stringify", "JSON.stringify = () => 'x';\nObject.freeze(JSON);", "JSON was frozen"),
    "sealed": (
        "join",
        "Array.prototype.join = () => '';\nObject.seal(Array.prototype);",
        "Array.prototype was frozen",
    ),
    "an addition made non-configurable": (
        "stringify",
        "Object.defineProperty(Object.prototype, 'toJSON', { value() { return 1; }, configurable: false });",
        "Object.prototype.toJSON was added and cannot be removed",
    ),
    "Object.prototype made non-extensible": (
        "concat",
        "Object.prototype.valueOf = () => 'x';\nObject.preventExtensions(Object.prototype);",
        "Object.prototype was frozen, sealed or made non-extensible",
    ),
}


@pytest.mark.parametrize("attack", sorted(_UNREMOVABLE))
async def test_a_patch_that_cannot_be_put_back_fails_the_run_naming_it(attack: str) -> None:
    """A patch made non-configurable, or a built-in frozen, sealed or made non-extensible after
    it was patched, cannot be undone: the run fails with one line naming the built-in."""
    _skip_without("javascript")
    style, patch, named = _UNREMOVABLE[attack]
    score = await score_execution_async(f"```javascript\n{_WRONG}{patch}\n```", _item(style), **LIMITS)
    assert score.value == 0.0 and named in score.detail and "tampered" in score.detail, score


#: (the comparison, the wrong answer's whole code: it patches when the tests call it)
_AT_CALL_TIME: dict[str, tuple[str, str]] = {
    "JSON.stringify": (
        "stringify",
        "function solve(n) {\n  JSON.stringify = () => 'x';\n  return [0, 0];\n}",
    ),
    "JSON.stringify, put back after two calls": (
        "stringify",
        "const real = JSON.stringify;\nfunction solve(n) {\n  let calls = 0;\n"
        "  JSON.stringify = function () {\n    if (++calls === 2) JSON.stringify = real;\n    return 'x';\n  };\n"
        "  return [0, 0];\n}",
    ),
    "Array.prototype.join": (
        "join",
        "function solve(n) {\n  Array.prototype.join = () => '';\n  return [0, 0];\n}",
    ),
    "Array.prototype.join, put back after two calls": (
        "join",
        "const real = Array.prototype.join;\nfunction solve(n) {\n  let calls = 0;\n"
        "  Array.prototype.join = function () {\n    if (++calls === 2) Array.prototype.join = real;\n"
        "    return '';\n  };\n  return [0, 0];\n}",
    ),
    "Array.prototype.join, defined": (
        "join",
        "function solve(n) {\n  try { Object.defineProperty(Array.prototype, 'join', { value: () => '' }); }"
        " catch (e) {}\n  return [0, 0];\n}",
    ),
    "Object.keys": ("keys", "function solve(n) {\n  Object.keys = () => [];\n  return [0, 0];\n}"),
    "Object.prototype.toJSON, removed after two calls": (
        "stringify",
        "function solve(n) {\n  let calls = 0;\n  Object.prototype.toJSON = function () {\n"
        "    if (++calls === 2) delete Object.prototype.toJSON;\n    return 1;\n  };\n  return [0, 0];\n}",
    ),
    "Array.prototype.toJSON, removed after two calls": (
        "stringify",
        "function solve(n) {\n  let calls = 0;\n  Array.prototype.toJSON = function () {\n"
        "    if (++calls === 2) delete Array.prototype.toJSON;\n    return 1;\n  };\n  return [0, 0];\n}",
    ),
    "Function.prototype.call, put back after one call": (
        "call",
        "const real = Function.prototype.call;\nfunction solve(n) {\n"
        "  Function.prototype.call = function () {\n    Function.prototype.call = real;\n    return true;\n  };\n"
        "  return [0, 0];\n}",
    ),
    "Math.abs": ("abs", "function solve(n) {\n  Math.abs = () => 0;\n  return [0, 0];\n}"),
    "Object.prototype.toJSON": (
        "stringify",
        "function solve(n) {\n  Object.prototype.toJSON = function () { return 1; };\n  return [0, 0];\n}",
    ),
}


@pytest.mark.parametrize("attack", sorted(_AT_CALL_TIME))
async def test_a_wrong_answer_patching_when_the_tests_call_it_fails(attack: str) -> None:
    """An answer's function ran while the tests did, after the built-ins were put back: patching
    then scored 1.0. The tests' JSON and Math are copies (their `JSON.stringify` refuses a
    `toJSON` added since they began), constructors' and their prototypes' methods are read-only,
    and a change still there when the tests end fails the run."""
    _skip_without("javascript")
    style, code = _AT_CALL_TIME[attack]
    score = await score_execution_async(f"```javascript\n{code}\n```", _item(style), **LIMITS)
    assert score.value == 0.0, score


_CORRECT = {
    "a prototype addition it calls": "Array.prototype.plusOne = function () { return this.map((v) => v + 1); };\n"
    "String.prototype.twice = function () { return this + this; };\n"
    "function solve(n) { return 'a'.twice() === 'aa' ? [n - 1, n].plusOne() : []; }",
    "prototype additions named like fields the built-ins read": "Array.prototype.get = function (i) {"
    " return this[i]; };\nString.prototype.next = function () { return this + '!'; };\n"
    "function solve(n) { return 'a'.next() === 'a!' ? [[n].get(0), [n + 1].get(0)] : []; }",
    "a prototype addition made when called": "function solve(n) {\n"
    "  if (!Array.prototype.last) Array.prototype.last = function () { return this[this.length - 1]; };\n"
    "  return [n, n + 1, [n + 1].last()].slice(0, 2);\n}",
    "a built-in redefined the same": "Array.prototype.includes = function (x) { return this.indexOf(x) >= 0; };\n"
    "function solve(n) { return [n, n + 1].includes(n) ? [n, n + 1] : []; }",
    "sloppy mode": "function solve(n) {\n  out = [];\n  for (i = 0; i < 2; i++) out.push(n + i);\n"
    "  with (Math) { if (max(1, 2) !== 2) return []; }\n  return 010 === 8 ? out : [];\n}",
    "helpers named like globals": "var URL = { plus: (n) => n + 1 };\n"
    "function escape(n) { return n; }\nvar isFinite = (n) => n;\n"
    "function solve(n) { return [escape(n), URL.plus(isFinite(n))]; }",
    "its own toJSON, toString and valueOf": "function Pair(a, b) { this.a = a; this.b = b; }\n"
    "Pair.prototype.toJSON = function () { return [this.a, this.b]; };\n"
    "Pair.prototype.toString = function () { return this.a + ',' + this.b; };\n"
    "Pair.prototype.valueOf = function () { return this.a; };\n"
    "class Err extends Error {}\nErr.prototype.name = 'Err';\n"
    "function solve(n) {\n  const p = new Pair(n, n + 1);\n"
    "  if (JSON.stringify(p) !== JSON.stringify([n, n + 1]) || String(p) !== n + ',' + (n + 1)) return [];\n"
    "  if (new Err('x').name !== 'Err') return [];\n  return p.toJSON();\n}",
    "generators, maps, sets, regexps, Intl, JSON": "function* pair(n) { yield n; yield n + 1; }\n"
    "function solve(n) {\n  const m = new Map([[n, new Set([n + 1])]]);\n"
    "  if (!/^\\d+$/.test(String(n)) || 'a-b'.replace(/-/g, '') !== 'ab') return [];\n"
    "  if (new Intl.NumberFormat('en-US').format(1234) !== '1,234') return [];\n"
    "  return JSON.parse(JSON.stringify([...pair(n)].filter((v) => v === n || m.get(n).has(v))));\n}",
}


@pytest.mark.parametrize("shape", sorted(_CORRECT))
@pytest.mark.parametrize("style", ["stringify", "join", "keys", "concat", "call"])
async def test_a_correct_answer_touching_the_built_ins_still_passes(shape: str, style: str) -> None:
    """Additions the answer calls itself stay, sloppy mode stays sloppy, its own `URL`,
    `escape` or `isFinite` stay its own, and its objects keep their own `toJSON`/`toString`/`valueOf`."""
    _skip_without("javascript")
    score = await score_execution_async(f"```javascript\n{_CORRECT[shape]}\n```", _item(style), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_the_tests_see_the_built_ins_as_they_were() -> None:
    """The tests' own use of JSON, Math, prototype additions and errors is unchanged: a test
    program adding `Array.prototype.equals` and catching a TypeError passes."""
    _skip_without("javascript")
    test = (
        "Array.prototype.equals = function (o) { return JSON.stringify(this) === JSON.stringify(o); };\n"
        "for (let n = 1; n < 4; n++) {\n  if (!solve(n).equals([n, n + 1])) throw new Error('wrong');\n"
        "  if (Math.max(...solve(n)) !== n + 1 || !Number.isInteger(solve(n)[0])) throw new Error('wrong');\n}\n"
        "try { null.x; } catch (e) { if (!(e instanceof TypeError)) throw e; }\n"
        "if (JSON[Symbol.toStringTag] !== 'JSON' || typeof Reflect.ownKeys !== 'function') throw new Error('copy');\n"
    )
    item = Item(id="equals", input="Write solve(n).", language="javascript", test=test)
    answer = "```javascript\nfunction solve(n) { return [n, n + 1]; }\n```"
    assert (await score_execution_async(answer, item, **LIMITS)).value == 1.0


_TS_ATTACKS = {
    "JSON.stringify": ("stringify", "(JSON as any).stringify = () => 'x';"),
    "Object.prototype.toJSON": ("stringify", "(Object.prototype as any).toJSON = function () { return 1; };"),
    "Array.prototype.join when called": ("join", ""),
}


@pytest.mark.parametrize("attack", sorted(_TS_ATTACKS))
async def test_a_wrong_typescript_answer_patching_a_built_in_fails(attack: str) -> None:
    """TypeScript: tsc compiles answer and tests together, the JavaScript is split, and the same
    guard runs: the patches scored 1.0 and score 0."""
    _skip_without("typescript")
    style, patch = _TS_ATTACKS[attack]
    if patch:
        code = f"function solve(n: number): number[] {{\n  return [0, 0];\n}}\n{patch}"
    else:
        code = "function solve(n: number): number[] {\n  (Array.prototype as any).join = () => '';\n  return [0, 0];\n}"
    score = await score_execution_async(f"```ts\n{code}\n```", _item(style, "typescript"), **LIMITS)
    assert score.value == 0.0, score


async def test_a_correct_typescript_answer_with_a_prototype_addition_passes() -> None:
    """A TypeScript answer declaring and adding `Array.prototype.plusOne`, which it calls, passes."""
    _skip_without("typescript")
    code = (
        "interface Array<T> { plusOne(): number[]; }\n"
        "Array.prototype.plusOne = function (this: number[]) { return this.map((v) => v + 1); };\n"
        "function solve(n: number): number[] { return [n - 1, n].plusOne(); }"
    )
    for style in ("stringify", "join"):
        score = await score_execution_async(f"```ts\n{code}\n```", _item(style, "typescript"), **LIMITS)
        assert (score.value, score.detail) == (1.0, "passed")


# the tests' text holds `solve(1)`'s expected value: an answer that reaches it forges a pass
_LEAK_TESTS = (
    "function check() {\n  const got = solve(1);\n  if (got[0] !== 1 || got[1] !== 2) throw new Error('wrong');\n}\n"
    "check();\n"
)
_LEAKING_SOLVE = (
    "function solve(n) {\n  let source = '';\n"
    "  try { source = LEAK; } catch (e) {}\n"
    "  const m = /got\\[0\\] !== (\\d+) \\|\\| got\\[1\\] !== (\\d+)/.exec(source);\n"
    "  return m ? [Number(m[1]), Number(m[2])] : [0, 0];\n}\n"
)


async def test_a_typescript_answer_running_on_into_the_tests_fails() -> None:
    """A TypeScript answer ending with `let x =` took the statement the compiled program is cut
    at for its value: the whole compiled program, tests included, was the answer's script, the
    file it may read (1.0 while wrong). Such a program is refused."""
    _skip_without("typescript")
    item = Item(id="leak", input="Write solve(n).", language="typescript", test=_LEAK_TESTS)
    solve = _LEAKING_SOLVE.replace("(n)", "(n: number): number[]").replace(
        "LEAK", "require('fs').readFileSync(__filename, 'utf8')"
    )
    code = f"declare var __filename: any;\n{solve}let unused ="
    score = await score_execution_async(f"```ts\n{code}\n```", item, **LIMITS)
    assert score.value == 0.0 and "runs on into the tests" in score.detail, score


def test_a_program_with_no_known_answer_lines_runs_as_the_tests() -> None:
    """Where the answer's lines are unknown, the whole program is the tests' (their strict
    function), the answer's script empty: as one sloppy script its functions were open to
    `Function.caller`."""
    source = "function solve(n) { return [n, n + 1]; }\nsolve(1);\n"
    run = split_js(Program("javascript", source, "main.js"))
    assert run.answer == "" and source in run.tests and "'use strict'" in run.tests and not run.refused


async def test_a_program_with_no_known_answer_lines_hides_the_tests_from_caller() -> None:
    """Run for real: code reading `solve.caller` to find the expected values (1.0 as one sloppy
    script) finds nothing, and the program fails."""
    toolchain = find_toolchain("javascript")
    if isinstance(toolchain, str):
        pytest.skip(toolchain)
    solve = _LEAKING_SOLVE.replace("LEAK", "String(solve.caller)")
    program = Program("javascript", f"{solve}{_LEAK_TESTS}", "main.js")
    verdict = await compile_and_run(program, toolchain, RunLimits(timeout_s=20.0, memory_mb=256))
    assert not verdict.passed, verdict


def _program(test: str) -> Item:
    return Item(id="solve", input="Write solve(n): [n, n + 1].", language="javascript", test=test)


_DEEP_EQUAL = (
    "const assert = require('assert');\nfor (const n of [1, 2, 3]) assert.deepEqual(solve(n), [n, n + 1]);\n"
)
_DEEP_STRICT = _DEEP_EQUAL.replace("deepEqual", "deepStrictEqual").replace("'assert'", "'node:assert/strict'")
_OWN_EQUAL = (
    "function same(got, exp) {\n  for (const k in exp) if (exp.hasOwnProperty(k) && got[k] !== exp[k]) return false;\n"
    "  return true;\n}\n"
    "for (const n of [1, 2, 3]) if (!same(solve(n), { a: n, b: n + 1 })) throw new Error('solve(' + n + ') is wrong');\n"
)
# a getter that sees the tests' expected value (assert reads Symbol.toStringTag of both sides)
# copies it into the answer's result, and takes itself away
_COPY_EXPECTED = (
    "function solve(n) {\n  const out = [0, 0];\n"
    "  Object.defineProperty(HOST, Symbol.toStringTag, { configurable: true, get() {\n"
    "    if (this !== out && Array.isArray(this)) { out.length = 0; out.push(...this); delete HOST[Symbol.toStringTag]; }\n"
    "  } });\n  return out;\n}\n"
)

#: (the tests, the wrong answer's code: it hooks a built-in when called and takes the hook away
#: before the tests end, in the hook itself or in a microtask)
_HOOKS_WHILE_TESTED: dict[str, tuple[str, str]] = {
    "a Symbol.toStringTag getter on Array.prototype, under assert.deepEqual": (
        _DEEP_EQUAL,
        _COPY_EXPECTED.replace("HOST", "Array.prototype"),
    ),
    "a Symbol.toStringTag getter on Object.prototype, under assert/strict's deepStrictEqual": (
        _DEEP_STRICT,
        _COPY_EXPECTED.replace("HOST", "Object.prototype"),
    ),
    "Object.prototype.hasOwnProperty, put back in a microtask": (
        _OWN_EQUAL,
        "const real = Object.prototype.hasOwnProperty;\nfunction solve(n) {\n"
        "  Object.prototype.hasOwnProperty = () => false;\n"
        "  queueMicrotask(() => { Object.prototype.hasOwnProperty = real; });\n  return {};\n}",
    ),
    "Object.prototype.hasOwnProperty, the throw caught": (
        _OWN_EQUAL,
        "const real = Object.prototype.hasOwnProperty;\nfunction solve(n) {\n"
        "  try { Object.prototype.hasOwnProperty = () => false; } catch (e) {}\n"
        "  queueMicrotask(() => { try { Object.prototype.hasOwnProperty = real; } catch (e) {} });\n  return {};\n}",
    ),
    "Array.prototype[Symbol.toPrimitive], removed in a microtask": (
        _tests("concat"),
        "function solve(n) {\n  Array.prototype[Symbol.toPrimitive] = () => 'x';\n"
        "  queueMicrotask(() => { delete Array.prototype[Symbol.toPrimitive]; });\n  return [0, 0];\n}",
    ),
    "Array.prototype.valueOf over Object.prototype's, removed in a microtask": (
        _tests("concat"),
        "function solve(n) {\n  Object.defineProperty(Array.prototype, 'valueOf', { value: () => 'x', configurable: true });\n"
        "  queueMicrotask(() => { delete Array.prototype.valueOf; });\n  return [0, 0];\n}",
    ),
    "Array[Symbol.species], put back in a microtask": (
        _tests("map"),
        "const real = Object.getOwnPropertyDescriptor(Array, Symbol.species);\nfunction solve(n) {\n"
        "  Object.defineProperty(Array, Symbol.species, { configurable: true, get: () => function () {"
        " return { join: () => 'x' }; } });\n"
        "  queueMicrotask(() => { Object.defineProperty(Array, Symbol.species, real); });\n  return [0, 0];\n}",
    ),
    "Array.prototype's prototype replaced by one with a toJSON, put back in a microtask": (
        _tests("stringify"),
        "function solve(n) {\n  const real = Object.prototype;\n"
        "  Object.setPrototypeOf(Array.prototype, Object.create(real, { toJSON: { value() { return 1; } } }));\n"
        "  queueMicrotask(() => Object.setPrototypeOf(Array.prototype, real));\n  return [0, 0];\n}",
    ),
    "TypeError[Symbol.hasInstance], under assert.throws": (
        "const assert = require('assert');\nassert.throws(() => solve(-1), TypeError);\n"
        "for (const n of [1, 2]) assert.deepEqual(solve(n), [n, n + 1]);\n",
        "function solve(n) {\n  Object.defineProperty(TypeError, Symbol.hasInstance, { value: () => true, configurable: true });\n"
        "  queueMicrotask(() => { delete TypeError[Symbol.hasInstance]; });\n"
        "  if (n < 0) throw 'not a TypeError';\n  return [n, n + 1];\n}",
    ),
}


@pytest.mark.parametrize("attack", sorted(_HOOKS_WHILE_TESTED))
async def test_a_wrong_answer_hooking_a_built_in_while_the_tests_run_fails(attack: str) -> None:
    """Each hook, added by the wrong answer's function when the tests called it and gone before
    they ended (so the check at the end found nothing), made their comparison true (1.0). While
    the tests run, Object.prototype takes no addition, the guarded built-ins' hooks are traps,
    and an assignment to one throws and fails the run even when the answer catches the throw."""
    _skip_without("javascript")
    test, code = _HOOKS_WHILE_TESTED[attack]
    score = await score_execution_async(f"```javascript\n{code}\n```", _program(test), **LIMITS)
    assert score.value == 0.0, score


#: (the tests, the wrong answer's code) through Node's own objects
_NODE_ATTACKS: dict[str, tuple[str, str]] = {
    "util.isDeepStrictEqual replaced": (
        "const util = require('util');\n"
        "for (const n of [1, 2]) if (!util.isDeepStrictEqual(solve(n), [n, n + 1])) throw new Error('wrong');\n",
        "require('util').isDeepStrictEqual = () => true;\nfunction solve(n) { return [0, 0]; }",
    ),
    "process.exit replaced, the tests counting failures": (
        "let failures = 0;\nfor (const n of [1, 2]) if (solve(n)[0] !== n) failures++;\n"
        "process.exit(failures ? 1 : 0);\n",
        "process.exit = () => {};\nfunction solve(n) { return [0, 0]; }",
    ),
    "process.exit(0) in the answer's function, the tests ending with their own": (
        "const assert = require('assert');\nfor (const n of [1, 2]) assert.deepEqual(solve(n), [n, n + 1]);\n"
        "process.exit(0);\n",
        "function solve(n) { process.exit(0); }",
    ),
    "Module._load handing the tests a fake assert": (
        _DEEP_EQUAL,
        "const Module = require('module');\nconst load = Module._load;\n"
        "Module._load = function (id, ...rest) {\n"
        "  return /assert/.test(id) ? { deepEqual() {} } : load.call(this, id, ...rest);\n};\n"
        "function solve(n) { return [0, 0]; }",
    ),
    "Module.prototype.require handing the tests a fake assert": (
        _DEEP_STRICT,
        "const Module = require('module');\nconst real = Module.prototype.require;\n"
        "Module.prototype.require = function (id) {\n"
        "  return /assert/.test(id) ? { deepStrictEqual() {} } : real.call(this, id);\n};\n"
        "function solve(n) { return [0, 0]; }",
    ),
    "a fake assert planted in require.cache": (
        _DEEP_EQUAL,
        "require.cache.assert = { id: 'assert', filename: 'assert', loaded: true, exports: { deepEqual() {} } };\n"
        "function solve(n) { return [0, 0]; }",
    ),
    "setTimeout replaced, the tests asserting in its callback": (
        "const assert = require('assert');\n"
        "setTimeout(() => { for (const n of [1, 2]) assert.deepEqual(solve(n), [n, n + 1]); }, 1);\n",
        "setTimeout = () => {};\nfunction solve(n) { return [0, 0]; }",
    ),
    "process.nextTick replaced, the tests asserting in its callback": (
        "const assert = require('assert');\n"
        "process.nextTick(() => { for (const n of [1, 2]) assert.deepEqual(solve(n), [n, n + 1]); });\n",
        "process.nextTick = () => {};\nfunction solve(n) { return [0, 0]; }",
    ),
    "a built-in replaced while tests ending with process.exit(0) ran": (
        "const fmt = () => new Intl.NumberFormat('en-US');\n"
        "for (const n of [1, 2]) {\n  const got = solve(n)[0];\n  if (fmt().format(got) !== fmt().format(n)) process.exit(1);\n}\n"
        "process.exit(0);\n",
        "function solve(n) {\n  Intl.NumberFormat = function () { return { format: () => 'x' }; };\n  return [0, 0];\n}",
    ),
}


@pytest.mark.parametrize("attack", sorted(_NODE_ATTACKS))
async def test_a_wrong_answer_through_nodes_objects_fails(attack: str) -> None:
    """The tests' require hands them assert, util and node:test as the launcher took them
    before the answer ran, past Node's loader; util's functions are read-only; the tests'
    `process` is their own (its `exit` the
    launcher's, which writes the token only for the tests' exit with 0 and after the built-ins'
    check), and so are their timers: an answer's exit, or its no-op `process.exit` or
    `setTimeout`, scored 1.0, as a test program ending with `process.exit(0)` was judged by its
    exit status alone."""
    _skip_without("javascript")
    test, code = _NODE_ATTACKS[attack]
    score = await score_execution_async(f"```javascript\n{code}\n```", _program(test), **LIMITS)
    assert score.value == 0.0, score


async def test_the_check_on_exit_names_the_built_in() -> None:
    """A test program ending with `process.exit(0)`: a built-in changed while it ran fails the
    run at that exit, with the line naming it."""
    _skip_without("javascript")
    test, code = _NODE_ATTACKS["a built-in replaced while tests ending with process.exit(0) ran"]
    score = await score_execution_async(f"```javascript\n{code}\n```", _program(test), **LIMITS)
    assert "tampered" in score.detail and "Intl.NumberFormat was changed" in score.detail, score


_CORRECT_WHILE_TESTED = (
    "function Point(x) { this.x = x; }\nclass Oops extends TypeError {}\n"
    "function solve(n) {\n  const counts = {};\n"
    "  for (const w of ['valueOf', 'toString', 'constructor', 'hasOwnProperty', 'valueOf']) counts[w] = (counts[w] | 0) + 1;\n"
    "  if (counts.valueOf !== 2 || counts.constructor !== 1 || Object.keys(counts).length !== 4) return [];\n"
    "  Point.prototype.toString = function () { return 'P' + this.x; };\n"
    "  Oops.prototype.name = 'Oops';\n  Point.toString = () => 'Point';\n"
    "  const bag = { items: [n, n + 1] };\n  bag[Symbol.iterator] = function* () { yield* this.items; };\n"
    "  if (String(new Point(n)) !== 'P' + n || String(Point) !== 'Point') return [];\n"
    "  try { throw new Oops('x'); } catch (e) { if (!(e instanceof TypeError) || e.name !== 'Oops') return []; }\n"
    "  if (!Array.prototype.last) Array.prototype.last = function () { return this[this.length - 1]; };\n"
    "  return [...bag].last() === n + 1 ? [...bag] : [];\n}"
)


@pytest.mark.parametrize(
    "test", [_DEEP_EQUAL, _DEEP_STRICT, _tests("concat"), _tests("map"), _DEEP_EQUAL + "process.exit(0);\n"]
)
async def test_a_correct_answer_assigning_inherited_names_while_tested_passes(test: str) -> None:
    """Assigning over an inherited built-in while the tests run still works: `counts[word] = 1`
    with `valueOf` or `constructor`, `Point.prototype.toString = ...`, `MyError.prototype.name`,
    a static `toString`, an object's own `[Symbol.iterator]`, a prototype addition; a test program
    ending with `process.exit(0)` passes."""
    _skip_without("javascript")
    score = await score_execution_async(
        f"```javascript\n{_CORRECT_WHILE_TESTED}\n```", _program(test), **LIMITS
    )
    assert (score.value, score.detail) == (1.0, "passed")


async def test_what_the_tests_print_is_unchanged() -> None:
    """util.inspect names objects and errors by their `constructor`, which stays a data property:
    `console.log` of an object, an array or an error prints as it did."""
    _skip_without("javascript")
    test = (
        "const shown = require('util').inspect([{ a: 1 }, new Box(), new RangeError('r'), solve(1)]);\n"
        "for (const part of ['[\\n  { a: 1 },\\n  Box { v: 1 },\\n  RangeError: r\\n', '  [ 1, 2 ]\\n]']) {\n"
        "  if (!shown.includes(part)) throw new Error(shown);\n}\n"
    )
    answer = "```javascript\nclass Box { constructor() { this.v = 1; } }\nfunction solve(n) { return [n, n + 1]; }\n```"
    score = await score_execution_async(answer, _program(test), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed"), score


_ASYNC_TESTS = (
    "const assert = require('assert');\n(async () => {\n  await assert.rejects(solve(-1), RangeError);\n"
    "  for (const n of [1, 2]) assert.deepEqual(await solve(n), [n, n + 1]);\n"
    "  assert.deepEqual(await Promise.all([solve(3), solve(4)]), [[3, 4], [4, 5]]);\n"
    "  await Promise.race([solve(5), new Promise((r) => setTimeout(r, 50))]);\n  solve(-2).catch(() => {});\n})();\n"
)


async def test_an_answer_swallowing_unhandled_rejections_fails() -> None:
    """An async test's failure is an unhandled rejection: an answer's
    `process.on('unhandledRejection', () => {})` swallowed it, and the run ended as if the tests
    had passed (1.0). Node runs with `--unhandled-rejections=strict`: it is an uncaught exception."""
    _skip_without("javascript")
    solve = "process.on('unhandledRejection', () => {});\nasync function solve(n) { return [0, 0]; }"
    score = await score_execution_async(f"```javascript\n{solve}\n```", _program(_ASYNC_TESTS), **LIMITS)
    assert score.value == 0.0 and "AssertionError" in score.detail, score


@pytest.mark.parametrize(
    "solve",
    [
        "async function solve(n) { return new Promise(() => {}); }",
        "function solve(n) { return { then() {}, catch() {} }; }",
        "const never = new Promise(() => {});\nasync function solve(n) { await never; }",
    ],
)
async def test_a_wrong_answer_whose_promise_never_settles_fails(solve: str) -> None:
    """An async test awaiting the answer's promise that never settles stops there, and the event
    loop ran dry as if the tests had ended (1.0): a promise made while they ran that is still
    unsettled then withholds the token."""
    _skip_without("javascript")
    score = await score_execution_async(f"```javascript\n{solve}\n```", _program(_ASYNC_TESTS), **LIMITS)
    assert (score.value, score.detail) == (0.0, "exited with code 0 before the end of the tests"), score


async def test_a_correct_async_answer_passes() -> None:
    """Rejections, timers, Promise.all and race, and a rejection caught and dropped all settle."""
    _skip_without("javascript")
    solve = (
        "async function solve(n) {\n  if (n < 0) throw new RangeError('negative');\n"
        "  await new Promise((r) => setTimeout(r, 5));\n  return [n, n + 1];\n}"
    )
    score = await score_execution_async(f"```javascript\n{solve}\n```", _program(_ASYNC_TESTS), **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed"), score


_NODE_TEST = (
    "const { test } = require('node:test');\nconst assert = require('assert');\n"
    "test('solve', async () => {\n  for (const n of [1, 2]) assert.deepEqual(await solve(n), [n, n + 1]);\n});\n"
)


@pytest.mark.parametrize(
    ("solve", "passes"),
    [
        ("async function solve(n) { return [n, n + 1]; }", True),
        ("function solve(n) { return [n, n + 1]; }", True),
        ("async function solve(n) { return [0, 0]; }", False),
        ("async function solve(n) { return new Promise(() => {}); }", False),
        ("const t = require('node:test');\nt.test = () => {};\nfunction solve(n) { return [0, 0]; }", False),
    ],
)
async def test_tests_on_nodes_test_runner(solve: str, passes: bool) -> None:
    """Tests using `node:test` pass a correct answer (the runner's own unsettled promises withhold
    no token; it fails a test left waiting itself), and its functions are read-only: an answer's
    `require('node:test').test = () => {}` ran none of the tests (1.0)."""
    _skip_without("javascript")
    score = await score_execution_async(f"```javascript\n{solve}\n```", _program(_NODE_TEST), **LIMITS)
    assert score.value == (1.0 if passes else 0.0), score
