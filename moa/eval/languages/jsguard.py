"""The launcher's guard of JavaScript's built-ins (``moa.eval.languages.jsrun``): a wrong answer
must not pass by patching what the tests call.

The answer's script runs before the tests, in the same realm. ``JSON.stringify = () => 'x'`` made
every ``JSON.stringify(a) === JSON.stringify(b)`` of the tests true, and so did
``Object.prototype.toJSON = () => 1``, a patched ``Array.prototype.join``, ``Math.abs`` or
``Object.keys``: a wrong answer scored 1.0. So, in the launcher:

* before the answer runs, the guard records every built-in of the language (the ECMAScript
  globals and every object reachable from them through properties and prototypes, the hidden
  ones too: iterator, generator and async prototypes, ``%TypedArray%``): its prototype, whether
  it is extensible, and the descriptor of each of its own properties. The functions it calls
  later are taken then, and it never calls a method the answer could reach;
* after the answer's script and before the tests, it puts back every recorded property the
  answer changed or deleted and the prototype it changed, and removes what the answer *added* to
  a built-in when the language or the built-ins could read it without the tests naming it:
  a symbol-keyed property (``Symbol.iterator``, ``Symbol.toPrimitive``...), an accessor, an array
  index, a name in ``_IMPLICIT`` (``toJSON``, ``then``, ``valueOf``, ``toString``...), on
  ``Object.prototype`` a name in ``_IMPLICIT_PLAIN`` (``get``, ``value``, ``next``...) or a name
  the object inherits (``Array.prototype.valueOf`` over ``Object.prototype``'s). Every other
  addition stays (``Array.prototype.sum = ...``, which the answer itself calls). What cannot be
  put back (a built-in frozen, sealed or made non-extensible, a property made non-configurable,
  an addition that cannot be deleted) fails the run with one line naming it;
* the tests' function receives ``TESTS_GLOBALS`` as parameters that shadow the globals: the
  constructors and functions as they were before the answer ran, and frozen copies of ``JSON``,
  ``Math`` and ``Reflect`` (a global ``JSON = {...}`` or a getter on ``globalThis`` reaches only
  the answer's own code; its ``var URL`` or ``function escape`` stays its own). The copy's
  ``stringify`` first looks for a ``toJSON`` added to (or changed on) ``Object.prototype`` or a
  guarded prototype since the tests began, and throws, failing the run, when it finds one: the
  answer's function could add one and take it away again before the end;
* the methods of those constructors (``Object.keys``, ``Array.isArray``) and of their prototypes
  (``Array.prototype.join``, ``[Symbol.iterator]``) are made read-only: an answer's function
  patching one when the tests call it patched what they used next, and so are
  ``Function.prototype``'s ``call``, ``apply`` and ``bind``. The rest of ``Function.prototype``,
  ``Object.prototype`` and the errors' prototypes stay writable (``Point.prototype.toString =
  ...`` or ``counts[word] = 1`` with the word ``valueOf`` assigns over an inherited property,
  which fails when that one is read-only);
* before the end-of-tests token is written, every recorded built-in is compared with its state
  when the tests began: a change made while they ran (``Object.prototype.toJSON`` added by an
  answer's function) fails the run.

Open: a hook on ``Object.prototype`` other than ``toJSON`` (``valueOf``, ``Symbol.toPrimitive``)
or a method of ``Function.prototype`` or an error's prototype, patched or added by an answer's
function while the tests run and removed again before they end;
an object the answer returns behaving as it likes (its own ``toJSON`` or ``valueOf``); Node's
globals (``console``, ``process``, ``Buffer``) and modules other than ``assert``
(``util.isDeepStrictEqual``); an item whose test program ends with
``process.exit(0)``, which never reaches the check at the end.
"""

from __future__ import annotations

__all__ = ["GUARD_SOURCE", "TESTS_GLOBALS"]

#: the globals the tests' function receives as parameters, clean: passed by the launcher in this
#: order (namespaces as frozen copies), so no assignment of the answer's reaches the tests' names
TESTS_GLOBALS = (
    "JSON", "Math", "Reflect",
    "Object", "Array", "String", "Number", "Boolean", "Symbol", "BigInt", "Map", "Set", "WeakMap",
    "WeakSet", "Date", "RegExp", "Promise",
    "Error", "TypeError", "RangeError", "SyntaxError", "ReferenceError", "EvalError", "URIError",
    "AggregateError",
    "isNaN", "isFinite", "parseInt", "parseFloat",
)  # fmt: skip

