"""Run one untrusted program (any language) in a private, limited sandbox and collect what it did.

``run_isolated(argv, files=..., limits=...)`` writes ``files`` into a fresh work directory (the
program's cwd and ``$HOME``), runs ``argv`` there, and returns a ``ProcessOutcome`` plus the
``keep`` files read back. Paths in ``argv`` should be relative to the work directory (or a system or
``readonly_binds`` path): its absolute location differs between the two isolations.

``isolation="bwrap"`` (Linux with bubblewrap; the default ``"auto"`` picks it when it works)
guarantees, whatever the program does:

* it sees read-only system directories (``/usr``, ``/bin``, ``/lib*``, a few files of ``/etc``, never
  ``/etc/shadow``), ``readonly_binds`` and nothing else of the host: no home, project, host ``/proc``
  or other process; its environment holds only ``PATH``, ``HOME``, ``LANG`` and ``env``;
* its own pid, network (a down loopback only), ipc, uts and mount namespaces; it runs as an
  unprivileged uid without capabilities (see ``moa.eval._bwrap`` for how, as root or not);
* its writes land in one tmpfs of ``limits.disk_mb`` (work directory and ``/tmp`` together), no file
  over ``limits.max_file_mb``; address space, processes (threads count), open files and CPU time
  are limited; no core dumps;
* at the end (exit, timeout or the caller cancelled) every process of the sandbox is killed with the
  pid namespace and its files vanish with the tmpfs: nothing outlives the call.

``isolation="fallback"`` (no bwrap, or bwrap cannot create namespaces here) keeps the older layers:
a host temporary directory, a clean environment, the same rlimits, a new process group killed at the
end, and a user + network namespace when the kernel allows one. It does **not** stop reading the
host's files, a process that leaves the process group, or writes outside the directory by code
that does not cooperate. ``"auto"`` says which it used in ``ProcessOutcome.isolation`` and logs a
warning once when it falls back; ``"bwrap"`` where bwrap does not work raises ``IsolationUnavailable``.
The environment variable ``MOA_SANDBOX_ISOLATION`` (``auto``/``bwrap``/``fallback``) replaces the
``"auto"`` default, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from moa.errors import UserError
from moa.eval import _bwrap
from moa.eval._fallback import fallback_preexec

__all__ = [
    "ISOLATION_ENV",
    "IsolationUnavailable",
    "Limits",
    "ProcessOutcome",
    "isolation_available",
    "resolve_isolation",
    "run_isolated",
]

ISOLATION_ENV = "MOA_SANDBOX_ISOLATION"
Isolation = Literal["auto", "bwrap", "fallback"]
_MB = 1024 * 1024
_CHUNK = 65536
# after the program ended, how long its output pipes may stay open (a straggler holding them)
_DRAIN_GRACE_S = 2.0
_log = logging.getLogger(__name__)
_warned: list[bool] = []


class IsolationUnavailable(UserError):
    """``isolation="bwrap"`` was asked for where bubblewrap cannot build the sandbox."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use. Compilers need more processes and memory than the programs they build."""

    timeout_s: float = 10.0
    """Wall clock from start to kill."""
    memory_mb: int = 512
    """Address space of each process (RLIMIT_AS)."""
    max_procs: int = 64
    """Processes and threads of the sandbox (RLIMIT_NPROC)."""
    max_output_bytes: int = 65536
    """Bytes kept of stdout and of stderr each; the rest is read and dropped."""
    disk_mb: int = 64
    """Everything written to the work directory and /tmp together (bwrap; fallback: not enforced)."""
    max_file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), and largest ``keep`` file read back."""
    cpu_s: int | None = None
    """CPU seconds of each process (RLIMIT_CPU); ``None``: the timeout rounded up."""
    max_open_files: int = 256
    """Open descriptors of each process (RLIMIT_NOFILE)."""


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How the program ended.

    ``returncode`` is negative for a signal (``-9``), ``None`` when it never ended on its own (timeout).
    Under bwrap a signal is seen through the sandbox's init as the shell-style ``128 + N`` and
    reported as ``-N``: a program exiting with a code above 128 by itself reads as that signal.
    ``killed_by`` is ``"timeout"`` when moa killed it at the deadline, else the signal's name
    (``"SIGKILL"``, ``"SIGXCPU"`` for the CPU limit, ``"SIGXFSZ"`` for the file size limit), else ``None``.
    A memory limit shows as whatever the program does when an allocation fails.
    """

    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    output_truncated: bool
    isolation: str
    killed_by: str | None
    network_isolated: bool = True
    """Whether the program had its own network namespace (always under bwrap)."""


def isolation_available() -> tuple[bool, str]:
    """Whether ``isolation="bwrap"`` works on this machine, and if not, why (probed once)."""
    plan, why = _bwrap.bwrap_status()
    return plan is not None, why


