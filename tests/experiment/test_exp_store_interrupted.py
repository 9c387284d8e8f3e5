"""A `moa compare` stopped from outside mid-run (a full disk, a signal), as a real subprocess: the
store stays readable, the stop is one line, and the next run pays only for what was not stored."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import sqlite3
import subprocess
import sys
from pathlib import Path

from exp_helpers import answers_of, questions, sim, write_experiment

from moa.testing.sim import SimServer

REPO = Path(__file__).resolve().parents[2]
N, CONCURRENCY = 40, 4
#: the requests of the whole experiment: `single` once and `majority` three times per item
NEEDED = N * 4


def _moa(prelude: str, *args: str) -> list[str]:
    code = f"import sys\n{prelude}\nfrom moa.cli import main\nsys.exit(main())"
    return [sys.executable, "-c", code, *args]


def _cached(out: Path) -> int:
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT COUNT(*) FROM cache").fetchone()[0])
    finally:
        conn.close()


def test_a_full_disk_mid_run_stops_at_once_in_one_line_and_loses_nothing_stored(tmp_path: Path) -> None:
    """A store write refused mid-run (the file size limit stands in for a full disk): a reply whose
    caching failed was stored as its pair's provider error, the experiment went on sending (and
    paying for) every other request it could no longer keep, and stderr filled with tracebacks. It
    stops in one line; only the calls in flight are lost, and the next run pays for the rest."""
    rows = questions(N)
    models = {m: sim(1.0, answers_of(rows))[0] for m in ("single-m", "maj-m")}
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    # room for the store's first pairs, not for all of them; SIGXFSZ ignored: the write fails instead
    limit = (
        "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))"
    )
    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, concurrency=CONCURRENCY)
        args = ("compare", str(exp), "--out", str(out), "--no-progress")
        first = subprocess.run(_moa(limit, *args), env=env, capture_output=True, text=True, timeout=300)
        paid = srv.stats.requests
        kept = _cached(out)
        second = subprocess.run(_moa("", *args), env=env, capture_output=True, text=True, timeout=300)
        again = srv.stats.requests - paid
    assert first.returncode == 2 and len(first.stderr.splitlines()) == 1, first.stderr
    assert (
        f"{out / 'experiment.sqlite'}: the experiment store is damaged or cannot be written" in first.stderr
    )
    assert paid - kept <= CONCURRENCY * 3, (paid, kept)  # lost: at most the calls in flight
    assert second.returncode == 0, second.stderr
    assert again == NEEDED - kept  # what was stored is not paid again
