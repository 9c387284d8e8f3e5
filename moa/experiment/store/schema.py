"""The experiment store's schema across versions: the tables, the migrations from older versions, and
the check of a file's version, made before anything is written to it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from moa.errors import UserError
from moa.experiment.store.checks import call_row_problem
from moa.results import Usage

__all__ = [
    "BASELINE_FAILED_DETAIL",
    "BOTH_FAILED_DETAIL",
    "INDEXES",
    "JUDGE_FAILURES",
    "JUDGE_FAILURES_UNSTORED",
    "PAIRWISE_BASELINE_DETAIL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SETUP_FAILED_DETAIL",
    "has_table",
    "migrate",
    "stored_version",
]

#: 2 added ``runs.sample`` (pass@k: several independent samples of one (setup, item) pair);
#: 3 added the accounting of unknown usage: ``runs.cost_usd_max``, ``runs.unknown_attempts``,
#: ``calls.attempt_log`` (JSON), ``calls.cost_usd_max``, ``calls.usage_suspect``;
#: 4 added multi-turn items: ``runs.turns`` (JSON: each turn's answer), ``scores.turn_scores`` (JSON)
#: and ``judgments.turn`` (0: the whole item; k: the verdict on turn k); and the trace of every call:
#: ``calls.messages`` (JSON) and ``calls.reply``; ``runs.stage`` (a cascade's answering stage); and (still 4, created where missing) people's A/B
#: ``votes`` and the ``cache_items`` index;
#: 5 added ``scores.baseline_run_id``: the baseline run a pairwise score was made against, so the
#: score goes when that run is replaced (a failed baseline run retried: the score of "the baseline
#: failed" had outlived it);
#: 6 added ``calls.usage_estimated`` (the call's usage is moa's count, the provider reported none;
#: 0 for calls stored before); ``cache.latency_s``, ``cache.queued_s`` and ``cache.usage_estimated``: the
#: first call's times and usage flag, which a replay reports (a pair resumed from the cache read as fast
#: as its replays, ~0 s; NULL for replies cached before);
#: and stores every pairwise score made without a judge call, so each reader reads one number: the
#: baseline's 0.5 on its failed runs too, and a failed setup run's 0 (0.5 when the baseline's run
#: failed as well), tied to that baseline run. Before, readers derived them when reading;
#: 7 added the rest of a call's account to ``calls`` and ``cache``: ``cached_tokens``,
#: ``cache_write_tokens``, ``cache_write_1h_tokens`` and ``service_tier``, and ``cache.usage_suspect``
#: and ``cache.attempt_log`` (JSON, with each attempt's worst case: a replay keeps ``cost_usd_max``).
#: A replayed call kept only its prompt and completion counts (its attempt log, where the cache
#: counts were, is empty) and lost its suspect flag; ``cache.prompt_tokens`` etc. now hold the call's
#: booked usage (clamped when suspect), where they held the last reply's raw counts. Calls stored
#: before get their cache counts from their attempt log; replies cached before keep 0 (unknown);
#: 8 added ``cache.answer_only``: 1 when the reply's text is the answer as its call returned it, its
#: reasoning already taken out, which a replay returns as is (taken out again, an answer holding a
#: ``</think>`` of its own was cut a second time: a resumed run scored another answer). NULL for
#: replies cached before, which may begin with their reasoning: a replay takes it out, as before
SCHEMA_VERSION = 8

_RUNS = """
CREATE TABLE IF NOT EXISTS runs(
  run_id INTEGER PRIMARY KEY,
  setup TEXT NOT NULL, topo_hash TEXT NOT NULL, item_id TEXT NOT NULL, input_hash TEXT NOT NULL,
  answer TEXT, error TEXT, error_type TEXT,
  cost_usd REAL NOT NULL, latency_s REAL NOT NULL, critical_path_s REAL NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, n_calls INTEGER NOT NULL,
  finished_at REAL NOT NULL, sample INTEGER NOT NULL DEFAULT 0,
  cost_usd_max REAL, unknown_attempts INTEGER NOT NULL DEFAULT 0, turns TEXT, stage INTEGER,
  UNIQUE(setup, topo_hash, item_id, input_hash, sample));