def resolve_isolation(isolation: str = "auto") -> Literal["bwrap", "fallback"]:
    """The isolation a run asking for ``isolation`` gets (``"auto"`` reads ``MOA_SANDBOX_ISOLATION``)."""
    if isolation == "auto":
        isolation = os.environ.get(ISOLATION_ENV, "auto").strip().lower() or "auto"
        if isolation not in ("auto", "bwrap", "fallback"):
            raise UserError(f"{ISOLATION_ENV}={isolation!r}: expected auto, bwrap or fallback")
    if isolation == "fallback":
        return "fallback"
    if isolation not in ("auto", "bwrap"):
        raise UserError(f"isolation={isolation!r}: expected auto, bwrap or fallback")
    plan, why = _bwrap.bwrap_status()
    if plan is not None:
        return "bwrap"
    if isolation == "bwrap":
        raise IsolationUnavailable(f"isolation 'bwrap' is not available: {why}")
    if not _warned:
        _warned.append(True)
        _log.warning("sandbox: %s; running programs with the weaker fallback isolation", why)
    return "fallback"


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise ValueError(f"work-dir file {name!r} must be a plain relative path (no '..', no leading '/')")
    return name


def _mode(content: bytes) -> int:
    # a binary or a script handed over from a compile step must stay executable
    return 0o777 if content[:4] == b"\x7fELF" or content[:2] == b"#!" else 0o666


_RLIMIT_IDS = {
    "cpu": resource.RLIMIT_CPU,
    "as": resource.RLIMIT_AS,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
    "nproc": resource.RLIMIT_NPROC,
}


def _rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    """(prlimit name, soft, hard) of every limit the program runs under."""
    cpu = max(1, int(limits.cpu_s if limits.cpu_s is not None else math.ceil(limits.timeout_s)))
    return [
        # the soft limit is the limit (SIGXCPU), the hard one a second later (SIGKILL, if the
        # program ignores SIGXCPU); a soft limit one second below cut a 4-second limit at 3 seconds
        ("cpu", cpu, cpu + 1),
        ("as", int(limits.memory_mb) * _MB, int(limits.memory_mb) * _MB),
        ("fsize", int(limits.max_file_mb) * _MB, int(limits.max_file_mb) * _MB),
        ("nofile", int(limits.max_open_files), int(limits.max_open_files)),
        ("core", 0, 0),
        ("nproc", int(limits.max_procs), int(limits.max_procs)),
    ]


def _set_rlimits(values: list[tuple[str, int, int]]) -> Callable[[], None]:
    ids = [(_RLIMIT_IDS[name], soft, hard) for name, soft, hard in values]

    def setup() -> None:
        # between fork and exec: syscalls only
        for which, soft, hard in ids:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (soft, hard))

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


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


@dataclass(slots=True)
class _Spawn:
    """One prepared process: its command line, environment, working directory and descriptors."""

    argv: list[str]
    env: dict[str, str] | None
    cwd: str | None
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None] | None


async def _run(spawn: _Spawn, limits: Limits, stdin: bytes | None) -> ProcessOutcome:
    """Start, feed, drain, time out and kill (isolation and signal names are filled in later)."""
    out, err = bytearray(), bytearray()
    truncated: list[bool] = []
    timed_out = False
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *spawn.argv,
        cwd=spawn.cwd,
        env=spawn.env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        pass_fds=spawn.pass_fds,
        preexec_fn=spawn.preexec,
    )
    readers = [
        asyncio.ensure_future(_drain(proc.stdout, out, limits.max_output_bytes, truncated)),
        asyncio.ensure_future(_drain(proc.stderr, err, limits.max_output_bytes, truncated)),
        asyncio.ensure_future(_feed(proc, stdin)),
    ]
    try:
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout_s)
        except TimeoutError:
            timed_out = True
        duration = time.monotonic() - started
        # bwrap: the sandbox's init dies with it (--die-with-parent) and takes the pid namespace
        # along; fallback: stragglers that stayed in the process group
        _kill_group(proc.pid)
        await proc.wait()
        await asyncio.wait(readers, timeout=_DRAIN_GRACE_S)
    finally:
        for task in readers:
            task.cancel()
        if proc.returncode is None:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return ProcessOutcome(
        returncode=None if timed_out else proc.returncode,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        duration_s=duration,
        timed_out=timed_out,
        output_truncated=bool(truncated),
        isolation="",
        killed_by="timeout" if timed_out else None,
    )


def _with_signal(outcome: ProcessOutcome, isolation: str, *, network_isolated: bool = True) -> ProcessOutcome:
    code = outcome.returncode
    if isolation == "bwrap" and code is not None and 128 < code <= 128 + 64:
        code = -(code - 128)  # the sandbox's init reports a signal the way a shell does
    killed = outcome.killed_by
    if killed is None and code is not None and code < 0:
        killed = _signal_name(-code)
    return ProcessOutcome(
        returncode=code,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        duration_s=outcome.duration_s,
        timed_out=outcome.timed_out,
        output_truncated=outcome.output_truncated,
        isolation=isolation,
        killed_by=killed,
        network_isolated=network_isolated,
    )


