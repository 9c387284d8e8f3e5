"""Compiling and running a ``Program`` in the sandbox (``moa.eval.isolation``), each step under its
own limits, with identical compiles served from a bounded in-process cache.

The compile step runs in one sandbox and hands back its artifact (a binary, Java's classes as a
jar, TypeScript's JavaScript); the run step gets that artifact in a fresh sandbox. Managed runtimes
reserve address space far beyond what they use (a JVM, V8 and Go each fail to start under a 512 MB
RLIMIT_AS), so for them ``memory_mb`` caps the heap through the runtime's own flag (``-Xmx``,
``--max-old-space-size``, ``GOMEMLIMIT``) and the address-space limit is that plus a fixed allowance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import shlex
import tarfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal

from moa.errors import UserError
from moa.eval._verdict import TAMPERED, VerdictPipe, make_tokens, parse
from moa.eval.isolation import IsolationUnavailable, Limits, ProcessOutcome, run_isolated
from moa.eval.languages.control import (
    CONTROL_TIME_SHARE,
    Control,
    ControlCache,
    control_memory_mb,
    control_program,
)
from moa.eval.languages.diagnose import MAX_REASON, compile_reason, compile_stopped, failure_reason
from moa.eval.languages.gocache import GO_ENV, warm_go_cache
from moa.eval.languages.jsrun import LAUNCHER, JsRun, launcher_source, split_js
from moa.eval.languages.marker import shield_js_tests, with_end_marker
from moa.eval.languages.program import (
    Program,
    explicit_java_asserts,
    qualify_rust_macros,
    rename_tests_clashes,
    reset_answer_macros,
    shield_go_predeclared,
)
from moa.eval.languages.toolchains import Toolchain, javatuples_jar, node_permission_flags

__all__ = ["CompileLimitReached", "RunLimits", "Verdict", "clear_compile_cache", "compile_and_run"]

#: address space a runtime reserves beyond its heap (measured: below this they do not start)
_RUNTIME_ALLOWANCE_MB = {"java": 768, "javascript": 768, "typescript": 768, "go": 768}
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=32m",
              "-XX:CompressedClassSpaceSize=32m", "-Xshare:auto")  # fmt: skip
# languages whose programs run under the seccomp filter refusing new processes
_NO_FORK = frozenset({"c", "cpp", "rust", "go", "java"})
# no optimisation: compile time dominates, and tests are small
_GCC_FLAGS = ("-O0", "-pipe", "-fdiagnostics-color=never")
_ARTIFACT = {"c": "prog", "cpp": "prog", "rust": "prog", "go": "prog", "java": "classes.tar",
             "typescript": "main.js"}  # fmt: skip
# Java's classes reach the run step as a jar the JVM reads itself: unpacking the tar there took a
# shell, and a shell needs new processes, which the run step refuses
_RUN_ARTIFACT = {**_ARTIFACT, "java": "classes.jar"}
# the largest artifact a compile may hand over (a Go test binary is about 3 MB)
_MAX_ARTIFACT_MB = 48
# go build and rustc start many processes of their own
_MIN_COMPILE_PROCS = 256
_JAVATUPLES = ("Unit", "Pair", "Triplet", "Quartet", "Quintet", "Sextet", "Septet", "Octet", "Ennead",
               "Decade", "KeyValue", "LabelValue")  # fmt: skip


class CompileLimitReached(UserError):
    """A compile stopped by its own limits (``compile_memory_mb``, ``compile_timeout_s``), not by the
    answer's code: the compiler ran out of memory or time, or was killed by a signal, and a control
    compile (a trivial program in the same language, same sandbox and limits; see
    ``moa.eval.languages.control``) was stopped too, failed, or took over a quarter of
    ``compile_timeout_s``. Scoring the answer 0 would charge the configuration (or a busy machine)
    to the model, so the item is left unscored (an experiment reports it as "could not be scored"
    and retries it on the next run). When the control compiles well within the limits, the
    answer's code is to blame (a macro or template bomb): it scores 0 and nothing is raised."""