CREATE INDEX IF NOT EXISTS runs_item ON runs(item_id, setup);
"""

_JUDGMENTS = """
-- pairwise verdicts: a setup's run against the baseline's run on the same item (or one of its
-- turns), in one position
CREATE TABLE IF NOT EXISTS judgments(
  judgment_id INTEGER PRIMARY KEY, evaluator_id TEXT NOT NULL,
  run_id INTEGER NOT NULL, baseline_run_id INTEGER NOT NULL, position TEXT NOT NULL,
  verdict TEXT, value REAL, detail TEXT, error TEXT, cost_usd REAL NOT NULL,
  turn INTEGER NOT NULL DEFAULT 0,
  UNIQUE(evaluator_id, run_id, baseline_run_id, turn, position));
"""

_VOTES = """
-- people's blind A/B verdicts (``moa view --vote``): ``setup``'s answer against ``other_setup``'s on
-- the same item and sample; ``verdict`` is the five-point token with A = ``left_setup``, the side
-- shown first. Added within version 4 with IF NOT EXISTS: a store without it just has no votes yet
CREATE TABLE IF NOT EXISTS votes(
  vote_id INTEGER PRIMARY KEY, item_id TEXT NOT NULL, sample INTEGER NOT NULL DEFAULT 0,
  setup TEXT NOT NULL, other_setup TEXT NOT NULL, left_setup TEXT NOT NULL, verdict TEXT NOT NULL,
  voter TEXT NOT NULL, voted_at REAL NOT NULL,
  UNIQUE(voter, item_id, sample, setup, other_setup));
"""

#: what each attempt at a judged pair that raised (a judge down, over budget: no verdict stored)
#: paid, one row per model and outcome: its failed calls (``answered`` 0), and its calls that
#: answered (``answered`` 1), cached, which the pair's next attempt replays into its stored verdicts
#: at their price. Added within version 6, created when first written: a store without it (one
#: opened read-only by `moa report`) has no failed pair to count
JUDGE_FAILURES = """
CREATE TABLE IF NOT EXISTS judge_failures(
  evaluator_id TEXT NOT NULL, setup TEXT NOT NULL, topo_hash TEXT NOT NULL,
  run_id INTEGER NOT NULL, baseline_run_id INTEGER NOT NULL,
  model TEXT NOT NULL, answered INTEGER NOT NULL, calls INTEGER NOT NULL, cost_usd REAL NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, error TEXT)
