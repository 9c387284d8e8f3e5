"""The end-of-tests marker: a compiled-language program passes only when its tests ran to their end.

An exit status of 0 says nothing about that: ``exit(0)`` (``process.exit(0)``, ``os.Exit(0)``,
``System.exit(0)``) inside the answer's function ends the program with 0 before any test failed.
So the parent sends the program one random token per run on stdin (``"<fd> <token>\\n"``) and
hands it the write end of a pipe only the parent reads (``fd``); the harness reads that line before
the tests start and writes the token to the pipe once the tests returned normally. The parent
passes the run only when the exit status is 0 and the pipe holds exactly the token, followed (C,
C++, Go, Rust) by a secret compiled into the harness: code of the answer's that runs before
``main`` (a constructor, ``init``, an ``.init_array`` entry) can read stdin first, but not know the
secret. The harness's identifiers and the secret are keyed by a secret of this process and the
program (``_keys``), so identical programs still share one compile.

The token is never in the program's source or any file of its sandbox: a compiled binary is cached
and can read itself, and a JavaScript file can read its own text. After the harness read it, stdin
is at its end. Where the harness keeps it, per language:

* C, C++: ``main`` starts by reading it and registering an ``on_exit`` handler; a ``cleanup``
  variable in ``main`` notes that ``main`` returned, and the handler writes the token only then
  and only for status 0 (``exit(0)`` skips the cleanup; a failing ``main`` has a non-zero status).
  These functions share the answer's translation unit, so their names carry a key the answer
  cannot know. After the answer's lines ``__assert_fail`` (what ``assert`` calls) is renamed to the
  harness's own: a wrong answer defining glibc's as a function that returns passed every assertion;
  the harness's marks the run failed, so no token is written even if the answer's ``abort`` returns;
* Rust: a guard made at the top of ``main`` writes it when dropped, unless a panic unwinds
  (``std::process::exit`` drops nothing);
* Go: the tests' ``main`` (or ``m.Run()`` in a ``TestMain``) is called by one that writes it after;
  the ``TestMain`` first drops arguments the answer's ``init`` added and writes nothing when a test
  selection flag was set (an empty selection runs no test and exits 0);
* Java: the tests' ``main`` is renamed and called by a launcher class, the one the JVM runs,
  which reads the token before the tests' class is initialised (no static initializer of the
  answer's runs first) and writes it after (``System.exit`` never returns); the pipe is reopened
  as ``/proc/self/fd/<fd>``. It is a file and package of its own (``Program.launcher``), where no
  type of the answer's (``class StringBuilder``, ``class System``) replaces the ones it uses;
* JavaScript, TypeScript: the launcher node runs (``moa.eval.languages.jsrun``), which runs the
  answer's script and then the tests' function, writes it on ``beforeExit``, which Node emits when
  the event loop runs dry and never after ``process.exit``, one turn of the loop later and with no
  timer or request left; only when the tests' function returned
  and no frame of the program is on the stack (the program emitting the event or calling the
  listener; ``Error`` and its stack hooks are locked first, so the program cannot answer that check
  itself). An uncaught exception ends the program with status 1 through an uncaught-exception
  capture callback the program cannot unset, whatever ``uncaughtException`` listeners it adds or
  removes.

The limit: the harness shares the answer's process, so code written against it can reach the token
(native code reads its own memory). A JavaScript answer no longer reaches the tests' source: they
arrive on the launcher's stdin, never in a file, and run apart from the answer as a strict-mode
function (``moa.eval.languages.jsrun``). JavaScript runs under Node's permission model (Node 20 or
later, ``toolchains.node_permission_flags``): it may read the answer's file and the launcher,
nothing else (no ``/proc/self/mem``), and start no child process or worker; the launcher replaces
the ``v8`` heap snapshot functions, ``v8.setFlagsFromString`` and the ``inspector`` with ones that
throw before the program runs. An older Node has no permission model: there the seccomp filter
refuses child processes, and ``/proc/self/mem`` still reaches the token (and the tests, in the
launcher's memory). The marker stops answers that end early; it is not a wall against one that
attacks moa's harness itself.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from dataclasses import replace

from moa.eval.languages.jsrun import js_key, split_marker
from moa.eval.languages.program import Program, rename_function
from moa.eval.languages.source import brace_depths, find_function, mask, split_lines, top_level_types

__all__ = ["shield_js_tests", "with_end_marker"]

_C_GUARD = (
    " int moa_start_{key}(void); void moa_returned_{key}(int *);"
    " __attribute__((cleanup(moa_returned_{key}))) int moa_guard_{key} = moa_start_{key}();"
)

# the tests' assert() calls glibc's __assert_fail, a global function a wrong answer could define as
# one that returns (every failed assertion then passed): after the answer's lines it is renamed to
# the harness's own, keyed; declared on a line of its own at the top (the answer's last line may
# be inside a function body), and the answer's lines move down by one
_C_ASSERT_DECLARATION = (
    "{linkage}void moa_assert_fail_{key}(const char *, const char *, unsigned int, const char *){nothrow};\n"
)
_C_ASSERT_RENAME = "\n#define __assert_fail moa_assert_fail_{key}\n#line {line}\n"

_C_END = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static struct {{ int fd, length, returned, failed; char token[128]; }} moa_end_{key};
static const unsigned char moa_secret_{key}[16] = {{ {secret} }};
{linkage}void moa_assert_fail_{key}(const char *expr, const char *file, unsigned int line, const char *function){nothrow} {{
    /* no token even if the answer's own abort() returns to the test */
    moa_end_{key}.failed = 1;
    fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, function, expr);
    fflush(stderr);
    abort();
    _exit(134);
}}
static void moa_finish_{key}(int status, void *unused) {{
    (void)unused;
    if (status == 0 && moa_end_{key}.returned && !moa_end_{key}.failed && moa_end_{key}.length > 0) {{
        ssize_t written = write(moa_end_{key}.fd, moa_end_{key}.token, (size_t)moa_end_{key}.length);
        (void)written;
    }}
}}
int moa_start_{key}(void) {{
    char line[128];
    int n = 0, i = 0;
    ssize_t got;
    while (n < (int)sizeof line && (got = read(0, line + n, sizeof line - (size_t)n)) > 0) n += (int)got;
    moa_end_{key}.fd = -1;
    for (; i < n && line[i] >= '0' && line[i] <= '9'; i++) moa_end_{key}.fd = (moa_end_{key}.fd < 0 ? 0 : moa_end_{key}.fd * 10) + (line[i] - '0');
    for (i++; i < n && line[i] != '\n' && moa_end_{key}.length < 64; i++) moa_end_{key}.token[moa_end_{key}.length++] = line[i];
    for (i = 0; i < 16; i++) {{
        moa_end_{key}.token[moa_end_{key}.length++] = "0123456789abcdef"[moa_secret_{key}[i] >> 4];
        moa_end_{key}.token[moa_end_{key}.length++] = "0123456789abcdef"[moa_secret_{key}[i] & 15];
    }}
    moa_end_{key}.token[moa_end_{key}.length++] = '\n';
    on_exit(moa_finish_{key}, 0);
    return 0;
}}
void moa_returned_{key}(int *unused) {{
    (void)unused;
    moa_end_{key}.returned = 1;
}}
"""

