"""A `moa compare` stopped from outside mid-run (a full disk, a signal), as a real subprocess: the
store stays readable, the stop is one line, and the next run pays only for what was not stored."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_mid_run_keeps_the_store_and_the_next_run_pays_only_the_rest(
    tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    """SIGINT or SIGTERM while pairs are being stored: one line, the store readable, and a re-run
    pays for exactly what was not stored. SIGTERM (`kill`, `timeout`, a stopped container) ended
    the process silently, its calls in flight unbooked; it now stops the run as Ctrl-C does."""
    rows = questions(N)
    slow = {m: sim(1.0, answers_of(rows), latency_s=0.2)[0] for m in ("single-m", "maj-m")}
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the child's own SIGINT handler: one inherited as ignored would stay so
    prelude = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)"
    with SimServer(slow) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, concurrency=CONCURRENCY)
        args = ("compare", str(exp), "--out", str(out), "--no-progress")
        proc = subprocess.Popen(
            _moa(prelude, *args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        give_up = time.monotonic() + 120  # a hang guard: a few pairs take well under a second
        while srv.stats.served < 12 and proc.poll() is None and time.monotonic() < give_up:
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        paid, port = srv.stats.requests, srv.port
    kept = _cached(out)
    fast = {m: sim(1.0, answers_of(rows))[0] for m in ("single-m", "maj-m")}
    with SimServer(fast, port=port) as srv:
        second = subprocess.run(_moa("", *args), env=env, capture_output=True, text=True, timeout=300)
        again = srv.stats.requests
    assert proc.returncode == code and len(err.splitlines()) == 1, err
    assert err.startswith(f"moa: {word}; finished pairs are kept in {out}")
    assert 0 < kept < NEEDED and paid - kept <= CONCURRENCY * 3  # lost: at most the calls in flight
    assert second.returncode == 0, second.stderr
    assert again == NEEDED - kept
