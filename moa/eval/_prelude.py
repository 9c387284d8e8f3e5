"""The harness the sandbox runs (copied next to the answer as ``run.py``; moa never imports it).

The verdict: the parent sent one random token per step (the answer's code, then each test) through a
pipe; this harness reads them all and closes that pipe before any answer code exists. Step ``i`` and
the write of token ``i`` to the verdict pipe are chained in C (``deque(chain(_step(exec, ...),
map(os.write, ...)), 0)``; ``_step`` is a generator so that a ``StopIteration`` cannot end a step
early) and run on a worker thread, so no Python frame, global or closure the answer can reach holds
a token: the answer's frames have no harness frame holding one above them,
the main thread keeps none, and the collector's lists are refused by the audit hook. The parent
passes the run only when it read every token, in order, and nothing else. A failure writes one
``F {json}`` line (no token: a forged failure only harms the forger).

The audit hook (``sys.addaudithook``; it cannot be removed, and its state lives in a closure) refuses
new processes, signals, ``ctypes`` and the other native escape hatches, raising limits, reading the
collector's object lists or other threads' frames, tracing, opening anything in ``/proc``, and
writes outside the work directory. Under bubblewrap the kernel enforces the real boundary; the hook
gives hostile code a clear reason and closes the ways to the tokens. What it cannot close is listed
in the README ("What the sandbox does and does not protect against").
"""

import _thread
import builtins
import itertools
import json
import os
import sys
import types
from _collections import deque  # type: ignore[import-not-found]
from _stat import S_ISDIR, S_ISLNK

TYPE_CHECKING = False  # typing itself would be one more import before the answer runs
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import CodeType