"""

#: the rows of ``judge_failures`` a setup's judge cost still counts: every failed call, and the
#: answered ones while the pair has no verdict stored (once it has, its verdicts hold their replays)
JUDGE_FAILURES_UNSTORED = (
    "(f.answered = 0 OR NOT EXISTS (SELECT 1 FROM judgments j WHERE j.evaluator_id=f.evaluator_id "
    "AND j.run_id=f.run_id AND j.baseline_run_id=f.baseline_run_id))"
)

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items(
  item_id TEXT PRIMARY KEY, input_hash TEXT NOT NULL, category TEXT, data TEXT NOT NULL);
"""
    + _RUNS
    + """
-- a call belongs to a run (a topology's call) or to a judgment (a pairwise judge's call)
CREATE TABLE IF NOT EXISTS calls(
  call_id INTEGER PRIMARY KEY, run_id INTEGER, judgment_id INTEGER, seq INTEGER NOT NULL,
  node TEXT NOT NULL, model TEXT NOT NULL, requested_model TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
  latency_s REAL NOT NULL, attempts INTEGER NOT NULL, error TEXT, started_s REAL NOT NULL,
  priced INTEGER NOT NULL, local INTEGER NOT NULL, cached INTEGER NOT NULL,
  attempt_log TEXT, cost_usd_max REAL, usage_suspect INTEGER NOT NULL DEFAULT 0,
  messages TEXT, reply TEXT, usage_estimated INTEGER NOT NULL DEFAULT 0,
  cached_tokens INTEGER NOT NULL DEFAULT 0, cache_write_tokens INTEGER NOT NULL DEFAULT 0,
  cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0, service_tier TEXT);
CREATE INDEX IF NOT EXISTS calls_run ON calls(run_id);
CREATE INDEX IF NOT EXISTS calls_judgment ON calls(judgment_id);
CREATE TABLE IF NOT EXISTS scores(
  run_id INTEGER NOT NULL, evaluator_id TEXT NOT NULL, value REAL NOT NULL, detail TEXT,
  turn_scores TEXT, baseline_run_id INTEGER, PRIMARY KEY(run_id, evaluator_id));
"""
    + _JUDGMENTS
    + """CREATE TABLE IF NOT EXISTS cache(
  key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT NOT NULL, reply_model TEXT NOT NULL,
  finish_reason TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  cost_usd REAL NOT NULL, latency_s REAL, queued_s REAL, usage_estimated INTEGER,
  cached_tokens INTEGER NOT NULL DEFAULT 0, cache_write_tokens INTEGER NOT NULL DEFAULT 0,
  cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0, usage_suspect INTEGER NOT NULL DEFAULT 0,
  service_tier TEXT, attempt_log TEXT, answer_only INTEGER);
"""
    + _VOTES
    + """
-- which cached replies each (cache scope, item) made or reused: a pair sent to a Dask worker takes
-- its own along, since the worker cannot read this file. Added within version 4 with IF NOT EXISTS:
-- replies cached before it are still found by the driver, not by a worker
CREATE TABLE IF NOT EXISTS cache_items(
  scope TEXT NOT NULL, item_id TEXT NOT NULL, key TEXT NOT NULL,
  PRIMARY KEY(scope, item_id, key)) WITHOUT ROWID;
-- who owns a reply, asked at each cache miss: without it the lookup scanned every item of the scope,
-- and a 10,000-item experiment slowed as it went (1,000 items in 2.8 s, 10,000 in 103 s)
CREATE INDEX IF NOT EXISTS cache_items_key ON cache_items(scope, key);
"""
)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # SQLite cannot change a UNIQUE constraint in place: rebuild the table, keeping run ids
    cols = (
        "run_id, setup, topo_hash, item_id, input_hash, answer, error, error_type, cost_usd, latency_s, "
        "critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at"
    )
    with conn:
        conn.execute("ALTER TABLE runs RENAME TO runs_v1")
        conn.execute("DROP INDEX IF EXISTS runs_item")
        conn.executescript(_RUNS)
        conn.execute(f"INSERT INTO runs({cols}, sample) SELECT {cols}, 0 FROM runs_v1")
        conn.execute("DROP TABLE runs_v1")


#: columns added in version 3; rows written before have no attempt log and nothing unknown
_V3_COLUMNS = {
    "runs": ["cost_usd_max REAL", "unknown_attempts INTEGER NOT NULL DEFAULT 0"],
    "calls": ["attempt_log TEXT", "cost_usd_max REAL", "usage_suspect INTEGER NOT NULL DEFAULT 0"],
}