_RUST_GUARD = " let _moa_guard = moa_end_{key}::start();"

_RUST_END = r"""
#[allow(dead_code)]
mod moa_end_{key} {
    use std::io::{Read, Write};
    use std::os::unix::io::FromRawFd;
    const SECRET: [u8; 16] = [{secret}];
    pub struct Guard(i32, Vec<u8>);
    pub fn start() -> Guard {
        let mut line = Vec::new();
        let _ = std::io::stdin().lock().take(128).read_to_end(&mut line);
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut parts = text.trim().splitn(2, ' ');
        let fd = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
        let secret: String = SECRET.iter().map(|b| ::std::format!("{:02x}", b)).collect();
        let token = parts.next().map(|t| ::std::format!("{}{}\n", t, secret).into_bytes()).unwrap_or_default();
        Guard(fd, token)
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if std::thread::panicking() || self.0 < 0 || self.1.is_empty() {
                return;
            }
            // the descriptor is the parent's pipe: written, never closed here
            let mut report = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.0) });
            let _ = report.write_all(&self.1);
        }
    }
}
"""

_GO_IMPORTS = '; import moaos_ "os"'

# no builtin function (append, len, make, copy): a package-level `func append` of the answer's
# shadows the builtin in the whole package, and one that kept what it was given saw stdin's line
# and the secret, wrote them to the pipe and exited 0 (1.0); arrays and indexing name nothing
_GO_END = """
var moaSecret_{key} = [16]byte{{secret}}

func moaStart_{key}() (int, [192]byte, int) {
\tvar line [128]byte
\tn := 0
\tfor n < 128 {
\t\tk, err := moaos_.Stdin.Read(line[n:])
\t\tn += k
\t\tif err != nil || k == 0 {
\t\t\tbreak
\t\t}
\t}
\tfd, i := 0, 0
\tfor ; i < n && line[i] >= '0' && line[i] <= '9'; i++ {
\t\tfd = fd*10 + int(line[i]-'0')
\t}
\tvar token [192]byte
\tt := 0
\tfor i++; i < n && line[i] != '\\n'; i++ {
\t\ttoken[t] = line[i]
\t\tt++
\t}
\tfor _, b := range moaSecret_{key} {
\t\ttoken[t], token[t+1] = "0123456789abcdef"[b>>4], "0123456789abcdef"[b&15]
\t\tt += 2
\t}
\ttoken[t] = '\\n'
\treturn fd, token, t + 1
}

func moaFinish_{key}(fd int, token [192]byte, length int) {
\tif length > 1 {
\t\tmoaos_.NewFile(uintptr(fd), "moa-end").Write(token[:length])
\t}
}
"""

