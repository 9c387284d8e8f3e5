"""How a JavaScript or TypeScript program runs: the answer and the tests as two scripts, the tests
never in a file.

The answer's code and the tests used to be one CommonJS module: at the answer's top level
``arguments.callee.toString()`` returned the module wrapper's source, the tests' expected values
included, and so did the program's own file and ``Function.caller`` of the tests' sloppy
functions. A wrong answer looked its results up there and scored 1.0. Now the program is cut in
two after the answer's lines (TypeScript: after tsc compiled both together, at a keyed statement
``split_marker`` put there):

* the answer's part is the only file of the run's sandbox beside ``LAUNCHER``; the launcher runs it
  as a classic script (``vm.Script`` in the main realm), so its top level has no ``arguments``, its
  ``function``/``var`` become globals and its ``let``/``const``/``class`` join the global lexical
  scope, where the tests find them. ``require``, ``module``, ``exports``, ``__filename`` and
  ``__dirname`` are globals it may redefine, as a module's would be;
* the tests reach the launcher on stdin, after the end-of-tests token (``moa.eval.languages.marker``),
  inside a strict-mode function the launcher calls with the real ``require`` after the answer's
  script ran: no file holds them, the answer cannot name their top-level declarations (locals of
  that function), and strict mode hides their functions from ``Function.caller``,
  ``arguments.callee.caller`` and the call sites of ``Error.prepareStackTrace``
  (``getFunction``, ``getThis``). Their stack frames carry positions and names only.

Between the two, the launcher's guard (``moa.eval.languages.jsguard``) puts back the built-ins the
answer's script patched (``JSON.stringify = () => 'x'`` made every comparison of the tests true),
and the tests' function gets clean ones as parameters shadowing the globals.

The tests' ``process`` is a parameter too: the real one, but for its ``exit``, which is the
launcher's. A test program ending with ``process.exit(0)`` never returns to the launcher (its
exit status alone used to decide, so an answer's own ``process.exit(0)`` passed, and the
built-ins' check at the end never ran): the launcher writes the token there, after that check,
when the tests exit with 0. An answer replacing the real ``process.exit`` no longer swallows the
tests' ``process.exit(1)``, nor an accessor on ``process.exitCode`` the code they set; its
``nextTick`` and the tests' timers (``setTimeout``, ``queueMicrotask``...) are Node's own, taken
before the answer ran (an answer's ``setTimeout = () => {}`` dropped a test's callback, its
assertions with it). Their ``require`` hands them ``assert``, ``util`` and ``node:test`` as the
launcher took them before the answer ran, past Node's module loader, which the answer can patch
(``Module._load``, ``Module.prototype.require``, a fake planted in ``require.cache``: every test
passed); other modules go through the loader. ``util``'s
functions are made read-only, as ``assert`` is frozen (``require('util').isDeepStrictEqual =
() => true`` passed every test calling it).

An async test awaiting a promise of the answer's that never settles stops there, and the event
loop runs dry as if the tests had ended (a wrong answer returning ``new Promise(() => {})``
passed): the launcher tracks the promises made from the tests' start (V8's promise hooks, so
only their run pays for them), and one still unsettled when the loop runs dry withholds the
token. A correct answer leaving a promise of its own unsettled then fails too. Not so under
Node's test runner (``node:test``), which leaves promises of its own unsettled and fails a test
left waiting itself; when the tests name it, its functions are made read-only before the answer
runs, as ``util``'s are (an answer's ``require('node:test').test = () => {}`` ran none of them).

The launcher knows the tests ran to their end because their function returned (or they exited
with 0 through their ``process``): no global of the
harness's exists for the answer to find (``Object.getOwnPropertyNames(globalThis)``) or call. Its
own source is constant and holds no secret (the answer may read it, and its listeners' text).
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass

from moa.eval.languages.jsguard import GUARD_SOURCE, TESTS_GLOBALS
from moa.eval.languages.program import Program
from moa.eval.languages.source import split_lines

__all__ = ["LAUNCHER", "JsRun", "js_key", "launcher_source", "split_js", "split_marker"]

# a TypeScript answer's code does not end where the tests begin
_RAN_ON = "the answer's code does not end with a complete statement: it runs on into the tests"

# Node's globals the tests' function receives as parameters, after jsguard.TESTS_GLOBALS: their
# own `process` (see the module docstring), and the timers as they were before the answer ran (an
# answer's `setTimeout = () => {}` dropped a test's callback, assertions and all, and the tests
# ended with nothing failed)
_NODE_GLOBALS = (
    "process", "setTimeout", "setInterval", "setImmediate", "clearTimeout", "clearInterval",
    "clearImmediate", "queueMicrotask",
)  # fmt: skip

# the tests take Node's test runner (loading it costs some 8 ms, paid only then)
_NODE_TEST = re.compile(r"""(['"`])node:test\1""")

#: the script ``node`` runs: it reads the tests from stdin and runs the answer's file, then them
LAUNCHER = "moa_end.js"


@functools.cache
def js_key() -> str:
    """The suffix of the names the harness gives the tests' own (``moa_require_``, ``moa_tests_``)
    and of ``split_marker``: one per process, so a TypeScript program still hits the compile cache."""
    return secrets.token_hex(12)


def split_marker() -> str:
    """The statement put on a line of its own between a TypeScript answer and its tests: tsc keeps
    it, and the compiled JavaScript is cut at its last occurrence (the answer cannot know it)."""
    return f'"moa tests {js_key()}";'


@dataclass(frozen=True, slots=True)
class JsRun:
    """A JavaScript program cut in two: the ``answer`` script (the file node's launcher runs) and the
    ``tests``, wrapped in a strict function of ``require`` (inside one of the clean globals,
    ``jsguard.TESTS_GLOBALS``), the launcher gets on stdin; their first line is line
    ``tests_line`` of the program, so stack traces name the program's lines."""

    answer: str
    tests: str
    tests_line: int
    refused: str = ""
    """Why the program cannot run (the run fails with it), else empty."""

    def stdin(self, fd: int, token: str) -> bytes:
        """What the launcher reads before the answer runs: the token line (with ``node:test`` when
        the tests use Node's test runner), then the tests."""
        runner = " node:test" if _NODE_TEST.search(self.tests) else ""
        return f"{fd} {token} {self.tests_line}{runner}\n{self.tests}".encode("utf-8", "surrogatepass")


def _wrap(tests: str) -> str:
    # on the tests' first line, so their line numbers hold. The outer function's parameters are
    # the clean globals the launcher passes (jsguard.TESTS_GLOBALS), shadowing any the answer
    # replaced, then Node's (_NODE_GLOBALS); the inner one's body holds the tests, whose own declarations may reuse those
    # names. Its first parameter is the name shield_js_tests gave the tests' `require`, which the
    # launcher binds to Node's
    key = js_key()
    return (
        f"(function ({', '.join(TESTS_GLOBALS + _NODE_GLOBALS)}) {{ return function (moa_require_{key}, require) "
        f"{{'use strict'; {tests}\n}}; }})"
    )


def split_js(program: Program, compiled: str | None = None) -> JsRun:
    """``program`` (JavaScript, or TypeScript as ``compiled`` by tsc) cut after the answer's lines.
    Where they are unknown (the answer brought no code) the whole program runs as the tests, in
    their strict function, and the answer's script is empty: run as one sloppy script, the tests'
    functions were open to ``Function.caller``. A TypeScript answer whose code ran on into the
    tests (``let x =`` as its last line took ``split_marker`` for its value) is ``refused``."""
    if compiled is not None:
        lines = split_lines(compiled, keepends=True)
        marker = split_marker()
        at = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip() == marker), None)
        if at is None:
            if program.first_line:
                return JsRun("", _wrap(""), 1, refused=_RAN_ON)
            return JsRun("", _wrap(compiled), 1)
        return JsRun("".join(lines[:at]), _wrap("".join(lines[at + 1 :])), at + 2)
    if not program.first_line:
        return JsRun("", _wrap(program.source), 1)
    lines = split_lines(program.source, keepends=True)
    cut = program.last_line
    return JsRun("".join(lines[:cut]), _wrap("".join(lines[cut:])), cut + 1)