def _memfd(name: str, content: bytes) -> int:
    # in memory, never on the host's disk; pass_fds hands it to bwrap alone, which copies it in
    fd = os.memfd_create(f"moa-{os.path.basename(name)}", os.MFD_CLOEXEC)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _keep_wrapper(argv: Sequence[str], keep: Sequence[str], fd: int) -> list[str]:
    """``sh`` running the program, then streaming the ``keep`` files out through ``fd`` as a tar."""
    names = " ".join("'" + k.replace("'", "'\\''") + "'" for k in keep)
    script = (
        # /proc/self/fd/N, not >&N: dash cannot redirect a descriptor above 9
        f'"$@"; s=$?; cd {_bwrap.WORKDIR} && '
        f"tar -cf /proc/self/fd/{fd} --no-recursion -- {names} 2>/dev/null; exit $s"
    )
    return ["/bin/sh", "-c", script, "sh", *argv]


def _read_tar(data: bytes, keep: Sequence[str], cap: int) -> dict[str, bytes]:
    kept: dict[str, bytes] = {}
    wanted = set(keep)
    with (
        contextlib.suppress(tarfile.TarError, EOFError, OSError),
        tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar,
    ):
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isreg() and member.size <= cap:
                f = tar.extractfile(member)
                if f is not None:
                    kept[name] = f.read(cap)
    return kept