#: the types of Node's ``assert`` for tsc, which has no ``@types/node`` here: a TypeScript answer
#: importing it (``import assert from 'assert'``, ``import * as assert from 'node:assert'``) did
#: not compile. Every import of it is ``any``, as a ``require`` of it is
_TS_ASSERT_TYPES = (
    "moa_assert.d.ts",
    "".join(
        f"declare module '{m}';\n" for m in ("assert", "node:assert", "assert/strict", "node:assert/strict")
    ),
)

#: the program named when a compile was stopped by its limits
_COMPILER = {"c": "gcc", "cpp": "g++", "go": "go", "java": "javac", "rust": "rustc", "typescript": "tsc"}


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The limits of the compile step and of the run step, and the isolation both use."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    max_procs: int = 64
    output_limit: int = 10_000
    file_size_mb: int = 16
    compile_timeout_s: float = 60.0
    compile_memory_mb: int = 1536
    isolation: str = "auto"


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a program fared: ``passed``, the reason, and what ran where (for benchmarks and logs)."""

    passed: bool
    reason: str
    isolation: str = ""
    compile_s: float = 0.0
    run_s: float = 0.0
    cached: bool = False
    outcome: ProcessOutcome | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Compiled:
    artifact: bytes | None
    output: str
    timed_out: bool
    duration_s: float
    isolation: str
    #: why the compiler was stopped by its limits rather than by the code (``compile_stopped``)
    stopped: tuple[Literal["sandbox", "time", "memory", "signal"], str] | None = None
    #: how a control compile went after this one was stopped (``moa.eval.languages.control``)
    control: Control | None = None
    #: why the answer's code is to blame for the stop, when the control showed the limits adequate
    blame: str | None = None


class _Cache:
    """Compile results by program and toolchain, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int = 96 * 1024 * 1024, max_entries: int = 256) -> None:
        self._items: OrderedDict[str, _Compiled] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.max_bytes, self.max_entries = max_bytes, max_entries

    def get(self, key: str) -> _Compiled | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, value: _Compiled) -> None:
        size = len(value.artifact or b"") + len(value.output)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._items) > self.max_entries:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.artifact or b"") + len(old.output)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


_cache = _Cache()
_controls = ControlCache()


def clear_compile_cache() -> None:
    """Forget every cached compile and control compile (benchmarks measure cold compiles)."""
    _cache.clear()
    _controls.clear()


def _classpath(program: Program) -> tuple[str | None, str | None]:
    """Java: the javatuples jar when the program imports it, else why it cannot compile."""
    if "org.javatuples" not in program.source:
        return None, None
    jar = javatuples_jar()
    if jar is None:
        return None, "toolchain missing: javatuples not found (install: apt-get install libjavatuples-java)"
    return jar, None


def _without_unused_javatuples(source: str) -> str:
    """MultiPL-E imports javatuples in every Java prompt: drop the import when nothing uses it, so
    machines without the jar run the rest."""
    if any(re.search(rf"\b{name}\s*[<.(]", source) for name in _JAVATUPLES):
        return source
    return re.sub(r"^[ \t]*import[ \t]+org\.javatuples\.\*;[ \t]*$", "", source, flags=re.MULTILINE)