_GO_MAIN = """
func main() {
\tmoaFd, moaToken, moaLength := moaStart_{key}()
\tmoaTestsMain_()
\tmoaFinish_{key}(moaFd, moaToken, moaLength)
}
"""

# the answer's init() runs first: flags it put in os.Args (``-test.run=^$``) or set would pick no
# test at all, and an empty run exits 0
_GO_TEST_MAIN = """
func TestMain(m *moatesting_.M) {
\tmoaFd, moaToken, moaLength := moaStart_{key}()
\tmoaos_.Args = moaos_.Args[:1]
\tcode := m.Run()
\tfor _, name := range []string{"test.run", "test.skip", "test.list"} {
\t\tif f := moaflag_.Lookup(name); f != nil && f.Value.String() != "" {
\t\t\tcode = 1
\t\t}
\t}
\tif f := moaflag_.Lookup("test.count"); f != nil && f.Value.String() != "1" {
\t\tcode = 1
\t}
\tif code == 0 {
\t\tmoaFinish_{key}(moaFd, moaToken, moaLength)
\t}
\tmoaos_.Exit(code)
}
"""

# the launcher is the class the JVM runs: it reads the token before the tests' class exists, so no
# static initializer of the answer's runs first (one read stdin and wrote the token itself). It is
# a file and package of its own, which the answer's types cannot reach: beside them, an answer's
# own `class StringBuilder` was the one the launcher built the token and its secret in, and the
# answer wrote them to the pipe and exited 0 (1.0); `class System` or a type named `java` would
# do as well. A class of a named package cannot name the tests' (unnamed) one: reflection calls it
_JAVA_END = """package moaend_{key};

public final class MoaEnd {
    public static void main(String[] moaArgs) throws Throwable {
        String line = new String(System.in.readNBytes(128), java.nio.charset.StandardCharsets.US_ASCII).trim();
        int space = line.indexOf(' ');
        String fd = space < 0 ? "-1" : line.substring(0, space);
        StringBuilder token = new StringBuilder(space < 0 ? "" : line.substring(space + 1));
        for (int b : new int[] {{secret}}) token.append("0123456789abcdef".charAt(b >> 4)).append("0123456789abcdef".charAt(b & 15));
        java.lang.reflect.Method tests = Class.forName("{host}").getDeclaredMethod("moaTestsMain_", String[].class);
        tests.setAccessible(true);
        try {
            tests.invoke(null, (Object) moaArgs);
        } catch (java.lang.reflect.InvocationTargetException e) {
            throw e.getCause();
        }
        if (space < 0) return;
        try (java.io.FileOutputStream out = new java.io.FileOutputStream("/proc/self/fd/" + fd)) {
            out.write((token + "\\n").getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        }
    }
}
"""

