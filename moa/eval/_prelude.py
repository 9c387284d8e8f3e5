"""The program the sandbox runs: guards first, then the answer (this file is copied, not imported).

It reads ``config.json`` next to it, installs an audit hook that refuses writes outside the
sandbox directory, sockets, new processes, signals to other processes, ctypes and raising
resource limits, then runs ``answer.py`` and records how it ended in the status file. The audit
hook stops what ordinary code does by accident; it is not a boundary against code written to
escape it (that is the job of the namespace, the resource limits and the process-group kill).
"""

import builtins
import json
import os
import sys
import traceback
from typing import Any

_HERE = os.path.dirname(os.path.realpath(__file__))
with open(os.path.join(_HERE, "config.json"), encoding="utf-8") as _f:
    _CONFIG = json.load(_f)
with open(os.path.join(_HERE, "answer.py"), encoding="utf-8") as _f:
    _SOURCE = _f.read()
_DIR = os.path.realpath(_CONFIG["dir"])
_STATUS = os.path.join(_DIR, _CONFIG["status"])
_NETNS = os.path.exists(os.path.join(_DIR, _CONFIG["netns_marker"]))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_REFUSED_EVENTS = frozenset(
    {
        "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
        "os.startfile", "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
        "ctypes.dlopen", "ctypes.dlsym", "resource.setrlimit", "resource.prlimit", "os.symlink",
        "os.link", "os.chown", "os.setxattr", "os.removexattr",
    }
)  # fmt: skip
# event -> (positions of path arguments that must stay inside the directory, of dir_fd arguments)
_PATH_EVENTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "os.remove": ((0,), (1,)),
    "os.rename": ((0, 1), (2, 3)),
    "os.rmdir": ((0,), (1,)),
    "os.mkdir": ((0,), (2,)),
    "os.chmod": ((0,), (2,)),
    "os.truncate": ((0,), ()),
    "os.utime": ((0,), (3,)),
}


class SandboxRefused(PermissionError):
    pass


def _inside(path: object) -> bool:
    if isinstance(path, int):
        return True  # an already-open descriptor was checked when it was opened
    try:
        full = os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))  # type: ignore[arg-type]
    except Exception:
        return False
    return full == _DIR or full.startswith(_DIR + os.sep)


def _check(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            writing = any(c in mode for c in "wax+")
        else:
            writing = bool(isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and not _inside(path):
            raise SandboxRefused(f"sandbox: writing {path!r} outside the sandbox directory is refused")
    elif event.startswith("socket."):
        raise SandboxRefused(f"sandbox: network access ({event}) is refused")
    elif event in _REFUSED_EVENTS:
        raise SandboxRefused(f"sandbox: {event} is refused")
    elif event in _PATH_EVENTS:
        paths, dir_fds = _PATH_EVENTS[event]
        # paths relative to a directory descriptor cannot be resolved here: refuse them
        if any(i < len(args) and args[i] is not None for i in dir_fds):
            raise SandboxRefused(f"sandbox: {event} with dir_fd is refused")
        for i in paths:
            if not _inside(args[i]):
                raise SandboxRefused(
                    f"sandbox: {event} on {args[i]!r} outside the sandbox directory is refused"
                )


_busy: list[bool] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _busy:
        return  # events raised while checking (realpath) are our own
    _busy.append(True)
    try:
        _check(event, args)
    finally:
        _busy.pop()


if not _NETNS:
    import socket

    def _no_network(*args: object, **kwargs: object) -> Any:
        raise SandboxRefused("sandbox: network access is refused")

    for _name in ("socket", "create_connection", "socketpair"):
        setattr(socket, _name, _no_network)

sys.dont_write_bytecode = True
sys.addaudithook(_hook)


def _line(text: object, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


try:
    _code = compile(_SOURCE, "answer.py", "exec")
except SyntaxError as e:
    _status = {"kind": "syntax", "detail": f"line {e.lineno}: {e.msg}"}
except (ValueError, MemoryError, RecursionError) as e:
    _status = {"kind": "syntax", "detail": _line(e)}
else:
    _globals = {"__name__": _CONFIG["run_name"], "__builtins__": builtins, "__file__": "answer.py"}
    try:
        exec(_code, _globals)
        _status = {"kind": "ok"}
    except SystemExit as e:
        _status = {"kind": "exit", "detail": _line(repr(e.code))}
    except MemoryError:
        _status = {"kind": "memory"}
    except SandboxRefused as e:
        _status = {"kind": "blocked", "detail": _line(e)}
    except BaseException as e:
        _status = {"kind": "exception", "type": type(e).__name__, "detail": _line(e)}
        try:  # noqa: SIM105 (contextlib would be one more import before the answer runs)
            traceback.print_exc()
        except BaseException:
            pass

try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    pass
_fd = os.open(_STATUS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(_fd, json.dumps(_status).encode())
os.close(_fd)
# skip interpreter shutdown: leftover threads or atexit handlers of the answer must not run
os._exit(0)
