"""The experiment store: one SQLite file (``<out>/experiment.sqlite``, WAL) holding every run, call,
score, judge verdict and cached reply as soon as it exists.

One connection, owned by the thread that runs the experiment. Each finished (setup, item) pair is one
transaction: the run row and all its ``CallRecord`` rows (a failed run's calls too). Cached replies
are committed as calls finish, so killing the process loses at most the calls in flight. Runs are
keyed by (setup name, topology hash, item id, input hash): a changed topology or item can never be
mistaken for a stored one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from moa.errors import MoAError, UserError
from moa.eval.datasets import Item
from moa.eval.types import Judgment
from moa.experiment.store.calls import INSERT_CALL, TEXT_LIMIT, call_rows
from moa.experiment.store.checks import (
    CALL_TYPES,
    edited,
    manifest_problem,
    parsed_call_row,
    parsed_run_row,
)
from moa.experiment.store.failures import damaged
from moa.experiment.store.lock import FolderLock
from moa.experiment.store.rows import RunRow
from moa.experiment.store.schema import (
    INDEXES,
    JUDGE_FAILURES,
    JUDGE_FAILURES_UNSTORED,
    SCHEMA,
    SCHEMA_VERSION,
    has_table,
    migrate,
    stored_version,
)
from moa.results import CallRecord, RunResult, Usage
from moa.safe_read import parse_json, refuse_special
from moa.scrub import environment_secrets, scrub

__all__ = ["STORE_NAME", "RunRow", "Store", "damaged", "input_hash", "item_hash"]

STORE_NAME = "experiment.sqlite"

_RUN_COLUMNS = (
    "r.run_id, r.setup, r.item_id, r.answer, r.error, r.cost_usd, r.latency_s, "
    "r.prompt_tokens, r.completion_tokens, r.n_calls, r.sample, "
    "COALESCE(r.cost_usd_max, r.cost_usd), r.unknown_attempts, r.turns, r.stage"
)


def input_hash(text: str) -> str:
    """What keys a stored run to its item's input: an edited item never matches the runs stored for it."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def item_hash(item: Item) -> str:
    """``input_hash`` of what is sent for ``item``: its input, or every user turn of a multi-turn item
    (an edited second turn must not match the runs stored for the old one)."""
    if item.turns is not None and len(item.turns) > 1:
        return input_hash(json.dumps(item.turns))
    return input_hash(item.input)


def _run_latency(result: RunResult | None, calls: Sequence[CallRecord]) -> float:
    """The run's latency as a live run would show it. A call replayed from the cache takes ~0 s of
    wall time but reports its first call's ``latency_s``, so a resumed run is credited with the
    critical path of its calls' original times when that is longer than its own wall time."""
    wall = (
        result.latency_s
        if result is not None
        else max((c.started_s + c.latency_s for c in calls), default=0.0)
    )
    if result is not None and any(c.cached for c in calls):
        return max(wall, result.critical_path_s)
    return wall


def _other_baselines(evaluator_id: str, baseline: str, topo_hash: str) -> tuple[str, tuple[str, ...]]:
    """Which scores under ``evaluator_id`` are not made against the baseline's (``baseline``,
    ``topo_hash``) runs: the baseline's own runs scored as a setup's, the setups' runs scored
    against another run or as the baseline (no baseline run)."""
    base = "SELECT run_id FROM runs WHERE setup=? AND topo_hash=?"
    stale = (
        f"evaluator_id=? AND (run_id IN ({base}) AND baseline_run_id IS NOT NULL OR run_id NOT IN "
        f"({base}) AND (baseline_run_id IS NULL OR baseline_run_id NOT IN ({base})))"
    )
    return stale, (evaluator_id, *(baseline, topo_hash) * 3)


