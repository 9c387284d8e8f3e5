"""Which schema an experiment store was written with, read before anything is written to it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from moa.errors import UserError
from moa.experiment.store_schema import SCHEMA_VERSION

__all__ = ["stored_version"]

_OWN_TABLES = {"meta", "items", "runs", "calls", "scores", "judgments", "cache"}


def stored_version(path: Path, conn: sqlite3.Connection) -> int | None:
    """The store's schema version; None for a new (empty) store. A version that is missing from a
    store holding data, not a whole number, or newer than this moa is refused before anything is
    written: guessing would rewrite another program's or a newer moa's file."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    row = None
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        has_runs = "runs" in tables and conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone()
        foreign = {t for t in tables - _OWN_TABLES if not t.startswith("sqlite_")}
        if has_runs or foreign:
            what = (
                "holds runs" if has_runs else f"has tables moa does not write ({', '.join(sorted(foreign))})"
            )
            raise UserError(
                f"{path}: not an experiment store of this moa: it {what} but no schema_version "
                f"(this moa reads schema version {SCHEMA_VERSION})"
            )
        return None
    try:
        version = json.loads(row[0])
    except (TypeError, ValueError):
        version = row[0]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(
            f"{path}: store schema_version is {str(version)[:40]!r}, not a version this moa reads "
            f"(1 to {SCHEMA_VERSION})"
        )
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: store schema version {version} was written by a newer moa; this one reads "
            f"versions up to {SCHEMA_VERSION} (upgrade moa, or use another --out)"
        )
    return version