_PACKAGE = re.compile(r"^[ \t]*package[ \t]+\w+", re.MULTILINE)
_TEST_MAIN = re.compile(r"\bfunc\s+TestMain\s*\(")


def _insert(source: str, at: int, text: str) -> str:
    return source[:at] + text + source[at:]


@functools.cache
def _process_key() -> bytes:
    return secrets.token_bytes(16)


def _keys(program: Program) -> tuple[str, bytes]:
    """The harness's identifier suffix and the secret it appends to the token, both keyed by a
    secret of this process and the program: identical programs still hit the compile cache, and
    no answer can name the harness's functions or know the secret (the token arrives on stdin,
    which code of the answer's running before ``main`` (a C constructor, a Go ``init``, a Rust
    ``.init_array`` entry) can read; the parent accepts only the token followed by the secret)."""
    source = program.source.encode("utf-8", "surrogatepass")
    names = hmac.new(_process_key(), b"names\0" + source, "sha256").hexdigest()[:24]
    return names, hmac.digest(_process_key(), b"secret\0" + source, "sha256")[:16]


def _fill(template: str, key: str, secret: bytes) -> str:
    return template.replace("{key}", key).replace("{secret}", ", ".join(f"0x{b:02x}" for b in secret))


def _c(program: Program) -> Program | None:
    main = find_function(program.source, program.language, "main")
    if main is None:
        return None
    # the harness's functions share the answer's translation unit: under fixed names the answer
    # could declare and call them (``moa_returned_(0); exit(0);`` wrote the token)
    key, secret = _keys(program)
    cpp = program.language == "cpp"
    names = {"key": key, "linkage": 'extern "C" ' if cpp else "", "nothrow": " noexcept" if cpp else ""}
    source = _insert(program.source, main.open + 1, _C_GUARD.format(key=key))
    first, last = program.first_line, program.last_line
    if first and main.open > (at := _line_end(source, last)):
        source = _insert(source, at, _C_ASSERT_RENAME.format(key=key, line=last + 2))
        source = _C_ASSERT_DECLARATION.format(**names) + source
        first, last = first + 1, last + 1
    end = _C_END.format(**names, secret=", ".join(f"0x{b:02x}" for b in secret))
    source = source.rstrip("\n") + "\n" + end
    return replace(program, source=source, first_line=first, last_line=last, end_suffix=secret.hex())


def _line_end(source: str, line: int) -> int:
    """The offset just past line ``line`` (1-based) of ``source``, its newline included."""
    at = 0
    for _ in range(line):
        found = source.find("\n", at)
        if found < 0:
            return len(source)
        at = found + 1
    return at


def _rust(program: Program) -> Program | None:
    main = find_function(program.source, "rust", "main")
    if main is None:
        return None
    key, secret = _keys(program)
    source = _insert(program.source, main.open + 1, _fill(_RUST_GUARD, key, secret))
    tail = _fill(_RUST_END, key, secret)
    return replace(program, source=source.rstrip("\n") + "\n" + tail, end_suffix=secret.hex())


def _go(program: Program) -> Program | None:
    source = program.source
    masked = mask(source, "go")
    package = _PACKAGE.search(masked)
    if package is None:
        return None
    # on the package clause's own line, so no line of the answer moves
    if program.go_test:
        if _TEST_MAIN.search(_harness_text(program, masked)):
            return None  # the tests' own TestMain decides how the binary exits (never the answer's)
        source = _insert(
            source, package.end(), _GO_IMPORTS + '; import moatesting_ "testing"; import moaflag_ "flag"'
        )
        tail = _GO_END + _GO_TEST_MAIN
    else:
        if find_function(source, "go", "main") is None:
            return None
        source = _insert(rename_function(source, "go", "main", "moaTestsMain_"), package.end(), _GO_IMPORTS)
        tail = _GO_END + _GO_MAIN
    key, secret = _keys(program)
    tail = _fill(tail, key, secret)
    return replace(program, source=source.rstrip("\n") + "\n" + tail, end_suffix=secret.hex())


