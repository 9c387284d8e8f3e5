"""One experiment run per output folder: an advisory lock held while the run writes its store.

``fcntl.flock`` rather than a pid file: the kernel drops the lock when its holder exits, however it
exits (SIGKILL, a power-off of the process), so a lock file left behind never blocks the next run and
no pid has to be guessed alive or dead. The file is never deleted: deleting a lock file while another
process has it open lets the two lock different files and both run. The holder writes its pid, host
and start time into the file only for the message of the run it refuses.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from moa.errors import UserError

__all__ = ["LOCK_NAME", "FolderLock"]

LOCK_NAME = ".moa.lock"

# O_NONBLOCK: should the name be a FIFO planted there, opening it must not wait for a writer;
# O_NOFOLLOW: should it be a symlink (a results folder from elsewhere), the holder's line written
# into the file overwrote whatever it pointed at
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW


class FolderLock:
    """``with FolderLock(out):`` holds ``out/.moa.lock`` exclusively, or raises ``UserError`` at once
    naming the holder. Re-entrant use of one object is an error; two objects on one folder, even in one
    process, exclude each other (the lock belongs to the open file, not to the process)."""

    def __init__(self, folder: str | Path, *, command: str = "moa compare") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; ``UserError`` names the holder when another run has it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this object")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(
                    f"{self.path}: the lock file is a symlink, not a regular file; remove it"
                ) from None
            raise UserError(
                f"{self.folder}/: cannot create the lock file {LOCK_NAME}: {e.strerror}"
            ) from None
        except ValueError:  # os.open refuses a NUL byte in the path
            raise UserError(f"{os.fspath(self.folder)!r}: not a usable folder name") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"{self.path}: the lock file is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"{self.folder}/: another {self.command} ({_holder(fd)}) is using this directory; "
                    "wait for it to finish or stop it"
                ) from None
            except OSError as e:  # a filesystem without locks: running unguarded would risk the store
                raise UserError(f"{self.path}: cannot lock: {e.strerror}") from None
            _write_holder(fd, self.command)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file is what releases it); the file stays for the next run."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _clean(value: object) -> str:
    """The lock file is only as trustworthy as the folder: nothing in it may break the message's line."""
    return "".join(c if c.isprintable() else "?" for c in str(value))[:80]


def _write_holder(fd: int, command: str) -> None:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _holder(fd: int) -> str:
    """The holder as the message shows it. It writes its name just after locking, so a run refused in
    that instant waits briefly for the name rather than printing an empty one."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0))
            return f"pid {int(info['pid'])}, started {_clean(info['started'])} on host {_clean(info['host'])}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "holder unknown"
            time.sleep(0.02)
