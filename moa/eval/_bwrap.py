"""The bubblewrap command line of one sandboxed run, and whether bwrap works on this machine.

Two ways in, chosen by who runs moa:

* **as root** (containers, CI images): bwrap runs privileged and builds the pid, network, ipc,
  uts and mount namespaces without a user namespace, then ``setpriv`` drops the program to a
  per-run unprivileged uid/gid with no capabilities and no-new-privs. A user namespace would map
  the program back to host uid 0, for which the kernel never enforces ``RLIMIT_NPROC``; a plain
  unprivileged uid makes the process limit bind and leaves the program no right over any host file
  beyond what "others" may do.
* **as another user**: bwrap creates a user namespace (mapping the program to that user) with
  ``--disable-userns`` so it cannot nest further; ``RLIMIT_NPROC`` set inside counts only the
  sandbox's processes (set before bwrap, it would cap every process of that user on the host).

The resource limits are set inside by ``prlimit`` (util-linux), last before the program: no
``preexec_fn`` in the parent, which would force a slow ``fork`` of the whole parent process.

The rest is the same: read-only system directories and a few files of ``/etc`` (never
``/etc/shadow`` or ``/etc/passwd``), a new ``/proc`` and a minimal ``/dev``, one size-limited tmpfs
holding the work directory and ``/tmp`` (a symlink into it, so one quota covers both), no view of
the host's home, project or ``/proc``.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "WORKDIR",
    "BwrapPlan",
    "build_argv",
    "bwrap_status",
    "check_bind",
    "no_fork_filter",
    "release_uid",
    "reserve_uid",
]

#: the program's working directory and $HOME inside the sandbox
WORKDIR = "/sandbox"
_TMP = f"{WORKDIR}/.tmp"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# what dynamic linking, TLS and the alternatives symlinks need; nothing naming users or secrets
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
)
#: paths a read-only bind may not cover: they are the sandbox's own
_RESERVED = ("/proc", "/dev", WORKDIR)
# per-run uids of the root mode: far above any real account's, never reused while in use
_UID_BASE = 3_100_000
_UID_SPAN = 1 << 16
_uids_in_use: set[int] = set()
_uid_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class BwrapPlan:
    """What the probe found: the binaries and the mode this machine supports."""

    bwrap: str
    as_root: bool
    setpriv: str | None
    prlimit: str


def reserve_uid() -> int:
    """A uid no other run of this process is using (root mode)."""
    with _uid_lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _parents(path: str, made: set[str]) -> list[str]:
    """Directories above a bind point, traversable by the program (bwrap would make them 0700)."""
    args: list[str] = []
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        parent = "/" + "/".join(parts[:i])
        if parent not in made and parent not in ("/tmp", *_SYSTEM_DIRS):
            made.add(parent)
            args += ["--perms", "0755", "--dir", parent]
    return args


def _system_binds() -> list[str]:
    """The host's system directories as they are: a symlink (merged /usr) stays a symlink."""
    args: list[str] = ["--perms", "0755", "--dir", "/etc"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        args += ["--ro-bind-try", path, path]
    return args


# classic BPF over struct seccomp_data (nr at 0, arch at 4, args[0]'s low half at 16 on these
# little-endian machines): (code, jt, jf, k)
_LOAD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000, 1, 38
_CLONE_THREAD = 0x00010000
# machine -> (AUDIT_ARCH_*, fork and vfork numbers, clone, clone3)
_SYSCALLS = {
    "x86_64": (0xC000003E, (57, 58), 56, 435),
    "aarch64": (0xC00000B7, (), 220, 435),
}


def no_fork_filter() -> bytes | None:
    """A seccomp program refusing new processes (fork, vfork, clone without ``CLONE_THREAD``) and
    letting threads be made; ``clone3`` answers ENOSYS, so libc falls back to ``clone``, whose flags
    the filter can read. ``None`` on a machine it does not know. System calls of another ABI (i386
    or x32 on x86_64) are refused: they would name other numbers. Linux only: the fallback runs
    elsewhere too (macOS names its machines alike, and has no seccomp)."""
    known = _SYSCALLS.get(os.uname().machine) if sys.platform == "linux" else None
    if known is None:
        return None
    arch, forks, clone, clone3 = known
    body: list[tuple[int, str, str, int]] = [(_LOAD, "", "", 4), (_JEQ, "", "deny", arch), (_LOAD, "", "", 0)]
    if arch == 0xC000003E:
        body.append((_JGE, "deny", "", 0x40000000))  # the x32 ABI's numbers
    body += [(_JEQ, "deny", "", n) for n in forks]
    body += [(_JEQ, "enosys", "", clone3), (_JEQ, "", "allow", clone), (_LOAD, "", "", 16)]
    body.append((_JSET, "allow", "deny", _CLONE_THREAD))
    ends = {"allow": _ALLOW, "deny": _ERRNO | _EPERM, "enosys": _ERRNO | _ENOSYS}
    at = {name: len(body) + i for i, name in enumerate(ends)}
    program = bytearray()
    for i, (code, yes, no, k) in enumerate(body):
        jt, jf = (at[label] - i - 1 if label else 0 for label in (yes, no))
        program += struct.pack("<HBBI", code, jt, jf, k)
    for value in ends.values():
        program += struct.pack("<HBBI", _RET, 0, 0, value)
    return bytes(program)


def check_bind(path: str) -> str:
    """``path`` resolved, once checked: absolute, existing, not over the sandbox's own directories."""
    if not os.path.isabs(path):
        raise ValueError(f"readonly bind {path!r} is not an absolute path")
    real = os.path.realpath(path)
    if real in ("/", "/etc") or any(real == r or real.startswith(r + "/") for r in _RESERVED):
        raise ValueError(f"readonly bind {path!r} would cover the sandbox's own directories")
    if not os.path.exists(real):
        raise ValueError(f"readonly bind {path!r} does not exist")
    return real


def build_argv(
    plan: BwrapPlan,
    argv: Sequence[str],
    *,
    file_fds: Mapping[str, tuple[int, int]],
    readonly_binds: Sequence[str],
    disk_bytes: int,
    rlimits: Sequence[tuple[str, int, int]],
    status_fd: int,
    uid: int | None,
    env: Mapping[str, str] | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The full command line; ``file_fds`` maps work-dir paths to (fd to copy from, mode),
    ``rlimits`` are ``prlimit`` names with (soft, hard) values."""
    args = [plan.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    if not plan.as_root:
        args += ["--unshare-user", "--disable-userns"]
    args += ["--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv"]
    args += ["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", WORKDIR]
    args += ["--setenv", "LANG", "C.UTF-8"]
    for var, value in (env or {}).items():
        args += ["--setenv", var, value]
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "0777", "--size", str(disk_bytes), "--tmpfs", WORKDIR]
    # relative: bwrap resolves an absolute link against the host's root while it builds the sandbox
    args += ["--perms", "0777", "--dir", _TMP, "--symlink", _TMP.lstrip("/"), "/tmp"]
    made: set[str] = {"/etc"}
    for path in dict.fromkeys(readonly_binds):  # after /tmp exists: a bind below it lands in the tmpfs
        args += [*_parents(path, made), "--ro-bind", path, path]
    made = set()
    for name, (fd, mode) in file_fds.items():
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                made.add(sub)
                args += ["--perms", "0777", "--dir", f"{WORKDIR}/{sub}"]
        args += ["--perms", f"{mode:04o}", "--file", str(fd), f"{WORKDIR}/{name}"]
    # last: bwrap's own tmpfs for / and /dev has no size limit and, in a user namespace, belongs to
    # the program, which could fill RAM past disk_bytes there; /sandbox is a mount of its own
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    args += ["--chdir", WORKDIR, "--json-status-fd", str(status_fd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if plan.as_root:
        assert plan.setpriv is not None and uid is not None  # the probe requires both
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", plan.setpriv]
        args += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
        args += ["--bounding-set=-all", "--no-new-privs", "--"]
    else:
        args.append("--")
    args += [plan.prlimit, *(f"--{name}={soft}:{hard}" for name, soft, hard in rlimits), "--"]
    return args + list(argv)


def _probe_argv(plan: BwrapPlan, status_fd: int) -> list[str]:
    uid = _UID_BASE + _UID_SPAN  # outside the per-run range: the probe never collides with a run
    return build_argv(
        plan,
        ["/bin/sh", "-c", "exit 0"],
        file_fds={},
        readonly_binds=(),
        disk_bytes=1 << 20,
        rlimits=[("nproc", 8, 8)],
        status_fd=status_fd,
        uid=uid,
    )


@functools.cache
def bwrap_status() -> tuple[BwrapPlan | None, str]:
    """Whether bwrap can build the sandbox here (``plan``), else why not: probed once per process
    by starting the real sandbox around ``sh -c 'exit 0'``."""
    if os.uname().sysname != "Linux":
        return None, "bubblewrap needs Linux"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    as_root = os.geteuid() == 0
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
    if as_root and setpriv is None:
        return None, "running as root, the sandbox needs setpriv (util-linux) to drop to an unprivileged uid"
    if prlimit is None:
        return None, "the sandbox needs prlimit (util-linux) to set its resource limits"
    plan = BwrapPlan(bwrap=bwrap, as_root=as_root, setpriv=setpriv, prlimit=prlimit)
    r, w = os.pipe()
    try:
        p = subprocess.run(
            _probe_argv(plan, w),
            pass_fds=(w,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"bwrap could not start: {e}"
    finally:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            status = f.read(4096)
    if p.returncode != 0 or b'"exit-code": 0' not in status:
        why = p.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"bwrap cannot create the sandbox here: {why[-1] if why else f'exit {p.returncode}'}"
    return plan, "bwrap"