def _java(program: Program) -> Program | None:
    name = program.main_class or "Main"
    source = rename_function(program.source, "java", "main", "moaTestsMain_")
    host = next((t for t in top_level_types(source) if t.name == name), None)
    if host is None or source == program.source:
        return None
    key, secret = _keys(program)
    launcher = _fill(_JAVA_END, key, secret).replace("{host}", name)
    return replace(
        program,
        source=source,
        main_class=f"moaend_{key}.MoaEnd",
        end_suffix=secret.hex(),
        launcher=(f"moaend_{key}/MoaEnd.java", launcher),
    )


#: a call that ends the process with status 0 (``exit(0)``, ``os.Exit(0)``, ``process.exit()``...)
_EXIT_ZERO = re.compile(r"\b(?:exit|_exit|_Exit|quick_exit|Exit)\s*\(\s*(?:0|EXIT_SUCCESS)?\s*\)")


def _harness_text(program: Program, masked: str) -> str:
    """The masked program outside the answer's lines (all of it when they are unknown): a Java
    answer's other types are its own too (a `System.exit(0)` there, read as the tests', turned the
    end-of-tests marker off, and the answer calling it passed)."""
    if not program.first_line:
        return masked
    lines = split_lines(masked)
    for first, last in [(program.first_line, program.last_line), *program.answer_elsewhere]:
        lines[first - 1 : last] = [""] * len(lines[first - 1 : last])
    return "\n".join(lines)


def _tests_exit_zero(program: Program) -> bool:
    """Whether the item's own test code (the program outside the answer's lines) ends the process
    with status 0 itself: its tests then never return to the harness, whatever the answer does."""
    if not program.first_line:
        return False  # the answer's lines are unknown: an exit found could be the answer's own
    harness = split_lines(_harness_text(program, mask(program.source, program.language)))
    return any(_EXIT_ZERO.search(line) for line in harness)


_JS_DECLARATION = re.compile(
    r"\b(?:const|let|var|class|function\s*\*?|import\s+\*\s+as|import)\s+([A-Za-z_$][\w$]*)"
)


#: the modules the tests' ``import`` statements may take ``assert`` from
_ASSERT_MODULES = frozenset({"assert", "node:assert", "assert/strict", "node:assert/strict"})
# an import statement in masked source (literal contents blanked): `import * as a from '...'`,
# `import a from`, `import { x as y } from`, `import a, { x } from`, `import a = require(...)`
_JS_IMPORT = re.compile(
    r"(?<![\w$.])import\s+(?:\*\s*as\s+(?P<ns>[A-Za-z_$][\w$]*)|(?P<default>[A-Za-z_$][\w$]*)"
    r"(?:\s*,\s*\{(?P<also>[^{}]*)\})?|\{(?P<named>[^{}]*)\})\s*from\s*(?P<spec>'[^'\n]*'|\"[^\"\n]*\")\s*;?"
    r"|(?<![\w$.])import\s+(?P<eq>[A-Za-z_$][\w$]*)\s*=\s*require\s*\(\s*(?P<eqspec>'[^'\n]*'|\"[^\"\n]*\")\s*\)\s*;?"
)
_IMPORT_NAME = re.compile(r"\s*([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*))?\s*")


