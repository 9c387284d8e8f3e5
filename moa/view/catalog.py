"""The experiments one ``moa view`` shows: the folder given (an experiment folder, or a folder of
them, one level down), each opened on first use and read through caches that are dropped as soon as
another process commits to its store (a run still going, ``moa report``).

Every store is opened on the thread of the event loop and only used there: SQLite connections belong
to the thread that made them, and the viewer's handlers are coroutines that run short indexed
queries inline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from moa.errors import UserError
from moa.experiment.analysis.summarize import summary_from_store
from moa.experiment.analysis.summary import Summary
from moa.experiment.store.checks import manifest_problem
from moa.experiment.store.database import STORE_NAME, Store
from moa.safe_read import read_regular

__all__ = ["Catalog", "ExperimentFolder", "find_experiments"]

T = TypeVar("T")

#: summary.json larger than this is not read (a real one is a few kB per setup)
SUMMARY_MAX_BYTES = 32 << 20


def find_experiments(root: Path) -> dict[str, Path]:
    """Key -> folder: ``root`` itself when it holds a store, else its subfolders that do (sorted)."""
    if not root.is_dir():
        # the experiment file, or a report in the folder, is a likely mistake: say what to give
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise UserError(f"{root}: {what} (give the --out folder of `moa compare`)")
    if (root / STORE_NAME).exists():
        return {root.resolve().name or "experiment": root}
    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / STORE_NAME).exists()}
    if not found:
        raise UserError(
            f"{root}: no experiment here: neither {STORE_NAME} in it nor in a folder inside it "
            "(give the --out folder of `moa compare`)"
        )
    return found


@dataclass
class ExperimentFolder:
    """One experiment folder: its store, opened on first use, and the values computed from it."""

    key: str
    folder: Path
    _store: Store | None = None
    _version: int | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        """The open store (``UserError`` naming the folder when it cannot be opened)."""
        if self._store is None:
            self._store = Store.open(self.folder, create=False)
        return self._store

    def _fresh(self) -> None:
        # data_version changes when another connection commits: a run still going, `moa report`
        version = int(self.store.conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._cache.clear()
            self._version = version

    def cached(self, name: str, build: Callable[[], T]) -> T:
        """``build()``'s value, kept until the store changes under the viewer."""
        self._fresh()
        if name not in self._cache:
            self._cache[name] = build()
        value: T = self._cache[name]
        return value

    def peek(self, name: str) -> Any:
        """The cached value or None, without touching the store (any thread may look)."""
        return self._cache.get(name)

    def forget(self, name: str) -> None:
        """Drop one cached value (after the viewer's own writes, which data_version does not count)."""
        self._cache.pop(name, None)

    @property
    def manifest(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            try:
                m = self.store.get_meta("manifest")
            except ValueError:
                raise UserError(f"{self.folder}: the store's manifest is not JSON") from None
            if not isinstance(m, dict) or not m.get("setups"):
                raise UserError(f"{self.folder}: the store holds no experiment yet (no manifest)")
            problem = manifest_problem(m)
            if problem is not None:
                raise UserError(f"{self.folder}: the store's {problem}")
            return m

        return self.cached("manifest", read)

    def summary(self) -> tuple[Summary, str]:
        """The summary and where it came from: ``summary.json`` as the last run or ``moa report``
        wrote it, else computed from the store (missing or unreadable file)."""
        return self.cached("summary", self._summary)

    def _summary(self) -> tuple[Summary, str]:
        path = self.folder / "summary.json"
        if path.exists():
            try:
                data = json.loads(read_regular(path, max_bytes=SUMMARY_MAX_BYTES, what="summary"))
                summary = Summary.from_dict(data)
            except (UserError, ValueError) as e:
                first = str(e).splitlines()[0][:200]
                return self._from_store(f"summary.json unreadable: {first}")
            behind = self._behind(summary)
            if behind is None:
                return summary, "summary.json"
            return self._from_store(behind)
        return self._from_store("no summary.json")

    def _from_store(self, why: str) -> tuple[Summary, str]:
        # a damaged run (an infinite cost, a score of 5) is left out and named, not a page error
        left_out: list[str] = []
        summary = summary_from_store(self.store, self.manifest, left_out=left_out)
        if left_out:
            more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
            why += f"; a damaged run left out: {left_out[0]}{more}"
        return summary, f"computed from the store ({why})"

    def _behind(self, summary: Summary) -> str | None:
        """Why ``summary`` no longer tells what the store holds (a run went on after it was written,
        or another experiment ran into the folder), or None."""
        m = self.manifest
        if summary.experiment != m["experiment"] or summary.n_items != len(m["item_ids"]):
            return "summary.json is of another run of the folder"
        stored = dict(
            self.store.conn.execute(
                # counted as the summary counts them (Store.run_rows: every stored row)
                "SELECT setup || char(0) || topo_hash, COUNT(*) FROM runs WHERE sample < ? "
                "AND item_id IN (SELECT value FROM json_each(?)) GROUP BY setup, topo_hash",
                (int(m.get("samples", 1)), json.dumps(m["item_ids"])),
            )
        )
        written = {s.name: s.runs for s in summary.setups}
        for s in m["setups"]:
            now = int(stored.get(f"{s['name']}\x00{s['hash']}", 0))
            if written.get(s["name"]) != now:
                return f"summary.json is behind it: `{s['name']}` has {now} runs stored, {written.get(s['name'], 0)} in the file"
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class Catalog:
    """Every experiment of one ``moa view``, by key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders = {k: ExperimentFolder(k, p) for k, p in find_experiments(root).items()}
        self._single = (root / STORE_NAME).exists()

    def refresh(self) -> None:
        """Take in the experiment folders made inside the root since (a `moa compare --out` started
        after the viewer); the ones known stay as they are."""
        if self._single:
            return
        try:
            found = find_experiments(self.root)
        except UserError:
            return
        new = {k: ExperimentFolder(k, p) for k, p in found.items() if k not in self.folders}
        if new:
            self.folders = dict(sorted({**self.folders, **new}.items()))

    def get(self, key: str) -> ExperimentFolder | None:
        return self.folders.get(key)

    def close(self) -> None:
        for f in self.folders.values():
            f.close()