# the names an addition to a built-in may not take: read implicitly by the language or the
# built-ins from any object (JSON, ToPrimitive, await, species)
_IMPLICIT = ("toJSON", "then", "constructor", "valueOf", "toString", "toLocaleString", "__proto__")

# and those read so from plain objects (property descriptors, iterator results, options, RegExp
# and error objects' fields), which only Object.prototype's additions reach: an answer's own
# `Array.prototype.get` or `.next` stays
_IMPLICIT_PLAIN = (
    "length", "get", "set", "value", "writable", "enumerable", "configurable", "next", "return",
    "throw", "done", "lastIndex", "exec", "flags", "source", "global", "index", "input", "groups",
    "callee", "caller", "arguments", "prototype", "name", "message", "stack", "cause",
)  # fmt: skip

# the ECMAScript globals whose values (and all they reach) are recorded
_ROOTS = (
    "Object", "Function", "Array", "Number", "parseFloat", "parseInt", "Boolean", "String",
    "Symbol", "Date", "Promise", "RegExp", "Error", "AggregateError", "EvalError", "RangeError",
    "ReferenceError", "SyntaxError", "TypeError", "URIError", "JSON", "Math", "Intl",
    "ArrayBuffer", "SharedArrayBuffer", "Uint8Array", "Int8Array", "Uint16Array", "Int16Array",
    "Uint32Array", "Int32Array", "Float32Array", "Float64Array", "Uint8ClampedArray",
    "BigUint64Array", "BigInt64Array", "DataView", "Map", "BigInt", "Set", "WeakMap", "WeakSet",
    "Proxy", "Reflect", "FinalizationRegistry", "WeakRef", "decodeURI", "decodeURIComponent",
    "encodeURI", "encodeURIComponent", "escape", "unescape", "eval", "isFinite", "isNaN",
    "Atomics", "WebAssembly", "Iterator",
)  # fmt: skip

# the constructors whose static methods, and those of their prototypes, are read-only while the
# tests run: an answer's function patching one when called reached the tests. Object.prototype,
# Function.prototype and the errors' stay writable: `Point.prototype.toString = ...` or
# `MyError.prototype.name = ...` assigns over an inherited property, which fails when it is read-only
_LOCKED = (
    "Object", "Array", "String", "Number", "Boolean", "Symbol", "BigInt", "Map", "Set", "WeakMap",
    "WeakSet", "Date", "RegExp", "Promise",
)  # fmt: skip


def _js_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