async def _read_pipe(fd: int, limit: int) -> bytes:
    """Everything written to the pipe read end ``fd`` until EOF, at most ``limit`` bytes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    protocol = asyncio.StreamReaderProtocol(reader)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
    data = bytearray()
    try:
        while chunk := await reader.read(_CHUNK):
            data.extend(chunk[: max(0, limit - len(data))])
    finally:
        transport.close()
    return bytes(data)


async def _run_bwrap(
    plan: _bwrap.BwrapPlan,
    argv: Sequence[str],
    files: Mapping[str, bytes],
    limits: Limits,
    stdin: bytes | None,
    readonly_binds: Sequence[str],
    keep: Sequence[str],
    pass_fds: Sequence[int],
    env: Mapping[str, str],
    no_fork: bool = False,
) -> tuple[ProcessOutcome, dict[str, bytes]]:
    binds = [_bwrap.check_bind(p) for p in readonly_binds]
    fds: dict[str, tuple[int, int]] = {}
    status_r, status_w = os.pipe()
    keep_r, keep_w = os.pipe() if keep else (-1, -1)
    if keep:
        # tar reopens it through /proc/self/fd as the sandbox's uid: the pipe must allow that
        os.fchmod(keep_w, 0o622)
    keep_cap = len(keep) * (limits.max_file_mb * _MB + 1024) + 10240
    uid = _bwrap.reserve_uid() if plan.as_root else None
    keep_task: asyncio.Future[bytes] | None = None
    seccomp = _bwrap.no_fork_filter() if no_fork else None
    seccomp_fd = -1
    try:
        if seccomp is not None:
            seccomp_fd = _memfd("no-fork.bpf", seccomp)
        for name, content in files.items():
            fds[name] = (_memfd(name, content), _mode(content))
        command = _keep_wrapper(argv, keep, keep_w) if keep else list(argv)
        full = _bwrap.build_argv(
            plan,
            command,
            file_fds=fds,
            readonly_binds=binds,
            disk_bytes=limits.disk_mb * _MB,
            rlimits=_rlimits(limits),
            status_fd=status_w,
            uid=uid,
            env=env,
            seccomp_fd=seccomp_fd if seccomp_fd >= 0 else None,
        )
        extra = [fd for fd, _ in fds.values()] + [status_w] + ([keep_w] if keep else [])
        extra += [seccomp_fd] if seccomp_fd >= 0 else []
        spawn = _Spawn(
            argv=full,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd="/",
            pass_fds=(*extra, *pass_fds),
            preexec=None,
        )
        if keep:
            keep_task = asyncio.ensure_future(_read_pipe(keep_r, keep_cap))
            keep_r = -1
        try:
            outcome = await _run(spawn, limits, stdin)
        finally:
            for fd in (status_w, keep_w, seccomp_fd, *(fd for fd, _ in fds.values())):
                if fd >= 0:
                    os.close(fd)
            status_w = keep_w = seccomp_fd = -1
            fds.clear()
        with os.fdopen(status_r, "rb", buffering=0) as f:
            status_r = -1
            os.set_blocking(f.fileno(), False)
            try:
                status = f.read(8192) or b""
            except BlockingIOError:
                status = b""
        # bwrap reports the command's exit; without it, bwrap itself stopped while building
        if b'"exit-code"' not in status and not outcome.timed_out:
            raise IsolationUnavailable(f"bwrap failed to build the sandbox: {outcome.stderr.strip()[-500:]}")
        kept: dict[str, bytes] = {}
        if keep_task is not None:
            try:
                data = await asyncio.wait_for(keep_task, _DRAIN_GRACE_S)
            except TimeoutError:
                data = b""
            kept = _read_tar(data, keep, limits.max_file_mb * _MB)
        return _with_signal(outcome, "bwrap"), kept
    finally:
        if keep_task is not None and not keep_task.done():
            keep_task.cancel()
        for fd in (status_r, status_w, keep_r, keep_w, seccomp_fd, *(fd for fd, _ in fds.values())):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if uid is not None:
            _bwrap.release_uid(uid)


def _read_kept(workdir: str, keep: Sequence[str], cap: int) -> dict[str, bytes]:
    kept: dict[str, bytes] = {}
    for name in keep:
        try:
            fd = os.open(os.path.join(workdir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size <= cap:
                kept[name] = f.read(cap)
    return kept


async def _run_fallback(
    argv: Sequence[str],
    files: Mapping[str, bytes],
    limits: Limits,
    stdin: bytes | None,
    readonly_binds: Sequence[str],
    keep: Sequence[str],
    pass_fds: Sequence[int],
    env: Mapping[str, str],
    no_fork: bool = False,
) -> tuple[ProcessOutcome, dict[str, bytes]]:
    for path in readonly_binds:
        _bwrap.check_bind(path)  # the same mistakes fail the same way in both isolations
    seccomp = _bwrap.no_fork_filter() if no_fork else None
    workdir = tempfile.mkdtemp(prefix="moa-sandbox-")
    netns_r, netns_w = os.pipe()
    try:
        for name, content in files.items():
            path = os.path.join(workdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
            os.chmod(path, _mode(content) & 0o755)
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
        spawn = _Spawn(
            argv=list(argv),
            env={**base, **env},
            cwd=workdir,
            pass_fds=tuple(pass_fds),
            preexec=fallback_preexec(_set_rlimits(_rlimits(limits)), netns_w, seccomp),
        )
        try:
            outcome = await _run(spawn, limits, stdin)
        except subprocess.SubprocessError as exc:  # raised by the child's setup, before the exec
            raise IsolationUnavailable(
                f"the fallback could not set up the program's process: {exc}"
            ) from None
        os.close(netns_w)
        netns_w = -1
        netns = os.read(netns_r, 1) == b"n"
        kept = _read_kept(workdir, keep, limits.max_file_mb * _MB)
    finally:
        for fd in (netns_r, netns_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    return _with_signal(outcome, "fallback", network_isolated=netns), kept


async def run_isolated(
    argv: list[str],
    *,
    files: Mapping[str, bytes],
    limits: Limits,
    isolation: str = "auto",
    stdin: bytes | None = None,
    readonly_binds: Sequence[str] = (),
    keep: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    no_fork: bool = False,
) -> tuple[ProcessOutcome, dict[str, bytes]]:
    """Run ``argv`` in a fresh sandbox (see the module docstring) and return how it ended and the
    ``keep`` files (work-dir-relative; a missing, non-regular or oversized one is left out).

    ``files``: written into the work directory before the start (sub-directories made; an ELF or
    ``#!`` file is executable). ``readonly_binds``: host paths (toolchains) bound read-only at the
    same path. ``pass_fds``: descriptors the program inherits at the same numbers (a verdict pipe).
    ``env``: variables besides ``PATH``, ``HOME`` and ``LANG`` (``PATH`` may be replaced).
    ``no_fork``: on x86_64 and aarch64 a seccomp filter refuses new processes, threads stay
    allowed: a program that forks can try answers against its own tests, each in a copy, and keep
    the one that passed. Both isolations install it (bwrap by ``--seccomp``, the fallback in the
    child before the exec).
    """
    if not argv:
        raise ValueError("run_isolated needs a command (argv is empty)")
    for name in (*files, *keep):
        _check_name(name)
    extra = dict(env or {})
    for var in extra:
        if not var or "=" in var or "\0" in var:
            raise ValueError(f"environment variable name {var!r} is not valid")
    mode = resolve_isolation(isolation)
    if mode == "bwrap":
        plan, _ = _bwrap.bwrap_status()
        assert plan is not None  # resolve_isolation returned "bwrap" only with a plan
        return await _run_bwrap(
            plan, argv, files, limits, stdin, readonly_binds, keep, pass_fds, extra, no_fork
        )
    return await _run_fallback(argv, files, limits, stdin, readonly_binds, keep, pass_fds, extra, no_fork)