def _import_as_require(
    source: str, m: re.Match[str], require: str, *, any_module: bool = False
) -> str | None:
    """The statement ``m`` as one ``const`` per name bound from ``require(module)``, on as many
    lines as it took; None when it imports from a module other than ``assert`` (unless
    ``any_module``) or binds a name this does not read (``import type``)."""
    spec_group = "eqspec" if m.group("eq") else "spec"
    # ``m`` matched the masked source, whose literals are blanked: the module's name is read here
    spec = source[m.start(spec_group) + 1 : m.end(spec_group) - 1]
    if spec not in _ASSERT_MODULES and not any_module:
        return None
    call = f"{require}({spec!r})"
    default = m.group("ns") or m.group("default") or m.group("eq")
    bound = [f"const {default} = {call};"] if default and default != "type" else []
    for names in (m.group("also"), m.group("named")):
        for part in (names or "").split(","):
            if not part.strip():
                continue
            name = _IMPORT_NAME.fullmatch(part)
            if name is None:
                return None
            bound.append(f"const {name.group(2) or name.group(1)} = {call}.{name.group(1)};")
    if not bound:
        return None
    return " ".join(bound) + "\n" * source.count("\n", m.start(), m.end())


# an ES module's other statements a script cannot hold: `import 'x';`, and `export` in its forms
_JS_BARE_IMPORT = re.compile(r"(?<![\w$.])import\s*(?P<spec>'[^'\n]*'|\"[^\"\n]*\")\s*;?")
_JS_EXPORT = re.compile(
    r"(?<![\w$.])export\s+(?:default\s+)?(?=(?:async\s+)?function\b|class\b|const\b|let\b|var\b)"
    r"|(?P<list>(?<![\w$.])export\s*(?:\*|\{[^{}]*\})[^;\n]*;?)"
    r"|(?P<default>(?<![\w$.])export\s+default\b)"
)


def _answer_as_script(program: Program, answer_line: list[bool]) -> Program:
    """JavaScript: ``program`` with the answer's top-level ``import`` statements made ``require``
    calls and its ``export`` keywords dropped (``export default x`` assigns ``exports.default``).
    The answer runs as a classic script (``moa.eval.languages.jsrun``), which holds neither; run as
    one ES module with the tests, a correct answer importing ``fs`` passed, and must still."""
    masked = mask(program.source, program.language)
    line_at = [i for i, line in enumerate(split_lines(masked, keepends=True)) for _ in line]
    depths = brace_depths(masked)
    edits: list[tuple[int, int, str]] = []
    for m in _JS_IMPORT.finditer(masked):
        if not depths[m.start()] and answer_line[line_at[m.start()]]:
            bound = _import_as_require(program.source, m, "require", any_module=True)
            if bound is not None:
                edits.append((m.start(), m.end(), bound))
    for m in _JS_BARE_IMPORT.finditer(masked):
        if not depths[m.start()] and answer_line[line_at[m.start()]]:
            spec = program.source[m.start("spec") : m.end("spec")]
            edits.append(
                (m.start(), m.end(), f"require({spec});" + "\n" * masked.count("\n", m.start(), m.end()))
            )
    for m in _JS_EXPORT.finditer(masked):
        if not depths[m.start()] and answer_line[line_at[m.start()]]:
            if m.group("list"):
                text = "\n" * masked.count("\n", m.start(), m.end())
            else:
                text = "exports.default =" if m.group("default") else ""
            edits.append((m.start(), m.end(), text))
    source = program.source
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return replace(program, source=source)


def _imports_as_requires(program: Program, answer_line: list[bool], require: str) -> Program:
    """``program`` with the tests' imports of ``assert`` (``import * as assert from 'assert'``,
    ``import assert from``, ``import { strict as assert } from``, ``import assert = require``) made
    calls of the harness's ``require`` (the tests' function's parameter): compiled (TypeScript),
    an import reached the module through the program's own ``require``, which an answer can
    reassign, and the tests' function, a script's, cannot hold an ``import`` (JavaScript)."""
    masked = mask(program.source, program.language)
    line_at = [i for i, line in enumerate(split_lines(masked, keepends=True)) for _ in line]
    depths = brace_depths(masked)
    source = program.source
    for m in reversed(list(_JS_IMPORT.finditer(masked))):
        if depths[m.start()] or answer_line[line_at[m.start()]]:
            continue
        bound = _import_as_require(program.source, m, require)
        if bound is not None:
            source = source[: m.start()] + bound + source[m.end() :]
    return replace(program, source=source)


