"""The fallback isolation's process setup: a user + network namespace when the kernel allows one,
the resource limits, then (when asked) the seccomp filter refusing new processes; used where
bubblewrap is missing or cannot build its sandbox."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

__all__ = ["fallback_preexec"]

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


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
    libc = _libc()
    fn: Callable[[int], int] | None = getattr(libc, "unshare", None) if libc is not None else None
    return fn


def _seccomp_installer(program: bytes) -> Callable[[], None]:
    """A function for the child installing ``program`` (classic BPF) as its seccomp filter, every
    object it needs made here in the parent. It raises when the kernel refuses: the program must
    not run unfiltered where the caller asked for the filter (the parent sees ``SubprocessError``)."""
    libc = _libc()
    prctl = getattr(libc, "prctl", None) if libc is not None else None
    if prctl is None:
        raise OSError("libc has no prctl: the seccomp filter cannot be installed")
    buffer = ctypes.create_string_buffer(program, len(program))
    # the closure holds the buffer too: the struct keeps only its address
    held = (_SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p)), buffer)

    def install() -> None:
        fprog = ctypes.byref(held[0])
        if (
            prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog, 0, 0) != 0
        ):
            raise OSError(ctypes.get_errno(), "the kernel refused the seccomp filter")

    return install


def fallback_preexec(
    apply_limits: Callable[[], None], netns_fd: int, seccomp: bytes | None = None
) -> Callable[[], None]:
    """Runs in the child between fork and exec: the namespace (a byte written to ``netns_fd``, a
    close-on-exec pipe the program never holds, says it was made), then ``apply_limits``, then the
    ``seccomp`` filter when one is given (last: the steps before it start no process, and the
    exec after it is allowed)."""
    unshare = _unshare_function()
    install = _seccomp_installer(seccomp) if seccomp is not None else None

    def setup() -> None:
        if unshare is not None and unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            with contextlib.suppress(OSError):
                os.write(netns_fd, b"n")
        apply_limits()
        if install is not None:
            install()

    return setup
