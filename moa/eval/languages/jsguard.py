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
  the answer's own code; its ``var URL`` or ``function escape`` stays its own);
* while the tests run, an answer's function they call could hook a built-in and take the hook
  away again before they end (a getter for ``Symbol.toStringTag`` on ``Array.prototype``, which
  ``assert.deepEqual`` reads from both sides, saw the expected array and copied it into the
  answer's result; ``Object.prototype.hasOwnProperty`` patched and put back in a microtask). So
  the guarded built-ins change no more: ``Object.prototype``, ``Function.prototype``, the
  constructors in ``_LOCKED`` and ``_ERRORS``, their prototypes and the iterator and generator
  prototypes.
  Their methods are read-only, except where an assignment over an inherited one must still work
  (``counts[word] = 1`` with the word ``valueOf``, ``Point.prototype.toString = ...``,
  ``MyError.prototype.name = ...``): those of ``Object.prototype``, ``Function.prototype`` (but
  ``call``, ``apply`` and ``bind``) and the errors' prototypes become accessors whose setter
  defines the property on the object assigned to, and refuses the built-in itself. Their other
  properties (``Array[Symbol.species]``, ``Map.prototype.size``) become non-configurable, and the
  hooks a prototype lacks become trap accessors with the same setter, answering what it inherits:
  the well-known symbols in ``_OF_INSTANCES`` (``Symbol.toPrimitive``, ``Symbol.toStringTag``...;
  ``String.prototype`` those in ``_OF_PATTERNS`` too), the names in ``_IMPLICIT`` and every name
  it inherits (``Array.prototype.valueOf``). Not ``toJSON`` (a getter there slowed every
  ``JSON.stringify`` of an array): the tests' ``JSON.stringify`` looks for one added since they
  began, or a prototype of theirs replaced (by one holding a ``toJSON``), and throws. ``Object.prototype``, ``Function.prototype`` (a function itself) and the
  constructors take no addition at all (they are
  made non-extensible: a trap on ``Object.prototype`` would answer ``'get' in descriptor``;
  ``TypeError[Symbol.hasInstance]`` is refused so). An assignment refused so throws and fails
  the run, even when the answer caught the throw. ``constructor`` stays a writable data property (``util.inspect``
  names objects by it, and ``counts['constructor'] = 1`` assigns it);
* before the end-of-tests token is written, every recorded built-in is compared with its state
  when the tests began: a change made while they ran fails the run. The launcher runs the check
  when the tests' function returns and when they call ``process.exit(0)`` themselves.

What an addition to a guarded built-in costs a correct answer: none at its top level; while the
tests run, a new name on ``Object.prototype``, ``Function.prototype`` or a guarded constructor (``Array.range =
...``: a ``TypeError`` in strict code, ignored in sloppy code), and a hook or a method of theirs
assigned on the built-in itself (``Array.prototype.push = ...``). The guard costs about 5.5 ms of CPU when node starts (recording) and 3 to 3.5 ms
before the tests (putting back, 2.5 ms, and shielding with some 340 traps, under 1 ms), measured
on a busy two-core machine: 1.5 ms more than before the shield. While the tests run, a
conversion or a string split through a trap is slower (some 30% in a loop doing nothing else).

Open: what the tests read from or call on objects the answer made (its result's own ``every``
returning true, ``toJSON``, ``valueOf``, a Proxy: they behave as they like);
``Object.prototype.constructor`` reassigned and put back while the tests run; the built-ins
outside the guarded ones (``Intl``, typed arrays, ``%GeneratorFunction.prototype%``), patched
and put back while the tests run; an index getter on ``Array.prototype`` (read for an array's
holes); Node's globals (``console``, ``Buffer``: the tests' ``process`` and timers are their
own, given by the launcher, ``moa.eval.languages.jsrun``) and modules other than ``assert``,
``util`` and ``node:test`` (which the tests' ``require`` hands them as taken before the answer
ran; the others go through Node's loader, which the answer can patch). And a test program exiting other than through its own ``process``
(``globalThis.process.exit(0)``) gets no token: a correct answer then fails.
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
# tests run: an answer's function patching one when called reached the tests (the errors',
# Object.prototype's and Function.prototype's are accessors instead: see the module docstring)
_LOCKED = (
    "Object", "Array", "String", "Number", "Boolean", "Symbol", "BigInt", "Map", "Set", "WeakMap",
    "WeakSet", "Date", "RegExp", "Promise",
)  # fmt: skip


# the error types: their constructors' methods are read-only while the tests run, their
# prototypes' properties accessors (`MyError.prototype.name = ...` assigns over an inherited one)
_ERRORS = (
    "Error", "TypeError", "RangeError", "SyntaxError", "ReferenceError", "EvalError", "URIError",
    "AggregateError",
)  # fmt: skip


# the well-known symbols (names on Symbol) a guarded prototype holds while the tests run, as its
# own or a trap: those the language reads from any object (conversions, iteration, concat), and
# from a string as a pattern (`split`, `replace`)
_OF_INSTANCES = ("toPrimitive", "toStringTag", "iterator", "asyncIterator", "isConcatSpreadable")
_OF_PATTERNS = ("match", "matchAll", "replace", "search", "split")


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
    const closed = Reflect.preventExtensions;
    const charCode = String.prototype.charCodeAt;
    const description = describe(Symbol.prototype, 'description').get;
    const implicit = { __proto__: null };
    for (const name of __IMPLICIT__) define(implicit, name, { value: true, enumerable: true });
    // inherited names no test calls on its values (`constructor` is every prototype's own)
    const obscure = { __proto__: null, ['__proto__']: true, constructor: true, __defineGetter__: true,
      __defineSetter__: true, __lookupGetter__: true, __lookupSetter__: true };
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
        keys: ownKeys(object), descs: { __proto__: null }, up: null, fixed: undefined, hooks: null };
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
    // while the tests run, the guarded built-ins (`shielded` below) change no more: their own
    // methods are read-only (`fixed`), or accessors whose setter refuses them (a method the
    // override mistake would make unassignable: `Point.prototype.toString = ...` or `counts[word]
    // = 1` with the word `valueOf` assign over an inherited one, and the setter defines it on the
    // object assigned to), their other properties are made non-configurable, and the hooks the
    // language reads unasked that they lack (`hooks`) are trap accessors answering what they
    // inherit; Object.prototype and the functions take no addition at all. An attempt on a
    // guarded built-in throws and fails the run, even when the answer caught the throw
    const get = Reflect.get;
    let caught = '';
    const Refused = TypeError;
    const refuse = (what) => {
      caught = caught || what;
      throw new Refused(`sandbox: ${what}`);
    };
    // one setter per name, shared by every built-in holding it
    const setters = new Map();
    const setter = (key) => setters.get(key) || (setters.set(key, assigner(key)), setters.get(key));
    const assigner = (key) => function (value) {
      const rec = byObject.get(this);
      if (rec !== undefined) refuse(`${nameOf(rec, key)} was assigned while the tests ran`);
      // a primitive's or a frozen object's property stays as it was, as in sloppy mode
      if ((typeof this === 'object' && this !== null) || typeof this === 'function') {
        define(this, key, { __proto__: null, value, writable: true, enumerable: true, configurable: true });
      }
    };
    const trap = (rec, key, getter, enumerable) => {
      const d = { __proto__: null, get: getter, set: setter(key), enumerable, configurable: false };
      if (!define(rec.object, key, d)) return;
      if (!(key in rec.descs)) rec.keys[rec.keys.length] = key;
      rec.descs[key] = d;
    };
    const shield = (rec) => {
      const object = rec.object;
      const keys = rec.keys;
      const count = keys.length;
      for (let j = 0; j < count; j++) {
        const key = keys[j];
        const d = rec.descs[key];
        if (free(rec, key) || !d.configurable) continue;
        let made;
        if (!('value' in d)) made = { __proto__: null, get: d.get, set: d.set, enumerable: d.enumerable, configurable: false };
        // util.inspect reads a `constructor` as a data property (names the object by it), and
        // `counts[word] = 1` must still assign it: it stays writable, made no accessor
        else if (key === 'constructor' && rec.fixed !== true) made = { __proto__: null, value: d.value, writable: true, enumerable: d.enumerable, configurable: false };
        else if (!d.writable) made = { __proto__: null, value: d.value, writable: false, enumerable: d.enumerable, configurable: false };
        else if (typeof d.value === 'function' && rec.fixed !== null && (rec.fixed === true || key in rec.fixed)) {
          made = { __proto__: null, value: d.value, writable: false, enumerable: d.enumerable, configurable: false };
        } else {
          const value = d.value;
          trap(rec, key, () => value, d.enumerable);
          continue;
        }
        if (define(object, key, made)) rec.descs[key] = made;
      }
      if (object === Object.prototype || typeof object === 'function') {
        if (closed(object)) rec.extensible = false;
        return;
      }
      const up = rec.proto;
      const hooks = rec.hooks;
      for (let j = 0; j < hooks.length; j++) {
        const key = hooks[j];
        if (key in rec.descs) continue;
        trap(rec, key, function () { return up === null ? undefined : get(up, key, this); }, false);
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
    // the tests' JSON.stringify first looks for a toJSON added to a shielded prototype, or a
    // prototype of its replaced (which the answer could take away again before the end): the
    // comparison fails, and so does the run
    const toJSONs = [];
    const realJSON = JSON;
    const realStringify = JSON.stringify;
    const stringify = function stringify(value, replacer, space) {
      for (let i = 0; i < toJSONs.length; i++) {
        const rec = byObject.get(toJSONs[i]);
        if (describe(rec.object, 'toJSON') !== undefined) refuse(`${nameOf(rec, 'toJSON')} was added while the tests ran`);
        // or a prototype of the answer's put under it, holding one
        if (protoOf(rec.object) !== rec.proto) refuse(`the prototype of ${pathOf(rec)} was replaced while the tests ran`);
      }
      return apply(realStringify, realJSON, [value, replacer, space]);
    };
    const copies = { JSON: copy(JSON, { __proto__: null, stringify }), Math: copy(Math), Reflect: copy(Reflect) };
    const values = [];
    for (const name of __GLOBALS__) values.push(name in copies ? copies[name] : globalThis[name]);
    // the built-ins shielded while the tests run, and which of their methods are read-only
    // (`fixed`: all, none or some); the rest of their methods become accessors
    const shielded = [];
    const shieldable = (object, fixed) => {
      const rec = byObject.get(object);
      if (rec === undefined || rec.fixed !== undefined) return;
      rec.fixed = fixed;
      // the hooks a prototype must hold (each trap costs a few microseconds): those the language
      // reads from an instance, the implicit names, a string's pattern hooks (`'a,b'.split(',')`
      // reads `','[Symbol.split]`), and every name it inherits (`[].valueOf`,
      // `exp.hasOwnProperty(k)`) as found before the answer ran. Not `toJSON`: a getter there
      // made JSON.stringify of every array slower by half, and the tests' JSON.stringify looks
      // for one instead. A function (a constructor, Function.prototype) takes no addition at all,
      // as Object.prototype
      const hooks = [];
      if (typeof object !== 'function') {
        for (const name of __OF_INSTANCES__) hooks.push(Symbol[name]);
        if (object === String.prototype) for (const name of __OF_PATTERNS__) hooks.push(Symbol[name]);
        for (const name of __IMPLICIT__) if (!(name in obscure) && name !== 'toJSON') hooks.push(name);
        for (let up = byObject.get(rec.proto); up !== undefined; up = byObject.get(up.proto)) {
          for (const key of up.keys) if (typeof key === 'string' && !(key in obscure)) hooks.push(key);
        }
        if (!('toJSON' in rec.descs)) toJSONs.push(object);
      }
      rec.hooks = hooks;
      shielded.push(rec);
    };
    shieldable(Object.prototype, null);
    // not its toString: `MyClass.toString = ...` assigns over it
    shieldable(Function.prototype, { __proto__: null, call: true, apply: true, bind: true });
    for (const name of __LOCKED__) {
      const made = globalThis[name];
      shieldable(made, true);
      if (made !== Object) shieldable(made.prototype, true);
    }
    for (const name of __ERRORS__) {
      shieldable(globalThis[name], true);
      // `MyError.prototype.name = ...`, `.toString = ...`
      shieldable(globalThis[name].prototype, null);
    }
    for (const name of Object.keys(hidden)) if (name.endsWith('IteratorPrototype%')) shieldable(hidden[name], true);
    shieldable(protoOf(hidden['%ArrayIteratorPrototype%']), true);
    // the tests' own generators' objects
    shieldable(hidden['%GeneratorFunction.prototype%'].prototype, true);
    shieldable(hidden['%AsyncGeneratorFunction.prototype%'].prototype, true);
    return {
      __proto__: null,
      // after the answer's script: '' when every built-in is as it was (put back), else why not
      restore: () => {
        const broken = settle(true);
        if (broken) return broken;
        for (let i = 0; i < shielded.length; i++) shield(shielded[i]);
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
    .replace("__ERRORS__", _js_list(_ERRORS))
    .replace("__OF_INSTANCES__", _js_list(_OF_INSTANCES))
    .replace("__OF_PATTERNS__", _js_list(_OF_PATTERNS))
)