def shield_js_tests(program: Program) -> Program:
    """JavaScript, TypeScript: ``program`` with the tests' ``require`` (outside the answer's lines)
    renamed ``moa_require_<key>``, the parameter of the tests' function that the launcher binds to
    Node's (``moa.eval.languages.jsrun``). The tests see the answer's globals: an answer's ``function
    require() { return { deepEqual() {} }; }`` (or ``require = ...``) handed them a fake assert.
    A JavaScript answer's ``import`` and ``export`` statements become what a script may hold.
    TypeScript gets ``split_marker`` after the answer's lines, where its compiled program is cut.
    A name the answer and the tests both declare at the top level is renamed in the tests' lines:
    an answer bringing its own ``const assert = require('assert')`` (with a demo) was a
    SyntaxError beside the tests' own, and failed though correct; so is every assignable name
    the tests after the answer declare there, which the answer could replace (``test = ...``)."""
    if program.language not in ("javascript", "typescript") or not program.first_line:
        return program
    lines = split_lines(program.source, keepends=True)
    answer_line = [False] * (len(lines) + 1)
    for first, last in [(program.first_line, program.last_line), *program.answer_elsewhere]:
        answer_line[first - 1 : last] = [True] * len(answer_line[first - 1 : last])
    program = _imports_as_requires(program, answer_line, f"moa_require_{js_key()}")
    if program.language == "javascript":
        program = _answer_as_script(program, answer_line)
    masked = mask(program.source, program.language)
    lines = split_lines(masked, keepends=True)
    line_at = [i for i, line in enumerate(lines) for _ in line]
    depths = brace_depths(masked)
    declared: tuple[set[str], set[str]] = (set(), set())  # (the tests', the answer's)
    # assignable and declared after the answer's lines (the tests'): an answer's bare
    # `test = () => {}` replaced the tests' `function test()` before its call, and a wrong answer
    # passed every real row. A `const` (`assert`, which an answer may call) cannot be assigned
    after: set[str] = set()
    for m in _JS_DECLARATION.finditer(masked):
        if depths[m.start()] == 0:
            line = line_at[m.start()]
            declared[answer_line[line]].add(m.group(1))
            fixed = m.group(0).startswith(("const", "import"))
            if line >= program.last_line and not answer_line[line] and not fixed:
                after.add(m.group(1))
    renames = {name: f"moa_tests_{name}_{js_key()}" for name in (declared[0] & declared[1]) | after}
    renames["require"] = f"moa_require_{js_key()}"
    # not a property (`x.name`, `x?.name`), but a spread is the name itself (`[...name()]`)
    names = re.compile(
        rf"(?<![\w$])(?<![^.]\.)(?<!^\.)(?:{'|'.join(map(re.escape, sorted(renames)))})(?![\w$])"
    )
    source = program.source
    for m in reversed(list(names.finditer(masked))):
        if not answer_line[line_at[m.start()]]:
            source = source[: m.start()] + renames[m.group(0)] + source[m.end() :]
    if program.language == "typescript":
        # on the last line, so no line of the answer moves (TypeScript hoists declarations); the
        # answer may still call `require`, which the tests declared for it
        source = (
            source.rstrip("\n") + f"\ndeclare var moa_require_{js_key()}: any; declare var require: any;\n"
        )
        # where the compiled program is cut in two (moa.eval.languages.jsrun): after the answer
        lines = split_lines(source, keepends=True)
        lines.insert(program.last_line, split_marker() + "\n")
        source = "".join(lines)
    return replace(program, source=source)


def with_end_marker(program: Program) -> Program | None:
    """``program`` with the harness that reports its tests' normal end (see the module docstring),
    or ``None`` when the exit status alone must decide: there is no ``main`` to put it in (the
    compiler then says what is wrong, or Go tests bring their own ``TestMain``), or the item's test
    program itself ends with ``exit(0)``. JavaScript and TypeScript are unchanged: their launcher
    (``moa.eval.languages.jsrun``) sees the tests' function return."""
    if _tests_exit_zero(program):
        return None
    match program.language:
        case "c" | "cpp":
            return _c(program)
        case "rust":
            return _rust(program)
        case "go":
            return _go(program)
        case "java":
            return _java(program)
    return program
