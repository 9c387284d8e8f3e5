"""Writing the files of an experiment folder: each through a new file beside it, renamed over it.

The folder may come from elsewhere (a colleague's results, a downloaded artifact): a report file in
it can be a symlink, and writing through the name wrote wherever it pointed (``report.md`` linked to
a file of the user's was overwritten by ``moa report``). A rename replaces the link itself. The new
file is created exclusively under a name of its own, so two writers at once (``moa report`` beside
a ``moa compare`` ending) never write into one file, and a reader sees a whole file, old or new."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["replacing"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


@contextlib.contextmanager
def replacing(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file open for writing (UTF-8 text, or bytes) that becomes ``path`` when the block ends
    without an error; on an error it is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, _FLAGS, 0o666)  # the umask applies, as to a file written in place
    except OSError as e:  # a read-only folder, a full disk: named by the file meant
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
