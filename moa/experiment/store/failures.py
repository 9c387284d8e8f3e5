"""The one line for a store SQLite cannot read or write: what failed, what moa was doing, the way out."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from moa.errors import StoreError

__all__ = ["damaged", "writing"]


def damaged(path: Path, problem: str, during: str | None = None) -> str:
    """The line for a store SQLite finds damaged (or cannot write: a full disk, an I/O error);
    ``during`` names what moa was doing with it (``caching a reply of model `m` ...``)."""
    line = " ".join(problem.split())[:200]
    at = f" {during}" if during else ""
    if "database is locked" in line:
        # not damage: another program holds SQLite's write lock past the wait (a `sqlite3` shell
        # left inside a transaction, a backup tool); the advice for a damaged file would mislead
        return (
            f"{path}: the experiment store cannot be written: another program holds its write lock "
            f"(SQLite: {line}){at}; nothing more is written to it: close that program, then run again "
            "to resume"
        )
    return (
        f"{path}: the experiment store is damaged or cannot be written (SQLite: {line}){at}; nothing "
        "more is written to it: free disk space, restore the file from a copy, or use another --out"
    )


@contextlib.contextmanager
def writing(path: Path, conn: sqlite3.Connection, what: str) -> Iterator[None]:
    """A write of ``what`` (``storing the score of setup `s`, item `i```) to the store at ``path``:
    a failure is ``StoreError`` naming it (the line named the store only, and a full disk while
    storing one pair's verdicts read as any other failure), and its statements are rolled back: left
    in the open transaction, the next write's commit kept the half (a score without its verdicts,
    never judged again)."""
    try:
        yield
    except sqlite3.Error as e:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        raise StoreError(damaged(path, str(e), f"while {what}")) from e