def _compile_argv(program: Program, tc: Toolchain, jar: str | None, limits: RunLimits) -> list[str] | None:
    name = program.filename
    match program.language:
        case "c":
            return [tc["gcc"], "-std=gnu11", *_GCC_FLAGS, "-o", "prog", name, "-lm"]
        case "cpp":
            return [tc["g++"], "-std=gnu++17", *_GCC_FLAGS, "-o", "prog", name]
        case "rust":
            # stripped: 0.3 MB instead of 4 MB in the compile cache (a panic still names its line)
            return [tc["rustc"], "--edition", "2021", "-C", "opt-level=0", "-C", "debuginfo=0", "-C", "strip=symbols",
                    "-A", "warnings", "--color", "never", "-o", "prog", name]  # fmt: skip
        case "go":
            go = [tc["go"], "test", "-c"] if program.go_test else [tc["go"], "build"]
            return [*go, "-ldflags=-s -w", "-o", "prog", name]
        case "java":
            # half the limit for the heap: the JVM's own reservations come on top of it
            flags = " ".join(f"-J{f}" for f in (*_JVM_FLAGS, f"-Xmx{limits.compile_memory_mb // 2}m"))
            cp = f"-cp {shlex.quote(jar)} " if jar else ""
            sources = shlex.join([name, *([program.launcher[0]] if program.launcher else [])])
            javac = f"{shlex.quote(tc['javac'])} {flags} -encoding UTF-8 -nowarn {cp}-d classes {sources}"
            # the class files alone: a `.` entry would make the run step's tar touch its work dir
            return ["/bin/sh", "-c", f"{javac} && cd classes && tar -cf ../classes.tar -- *"]
        case "typescript":
            return [tc["node"], tc["tsc"], "--target", "es2022", "--module", "commonjs", "--strict", "false",
                    "--skipLibCheck", "--pretty", "false", name, _TS_ASSERT_TYPES[0]]  # fmt: skip
    return None


def _run_argv(program: Program, tc: Toolchain, jar: str | None, limits: RunLimits) -> list[str]:
    match program.language:
        case "java":
            cp = f"{_RUN_ARTIFACT['java']}:{jar}" if jar else _RUN_ARTIFACT["java"]
            main = program.main_class or "Main"
            return [tc["java"], "-ea", *_JVM_FLAGS, f"-Xmx{limits.memory_mb}m", "-cp", cp, main]
        case "javascript" | "typescript":
            script = "main.js" if program.language == "typescript" else program.filename
            # the program may read the answer's part and the launcher, nothing else: ``/proc/self/mem``
            # (and child processes, workers, the inspector) would hand it the end-of-tests token;
            # the tests are in no file (``moa.eval.languages.jsrun``)
            permission = node_permission_flags(tc["node"])
            reads = [f"--allow-fs-read={script}", f"--allow-fs-read={LAUNCHER}"] if permission else []
            heap = f"--max-old-space-size={limits.memory_mb}"
            # an unhandled rejection (an async test's failure) is an uncaught exception, which the
            # launcher's capture callback turns into status 1, whatever listeners the program
            # added: an answer's `process.on('unhandledRejection', () => {})` swallowed it (1.0)
            rejections = "--unhandled-rejections=strict"
            return [tc["node"], heap, rejections, *permission, *reads, f"./{LAUNCHER}", script]
    return ["./prog"]


def _env(program: Program, tc: Toolchain, limits: RunLimits, *, compiling: bool) -> dict[str, str]:
    env = dict(tc.env)
    if program.language == "go":
        # no cgo: the build needs no C compiler; no toolchain download from a go.mod's `toolchain`
        env.update(GO_ENV)
        if not compiling:
            env["GOMEMLIMIT"] = f"{limits.memory_mb}MiB"
    return env


def _sources(program: Program) -> dict[str, bytes]:
    files = {program.filename: program.source}
    if program.language == "typescript":
        files[_TS_ASSERT_TYPES[0]] = _TS_ASSERT_TYPES[1]
    if program.launcher is not None:
        files[program.launcher[0]] = program.launcher[1]
    return {name: text.encode("utf-8", "surrogatepass") for name, text in files.items()}


