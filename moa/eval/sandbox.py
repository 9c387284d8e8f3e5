"""Run untrusted Python (a model's answer plus its tests) in a contained subprocess.

Layers, outermost first:

* a fresh temporary directory as cwd and HOME, deleted afterwards;
* an empty environment except PATH, HOME and LANG, so no API key reaches the child;
* ``start_new_session=True``: on timeout the whole process group is killed;
* resource limits set before exec: CPU seconds, address space, file size, processes, open
  files, no core dumps (as root RLIMIT_NPROC is not enforced, hence the next layer);
* network: a new user + network namespace (``unshare``) when the kernel allows it, leaving only a
  down loopback; otherwise a Python-level guard replacing ``socket.socket`` and friends.
  ``SandboxResult.network_isolation`` says which;
* an audit hook (see ``_prelude.py``) refusing writes outside the directory, sockets, fork/exec/
  subprocess/system, signals, ctypes and raising limits. Answers cannot start processes at all,
  which is what contains fork bombs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["SandboxResult", "run_python", "run_python_async"]

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MB = 1024 * 1024
_CHUNK = 65536

NetworkIsolation = Literal["namespace", "python-guard"]


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How a sandboxed run ended; ``passed`` only when the program ran to its end."""

    passed: bool
    reason: str
    stdout: str
    stderr: str
    returncode: int | None
    duration_s: float
    network_isolation: NetworkIsolation = "python-guard"


def _unshare_function() -> Callable[[int], int] | None:
    """``os.unshare`` (3.12+) or libc's, looked up in the parent: nothing may be imported
    between fork and exec."""
    native = getattr(os, "unshare", None)
    if native is not None:

        def call(flags: int) -> int:
            try:
                native(flags)
            except OSError:
                return -1
            return 0

        return call
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.unshare
    except (OSError, AttributeError):
        return None
    return fn


def _preexec(
    *, marker: str, unshare: Callable[[int], int] | None, limits: list[tuple[int, int]]
) -> Callable[[], None]:
    def setup() -> None:
        # runs in the child between fork and exec: syscalls only, no imports, no logging
        if unshare is not None and unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        for which, value in limits:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (value, value))
        with contextlib.suppress(ValueError, OSError):
            cpu = next(v for w, v in limits if w == resource.RLIMIT_CPU)
            # a soft limit one second below the hard one: SIGXCPU first, SIGKILL if ignored
            resource.setrlimit(resource.RLIMIT_CPU, (max(1, cpu - 1), cpu))

    return setup


async def _drain(stream: asyncio.StreamReader | None, sink: bytearray, limit: int, flag: list[bool]) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        room = limit - len(sink)
        if len(chunk) > room:
            flag.append(True)
        if room > 0:
            sink.extend(chunk[:room])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _reason(
    status: dict[str, Any] | None, returncode: int | None, limits: dict[str, float]
) -> tuple[bool, str]:
    if status is not None and returncode == 0:
        kind = status.get("kind")
        detail = str(status.get("detail", ""))
        if kind == "ok":
            return True, "passed"
        if kind == "syntax":
            return False, f"syntax error: {detail}"
        if kind == "memory":
            return False, f"memory limit ({limits['memory_mb']:g} MB)"
        if kind == "blocked":
            return False, f"blocked: {detail}"
        if kind == "exit":
            return False, f"exited before the end (SystemExit {detail})"
        name = str(status.get("type", "Exception"))
        text = f"{name}: {detail}" if detail else name
        return False, f"tests failed: {text}" if name == "AssertionError" else f"error: {text}"
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return False, f"cpu limit ({limits['cpu_s']:g}s)"
        if sig == signal.SIGXFSZ:
            return False, f"file size limit ({limits['file_size_mb']:g} MB)"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return False, f"killed by {name}"
    return False, f"exited with code {returncode} before the end"


async def run_python_async(
    code: str,
    *,
    timeout_s: float = 10,
    cpu_s: int = 10,
    memory_mb: int = 512,
    file_size_mb: int = 16,
    max_procs: int = 64,
    max_open_files: int = 256,
    output_limit: int = 10_000,
    run_name: str = "__main__",
) -> SandboxResult:
    """Run ``code`` in the sandbox; ``passed`` when it ran to its end without an exception.

    ``output_limit`` caps the characters kept of stdout and of stderr (the rest is read and
    dropped; the reason then says ``output truncated``). ``run_name`` is the ``__name__`` the
    code sees: pass something other than ``"__main__"`` to skip its ``if __name__ == ...`` demo.
    """
    workdir = tempfile.mkdtemp(prefix="moa-sandbox-")
    token = uuid.uuid4().hex
    marker = os.path.join(workdir, f".netns-{token}")
    status_path = os.path.join(workdir, f".status-{token}.json")
    prelude = Path(__file__).with_name("_prelude.py").read_text(encoding="utf-8")
    Path(workdir, "run.py").write_text(prelude, encoding="utf-8")
    Path(workdir, "answer.py").write_text(code, encoding="utf-8")
    config = {
        "dir": workdir,
        "status": os.path.basename(status_path),
        "netns_marker": os.path.basename(marker),
        "run_name": run_name,
    }
    Path(workdir, "config.json").write_text(json.dumps(config), encoding="utf-8")
    limits = [
        (resource.RLIMIT_CPU, max(1, int(cpu_s))),
        (resource.RLIMIT_AS, int(memory_mb) * _MB),
        (resource.RLIMIT_FSIZE, int(file_size_mb) * _MB),
        (resource.RLIMIT_NPROC, int(max_procs)),
        (resource.RLIMIT_NOFILE, int(max_open_files)),
        (resource.RLIMIT_CORE, 0),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
    out, err = bytearray(), bytearray()
    truncated: list[bool] = []
    timed_out = False
    started = time.monotonic()
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-B",
            os.path.join(workdir, "run.py"),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_preexec(marker=marker, unshare=_unshare_function(), limits=limits),
        )
        readers = asyncio.gather(
            _drain(proc.stdout, out, output_limit, truncated),
            _drain(proc.stderr, err, output_limit, truncated),
            proc.wait(),
        )
        try:
            await asyncio.wait_for(readers, timeout_s)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        duration = time.monotonic() - started
        # descendants that outlived the leader share its process group
        _kill_group(proc.pid)
        status: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(Path(status_path).read_text(encoding="utf-8"))
        isolation: NetworkIsolation = "namespace" if os.path.exists(marker) else "python-guard"
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        passed, reason = False, f"timeout after {timeout_s:.1f}s"
    else:
        limit_values: dict[str, float] = {
            "memory_mb": memory_mb,
            "cpu_s": cpu_s,
            "file_size_mb": file_size_mb,
        }
        passed, reason = _reason(status, proc.returncode, limit_values)
    if truncated:
        reason += "; output truncated"
    return SandboxResult(
        passed=passed,
        reason=reason,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        returncode=proc.returncode,
        duration_s=duration,
        network_isolation=isolation,
    )


def run_python(code: str, **limits: Any) -> SandboxResult:
    """Synchronous ``run_python_async`` (not from inside a running event loop)."""
    return asyncio.run(run_python_async(code, **limits))