_GUARD = r"""
  // the guard of the built-ins (moa/eval/languages/jsguard.py): everything it calls after the
  // answer ran is taken here, before; it reads descriptors, never a property through a getter
  const guard = (() => {
    const apply = Reflect.apply;
    const ownKeys = Reflect.ownKeys;
    const describe = Reflect.getOwnPropertyDescriptor;
    const define = Reflect.defineProperty;
    const remove = Reflect.deleteProperty;
    const protoOf = Reflect.getPrototypeOf;
    const setProto = Reflect.setPrototypeOf;
    const extensible = Reflect.isExtensible;
    const charCode = String.prototype.charCodeAt;
    const description = describe(Symbol.prototype, 'description').get;
    const implicit = { __proto__: null };
    for (const name of __IMPLICIT__) define(implicit, name, { value: true, enumerable: true });
    const plain = { __proto__: null };
    for (const name of __IMPLICIT_PLAIN__) define(plain, name, { value: true, enumerable: true });
    // a descriptor with no prototype: reading a field it lacks never reaches Object.prototype,
    // where the answer may have put a `get` of its own. Object.prototype's are read so, and first:
    // once it is clean, every other descriptor is read as it comes
    const bare = (d) => {
      if (d !== undefined) setProto(d, null);
      return d;
    };
    const symbolName = (key) => apply(description, key, []);
    const nameOf = (rec, key) => (typeof key === 'symbol' ? `${pathOf(rec)}[${symbolName(key)}]` : `${pathOf(rec)}.${key}`);
    // where the record's object was found (built when a message needs it)
    const pathOf = (rec) => {
      if (rec.from === null) return rec.via;
      if (rec.how === 'proto') return `Object.getPrototypeOf(${pathOf(rec.from)})`;
      return rec.how === 'value' ? nameOf(rec.from, rec.via) : `${nameOf(rec.from, rec.via)} (${rec.how})`;
    };
    const records = [];
    const byObject = new Map();
    const visit = (object, from, via, how) => {
      if ((typeof object !== 'object' && typeof object !== 'function') || object === null) return;
      if (byObject.has(object)) return;
      const rec = { __proto__: null, object, from, via, how, proto: protoOf(object), extensible: extensible(object),
        keys: ownKeys(object), descs: { __proto__: null }, up: null };
      byObject.set(object, rec);
      records.push(rec);
      const keys = rec.keys;
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i];
        const d = describe(object, key);
        rec.descs[key] = object === Object.prototype ? bare(d) : d;
        if (object === Error && (key === 'prepareStackTrace' || key === 'stackTraceLimit')) continue;
        if ('value' in d) visit(d.value, rec, key, 'value');
        else {
          visit(d.get, rec, key, 'getter');
          visit(d.set, rec, key, 'setter');
        }
      }
      visit(rec.proto, rec, '', 'proto');
    };
    visit(Object.prototype, null, 'Object.prototype', '');
    for (const name of __ROOTS__) visit(globalThis[name], null, name, '');
    const hidden = {
      '%ArrayIteratorPrototype%': protoOf([][Symbol.iterator]()),
      '%StringIteratorPrototype%': protoOf(''[Symbol.iterator]()),
      '%MapIteratorPrototype%': protoOf(new Map()[Symbol.iterator]()),
      '%SetIteratorPrototype%': protoOf(new Set()[Symbol.iterator]()),
      '%RegExpStringIteratorPrototype%': protoOf(/a/[Symbol.matchAll]('')),
      '%GeneratorFunction.prototype%': protoOf(function* () {}),
      '%AsyncFunction.prototype%': protoOf(async function () {}),
      '%AsyncGeneratorFunction.prototype%': protoOf(async function* () {}),
    };
    for (const name of Object.keys(hidden)) visit(hidden[name], null, name, '');
    for (const rec of records) rec.up = byObject.get(rec.proto) || null;
    // the answer may not remove (or, restoring, keep) these: its own assignments are allowed
    const free = (rec, key) => rec.object === Error && (key === 'prepareStackTrace' || key === 'stackTraceLimit');
    const inherited = (rec, key) => {
      for (let up = rec.up; up !== null; up = up.up) if (key in up.descs) return true;
      return false;
    };
    const isIndex = (key) => {
      if (key.length === 0 || key.length > 10 || (key.length > 1 && apply(charCode, key, [0]) === 48)) return false;
      for (let i = 0; i < key.length; i++) {
        const c = apply(charCode, key, [i]);
        if (c < 48 || c > 57) return false;
      }
      return true;
    };
    // an addition the language or the built-ins read without the tests naming it
    const hook = (rec, key, d) => typeof key === 'symbol' || !('value' in d) || key in implicit || isIndex(key)
      || (rec.object === Object.prototype && key in plain) || inherited(rec, key);
    const same = (a, b) => (a.value === b.value || (a.value !== a.value && b.value !== b.value)) && a.get === b.get
      && a.set === b.set && a.writable === b.writable && a.enumerable === b.enumerable
      && a.configurable === b.configurable;
    // the first difference from the records ('' when none); `fix` puts each back first
    const settle = (fix) => {
      const when = fix ? '' : ' while the tests ran';
      for (let i = 0; i < records.length; i++) {
        const rec = records[i];
        const object = rec.object;
        const read = object === Object.prototype ? bare : (d) => d;
        if (rec.extensible && !extensible(object)) return `${pathOf(rec)} was frozen, sealed or made non-extensible${when}`;
        if (protoOf(object) !== rec.proto && (!fix || !setProto(object, rec.proto))) {
          return `the prototype of ${pathOf(rec)} was replaced${when}`;
        }
        const keys = rec.keys;
        for (let j = 0; j < keys.length; j++) {
          const key = keys[j];
          if (free(rec, key)) continue;
          const now = read(describe(object, key));
          if (now !== undefined && same(now, rec.descs[key])) continue;
          if (!fix) return `${nameOf(rec, key)} was ${now === undefined ? 'deleted' : 'changed'}${when}`;
          if (!define(object, key, rec.descs[key])) return `${nameOf(rec, key)} was made unchangeable`;
        }
        const current = ownKeys(object);
        for (let j = 0; j < current.length; j++) {
          const key = current[j];
          if (key in rec.descs || free(rec, key)) continue;
          if (!hook(rec, key, read(describe(object, key)))) continue;
          if (!fix) return `${nameOf(rec, key)} was added${when}`;
          if (!remove(object, key)) return `${nameOf(rec, key)} was added and cannot be removed`;
        }
      }
      return '';
    };
    // `only`: the names to lock, when not all of them
    const lock = (rec, only) => {
      const object = rec.object;
      for (let j = 0; j < rec.keys.length; j++) {
        const key = rec.keys[j];
        const d = rec.descs[key];
        if (only !== null && !(key in only)) continue;
        if ('value' in d && typeof d.value === 'function' && d.configurable) {
          const locked = { __proto__: null, value: d.value, writable: false, enumerable: d.enumerable, configurable: false };
          if (define(object, key, locked)) rec.descs[key] = locked;
        }
      }
    };
    // `object`'s own properties on a frozen object of their own, `own` taking the place of some
    const copy = (object, own = { __proto__: null }) => {
      const out = {};
      for (const key of ownKeys(object)) {
        const d = describe(object, key);
        if (key in own) d.value = own[key];
        define(out, key, d);
      }
      return Object.freeze(out);
    };
    // the tests' JSON.stringify first looks for a toJSON the answer's function added (or changed)
    // on a prototype since the tests began, and one it then took away is still caught: the
    // comparison fails, and so does the run
    let caught = '';
    const toJSONs = [];
    const toJSONIn = (object) => {
      const rec = byObject.get(object);
      if (rec !== undefined) toJSONs.push({ __proto__: null, rec, was: bare(describe(object, 'toJSON')) });
    };
    const realJSON = JSON;
    const Refused = TypeError;
    const realStringify = JSON.stringify;
    const stringify = function stringify(value, replacer, space) {
      for (let i = 0; i < toJSONs.length; i++) {
        const { rec, was } = toJSONs[i];
        const now = bare(describe(rec.object, 'toJSON'));
        // the same function (made read-only since, for Date.prototype's)
        if (now === undefined ? was === undefined
          : was !== undefined && now.value === was.value && now.get === was.get && now.set === was.set) continue;
        caught = `${nameOf(rec, 'toJSON')} was ${was === undefined ? 'added' : 'changed'} while the tests ran`;
        throw new Refused(`sandbox: ${caught}`);
      }
      return apply(realStringify, realJSON, [value, replacer, space]);
    };
    const copies = { JSON: copy(JSON, { __proto__: null, stringify }), Math: copy(Math), Reflect: copy(Reflect) };
    const values = [];
    for (const name of __GLOBALS__) values.push(name in copies ? copies[name] : globalThis[name]);
    const locked = [];
    const lockable = (object, only = null) => {
      if (byObject.has(object)) locked.push({ __proto__: null, rec: byObject.get(object), only });
    };
    for (const name of __LOCKED__) {
      const made = globalThis[name];
      lockable(made);
      if (made !== Object) lockable(made.prototype);
    }
    for (const name of Object.keys(hidden)) if (name.endsWith('IteratorPrototype%')) lockable(hidden[name]);
    lockable(protoOf(hidden['%ArrayIteratorPrototype%']));
    // not its toString: `MyClass.toString = ...` assigns over it
    lockable(Function.prototype, { __proto__: null, call: true, apply: true, bind: true });
    toJSONIn(Object.prototype);
    for (let i = 0; i < locked.length; i++) if (locked[i].only === null) toJSONIn(locked[i].rec.object);
    return {
      __proto__: null,
      // after the answer's script: '' when every built-in is as it was (put back), else why not
      restore: () => {
        const broken = settle(true);
        if (broken) return broken;
        for (let i = 0; i < locked.length; i++) lock(locked[i].rec, locked[i].only);
        return '';
      },
      // after (part of) the tests: '' when nothing changed since `restore`
      check: () => caught || settle(false),
      // the tests' function's parameters, in TESTS_GLOBALS's order
      values,
    };
  })();
"""

#: the guard's part of the launcher's source: it defines ``guard`` (``restore()``, ``check()``,
#: ``values``), and must run before the answer's script
GUARD_SOURCE = (
    _GUARD.replace("__IMPLICIT_PLAIN__", _js_list(_IMPLICIT_PLAIN))
    .replace("__IMPLICIT__", _js_list(_IMPLICIT))
    .replace("__ROOTS__", _js_list(_ROOTS))
    .replace("__GLOBALS__", _js_list(TESTS_GLOBALS))
    .replace("__LOCKED__", _js_list(_LOCKED))
)