_LAUNCHER_SOURCE = r"""'use strict';
// moa's launcher (moa/eval/languages/jsrun.py): `node moa_end.js <answer's file>`, stdin
// "<fd> <token> <tests' first line>\n<tests>". Nothing here is secret: the token and the tests
// arrive on stdin, which this reads to its end before the answer runs
(() => {
  // the routes into this process's memory the permission model leaves open (a heap snapshot
  // streamed to the program, V8 flags) throw; on a Node without that model the inspector too.
  // Node's builtins are shared objects, so every require and import sees these
  const refuse = (what) => () => {
    throw new Error(`sandbox: ${what} is refused`);
  };
  const seal = (target, names, prefix) => {
    for (const name of names) {
      if (target && typeof target[name] === 'function') {
        Object.defineProperty(target, name, {
          value: refuse(prefix + name), writable: false, configurable: false, enumerable: true,
        });
      }
    }
  };
  seal(require('v8'), ['getHeapSnapshot', 'writeHeapSnapshot', 'setHeapSnapshotNearHeapLimit',
    'setFlagsFromString'], 'v8.');
  try {
    const inspector = require('inspector');
    seal(inspector, ['open', 'url', 'waitForDebugger'], 'inspector.');
    seal(inspector.Session && inspector.Session.prototype, ['connect', 'connectToMainThread', 'post'],
      'inspector.Session.');
  } catch (e) {
    // a Node built without the inspector
  }
  const fs = require('fs');
  const path = require('path');
  const vm = require('vm');
  const input = fs.readFileSync(0, 'utf8');
  const newline = input.indexOf('\n');
  const [fd, token, testsLine, runner] = input.slice(0, newline < 0 ? input.length : newline).trim().split(' ');
  const answerFile = path.resolve(process.argv[2]);
  // compiled before the answer runs; only this closure holds them
  let testsSource = newline < 0 ? '' : input.slice(newline + 1);
  // the tests reach node:assert through the require passed to them, not a global: an answer's
  // `function require() {...}` (or `require = ...`) would replace a global one, and assigning
  // `require('assert').deepEqual` the shared module's; every test passed
  const assertModule = require('assert');
  Object.freeze(assertModule.strict);
  Object.freeze(assertModule);
  // and util's comparisons the same way (`require('util').isDeepStrictEqual = () => true` made
  // every test calling it pass): its functions read-only, not the module frozen, as its lazy
  // properties (`util.MIMEType`) define themselves when first read. So is Node's test runner
  // when the tests use it (`require('node:test').test = () => {}` ran none of them)
  const util = require('util');
  const nodeTest = runner === 'node:test';
  const testRunner = nodeTest ? require('node:test') : null;
  const modules = nodeTest ? [util, util.types, testRunner] : [util, util.types];
  for (const made of modules) {
    for (const key of Reflect.ownKeys(made)) {
      const d = Object.getOwnPropertyDescriptor(made, key);
      if ('value' in d && typeof d.value === 'function' && d.configurable) {
        Object.defineProperty(made, key, { value: d.value, writable: false, configurable: false, enumerable: d.enumerable });
      }
    }
  }
  const realRequire = require;
  const writeSync = fs.writeSync;
  const inspect = util.inspect;
  const NewError = Error;
  const call = Function.prototype.call;
  const exitNow = call.bind(process.reallyExit, process);
  // the stack check below reads these: the program may still assign them (source-map-support
  // does), not replace Error or make them accessors that answer the check instead of V8
  Object.defineProperty(globalThis, 'Error', { writable: false, configurable: false });
  Object.defineProperty(Error, 'prepareStackTrace', { configurable: false });
  Object.defineProperty(Error, 'stackTraceLimit', { configurable: false });
  // an uncaught error ends the program with status 1, as Node's own handler does, whatever
  // listeners the program registered or removed: Node calls this callback instead of emitting
  // 'uncaughtException', and no code after this line can unset it (a failed test the program
  // swallowed, or removing a monitor listener, passed)
  let uncaught = false;
  process.setUncaughtExceptionCaptureCallback((error) => {
    uncaught = true;
    try {
      writeSync(2, `${inspect(error)}\n`);
    } finally {
      exitNow(1);
    }
  });
  Object.defineProperty(process, 'setUncaughtExceptionCaptureCallback', {
    value: refuse('process.setUncaughtExceptionCaptureCallback'), writable: false, configurable: false,
  });
  const startsWith = call.bind(String.prototype.startsWith);
  // the tests' require: the modules above as taken here, the rest through Node's loader. The
  // answer can patch that loader (\`Module._load\`, \`Module.prototype.require\`, an entry planted
  // in \`require.cache\`), which handed the tests a fake assert: every test passed
  const slice = call.bind(String.prototype.slice);
  const load = Reflect.apply;
  const taken = { __proto__: null, assert: assertModule, 'assert/strict': assertModule.strict, util,
    'util/types': util.types };
  const testsRequire = new Proxy(realRequire, {
    __proto__: null,
    apply: (target, self, args) => {
      const id = args[0];
      if (id === 'node:test' && testRunner !== null) return testRunner;
      if (typeof id === 'string') {
        const bare = startsWith(id, 'node:') ? slice(id, 5) : id;
        if (bare in taken) return taken[bare];
      }
      return load(target, self, args);
    },
  });
  const sites = (_, frames) => frames;
  const here = (() => {
    const saved = Error.prepareStackTrace;
    Error.prepareStackTrace = sites;
    const frames = new NewError().stack;
    Error.prepareStackTrace = saved;
    return frames[0];
  })();
  const fileName = call.bind(Object.getPrototypeOf(here).getFileName);
  const launcher = fileName(here);
  // true only when nothing but Node itself and this file is on the stack: the program calling the
  // listener (or emitting beforeExit) puts its own frames there
  const fromNode = () => {
    const saved = [Error.prepareStackTrace, Error.stackTraceLimit];
    Error.prepareStackTrace = sites;
    Error.stackTraceLimit = Infinity;
    const frames = new NewError().stack;
    Error.prepareStackTrace = saved[0];
    Error.stackTraceLimit = saved[1];
    for (let i = 0; i < frames.length; i++) {
      const name = fileName(frames[i]);
      if (name !== launcher && !(typeof name === 'string' && startsWith(name, 'node:'))) return false;
    }
    return true;
  };
  // beforeExit: the event loop ran dry; process.exit() and uncaught errors never emit it. The
  // program can emit it too, with no frame of its own on the stack (a bound `process.emit` as a
  // promise's reaction) and `process.exit(0)` next, before an async test's failure ended the run
  // (1.0). So the token is written one turn of the loop later, only if nothing else is alive
  // then: an exit queued behind the event ends the program first, with no token, and so does a
  // test failing in a microtask; a test's pending timer or I/O defers it to the real event
  const later = setImmediate;
  // (a Node before 16.14 lacks it: there only the turn of the loop holds)
  const alive = process.getActiveResourcesInfo ? call.bind(process.getActiveResourcesInfo, process) : () => [];
  const includes = call.bind(String.prototype.includes);
  // a timer or a request still to come (a stdout pipe is listed too, and keeps nothing alive)
  const idle = () => {
    const resources = alive();
    for (let i = 0; i < resources.length; i++) {
      const kind = resources[i];
      if (kind === 'Timeout' || kind === 'Immediate' || includes(kind, 'Req')) return false;
    }
    return true;
  };
  // the promises made while the tests ran that never settled: an async test awaiting a promise
  // of the answer's that never settles stops there, and the event loop ran dry as if it had
  // ended (a wrong answer returning `new Promise(() => {})` passed). Tracked from the tests'
  // start, so only their run pays for the promise hooks. Not under Node's test runner, which
  // leaves promises of its own unsettled, and fails a test left waiting itself
  const unsettled = new Set();
  const track = call.bind(Set.prototype.add, unsettled);
  const settled = call.bind(Set.prototype.delete, unsettled);
  const unsettledCount = call.bind(Object.getOwnPropertyDescriptor(Set.prototype, 'size').get, unsettled);
  // V8's promise hooks, lighter than async_hooks' (no async ids), taken before the answer runs
  const promiseHooks = require('v8').promiseHooks;
  const onInit = promiseHooks.onInit;
  const onSettled = promiseHooks.onSettled;
  const trackPromises = () => {
    onSettled(settled);
    onInit(track);
  };
  let finished = false;
  let written = false;
  // the exit code the tests set through their `process` (the answer may have made the real
  // `process.exitCode` an accessor that forgets it)
  let testsCode = 0;
  let pending = false;
  // each refused attempt ran one more turn of the loop: a bounded number, never a loop forever
  let attempts = 0;
  // the answer changed a built-in the tests use (moa/eval/languages/jsguard.py): the run fails
  const tampered = (reason) => {
    try {
      writeSync(2, `sandbox: the answer tampered with the built-ins: ${reason}\n`);
    } finally {
      exitNow(1);
    }
  };
  // the token, once, after the built-ins' last check (a caller catches what a tampered process throws)
  const writeToken = () => {
    const changed = guard.check();
    if (changed) tampered(changed);
    written = true;
    writeSync(Number(fd), token + '\n');
  };
  const write = () => {
    pending = false;
    try {
      if (!written && !process.exitCode && !testsCode && !uncaught && idle() && (nodeTest || unsettledCount() === 0)) {
        writeToken();
      }
    } catch (e) {
      // a tampered process: no token
    }
  };
  process.on('beforeExit', (code) => {
    try {
      if (!written && !pending && attempts < 8 && !code && token && !uncaught && finished && fromNode()) {
        pending = true;
        attempts += 1;
        later(write);
      }
    } catch (e) {
      // a tampered Error or stack: no token
    }
  });
  // the tests' `process`: the real one, but for its `exit`. A test program ending with
  // `process.exit(0)` never returns to the launcher, so the token is written there, after the
  // built-ins' check, when the tests (not the answer, whose `process` is the real one) exit with
  // 0; an answer's `process.exit = () => {}` no longer swallows their `process.exit(1)`
  const realExit = call.bind(process.exit, process);
  const nextTick = process.nextTick;
  const reflectGet = Reflect.get;
  const reflectSet = Reflect.set;
  const testsExit = function exit(code) {
    try {
      if (!written && !code && !testsCode && !uncaught && token) {
        writeToken();
      }
    } catch (e) {
      // a tampered process: no token
    }
    realExit(code);
  };
  const testsProcess = new Proxy(process, {
    __proto__: null,
    get: (target, key) => (key === 'exit' ? testsExit : key === 'nextTick' ? nextTick : reflectGet(target, key)),
    set: (target, key, value) => {
      if (key === 'exitCode') testsCode = value;
      return reflectSet(target, key, value);
    },
  });
  // what a CommonJS module has and a script has not: the answer's `require('fs')`,
  // `module.exports = ...`; configurable, so its own `let require` or `function module()` is legal
  const answerModule = { exports: {}, filename: answerFile, id: '.', loaded: false };
  const give = (name, value) => Object.defineProperty(globalThis, name, {
    value, writable: true, configurable: true, enumerable: false,
  });
  give('require', require('module').createRequire(answerFile));
  give('module', answerModule);
  give('exports', answerModule.exports);
  give('__filename', answerFile);
  give('__dirname', path.dirname(answerFile));
  // GUARD
  // compiled before the answer runs (a syntax error of its stops the run with status 1); only
  // this closure holds them
  // `import()` works as it did in a CommonJS module, on a Node that offers scripts its loader
  const loader = vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  const options = loader ? { filename: answerFile, importModuleDynamically: loader } : { filename: answerFile };
  const tests = new vm.Script(testsSource, { ...options, lineOffset: Math.max(0, Number(testsLine) - 1) });
  testsSource = undefined;
  const answer = new vm.Script(fs.readFileSync(answerFile, 'utf8'), options);
  // taken before the answer runs: `vm.Script.prototype.runInThisContext = () => () => {}` made the
  // tests a function doing nothing, which returned
  const runScript = call.bind(vm.Script.prototype.runInThisContext);
  const apply = Reflect.apply;
  const testsArgs = guard.values;
  testsArgs[testsArgs.length] = testsProcess;
  for (const name of __TIMERS__) testsArgs[testsArgs.length] = globalThis[name];
  runScript(answer);
  const broken = guard.restore();
  if (broken) tampered(broken);
  trackPromises();
  apply(runScript(tests), undefined, testsArgs)(testsRequire, testsRequire);
  // the tests returned: a throw, process.exit() or a never-ending loop never gets here (the
  // built-ins are checked before the token is written)
  finished = true;
})();
"""


@functools.cache
def launcher_source() -> str:
    """The ``LAUNCHER`` script (the same for every program and process)."""
    timers = "[" + ", ".join(f"'{name}'" for name in _NODE_GLOBALS[1:]) + "]"
    source = _LAUNCHER_SOURCE.replace("__TIMERS__", timers, 1)
    return source.replace("  // GUARD\n", GUARD_SOURCE.lstrip("\n"), 1)
