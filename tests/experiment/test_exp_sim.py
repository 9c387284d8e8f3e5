"""End to end against the loopback simulated models: known accuracies, resume after SIGKILL, re-scoring."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from exp_helpers import answers_of, questions, sim, write_experiment

from moa.experiment import Experiment
from moa.testing.sim import SimServer

REPO = Path(__file__).resolve().parents[2]


def test_recovers_known_accuracies_and_difference(tmp_path: Path) -> None:
    """p=0.6 single vs majority of three p=0.6 samples (0.648): both within their CIs, and the
    known difference 0.048 within the paired CI."""
    rows = questions(300)
    single, _ = sim(0.6, answers_of(rows), seed=1)
    maj, _ = sim(0.6, answers_of(rows), seed=1)
    with SimServer({"single-m": single, "maj-m": maj}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, concurrency=4)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == 300 * 4
    base, moa = summary.setup("single"), summary.setup("majority-3")
    assert base.n == moa.n == 300 and base.errors == moa.errors == 0
    assert base.quality_ci95 is not None and base.quality_ci95[0] <= 0.6 <= base.quality_ci95[1]
    assert moa.quality_ci95 is not None and moa.quality_ci95[0] <= 0.648 <= moa.quality_ci95[1]
    assert moa.delta_ci95 is not None and moa.delta_ci95[0] <= 0.048 <= moa.delta_ci95[1]
    assert moa.test == "mcnemar" and moa.p_value is not None
    assert moa.calls_per_item == 3.0 and base.calls_per_item == 1.0
    assert moa.cost_ratio is not None and 2.5 < moa.cost_ratio < 3.5
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["name"] for s in on_disk["setups"]] == ["single", "majority-3"]
    assert sum(1 for _ in (tmp_path / "out" / "results.jsonl").open()) == 600
    for name in ("report.md", "report.html", "pareto.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def _stored_pairs(db: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return set(conn.execute("SELECT setup, item_id FROM runs WHERE error IS NULL"))
    except sqlite3.OperationalError:  # the schema is not written yet
        return set()
    finally:
        conn.close()


def test_resume_after_sigkill_sends_nothing_for_finished_pairs(tmp_path: Path) -> None:
    """Kill `moa compare` mid-run; the re-run sends no request for a stored pair and completes."""
    rows = questions(40)
    single, acc_single = sim(0.7, answers_of(rows), latency_s=0.03)
    maj, acc_maj = sim(0.7, answers_of(rows), latency_s=0.03)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "moa",
        "compare",
        "",
        "--out",
        str(out),
        "--no-progress",
        "--concurrency",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with SimServer({"single-m": single, "maj-m": maj}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        cmd[4] = str(exp)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        db = out / "experiment.sqlite"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if db.exists() and len(_stored_pairs(db)) >= 10:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _stored_pairs(db)
        assert 10 <= len(done) < 80, "the kill should land mid-run"
        served_before = srv.stats.served
        seen_single, seen_maj = acc_single.seen, acc_maj.seen
        seen_single.clear()
        seen_maj.clear()
        finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert finished.returncode == 0, finished.stderr
        # the last line names every file written, the plot too (matplotlib is installed here)
        assert finished.stderr.splitlines()[-1] == (
            f"moa: reports written to {out}/ (report.md, report.html, pareto.png, summary.json, results.jsonl)"
        )
        sent = srv.stats.served - served_before
    by_id = {r["id"]: r["input"] for r in rows}
    for setup, item_id in done:
        seen = seen_single if setup == "single" else seen_maj
        assert by_id[item_id] not in seen, f"a request was sent for the stored pair ({setup}, {item_id})"
    assert sent <= (80 - len(done)) * 3
    results = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert len(results) == 80 and all(r["error"] is None for r in results)


def test_changing_the_evaluator_rescores_without_requests(tmp_path: Path) -> None:
    """A second run with another evaluator scores the stored answers and sends no request."""
    rows = questions(30)
    single, _ = sim(0.5, answers_of(rows))
    maj, _ = sim(0.5, answers_of(rows))
    with SimServer({"single-m": single, "maj-m": maj}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        served = srv.stats.served
        text = exp.read_text().replace(
            'evaluator: "exact"', 'evaluator: {"name": "regex", "pattern": "^wrong$"}'
        )
        exp.write_text(text)
        second = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == served
    for name in ("single", "majority-3"):
        a, b = first.setup(name), second.setup(name)
        assert a.quality is not None and b.quality is not None
        assert abs(a.quality + b.quality - 1.0) < 1e-9  # the regex marks exactly the wrong answers
    assert second.evaluator == {"name": "regex", "pattern": "^wrong$"}
