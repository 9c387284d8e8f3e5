"""The fallback isolation's process setup: a user + network namespace when the kernel allows one,
then the resource limits; used where bubblewrap is missing or cannot build its sandbox."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

__all__ = ["fallback_preexec"]

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


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


def fallback_preexec(apply_limits: Callable[[], None], netns_fd: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: the namespace (a byte written to ``netns_fd``, a
    close-on-exec pipe the program never holds, says it was made), then ``apply_limits``."""
    unshare = _unshare_function()

    def setup() -> None:
        if unshare is not None and unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            with contextlib.suppress(OSError):
                os.write(netns_fd, b"n")
        apply_limits()

    return setup