def _add_columns(conn: sqlite3.Connection, added: Mapping[str, Sequence[str]]) -> None:
    """Add each column its table lacks (a table created in the current shape has them all)."""
    for table, columns in added.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    with conn:
        # a v1 store rebuilt by _v1_to_v2 already has the new runs columns
        _add_columns(conn, _V3_COLUMNS)


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    cols = "judgment_id, evaluator_id, run_id, baseline_run_id, position, verdict, value, detail, error, cost_usd"

    def columns(table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

    # tables missing from an old file were just created in the current shape: leave those alone
    with conn:
        for table, column in (
            ("runs", "turns"),
            ("scores", "turn_scores"),
            ("calls", "messages"),
            ("calls", "reply"),
            ("runs", "stage"),
        ):
            if column not in columns(table):
                kind = "INTEGER" if column == "stage" else "TEXT"
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if "turn" not in columns("judgments"):
            # the UNIQUE constraint gains the turn: rebuild, keeping judgment ids (calls point to them)
            conn.execute("ALTER TABLE judgments RENAME TO judgments_v3")
            conn.executescript(_JUDGMENTS)
            conn.execute(f"INSERT INTO judgments({cols}, turn) SELECT {cols}, 0 FROM judgments_v3")
            conn.execute("DROP TABLE judgments_v3")


#: the detail version 4 stored on a pairwise score made without a judge call because the baseline's
#: run had failed: no verdict ties it to that run, the manifest's baseline does
_V4_BASELINE_FAILED = "the baseline failed on this item"


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    with conn:
        if "baseline_run_id" not in {row[1] for row in conn.execute("PRAGMA table_info(scores)")}:
            conn.execute("ALTER TABLE scores ADD COLUMN baseline_run_id INTEGER")
        # a judged score is tied to its baseline run through its verdicts
        conn.execute(
            "UPDATE scores SET baseline_run_id = (SELECT MIN(j.baseline_run_id) FROM judgments j "
            "WHERE j.run_id = scores.run_id AND j.evaluator_id = scores.evaluator_id) "
            "WHERE baseline_run_id IS NULL"
        )
        # not dropped: `moa report` only reads, and would lose them until the next `moa compare`
        row = conn.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        setups = json.loads(row[0]).get("setups", []) if row is not None else []
        base = next((s for s in setups if s.get("is_baseline")), None)
        if base is not None:
            conn.execute(
                "UPDATE scores SET baseline_run_id = (SELECT b.run_id FROM runs r JOIN runs b "
                "ON b.item_id = r.item_id AND b.input_hash = r.input_hash AND b.sample = r.sample "
                "WHERE r.run_id = scores.run_id AND b.setup = ? AND b.topo_hash = ?) "
                "WHERE baseline_run_id IS NULL AND detail = ?",
                (base["name"], base["hash"], _V4_BASELINE_FAILED),
            )


#: the details version 6 writes on the pairwise scores made without a judge call (``score_answers``)
PAIRWISE_BASELINE_DETAIL = "baseline"
BASELINE_FAILED_DETAIL = _V4_BASELINE_FAILED
SETUP_FAILED_DETAIL = "the setup failed on this item"
BOTH_FAILED_DETAIL = "both failed on this item"


def _v6_pairwise_scores(conn: sqlite3.Connection) -> None:
    # the scores version 5 readers derived for failed runs under a pairwise judge, stored as version 6
    # scores them (``score_answers``), so `moa report` and `moa view` read the same numbers as before
    row = conn.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
    manifest = json.loads(row[0]) if row is not None else {}
    base = next((s for s in manifest.get("setups", []) if s.get("is_baseline")), None)
    ev_id = manifest.get("evaluator_id")
    if not manifest.get("pairwise") or base is None or not isinstance(ev_id, str):
        return
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO scores(run_id, evaluator_id, value, detail) SELECT run_id, ?, 0.5, ? "
            "FROM runs WHERE setup = ? AND topo_hash = ? AND error IS NOT NULL",
            (ev_id, PAIRWISE_BASELINE_DETAIL, base["name"], base["hash"]),
        )
        conn.execute(
            "INSERT OR IGNORE INTO scores(run_id, evaluator_id, value, detail, baseline_run_id) "
            "SELECT r.run_id, ?, CASE WHEN b.error IS NULL THEN 0.0 ELSE 0.5 END, "
            "CASE WHEN b.error IS NULL THEN ? ELSE ? END, b.run_id FROM runs r JOIN runs b "
            "ON b.item_id = r.item_id AND b.sample = r.sample AND b.setup = ? AND b.topo_hash = ? "
            "WHERE r.error IS NOT NULL AND NOT (r.setup = ? AND r.topo_hash = ?)",
            (
                ev_id,
                SETUP_FAILED_DETAIL,
                BOTH_FAILED_DETAIL,
                base["name"],
                base["hash"],
                base["name"],
                base["hash"],
            ),
        )


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    with conn:
        have = {row[1] for row in conn.execute("PRAGMA table_info(cache)")}
        for column, kind in (("latency_s", "REAL"), ("queued_s", "REAL"), ("usage_estimated", "INTEGER")):
            if column not in have:
                conn.execute(f"ALTER TABLE cache ADD COLUMN {column} {kind}")
        # calls stored before were not told apart: 0, as a reply's own usage was the rule
        if "usage_estimated" not in {row[1] for row in conn.execute("PRAGMA table_info(calls)")}:
            conn.execute("ALTER TABLE calls ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0")
    _v6_pairwise_scores(conn)