def _key(program: Program, tc: Toolchain, argv: list[str], limits: RunLimits) -> str:
    launcher = program.launcher or ("", "")
    # the limits a compile can fail by: a compiler that could not start under 128 MB was served
    # from the cache to a later run giving it 4 GB (the time limit is not here: a compile that
    # ran out of time is cached only when blamed on the code, under ``_blamed_key``)
    step = (str(limits.compile_memory_mb), str(max(_MIN_COMPILE_PROCS, limits.max_procs)), limits.isolation)
    material = "\0".join(
        [program.language, program.filename, program.source, *launcher, *argv, *tc.programs.values(), *step]
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _blamed_key(key: str, limits: RunLimits) -> str:
    """Where a compile blamed on the answer's code is cached: a stop by time holds only under the
    same ``compile_timeout_s`` (a run giving the compiler longer compiles it again)."""
    return hashlib.sha256(f"{key}\0blamed\0{limits.compile_timeout_s!r}".encode()).hexdigest()


async def _compile(
    program: Program, tc: Toolchain, argv: list[str], limits: RunLimits
) -> tuple[_Compiled, bool]:
    key = _key(program, tc, argv, limits)
    found = _cache.get(key) or _cache.get(_blamed_key(key, limits))
    if found is not None:
        return found, True
    result = await _compile_once(program, tc, argv, limits)
    if result.stopped is not None and result.stopped[0] != "sandbox":
        result = await _judged(program, tc, argv, limits, result)
    if result.stopped is None:
        _cache.put(key, result)
    elif result.blame is not None:
        # a compile stopped by its limits may pass on a quieter machine (or after a signal from
        # outside): it is served again only when the control put the blame on the code
        _cache.put(_blamed_key(key, limits), result)
    return result, False


async def _compile_once(program: Program, tc: Toolchain, argv: list[str], limits: RunLimits) -> _Compiled:
    """One compile in the sandbox, uncached."""
    # javac is a JVM (its heap capped by -J-Xmx); the other compilers are native programs
    allowance = _RUNTIME_ALLOWANCE_MB["java"] if program.language == "java" else 0
    step = Limits(
        timeout_s=limits.compile_timeout_s,
        memory_mb=limits.compile_memory_mb + allowance,
        max_procs=max(_MIN_COMPILE_PROCS, limits.max_procs),
        max_output_bytes=65536,
        disk_mb=512,
        max_file_mb=_MAX_ARTIFACT_MB,
    )
    artifact = _ARTIFACT[program.language]
    binds = tc.binds
    if program.language == "go" and (warm := await asyncio.to_thread(warm_go_cache, tc["go"])):
        command = argv[2] if argv[:2] == ["/bin/sh", "-c"] else shlex.join(argv)
        argv = [
            "/bin/sh",
            "-c",
            f'mkdir -p "$HOME/.cache" && cp -r {shlex.quote(warm)} "$HOME/.cache/go-build" && {command}',
        ]
        binds = (*binds, warm)
    outcome, kept = await run_isolated(
        argv,
        files=_sources(program),
        limits=step,
        isolation=limits.isolation,
        readonly_binds=binds,
        keep=[artifact],
        env=_env(program, tc, limits, compiling=True),
    )
    built = kept.get(artifact) if outcome.returncode == 0 else None
    if built is not None and program.language == "java":
        built = _jar(built)
    output = outcome.stdout + "\n" + outcome.stderr
    if outcome.returncode == 0 and built is None:
        output = f"error: the compiled program is missing or over {_MAX_ARTIFACT_MB} MB"
    stopped = None
    if built is None:
        stopped = compile_stopped(
            program.language, output, timed_out=outcome.timed_out, returncode=outcome.returncode
        )
    return _Compiled(built, output, outcome.timed_out, outcome.duration_s, outcome.isolation, stopped)


def _control_setup(
    program: Program, tc: Toolchain, limits: RunLimits, *, answer_headers: bool = True
) -> tuple[Program, list[str], RunLimits, str]:
    """The control for ``program`` (``moa.eval.languages.control``): its program, command, limits
    and the key its result is remembered by."""
    probe = control_program(program, answer_headers=answer_headers)
    # well within the limits: a quarter of the time (a control past it is not clear, so waiting
    # longer would be lost), half the memory where a share of it means something (control.py)
    share = replace(
        limits,
        compile_timeout_s=limits.compile_timeout_s / CONTROL_TIME_SHARE,
        compile_memory_mb=control_memory_mb(program.language, limits.compile_memory_mb),
    )
    argv = _compile_argv(probe, tc, None, share)
    assert argv is not None  # only asked for a language with a compile step
    # with the time limit: whether the control is clear depends on it
    material = f"{_key(probe, tc, argv, share)}\0control\0{limits.compile_timeout_s!r}"
    return probe, argv, share, hashlib.sha256(material.encode()).hexdigest()


async def _control(program: Program, tc: Toolchain, limits: RunLimits) -> Control:
    """How a control compile for ``program`` goes under ``limits`` on this machine now. One that
    found the limits inadequate is remembered a short while (``_judged`` skips the second compile);
    a clear one never is: it runs beside the second compile at no cost in time, and a quiet moment
    reused into a busy spell would charge a correct answer with 0."""
    _, _, _, key = _control_setup(program, tc, limits)
    control = await _control_once(program, tc, limits, answer_headers=True)
    if not control.compiled and control.stopped is None and program.language in ("c", "cpp"):
        # one of the answer's headers does not compile alone (missing, or an `#error` guard):
        # the item's headers measure the machine as well
        control = await _control_once(program, tc, limits, answer_headers=False)
    if not control.clear(limits.compile_timeout_s):
        _controls.put(key, control)
    return control


async def _control_once(
    program: Program, tc: Toolchain, limits: RunLimits, *, answer_headers: bool
) -> Control:
    probe, argv, share, _ = _control_setup(program, tc, limits, answer_headers=answer_headers)
    done = await _compile_once(probe, tc, argv, share)
    return Control(done.artifact is not None, done.duration_s, done.stopped[0] if done.stopped else None)


async def _judged(
    program: Program, tc: Toolchain, argv: list[str], limits: RunLimits, compiled: _Compiled
) -> _Compiled:
    """``compiled``, stopped by its limits, judged: compiled again beside a control compile. A
    second compile the limits do not stop stands (the first met a passing spell of load); stopped
    again, the answer's code is blamed when the control compiled well within the same limits on
    this machine at that moment, else the stop stays the limits' (``CompileLimitReached``)."""
    recent = _controls.get(_control_setup(program, tc, limits)[3])
    if recent is not None:
        # the limits were inadequate a moment ago: compiling again would not change the verdict
        return replace(compiled, control=recent)
    second = asyncio.ensure_future(_compile_once(program, tc, argv, limits))
    try:
        control = await _control(program, tc, limits)
        again = await second
    finally:
        if not second.done():
            second.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await second
    if again.stopped is None or again.stopped[0] == "sandbox":
        return again
    if not control.clear(limits.compile_timeout_s):
        return replace(again, control=control)
    return replace(again, control=control, blame=_blame(program, again, limits, control))


def _blame(program: Program, compiled: _Compiled, limits: RunLimits, control: Control) -> str:
    """The line scoring an answer 0 whose compile the limits stopped while a control's did not."""
    assert compiled.stopped is not None  # only asked of a stopped compile
    kind, shown = compiled.stopped
    memory = f"compile_memory_mb: {limits.compile_memory_mb}"
    took = f"a control compile took {control.duration_s:.1f} s"
    if kind == "time":
        what = f"ran past compile_timeout_s: {limits.compile_timeout_s:g} while {took}"
    else:
        share = control_memory_mb(program.language, limits.compile_memory_mb)
        took += f" under {share} MB"
        if kind == "memory":
            what = f"ran out of memory under {memory} ({shown[:120]}) while {took}"
        else:
            what = f"was killed by {shown} under {memory} while {took}"
    compiler = _COMPILER.get(program.language, program.language)
    line = (f"the answer's code does not compile within the limits: the compiler ({compiler}) {what} "
            "(the answer's code is to blame, e.g. a macro or template bomb)")  # fmt: skip
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def _jar(tar: bytes) -> bytes | None:
    """The class files of javac's tar as a jar (a zip, stored), which ``java -cp`` reads as it is."""
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as source, zipfile.ZipFile(out, "w") as jar:
            for member in source:
                data = source.extractfile(member) if member.isreg() else None
                if data is not None:
                    jar.writestr(zipfile.ZipInfo(member.name.removeprefix("./")), data.read())
    except (tarfile.TarError, OSError):
        return None
    return out.getvalue()


def _no_fork(program: Program, tc: Toolchain) -> bool:
    """Whether the run step gets the seccomp filter refusing new processes. A wrong answer forked
    at each call, tried a value in the copy and kept the one whose copy got past the tests (1.0);
    a Java one started a JVM on its own classes for each guess. Node 20+ refuses child processes
    by its permission model, and an older Node, which has none, gets the filter instead (a child
    read the parent's memory)."""
    if program.language in ("javascript", "typescript"):
        return not node_permission_flags(tc["node"])
    return program.language in _NO_FORK


async def _run_step(
    argv: list[str],
    files: dict[str, bytes],
    step: Limits,
    program: Program,
    tc: Toolchain,
    limits: RunLimits,
    js: JsRun | None = None,
) -> tuple[ProcessOutcome, Literal["ended", "missing", "tampered"]]:
    """Run the built program with a fresh token on stdin and the end-of-tests pipe (see
    ``moa.eval.languages.marker``): how it ended, and whether the pipe held exactly the token and
    the harness's secret (the Python sandbox's verdict channel, with one step). JavaScript's
    tests follow the token on stdin (``js``)."""
    token = make_tokens(1)[0]
    # bwrap as root runs the program as another uid, which reopens the pipe through /proc (Java)
    with VerdictPipe(mode=0o622) as end:
        outcome, _ = await run_isolated(
            argv,
            files=files,
            limits=step,
            isolation=limits.isolation,
            stdin=js.stdin(end.write_fd, token.decode()) if js else b"%d %s\n" % (end.write_fd, token),
            readonly_binds=tc.binds,
            pass_fds=(end.write_fd,),
            env=_env(program, tc, limits, compiling=False),
            no_fork=_no_fork(program, tc),
        )
        written = end.collect(4096)
    if parse(written, [token + program.end_suffix.encode()]).finished:
        return outcome, "ended"
    return outcome, "missing" if not written else "tampered"


def _stopped(program: Program, compiled: _Compiled, limits: RunLimits) -> str:
    """What stopped the compiler and which limit to raise, in one line."""
    assert compiled.stopped is not None  # only asked of a stopped compile
    kind, shown = compiled.stopped
    memory = f"compile_memory_mb: {limits.compile_memory_mb}"
    if kind == "time":
        what = (f"ran past compile_timeout_s: {limits.compile_timeout_s:g} (a busy machine, a heavy "
                f"compile, or a compiler short of memory under {memory})")  # fmt: skip
        limit = "compile_timeout_s (or compile_memory_mb)"
    elif kind == "memory":
        what, limit = f"ran out of memory under {memory} ({shown[:160]})", "compile_memory_mb"
    else:
        what, limit = f"was killed by {shown} under {memory} (most often: out of memory)", "compile_memory_mb"
    compiler = _COMPILER.get(program.language, program.language)
    control = f", and {compiled.control.describe()}" if compiled.control else ""
    return f"the compiler ({compiler}) {what}{control}: not the answer's fault; raise {limit} to score it"


async def compile_and_run(program: Program, tc: Toolchain, limits: RunLimits) -> Verdict:
    """Compile ``program`` (when its language has a compile step), run it, and say how it went.

    A compile stopped by ``limits`` (out of memory or time, or killed by a signal) is followed by a
    control compile (``moa.eval.languages.control``): when the control compiled well within the
    same limits, the answer's code is to blame and it fails with the reason; otherwise
    ``CompileLimitReached``. ``IsolationUnavailable`` when the compile's sandbox could not start:
    neither of these is the answer's failure."""
    if program.language == "java":
        program = replace(program, source=_without_unused_javatuples(program.source))
    program = rename_tests_clashes(shield_go_predeclared(program))
    program = shield_js_tests(explicit_java_asserts(qualify_rust_macros(program)))
    marked = with_end_marker(program)
    # after the marker: its renaming of C's __assert_fail follows the answer's lines, and an
    # answer's own `#define __assert_fail` must be undone before it, not after
    program = reset_answer_macros(marked or program)
    jar, missing = _classpath(program) if program.language == "java" else (None, None)
    if missing is not None:
        return Verdict(False, missing)
    argv = _compile_argv(program, tc, jar, limits)
    files = _sources(program)
    compile_s, cached = 0.0, False
    if argv is not None:
        compiled, cached = await _compile(program, tc, argv, limits)
        compile_s = compiled.duration_s
        if compiled.blame is not None:
            return Verdict(False, compiled.blame, compiled.isolation, compile_s, cached=cached)
        if compiled.artifact is None:
            # the sandbox failing to start is the machine's fault, never the answer's
            if compiled.stopped is not None and compiled.stopped[0] == "sandbox":
                raise IsolationUnavailable(f"the compile's sandbox failed: {compiled.stopped[1]}")
            if compiled.stopped is not None:
                raise CompileLimitReached(_stopped(program, compiled, limits))
            reason = compile_reason(program, compiled.output)
            return Verdict(False, reason, compiled.isolation, compile_s, cached=cached)
        files = {_RUN_ARTIFACT[program.language]: compiled.artifact}
    step = Limits(
        timeout_s=limits.timeout_s,
        cpu_s=limits.cpu_s,
        memory_mb=limits.memory_mb + _RUNTIME_ALLOWANCE_MB.get(program.language, 0),
        max_procs=limits.max_procs,
        max_output_bytes=max(limits.output_limit, 1024),
        max_file_mb=limits.file_size_mb,
    )
    js = None
    if program.language in ("javascript", "typescript"):
        # the answer's part is the only file of the program; the tests go on stdin
        script = _RUN_ARTIFACT["typescript"] if program.language == "typescript" else program.filename
        typescript = program.language == "typescript"
        js = split_js(program, files[script].decode("utf-8", "surrogatepass") if typescript else None)
        if js.refused:
            return Verdict(False, js.refused, compile_s=compile_s, cached=cached)
        files = {script: js.answer.encode("utf-8", "surrogatepass"), LAUNCHER: launcher_source().encode()}
    argv = _run_argv(program, tc, jar, limits)
    outcome, ended = await _run_step(argv, files, step, program, tc, limits, js)
    # JavaScript's launcher writes the token however its tests end, `process.exit(0)` included
    # (moa.eval.languages.jsrun): the exit status alone never decides there
    if outcome.returncode == 0 and (ended == "ended" or (marked is None and js is None)):
        return Verdict(True, "passed", outcome.isolation, compile_s, outcome.duration_s, cached, outcome)
    if outcome.returncode == 0:
        reason = "exited with code 0 before the end of the tests" if ended == "missing" else TAMPERED
        return Verdict(False, reason, outcome.isolation, compile_s, outcome.duration_s, cached, outcome)
    reason = failure_reason(
        program,
        returncode=outcome.returncode,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        timed_out=outcome.timed_out,
        timeout_s=limits.timeout_s,
        killed_by=outcome.killed_by,
        memory_mb=limits.memory_mb,
        cpu_s=limits.cpu_s,
        file_size_mb=limits.file_size_mb,
    )
    if outcome.output_truncated:
        reason += "; output truncated"
    return Verdict(False, reason, outcome.isolation, compile_s, outcome.duration_s, cached, outcome)