class Store:
    """The SQLite store of one experiment folder."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: FolderLock | None = None) -> None:
        self.path = path
        self.conn = conn
        self._lock = lock
        #: the cap of each stored text (messages and replies); None stores numbers only
        self.text_limit: int | None = TEXT_LIMIT
        #: values masked in stored texts besides key shapes (the environment's secrets)
        self.secrets: list[str] = environment_secrets()

    def _call_rows(
        self, calls: Iterable[CallRecord], run_id: int | None, judgment_id: int | None
    ) -> Iterator[tuple[Any, ...]]:
        return call_rows(calls, run_id, judgment_id, text_limit=self.text_limit, secrets=self.secrets)

    @classmethod
    def open(
        cls, out: str | Path, *, create: bool = True, exclusive: bool = False, verify: bool = False
    ) -> Store:
        """Open (or create) ``out/experiment.sqlite``; ``exclusive`` holds the folder's lock until
        ``close``, or raises ``UserError`` naming the process that holds it; ``verify`` checks the
        whole file first (``damaged``)."""
        folder = Path(out)
        path = folder / STORE_NAME
        # SQLite would open a FIFO or a device read-write and wait on it forever
        refuse_special(path, what="experiment store")
        if not create and not path.is_file():
            raise UserError(f"{folder}: no experiment store ({STORE_NAME}) in this folder")
        lock = FolderLock(folder) if exclusive else None
        conn = None
        try:
            if lock is not None:
                lock.acquire()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path)
            except (OSError, sqlite3.Error) as e:
                raise UserError(f"{path}: cannot open the experiment store: {e}") from None
            store = cls._prepare(path, conn, lock)
            if verify:
                store.check_intact()
            return store
        except BaseException:
            if conn is not None:
                conn.close()
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _prepare(cls, path: Path, conn: sqlite3.Connection, lock: FolderLock | None) -> Store:
        """Check the schema version before anything is written, then create or upgrade the tables."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a killed process; only a power cut may lose the last commits
            conn.execute("PRAGMA synchronous=NORMAL")
            version = stored_version(path, conn)
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.OperationalError) as e:  # locked, read-only, disk full: the file may be fine
            raise UserError(f"{path}: cannot open the experiment store: {e}") from None
        except sqlite3.Error as e:
            if "malformed" in str(e):  # a sound first page, a damaged schema page: the same advice
                raise UserError(damaged(path, str(e))) from None
            raise UserError(f"{path}: not a readable experiment store (SQLite: {e})") from None
        store = cls(path, conn, lock)
        if version is None:
            store.set_meta("schema_version", SCHEMA_VERSION)
            conn.commit()
        elif version != SCHEMA_VERSION:
            try:
                version = migrate(conn, version)
            except sqlite3.Error as e:
                raise UserError(
                    f"{path}: cannot upgrade the store from schema version {version}: {e}"
                ) from None
            if version != SCHEMA_VERSION:
                raise UserError(f"{path}: store schema version {version}, this moa reads {SCHEMA_VERSION}")
            store.set_meta("schema_version", SCHEMA_VERSION)
            conn.commit()
        try:
            conn.executescript(INDEXES)
        except sqlite3.Error as e:  # a read-only store upgraded by nobody yet
            raise UserError(f"{path}: cannot open the experiment store: {e}") from None
        store._start_ledger()
        return store

    def _start_ledger(self) -> None:
        """Start the ``paid_usd`` ledger, and the ``unknown_usd`` one beside it, of a store without
        them (new, or written by an older moa) before anything is booked, so what is booked is
        never also counted from its run."""
        try:
            if self.get_meta("paid_usd") is None:
                self.set_meta("paid_usd", self.spent_usd())
            if self.get_meta("unknown_usd") is None:
                self.set_meta("unknown_usd", self._stored_unknown_usd())
            self.conn.commit()
        except sqlite3.OperationalError:  # read-only (``moa report``): nothing is booked there
            self.conn.rollback()

    def check_intact(self) -> None:
        """Refuse a damaged file before anything is read from it or written to it: its first page
        can be sound while a page of runs or of the cache is not, and SQLite only says so when that
        page is read, mid-run, as a traceback (or never, and a pair is silently missing)."""
        try:
            problems = [str(r[0]) for r in self.conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.Error as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise UserError(damaged(self.path, "; ".join(problems)))

    def close(self) -> None:
        try:
            self.conn.commit()
        finally:
            self.conn.close()
            if self._lock is not None:
                self._lock.release()

    def commit(self) -> None:
        self.conn.commit()

    # -- metadata and items ------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else parse_json(row[0])

    def manifest(self) -> dict[str, Any] | None:
        """The stored manifest (None before the first run); ``UserError`` naming the store when it is
        not JSON or a field its readers use is missing or of another type (an edited store)."""
        try:
            manifest = self.get_meta("manifest")
        except ValueError as e:
            problem: str | None = f"manifest is not JSON ({' '.join(str(e).split())[:80]})"
        else:
            problem = None if manifest is None else manifest_problem(manifest)
        if problem is not None:
            raise UserError(edited(self.path, f"the store's {problem}"))
        return manifest if isinstance(manifest, dict) else None

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def changed_items(self, items: Iterable[tuple[str, str]]) -> Iterator[str]:
        """Ids among ``(item id, input hash)`` stored earlier with a different input."""
        for item_id, h in items:
            row = self.conn.execute("SELECT input_hash FROM items WHERE item_id=?", (item_id,)).fetchone()
            if row is not None and row[0] != h:
                yield item_id

    def rescored_items(self, items: Iterable[Item]) -> list[str]:
        """Ids of ``items`` stored earlier with the same input but other scoring data (a target
        corrected, tests added): their scores and verdicts are dropped, so the stored answers are
        scored again against the item as it is now (a stale score was reused silently). The
        category only groups the report: a change there keeps the scores."""
        changed = self.rescoring(items)
        if changed:
            with self.conn:
                for item_id in changed:
                    self._forget_scores_of(item_id)
        return changed

    def rescoring(self, items: Iterable[Item]) -> list[str]:
        """What ``rescored_items`` finds, without forgetting anything (``--dry-run``)."""
        changed = []
        for item in items:
            stored = self.item_data(item.id)
            if stored is None:
                continue
            try:
                before = Item.model_validate(stored).model_dump(exclude={"category"})
            except ValueError:  # written by hand, or by a moa whose items differ: score again
                before = None
            if before != item.model_dump(exclude={"category"}):
                changed.append(item.id)
        return changed

    def _forget_scores_of(self, item_id: str) -> None:
        runs = "SELECT run_id FROM runs WHERE item_id=?"
        judged = f"SELECT judgment_id FROM judgments WHERE run_id IN ({runs}) OR baseline_run_id IN ({runs})"
        self._supersede(
            f"judgment_id IN ({judged})", (item_id, item_id), "the item changed what it is scored against"
        )
        self.conn.execute(f"DELETE FROM calls WHERE judgment_id IN ({judged})", (item_id, item_id))
        self.conn.execute(
            f"DELETE FROM judgments WHERE run_id IN ({runs}) OR baseline_run_id IN ({runs})",
            (item_id, item_id),
        )
        self.conn.execute(f"DELETE FROM scores WHERE run_id IN ({runs})", (item_id,))

    def put_items(self, rows: Iterable[tuple[str, str, str | None, str]]) -> None:
        """``(item id, input hash, category, item JSON)``; replaces what was there."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO items(item_id, input_hash, category, data) VALUES (?,?,?,?)", rows
        )

    def item_data(self, item_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM items WHERE item_id=?", (item_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def item_categories(self) -> dict[str, str | None]:
        return dict(self.conn.execute("SELECT item_id, category FROM items").fetchall())

    # -- runs --------------------------------------------------------------------------------

    def finished(self, setup: str, topo_hash: str, *, with_errors: bool) -> set[tuple[str, str, int]]:
        """(item id, input hash, sample) of the stored runs of a setup (errored ones only if
        ``with_errors``)."""
        sql = "SELECT item_id, input_hash, sample FROM runs WHERE setup=? AND topo_hash=?"
        if not with_errors:
            sql += " AND error IS NULL"
        return {(a, b, int(c)) for a, b, c in self.conn.execute(sql, (setup, topo_hash))}

    def record_run(
        self,
        setup: str,
        topo_hash: str,
        item_id: str,
        in_hash: str,
        result: RunResult | None,
        error: MoAError | None = None,
        *,
        sample: int = 0,
        turns: Sequence[str] | None = None,
    ) -> int:
        """Store a finished run (a result, or an error with the calls it made) in one transaction;
        ``turns`` holds a multi-turn item's answers, one per turn answered."""
        calls = result.calls if result is not None else (error.calls if error is not None else [])
        usage = sum((c.usage for c in calls), Usage())
        cost = result.cost_usd if result is not None else sum(c.cost_usd for c in calls)
        latency = _run_latency(result, calls)
        with self.conn:
            self._delete_run(setup, topo_hash, item_id, in_hash, sample)
            cur = self.conn.execute(
                "INSERT INTO runs(setup, topo_hash, item_id, input_hash, answer, error, error_type, cost_usd, "
                "latency_s, critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at, sample, "
                "cost_usd_max, unknown_attempts, turns, stage) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    setup,
                    topo_hash,
                    item_id,
                    in_hash,
                    result.output if result is not None else None,
                    str(error) if error is not None else None,
                    type(error).__name__ if error is not None else None,
                    cost,
                    latency,
                    result.critical_path_s if result is not None else 0.0,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    len(calls),
                    time.time(),
                    sample,
                    sum(c.cost_usd_max for c in calls),
                    sum(c.unknown_usage_attempts for c in calls),
                    None if turns is None else json.dumps(list(turns)),
                    result.stage if result is not None else None,
                ),
            )
            run_id = int(cur.lastrowid or 0)
            self.conn.executemany(INSERT_CALL, self._call_rows(calls, run_id, None))
            self._book_failed(calls)
        return run_id

    def forget_runs(self, setup: str, topo_hash: str, item_ids: Sequence[str]) -> None:
        """Delete the setup's stored runs of ``item_ids`` (and what was scored or judged of them),
        so they run again; what their calls paid stays in the ledger, their replies in the cache."""
        with self.conn:
            sql = "SELECT input_hash, sample FROM runs WHERE setup=? AND topo_hash=? AND item_id=?"
            for item_id in item_ids:
                for in_hash, sample in self.conn.execute(sql, (setup, topo_hash, item_id)).fetchall():
                    self._delete_run(setup, topo_hash, item_id, in_hash, sample)

    def _delete_run(self, setup: str, topo_hash: str, item_id: str, in_hash: str, sample: int) -> None:
        row = self.conn.execute(
            "SELECT run_id FROM runs WHERE setup=? AND topo_hash=? AND item_id=? AND input_hash=? AND sample=?",
            (setup, topo_hash, item_id, in_hash, sample),
        ).fetchone()
        if row is None:
            return
        rid = row[0]
        jids = [
            j
            for (j,) in self.conn.execute(
                "SELECT judgment_id FROM judgments WHERE run_id=? OR baseline_run_id=?", (rid, rid)
            )
        ]
        self._supersede("run_id=? OR baseline_run_id=?", (rid, rid), "a run it judged was run again")
        self.conn.executemany("DELETE FROM calls WHERE judgment_id=?", [(j,) for j in jids])
        self.conn.execute("DELETE FROM judgments WHERE run_id=? OR baseline_run_id=?", (rid, rid))
        # the other setups' pairwise scores against this run: made again against its replacement
        self.conn.execute("DELETE FROM scores WHERE baseline_run_id=?", (rid,))
        self.conn.execute("DELETE FROM calls WHERE run_id=?", (rid,))
        self.conn.execute("DELETE FROM scores WHERE run_id=?", (rid,))
        self.conn.execute("DELETE FROM runs WHERE run_id=?", (rid,))

    def _run_row(self, row: Sequence[Any]) -> RunRow:
        """A stored run's row as a ``RunRow``; ``UserError`` naming the store, the run and the field
        when a field is not of its type (a damaged or hand-edited store)."""
        # the turns' JSON, parsed once to be checked, is what the row holds
        problem, values = parsed_run_row(row)
        if problem is not None:
            what = f"run {row[0]}" if len(row) < 3 else f"run {row[0]} (setup `{row[1]}`, item `{row[2]}`)"
            raise UserError(edited(self.path, f"{what}: {problem}", run=True))
        return RunRow(*values)

    def run_rows(self, setup: str, topo_hash: str, evaluator: str) -> dict[str, list[RunRow]]:
        """Item id -> the setup's stored runs (one per sample, in sample order) with their score under
        ``evaluator`` (None if unscored), without the answer text (the summary needs numbers only)."""
        out: dict[str, list[RunRow]] = {}
        for r in self.iter_runs(setup, topo_hash, evaluator, answers=False):
            out.setdefault(r.item_id, []).append(r)
        for rows in out.values():
            rows.sort(key=lambda r: r.sample)
        return out

    def iter_runs(
        self, setup: str, topo_hash: str, evaluator: str, *, answers: bool = True
    ) -> Iterator[RunRow]:
        """The setup's stored runs in the order they finished, with scores, read lazily."""
        cols = (
            _RUN_COLUMNS if answers else _RUN_COLUMNS.replace("r.answer", "NULL").replace("r.turns", "NULL")
        )
        sql = (
            f"SELECT {cols}, s.value, s.detail, s.turn_scores FROM runs r LEFT JOIN scores s "
            "ON s.run_id=r.run_id AND s.evaluator_id=? WHERE r.setup=? AND r.topo_hash=? ORDER BY r.run_id"
        )
        for row in self.conn.execute(sql, (evaluator, setup, topo_hash)):
            yield self._run_row(row)

    def run_for(self, setup: str, topo_hash: str, item_id: str, sample: int = 0) -> RunRow | None:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.setup=? AND r.topo_hash=? AND r.item_id=? AND r.sample=?",
            (setup, topo_hash, item_id, sample),
        ).fetchone()
        return None if row is None else self._run_row(row)

    def failed_calls(self, setup: str, topo_hash: str, item_id: str, sample: int = 0) -> list[CallRecord]:
        """The calls of the setup's stored run of ``item_id`` that failed, in order, as records
        (their trace as stored: cut and scrubbed, None when the text was not kept)."""
        run = self.run_for(setup, topo_hash, item_id, sample)
        if run is None:
            return []
        out = []
        for d in self.calls_of(run_id=run.run_id):
            if d["error"] is None:
                continue
            usage = Usage(
                d["prompt_tokens"],
                d["completion_tokens"],
                d["cached_tokens"],
                d["cache_write_tokens"],
                d["cache_write_1h_tokens"],
            )
            out.append(CallRecord.from_dict({**d, "usage": usage.to_dict()}))
        return out

    def unscored(
        self, setup: str, topo_hash: str, evaluator: str, *, after: int, limit: int, failed: bool = False
    ) -> list[RunRow]:
        """A page (by run id) of the setup's successful runs (and its failed ones too if ``failed``:
        a pairwise judge scores those against the baseline) that have no score under ``evaluator``."""
        answered = "" if failed else "AND r.error IS NULL "
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.setup=? AND r.topo_hash=? {answered}"
            "AND r.run_id>? AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.run_id=r.run_id AND s.evaluator_id=?) "
            "ORDER BY r.run_id LIMIT ?"
        )
        return [
            self._run_row(row) for row in self.conn.execute(sql, (setup, topo_hash, after, evaluator, limit))
        ]

    def calls_of(
        self, *, run_id: int | None = None, judgment_id: int | None = None, shown: bool = False
    ) -> list[dict[str, Any]]:
        """The stored calls of a run or of a judgment, in order, with their trace (``messages`` as a
        list, ``reply``; None when the text was not kept); ``UserError`` naming the store, the call
        and the field when a field is not of its type or shape (a damaged or hand-edited store).
        ``shown``: only to be shown (the viewer shows an infinite amount as missing, and names it)."""
        if (run_id is None) == (judgment_id is None):
            raise ValueError("give exactly one of run_id and judgment_id")
        column, key = ("run_id", run_id) if run_id is not None else ("judgment_id", judgment_id)
        cols = ", ".join(
            "COALESCE(cost_usd_max, cost_usd)" if name == "cost_usd_max" else name for name, _ in CALL_TYPES
        )
        cur = self.conn.execute(f"SELECT call_id, {cols} FROM calls WHERE {column}=? ORDER BY seq", (key,))
        out = []
        for call_id, *row in cur:
            # the JSON columns, parsed once to be checked, are what the call holds
            problem, row = parsed_call_row(CALL_TYPES, row, shown=shown)
            if problem is not None:
                owner = f"{column.removesuffix('_id')} {key}"
                raise UserError(edited(self.path, f"call {call_id} ({owner}): {problem}"))
            d = dict(zip((name for name, _ in CALL_TYPES), row, strict=True))
            d["attempt_log"] = d["attempt_log"] or []  # NULL: stored before attempts were
            d["cached"] = bool(d["cached"])
            d["usage_suspect"], d["usage_estimated"] = bool(d["usage_suspect"]), bool(d["usage_estimated"])
            out.append(d)
        return out

    def put_score(
        self,
        run_id: int,
        evaluator: str,
        value: float,
        detail: str | None,
        *,
        baseline_run_id: int | None = None,
        judgments: Sequence[Judgment] = (),
        turn_scores: Sequence[float] | None = None,
        commit: bool = True,
    ) -> None:
        """A score (and each turn's, for a multi-turn item) and, for a pairwise evaluator, its
        verdicts and their judge calls, together."""
        self.conn.execute(
            "INSERT OR REPLACE INTO scores(run_id, evaluator_id, value, detail, turn_scores, baseline_run_id) "
            "VALUES (?,?,?,?,?,?)",
            (
                run_id,
                evaluator,
                value,
                detail,
                None if turn_scores is None else json.dumps(list(turn_scores)),
                baseline_run_id,
            ),
        )
        for j in judgments:
            cur = self.conn.execute(
                "INSERT OR REPLACE INTO judgments(evaluator_id, run_id, baseline_run_id, position, verdict, value, "
                "detail, error, cost_usd, turn) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    evaluator,
                    run_id,
                    baseline_run_id,
                    j.position,
                    j.verdict,
                    j.value,
                    j.detail,
                    j.error,
                    j.cost_usd,
                    j.turn,
                ),
            )
            self.conn.executemany(INSERT_CALL, self._call_rows(j.calls, None, int(cur.lastrowid or 0)))
            self._book_failed(j.calls)
        if commit:
            self.conn.commit()

    def delete_scores(self, evaluator: str | None = None) -> None:
        """Forget scores (all, or one evaluator's) so the next run scores again from stored answers."""
        with self.conn:
            where, args = ("WHERE evaluator_id=?", (evaluator,)) if evaluator else ("", ())
            self.conn.execute(
                f"DELETE FROM calls WHERE judgment_id IN (SELECT judgment_id FROM judgments {where})", args
            )
            self.conn.execute(f"DELETE FROM judgments {where}", args)
            self.conn.execute(f"DELETE FROM scores {where}", args)

    def _supersede(self, where: str, args: Sequence[Any], why: str) -> None:
        """Keep what the judgments ``where`` selects paid, before they are deleted, in their setups'
        judge cost (the ledger paid it): a ``judge_failures`` row per pair and model, labelled
        ``superseded: <why>`` and always counted, in place of the pair's answered-attempt rows (its
        verdicts held those replays). The pair's cached judge replies then replay at no cost: the
        next verdict on an unchanged prompt would count the same paid call a second time."""
        pairs = self.conn.execute(
            "SELECT DISTINCT j.evaluator_id, j.run_id, j.baseline_run_id, r.setup, r.topo_hash, r.item_id, "
            f"r.sample FROM judgments j JOIN runs r ON r.run_id=j.run_id WHERE j.judgment_id IN "
            f"(SELECT judgment_id FROM judgments WHERE {where})",
            tuple(args),
        ).fetchall()
        if pairs:
            self.conn.execute(JUDGE_FAILURES)
        for ev, rid, bid, setup, topo_hash, item_id, sample in pairs:
            self.conn.execute(
                "DELETE FROM judge_failures WHERE answered=1 AND evaluator_id=? AND run_id=? AND baseline_run_id=?",
                (ev, rid, bid),
            )
            self.conn.execute(
                "INSERT INTO judge_failures(evaluator_id, setup, topo_hash, run_id, baseline_run_id, model, "
                "answered, calls, cost_usd, prompt_tokens, completion_tokens, error) "
                "SELECT ?, ?, ?, ?, ?, c.model, 0, COUNT(*), SUM(c.cost_usd), SUM(c.prompt_tokens), "
                "SUM(c.completion_tokens), ? FROM calls c JOIN judgments j ON j.judgment_id=c.judgment_id "
                "WHERE j.evaluator_id=? AND j.run_id=? AND j.baseline_run_id=? GROUP BY c.model "
                "HAVING SUM(c.cost_usd) > 0",
                (ev, setup, topo_hash, rid, bid, f"superseded: {why}", ev, rid, bid),
            )
            pair = json.dumps([item_id, sample, rid, bid])  # the judge cache's "item" (score_answers)
            self.conn.execute(
                "UPDATE cache SET cost_usd=0 WHERE key IN (SELECT key FROM cache_items WHERE scope=? AND item_id=?)",
                (f"judge:{ev}", pair),
            )

    def forget_other_baselines(self, evaluator_id: str, baseline: str, topo_hash: str) -> int:
        """Drop the pairwise scores and verdicts under ``evaluator_id`` made against runs that are not
        the baseline's (``baseline``, ``topo_hash``), and its runs' scores made as a setup's: kept, a
        baseline changed between runs reported each setup's verdicts against the old one. Returns how
        many scores were dropped; the verdicts' cost is kept (``superseded``)."""
        base = "SELECT run_id FROM runs WHERE setup=? AND topo_hash=?"
        judged, j_args = (
            f"evaluator_id=? AND baseline_run_id NOT IN ({base})",
            (evaluator_id, baseline, topo_hash),
        )
        stale, args = _other_baselines(evaluator_id, baseline, topo_hash)
        n = int(self.conn.execute(f"SELECT COUNT(*) FROM scores WHERE {stale}", args).fetchone()[0])
        if n or self.conn.execute(f"SELECT 1 FROM judgments WHERE {judged} LIMIT 1", j_args).fetchone():
            with self.conn:
                self._supersede(judged, j_args, "the experiment's baseline changed")
                ids = f"SELECT judgment_id FROM judgments WHERE {judged}"
                self.conn.execute(f"DELETE FROM calls WHERE judgment_id IN ({ids})", j_args)
                self.conn.execute(f"DELETE FROM judgments WHERE {judged}", j_args)
                self.conn.execute(f"DELETE FROM scores WHERE {stale}", args)
        return n

    def rebased_runs(self, evaluator_id: str, baseline: str, topo_hash: str) -> set[int]:
        """The setups' answered runs whose score ``forget_other_baselines`` would drop: what the judge
        compares again with the baseline's answers (``--dry-run`` counts them; nothing is dropped)."""
        stale, args = _other_baselines(evaluator_id, baseline, topo_hash)
        sql = (
            f"SELECT r.run_id FROM runs r WHERE r.error IS NULL AND NOT (r.setup=? AND r.topo_hash=?) "
            f"AND r.run_id IN (SELECT run_id FROM scores WHERE {stale})"
        )
        return {int(r[0]) for r in self.conn.execute(sql, (baseline, topo_hash, *args))}

    def usage_estimated_calls(self, setup: str, topo_hash: str) -> int:
        """The setup's stored calls whose usage moa counted itself (the provider reported none)."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM calls c JOIN runs r ON r.run_id=c.run_id "
            "WHERE c.usage_estimated=1 AND r.setup=? AND r.topo_hash=?",
            (setup, topo_hash),
        ).fetchone()
        return int(row[0])

    def judge_cost(self, evaluator: str, setup: str, topo_hash: str) -> float:
        """What judging the setup's answers paid: its stored verdicts' calls, and the calls of its
        pairs' attempts that raised (``book_failed_pair``): their failed calls always, those that
        answered while the pair has no verdict stored (once it has, its verdicts hold their replays)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(j.cost_usd), 0) FROM judgments j JOIN runs r ON r.run_id=j.run_id "
            "WHERE j.evaluator_id=? AND r.setup=? AND r.topo_hash=?",
            (evaluator, setup, topo_hash),
        ).fetchone()
        if not has_table(self.conn, "judge_failures"):
            return float(row[0])
        failed = self.conn.execute(
            "SELECT COALESCE(SUM(f.cost_usd), 0) FROM judge_failures f "
            f"WHERE f.evaluator_id=? AND f.setup=? AND f.topo_hash=? AND {JUDGE_FAILURES_UNSTORED}",
            (evaluator, setup, topo_hash),
        ).fetchone()
        return float(row[0]) + float(failed[0])

    def other_judges_cost(self, evaluator: str) -> float:
        """What judging under evaluator ids other than ``evaluator`` paid (an edited judge's
        predecessors: their verdicts are kept, under their own id, but no setup's judge cost counts them)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM judgments WHERE evaluator_id<>?", (evaluator,)
        ).fetchone()
        if not has_table(self.conn, "judge_failures"):
            return float(row[0])
        failed = self.conn.execute(
            f"SELECT COALESCE(SUM(f.cost_usd), 0) FROM judge_failures f WHERE f.evaluator_id<>? AND {JUDGE_FAILURES_UNSTORED}",
            (evaluator,),
        ).fetchone()
        return float(row[0]) + float(failed[0])

    def book_failed_pair(
        self,
        evaluator: str,
        setup: str,
        topo_hash: str,
        run_id: int,
        baseline_run_id: int,
        error: MoAError,
    ) -> None:
        """Book, and commit, an attempt at judging a pair that raised: its failed calls in the ledger
        (``book_unstored``), and what it paid in ``judge_failures``, which the setup's judge cost
        counts (no verdict is stored to hold its calls)."""
        # a replay was paid by an earlier attempt; one row per model and outcome (``moa view``
        # shows the judge's cost by model)
        groups: dict[tuple[str, int], list[CallRecord]] = {}
        for c in error.calls:
            if not c.cached:
                groups.setdefault((c.model, 0 if c.error is not None else 1), []).append(c)
        why = scrub(error.message, self.secrets)[:500]
        if groups:
            self.conn.execute(JUDGE_FAILURES)
        for (model, answered), calls in groups.items():
            self.conn.execute(
                "INSERT INTO judge_failures(evaluator_id, setup, topo_hash, run_id, baseline_run_id, "
                "model, answered, calls, cost_usd, prompt_tokens, completion_tokens, error) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    evaluator,
                    setup,
                    topo_hash,
                    run_id,
                    baseline_run_id,
                    model,
                    answered,
                    len(calls),
                    sum(c.cost_usd for c in calls),
                    sum(c.usage.prompt_tokens for c in calls),
                    sum(c.usage.completion_tokens for c in calls),
                    why,
                ),
            )
        self.book_unstored(error.calls)

    def spent_usd(self) -> float:
        """Everything paid for in this store: the ``paid_usd`` ledger, booked with each cached reply
        (in the same transaction) and each failed call stored. Summing the stored runs missed the
        replies of pairs a kill left unstored (paid, then replayed free: a resumed budget overran
        by them) and the failed calls of a run replaced by its retry. Without the ledger (a store
        of an older moa opened read-only): its runs and judge verdicts."""
        paid = self.get_meta("paid_usd")
        if isinstance(paid, (int, float)) and not isinstance(paid, bool):
            return float(paid)
        runs = self.conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM runs").fetchone()[0]
        judged = self.conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM judgments").fetchone()[0]
        return float(runs) + float(judged)

    def spent_usd_max(self) -> float:
        """``spent_usd`` plus the worst case of every attempt booked with unknown usage (sent, then
        cut off in flight: the provider may bill it), as a live budget counts them: what a resumed
        budget starts from. Summing known costs only let a resume spend past the cap the first run
        kept to."""
        return self.spent_usd() + self._unknown_usd()

    def _unknown_usd(self) -> float:
        unknown = self.get_meta("unknown_usd")
        if isinstance(unknown, (int, float)) and not isinstance(unknown, bool):
            return float(unknown)
        return self._stored_unknown_usd()  # a store of an older moa opened read-only

    def _stored_unknown_usd(self) -> float:
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost_usd_max - cost_usd), 0) FROM calls "
            "WHERE cached = 0 AND cost_usd_max > cost_usd"
        ).fetchone()
        return float(row[0])

    def book_paid(self, usd: float, unknown_usd: float = 0.0) -> None:
        """Add ``usd`` to the ledger of what was paid, and ``unknown_usd`` (the worst case of
        attempts of unknown usage) to the one beside it, in the current transaction."""
        if usd:
            self.set_meta("paid_usd", self.spent_usd() + usd)
        if unknown_usd > 0:
            self.set_meta("unknown_usd", self._unknown_usd() + unknown_usd)

    def book_unstored(self, calls: Iterable[CallRecord]) -> None:
        """Book, and commit, the failed calls of work that stores nothing (a judged pair that raised):
        billed all the same, and a resumed budget must count them."""
        self._book_failed(calls)
        self.conn.commit()

    def _book_failed(self, calls: Iterable[CallRecord]) -> None:
        # a call that answered was booked when its reply was cached; a failed one may still be billed
        failed = [c for c in calls if c.error is not None and not c.cached]
        self.book_paid(sum(c.cost_usd for c in failed), sum(c.cost_usd_max - c.cost_usd for c in failed))

    def count(self, table: str) -> int:
        if table not in ("runs", "calls", "scores", "judgments", "cache", "items"):
            raise ValueError(f"unknown table {table}")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