#: columns added in version 7 (a store made by this moa already has them)
_V7_COLUMNS = {
    "calls": (
        "cached_tokens INTEGER NOT NULL DEFAULT 0",
        "cache_write_tokens INTEGER NOT NULL DEFAULT 0",
        "cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0",
        "service_tier TEXT",
    ),
    "cache": (
        "cached_tokens INTEGER NOT NULL DEFAULT 0",
        "cache_write_tokens INTEGER NOT NULL DEFAULT 0",
        "cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0",
        "usage_suspect INTEGER NOT NULL DEFAULT 0",
        "service_tier TEXT",
        "attempt_log TEXT",
    ),
}


def _v6_to_v7(conn: sqlite3.Connection) -> None:
    with conn:
        _add_columns(conn, _V7_COLUMNS)
        # a call stored before kept its cache counts in its attempt log only: summed from there
        # (a replayed call's log is empty, and what it replayed was not kept: 0)
        rows = conn.execute(
            "SELECT call_id, attempt_log FROM calls WHERE attempt_log LIKE '%prompt_tokens_details%'"
        ).fetchall()
        for call_id, log in rows:
            read = write = write_1h = 0
            # a log of another shape (an infinite count ended the upgrade in an OverflowError
            # traceback) keeps 0: reading the call names its field
            if call_row_problem((("attempt_log", "json"),), (log,)) is not None:
                continue
            for entry in json.loads(log):
                usage = entry.get("usage")
                if usage is not None:
                    counted = Usage.from_dict(usage)
                    read += counted.cached_tokens
                    write += counted.cache_write_tokens
                    write_1h += counted.cache_write_1h_tokens
            conn.execute(
                "UPDATE calls SET cached_tokens=?, cache_write_tokens=?, cache_write_1h_tokens=? WHERE call_id=?",
                (read, write, write_1h, call_id),
            )


def _v7_to_v8(conn: sqlite3.Connection) -> None:
    with conn:
        # NULL for the replies already cached: whether their reasoning was taken out is not known
        _add_columns(conn, {"cache": ("answer_only INTEGER",)})


_MIGRATIONS = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
}

#: indexes on columns a migration may add: made once the tables have their current shape
INDEXES = "CREATE INDEX IF NOT EXISTS scores_baseline ON scores(baseline_run_id);"


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Bring a store written by an older moa up to ``SCHEMA_VERSION``; returns the new version."""
    while version in _MIGRATIONS:
        _MIGRATIONS[version](conn)
        version += 1
    return version


_OWN_TABLES = {
    "meta",
    "items",
    "runs",
    "calls",
    "scores",
    "judgments",
    "judge_failures",
    "cache",
    "cache_items",
    "votes",
}


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the store has the table ``name``: tables added within a version are created when
    first written, so a store opened read-only may lack them."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
    return row is not None


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