_exec = builtins.exec
_write = os.write
_read = os.read
_exit = os._exit
_Module = type(sys)
_HARNESS = globals()
_DONE = b"x"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_REFUSED_EVENTS = frozenset(
    {
        "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
        "os.startfile", "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
        "ctypes.dlopen", "ctypes.dlsym", "resource.setrlimit", "resource.prlimit", "os.symlink",
        "os.link", "os.chown", "os.setxattr", "os.removexattr", "sys._current_frames",
        "sys.settrace", "sys.setprofile", "sys.addaudithook", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "code.__new__", "sqlite3.enable_load_extension",
        "sqlite3.load_extension", "os.chroot", "pty.spawn", "os.chdir",
    }
)  # fmt: skip
# os.chdir (and os.fchdir, same event): the "open" event carries no dir_fd, so the hook checks a
# relative path against the working directory; were it allowed to move below a directory
# descriptor's, "../" * n + "proc/self/mem" with that dir_fd would be checked as a path inside and
# opened outside
# native modules that reach memory or processes without an audit event; posix and _signal are
# imported already, so an import event for them is a fresh copy of functions this harness disabled
_REFUSED_IMPORTS = frozenset({"_posixsubprocess", "ctypes", "_ctypes", "_ctypes_test", "posix", "_signal"})
_REFUSED_PREFIXES = ("_test", "_xx", "xxlimited", "ctypes.")
# event -> (positions of path arguments that must stay inside the directory, of dir_fd arguments)
_PATH_EVENTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "os.remove": ((0,), (1,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.rmdir": ((0,), (1,)),
    "os.mkdir": ((0,), (2,)),
    "os.chmod": ((0,), (2,)),
    "os.truncate": ((0,), ()),
    "os.utime": ((0,), (3,)),
    "shutil.copyfile": ((1,), ()),
    "shutil.copymode": ((1,), ()),
    "shutil.copystat": ((1,), ()),
    "shutil.copytree": ((1,), ()),
    "shutil.move": ((0, 1), ()),
    "shutil.rmtree": ((0,), (1,)),
    "shutil.make_archive": ((0,), ()),
}
_PRIVATE = ("/proc", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")
_AF_UNIX = 1  # socket.AF_UNIX on Linux (and macOS), without importing socket before the answer


class SandboxRefused(PermissionError):
    pass


def _refuse_process(*args: object, **kwargs: object) -> None:
    raise SandboxRefused("sandbox: starting a process (_posixsubprocess.fork_exec) is refused")


def _refuse_pidfd(*args: object, **kwargs: object) -> None:
    raise SandboxRefused("sandbox: pidfd signals are refused")


def _disable_unaudited() -> None:
    """Replace what reaches processes with no audit event: _posixsubprocess (a stub, so that
    ``import subprocess`` and ``asyncio`` still work) and the pidfd calls."""
    import _signal  # type: ignore[import-not-found]
    import posix

    sys.modules["_posixsubprocess"] = stub = _Module("_posixsubprocess")
    stub.fork_exec = _refuse_process  # type: ignore[attr-defined]
    for module, name in ((posix, "pidfd_open"), (os, "pidfd_open"), (_signal, "pidfd_send_signal")):
        if hasattr(module, name):
            setattr(module, name, _refuse_pidfd)


def _untrace_only(settrace: "Callable[..., None]") -> "Callable[[object], None]":
    """``sys.settrace`` that only removes tracing: ``doctest.testmod()`` calls ``sys.settrace(None)``
    when it is done (a correct answer calling it failed as ``sys.settrace is refused``). The audit
    event carries no argument, so the hook lets it through only from this function's frame."""

    def settrace_none(function: object) -> None:
        if function is not None:
            raise SandboxRefused("sandbox: sys.settrace is refused")
        settrace(None)

    return settrace_none


def _make_hook(workdir: str, untrace: "CodeType"):  # type: ignore[no-untyped-def]
    """The audit hook; every helper it calls is captured here, so patching ``os`` changes nothing."""
    lstat, stat_, readlink, getcwd, fspath = os.lstat, os.stat, os.readlink, os.getcwd, os.fspath
    caller, coroutine = sys._getframe, types.coroutine.__code__
    encoding = sys.getfilesystemencoding()
    is_str, is_bytes, is_int, list_, join = str, bytes, int, list, "/".join

    def text(path: object) -> str | None:
        if not isinstance(path, is_str | is_bytes):
            try:
                path = fspath(path)  # type: ignore[call-overload]
            except Exception:
                return None
        if isinstance(path, is_bytes):
            return path.decode(encoding, "surrogateescape")
        return path if isinstance(path, is_str) else None

    def absolute(path: str) -> str:
        return path if path.startswith("/") else getcwd() + "/" + path

    def normal(path: str) -> str:
        parts: list[str] = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/" + join(parts)

    def resolve(path: str) -> str | None:
        """realpath with captured C functions only; ``None`` for a symlink loop."""
        pending = list_(reversed(path.split("/")))
        done: list[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/" + join([*done, part])
            try:
                mode = lstat(candidate).st_mode
            except (OSError, ValueError):
                done.append(part)
                continue
            if S_ISLNK(mode):
                links += 1
                if links > 40:
                    return None
                try:
                    target = readlink(candidate)
                except OSError:
                    return None
                if target.startswith("/"):
                    done = []
                pending.extend(reversed(target.split("/")))
            else:
                done.append(part)
        return "/" + join(done)

    def under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    def where(path: object) -> tuple[str, str] | None:
        """(literal, resolved) absolute forms of ``path``; ``None`` when it cannot be known."""
        name = text(path)
        if name is None or "\0" in name:
            return None
        literal = normal(absolute(name))
        real = resolve(absolute(name))
        return None if real is None else (literal, real)

    # under bwrap /tmp is a link into the work directory's tmpfs (its writes were refused by the
    # path written, "/tmp/x", though they land inside); in the fallback it is the host's
    tmp = resolve("/tmp")
    roots = (workdir, "/tmp") if tmp is not None and under(tmp, (workdir,)) else (workdir,)

    def inside(path: object) -> bool:
        if isinstance(path, is_int):
            return True  # an open descriptor was checked when it was opened
        both = where(path)
        return both is not None and under(both[0], roots) and under(both[1], (workdir,))

    def check_open(path: object, mode: object, flags: object) -> None:
        if isinstance(path, is_int):
            return
        both = where(path)
        if both is None:
            raise SandboxRefused(f"sandbox: opening {path!r} is refused (path cannot be checked)")
        if any(under(p, _PRIVATE) for p in both):
            raise SandboxRefused(f"sandbox: opening {path!r} is refused")
        if isinstance(mode, is_str):
            writing = any(c in mode for c in "wax+")
        else:
            writing = isinstance(flags, is_int) and bool(flags & _WRITE_FLAGS)
        # /dev/null swallows what it is given (``contextlib.redirect_stdout`` to ``os.devnull``)
        inert = both == ("/dev/null", "/dev/null")
        if writing and not inert and not (under(both[0], roots) and under(both[1], (workdir,))):
            raise SandboxRefused(f"sandbox: writing {path!r} outside the sandbox directory is refused")
        if not under(both[1], (workdir,)):
            try:
                directory = S_ISDIR(stat_(both[1]).st_mode)
            except (OSError, ValueError):
                directory = False
            if directory:  # a directory descriptor would let dir_fd= calls go anywhere
                raise SandboxRefused(f"sandbox: opening directory {path!r} outside the sandbox is refused")

    def check(event: str, args: tuple[object, ...]) -> None:
        if event == "open":
            check_open(*args[:3])
        elif event == "import":
            name = args[0]
            if isinstance(name, is_str) and (name in _REFUSED_IMPORTS or name.startswith(_REFUSED_PREFIXES)):
                raise SandboxRefused(f"sandbox: importing {name} is refused")
        elif event == "socket.__new__" and len(args) > 1 and args[1] == _AF_UNIX:
            # an unconnected unix socket reaches nothing (connect, bind, sendto and sendmsg stay
            # refused); asyncio's event loop needs a socketpair as its self-pipe
            return
        elif event.startswith("socket."):
            raise SandboxRefused(f"sandbox: network access ({event}) is refused")
        elif event == "code.__new__" and caller(1).f_code is coroutine:
            return  # types.coroutine sets one flag on a code object that was compiled, not crafted
        elif event == "sys.settrace" and caller(1).f_code is untrace:
            return  # settrace_none, which passes on None alone
        elif event in _REFUSED_EVENTS:
            raise SandboxRefused(f"sandbox: {event} is refused")
        elif event == "sqlite3.connect":
            database = text(args[0]) if args else None
            if (
                database is None
                or database.startswith("file:")
                or (database != ":memory:" and database and not inside(database))
            ):
                raise SandboxRefused(
                    f"sandbox: sqlite3.connect({args[0]!r}) outside the sandbox directory is refused"
                )
        elif event in _PATH_EVENTS:
            paths, dir_fds = _PATH_EVENTS[event]
            # paths relative to a directory descriptor cannot be resolved here: refuse them
            if any(i < len(args) and args[i] is not None and args[i] != -1 for i in dir_fds):
                raise SandboxRefused(f"sandbox: {event} with dir_fd is refused")
            for i in paths:
                if i < len(args) and not inside(args[i]):
                    raise SandboxRefused(
                        f"sandbox: {event} on {args[i]!r} outside the sandbox directory is refused"
                    )

    return check


def _line(text: object, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(fd: int, status: dict[str, str]) -> None:
    # no contextlib here and below: one more import before the answer runs, for nothing
    try:  # noqa: SIM105
        _write(fd, b"F " + json.dumps(status).encode("utf-8", "replace") + b"\n")
    except BaseException:
        pass


def _describe(e: BaseException) -> dict[str, str]:
    if isinstance(e, SystemExit):
        return {"kind": "exit", "detail": _line(repr(e.code))}
    if isinstance(e, MemoryError):
        return {"kind": "memory"}
    if isinstance(e, SandboxRefused):
        return {"kind": "blocked", "detail": _line(e)}
    # the name too is the answer's: a line longer than the pipe's buffer would block the harness
    return {"kind": "exception", "type": _line(type(e).__name__, 200), "detail": _line(e)}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105
            stream.flush()
        except BaseException:
            pass


def _step(run: "Callable[..., object]", code: "CodeType", scope: "dict[str, object]") -> "Iterator[None]":
    """One step of the chain: a generator, because a ``StopIteration`` escaping a bare
    ``map(exec, ...)`` reads to ``chain`` as that step's normal end, and the next item, the step's
    token, would be written (``raise StopIteration`` in a wrong answer passed every test). PEP 479
    turns it into a ``RuntimeError`` here. Its frame holds the code and the scope, no token, and
    ``exec`` as an argument: a global would be looked up when the step runs, after the answer
    could replace it through this frame's ``f_globals``."""
    run(code, scope)
    return
    yield


def _unwrap(e: BaseException) -> BaseException:
    """The answer's ``StopIteration`` rather than the ``RuntimeError`` ``_step`` turned it into."""
    cause = e.__cause__
    if type(e) is RuntimeError and isinstance(cause, StopIteration):
        return cause
    return e


def _worker(holder: list[object], report: int, done: int) -> None:
    """The answer's thread: its only Python frames below the answer's are this one, holding no
    token (the chain is popped straight onto the call's stack), and the step's ``_step``."""
    try:
        deque(holder.pop(), 0)
    except BaseException as raised:
        e = _unwrap(raised)
        status = _describe(e)
        _fail(report, status)
        if status["kind"] == "exception":
            try:
                import traceback

                # from the answer's frame on: the harness's own are noise to the reader
                tb = e.__traceback__
                while tb is not None and tb.tb_frame.f_globals is _HARNESS:
                    tb = tb.tb_next
                traceback.print_exception(type(e), e, tb)
            except BaseException:
                pass
    finally:
        _flush()
        try:  # noqa: SIM105
            _write(done, _DONE)
        except BaseException:
            pass


def _tokens(fd: int) -> list[bytes]:
    data = b""
    while chunk := _read(fd, 65536):
        data += chunk
    os.close(fd)
    return [t + b"\n" for t in data.split(b"\n") if t]


def _compile(config: "dict[str, list[str]]", report: int) -> "list[CodeType] | None":
    with open("answer.py", encoding="utf-8") as f:
        source = f.read()
    tests = config.get("tests") or []
    codes: list[CodeType] = []
    for name, text in [("answer.py", source), *((f"test {i}", t) for i, t in enumerate(tests, 1))]:
        try:
            codes.append(compile(text, name, "exec", dont_inherit=True))
        except SyntaxError as e:
            _fail(report, {"kind": "syntax", "file": name, "detail": f"line {e.lineno}: {e.msg}"})
            return None
        except (ValueError, MemoryError, RecursionError) as e:
            _fail(report, {"kind": "syntax", "file": name, "detail": _line(e)})
            return None
    return codes


def _prepare(report: int) -> list[object] | None:
    """Read the tokens, compile, and build the chain: every secret lives and dies in this frame."""
    with open("config.json", encoding="utf-8") as f:
        config = json.load(f)
    tokens = _tokens(int(config["tokens_fd"]))
    codes = _compile(config, report)
    if codes is None:
        return None
    scope = {"__name__": config["run_name"], "__builtins__": builtins, "__file__": "answer.py"}
    steps: list[Iterable[object]] = []
    for code, token in zip(codes, tokens, strict=False):
        steps.append(_step(_exec, code, scope))
        steps.append(map(_write, (report,), (token,)))
    return [itertools.chain.from_iterable(steps)]


def _main() -> None:
    report = int(sys.argv[1])
    done_r, done_w = os.pipe()
    holder = _prepare(report)
    if holder is None:
        _flush()
        _exit(0)
    sys.dont_write_bytecode = True
    _disable_unaudited()
    sys.settrace = untrace = _untrace_only(sys.settrace)
    sys.addaudithook(_make_hook(os.path.realpath(os.getcwd()), untrace.__code__))
    _thread.start_new_thread(_worker, (holder, report, done_w))
    del holder
    try:  # noqa: SIM105
        _read(done_r, 1)
    except BaseException:
        pass
    # skip interpreter shutdown: leftover threads or atexit handlers of the answer must not run
    _exit(0)


_main()
