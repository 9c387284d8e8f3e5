"""One experiment run per --out folder: a second is refused at once naming the holder, and a killed
holder leaves no lock behind."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exp_helpers import answers_of, questions, sim, write_experiment

from moa.errors import UserError
from moa.experiment import Experiment, rebuild_report
from moa.experiment.store import LOCK_NAME, FolderLock, Store
from moa.testing.sim import SimServer

REPO = Path(__file__).resolve().parents[2]
# generous: process start-up on a loaded machine; a second run that ran would take a minute
TIMEOUT_S = 20


def _holder_pid(lock_file: Path) -> int | None:
    try:
        return int(json.loads(lock_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _compare(exp: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "moa", "compare", str(exp), "--out", str(out), "--no-progress"]


def test_second_compare_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    """While one `moa compare` runs, a second on its --out exits 2 with one line naming the holder's
    pid; after SIGKILL of the first, a third run takes the lock and completes the experiment."""
    rows = questions(30)
    # slow while the first run holds the lock (it is killed long before it could finish), fast after
    slow = {m: sim(1.0, answers_of(rows), latency_s=1.0)[0] for m in ("single-m", "maj-m")}
    fast = {m: sim(1.0, answers_of(rows))[0] for m in ("single-m", "maj-m")}
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with SimServer(slow) as srv:
        port = srv.port
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, concurrency=1)
        first = subprocess.Popen(
            _compare(exp, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 60
            while _holder_pid(out / LOCK_NAME) != first.pid:
                assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
                assert time.monotonic() < deadline, "the first run never took the lock"
                time.sleep(0.05)
            second = subprocess.run(
                _compare(exp, out), env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            assert first.poll() is None, "the first run should still be running"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert first.stderr is not None
            first.stderr.close()
    lines = second.stderr.splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"another moa compare (pid {first.pid}, started " in lines[0]
    assert str(out) in lines[0] and "is using this directory" in lines[0]
    # the kernel dropped the killed run's lock; the file it wrote is still there and must not matter
    assert _holder_pid(out / LOCK_NAME) == first.pid
    with SimServer(fast, port=port):
        third = subprocess.run(_compare(exp, out), env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert len(results) == 60 and all(r["error"] is None for r in results)


def test_python_api_is_refused_while_the_folder_is_locked(tmp_path: Path) -> None:
    """`Experiment.run()` on a folder locked by another holder raises one line and sends no request."""
    rows = questions(3)
    models = {"single-m": sim(1.0, answers_of(rows))[0], "maj-m": sim(1.0, answers_of(rows))[0]}
    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        with FolderLock(tmp_path / "out"):
            with pytest.raises(UserError, match=rf"another moa compare \(pid {os.getpid()}, ") as info:
                Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
            assert "\n" not in str(info.value)
            assert srv.stats.served == 0
        # released: the same call now runs
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.complete


def test_lock_excludes_within_one_process_and_is_released(tmp_path: Path) -> None:
    """Two locks on one folder exclude each other even in one process; release lets the next take it."""
    a, b = FolderLock(tmp_path / "new" / "out"), FolderLock(tmp_path / "new" / "out")
    a.acquire()
    try:
        with pytest.raises(UserError, match="is using this directory"):
            b.acquire()
        assert not b.held
    finally:
        a.release()
    with b:
        assert b.held
    assert not b.held and (tmp_path / "new" / "out" / LOCK_NAME).is_file()


def test_planted_lock_content_cannot_break_the_line(tmp_path: Path) -> None:
    """Holder fields with newlines or junk in the lock file still give one line."""
    holder = FolderLock(tmp_path)
    holder.acquire()
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 7, "started": "x\ny", "host": "h\x1b[31m"}))
        with pytest.raises(UserError) as info:
            FolderLock(tmp_path).acquire()
        assert "\n" not in str(info.value) and "pid 7" in str(info.value)
    finally:
        holder.release()


def test_report_reads_while_a_compare_holds_the_lock(tmp_path: Path) -> None:
    """`moa report` only reads the store: it works while the folder is locked."""
    rows = questions(3)
    models = {"single-m": sim(1.0, answers_of(rows))[0], "maj-m": sim(1.0, answers_of(rows))[0]}
    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    with FolderLock(tmp_path / "out"):
        summary = asyncio.run(rebuild_report(tmp_path / "out"))
    assert summary.setup("single").n == 3


def test_store_refused_after_locking_releases_the_lock(tmp_path: Path) -> None:
    """A store refused by `Store.open(exclusive=True)` leaves the folder unlocked; a good one holds it
    until `close()`."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiment.sqlite").write_bytes(b"not sqlite\n" * 10)
    with pytest.raises(UserError, match="not a readable experiment store"):
        Store.open(out, exclusive=True)
    with FolderLock(out):
        pass
    (out / "experiment.sqlite").unlink()
    store = Store.open(out, exclusive=True)
    with pytest.raises(UserError, match="is using this directory"):
        FolderLock(out).acquire()
    store.close()
    with FolderLock(out):
        pass


def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """A results folder from elsewhere whose `.moa.lock` is a symlink to a file of the user's: the
    lock wrote its holder's line through it, overwriting that file. It is refused in one line."""
    victim = tmp_path / "mine.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(
        UserError, match=r"\.moa\.lock: the lock file is a symlink, not a regular file; remove it"
    ):
        FolderLock(out).acquire()
    assert victim.read_text() == "precious\n"
