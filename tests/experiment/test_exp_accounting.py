"""Unknown usage reaches every experiment artefact: the store keeps each call's attempt_log, and
summary.json, results.jsonl and the report show cost_usd_max next to the known cost; stores written
before the accounting columns existed are upgraded in place."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from moa.experiment import Experiment, Store
from moa.experiment.store import SCHEMA_VERSION
from moa.testing.sim import FaultPlan, SimModel, SimServer
from tests.experiment.exp_helpers import answers_of, questions, sim, write_experiment

N = 6


def test_timeouts_show_as_unknown_usage_in_summary_results_and_report(tmp_path: Path) -> None:
    """A setup whose calls time out reports cost_usd_max > cost_usd, and every artefact says so."""
    rows = questions(N)
    single, _ = sim(1.0, answers_of(rows))
    faults = FaultPlan(rate=1.0, kinds=("hang",), hang_s=30, models=["maj-m"])
    with SimServer({"single-m": single, "maj-m": SimModel()}, faults=faults) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        (tmp_path / "e" / "majority.yaml").write_text(
            (tmp_path / "e" / "majority.yaml")
            .read_text()
            .replace("{model: openai/maj-m,", "{model: openai/maj-m, timeout_s: 0.2, max_tokens: 50,")
        )
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    maj = summary.setup("majority-3")
    assert maj.unknown_usage_attempts == 3 * N
    assert maj.cost_usd == 0 < maj.cost_usd_max
    base = summary.setup("single")
    assert base.unknown_usage_attempts == 0 and base.cost_usd_max == base.cost_usd
    out = tmp_path / "out"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["setups"][1]["cost_usd_max"] == maj.cost_usd_max
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["unknown_usage_attempts"] for r in results if r["setup"] == "majority-3"} == {3}
    assert f"up to ${maj.cost_usd_max:.6f}" in (out / "report.md").read_text()
    conn = sqlite3.connect(out / "experiment.sqlite")
    logs = [
        json.loads(r[0]) for r in conn.execute("SELECT attempt_log FROM calls WHERE model='openai/maj-m'")
    ]
    conn.close()
    entries = [e for log in logs for e in log]
    assert len(entries) == 3 * N and all(e["usage"] is None for e in entries)
    assert {e["status"] for e in entries} <= {"timeout", "cancelled"}
    assert set(entries[0]) == {"status", "latency_s", "usage", "error", "cost_usd", "service_tier"}


def test_a_version_2_store_is_upgraded_with_no_attempt_logs(tmp_path: Path) -> None:
    """A store written before schema 3 opens: its runs read as fully known, new runs keep logs."""
    out = tmp_path / "out"
    out.mkdir()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE runs(run_id INTEGER PRIMARY KEY, setup TEXT NOT NULL, topo_hash TEXT NOT NULL,
          item_id TEXT NOT NULL, input_hash TEXT NOT NULL, answer TEXT, error TEXT, error_type TEXT,
          cost_usd REAL NOT NULL, latency_s REAL NOT NULL, critical_path_s REAL NOT NULL,
          prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, n_calls INTEGER NOT NULL,
          finished_at REAL NOT NULL, sample INTEGER NOT NULL DEFAULT 0,
          UNIQUE(setup, topo_hash, item_id, input_hash, sample));
        CREATE TABLE calls(call_id INTEGER PRIMARY KEY, run_id INTEGER, judgment_id INTEGER,
          seq INTEGER NOT NULL, node TEXT NOT NULL, model TEXT NOT NULL, requested_model TEXT NOT NULL,
          prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
          latency_s REAL NOT NULL, attempts INTEGER NOT NULL, error TEXT, started_s REAL NOT NULL,
          priced INTEGER NOT NULL, local INTEGER NOT NULL, cached INTEGER NOT NULL);
        INSERT INTO runs VALUES (1, 's', 'h', 'i1', 'x', 'ans', NULL, NULL, 0.5, 1.0, 1.0, 3, 4, 1, 0, 0);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        (row,) = store.run_rows("s", "h", "ev")["i1"]
        assert row.cost_usd_max == 0.5 and row.unknown_usage_attempts == 0
        assert store.get_meta("schema_version") == SCHEMA_VERSION
    finally:
        store.close()


def test_calls_without_reported_usage_are_counted_in_the_summary_and_the_report(tmp_path: Path) -> None:
    """A provider that reports no usage is billed by moa's own count; summary.json and report.md say
    how many calls of each setup were counted that way, so an estimate is never read as a bill."""
    rows = questions(N)
    single, _ = sim(1.0, answers_of(rows))
    with SimServer({"single-m": single, "maj-m": SimModel(reported_usage={})}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    maj, base = summary.setup("majority-3"), summary.setup("single")
    assert maj.usage_estimated_calls == maj.runs * 3 > 0 and maj.tokens > 0
    assert base.usage_estimated_calls == 0
    out = tmp_path / "out"
    saved = json.loads((out / "summary.json").read_text())
    assert [s["usage_estimated_calls"] for s in saved["setups"]] == [0, maj.usage_estimated_calls]
    assert (
        f"majority-3: {maj.usage_estimated_calls} call(s) got no usage from the provider"
        in (out / "report.md").read_text()
    )
    # an estimate may be below the bill: their worst case bounds the setup's cost, as the budget's
    assert maj.cost_usd < maj.cost_usd_max and base.cost_usd == base.cost_usd_max
    assert f"cost up to ${maj.cost_usd_max:.6f})" in (out / "report.md").read_text()
