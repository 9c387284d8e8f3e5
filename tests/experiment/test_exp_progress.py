"""The progress bar falls back to a plain line when rich is not installed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moa.experiment.progress import Progress, eta_text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_line_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without rich, a terminal still sees done/total, spend and ETA."""
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    bar = Progress(enabled=True)
    bar.start("setups", 2)
    bar.advance(0.5)
    bar.advance(0.25)
    bar.close()
    out = err.getvalue()
    assert "setups  2/2  $0.7500  ETA 0s" in out and out.endswith("\n")


def test_a_line_per_tenth_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that is not a terminal (a log file, CI) gets one plain line at each 10%, no redraws."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(enabled=True)
    bar.start("runs", 25)
    for _ in range(25):
        bar.advance(0.01)
    bar.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in err.getvalue()
    assert lines[0].startswith("runs: 3/25 (12%)  $0.0300  ETA ") and lines[-1].startswith(
        "runs: 25/25 (100%)"
    )


def test_disabled_progress_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(enabled=False)
    bar.start("runs", 5)
    bar.advance()
    bar.close()
    assert err.getvalue() == ""


@pytest.mark.parametrize(
    ("elapsed", "done", "total", "text"),
    [
        (10.0, 0, 5, "?"),
        (10.0, 1, 5, "40s"),
        (60.0, 1, 5, "4m00s"),
        (3600.0, 1, 3, "2h00m"),
        (5.0, 5, 5, "0s"),
    ],
)
def test_eta_is_the_pace_so_far_times_what_is_left(elapsed: float, done: int, total: int, text: str) -> None:
    """Slow local models get a real ETA from the first finished pair on."""
    assert eta_text(elapsed, done, total) == text


def test_pairs_replayed_from_the_cache_do_not_set_the_pace() -> None:
    """A resume replays the pairs cut off before they were stored at once, from the call cache:
    counted in the pace, 2 of 10 pairs "done" in no time said 0s were left."""
    assert eta_text(0.01, 2, 10, replayed=2) == "?"
    assert eta_text(10.0, 3, 10, replayed=2) == "1m10s"
    assert eta_text(0.01, 10, 10, replayed=10) == "0s"


def test_the_bar_leaves_replayed_pairs_out_of_its_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the bar: pairs replayed whole (``advance(replayed=True)``) leave the ETA unknown
    until a pair is answered for real."""
    from moa.testing import capture_events

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with capture_events() as events:
        bar = Progress(enabled=True)
        bar.start("runs", 10)
        bar.advance(replayed=True)
        bar.advance(replayed=True)
        bar.close()
    assert [(e["done"], e["eta"]) for e in events if e["event"] == "compare.progress"] == [(1, "?"), (2, "?")]


def test_a_short_run_prints_each_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer pairs than tenths: a pair that crosses several tenths prints one line, not one per
    tenth (3 pairs printed `runs: 1/3 (33%)` three times)."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(enabled=True)
    bar.start("runs", 3)
    for _ in range(3):
        bar.advance(0.01)
    bar.close()
    lines = [line.split("  ETA")[0] for line in err.getvalue().splitlines()]
    assert lines == ["runs: 1/3 (33%)  $0.0100", "runs: 2/3 (66%)  $0.0200", "runs: 3/3 (100%)  $0.0300"]


def test_with_moa_logging_on_the_tenths_are_events_not_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """`moa --log json compare ... 2> events.jsonl`: a plain progress line among the JSON events
    broke every reader of JSON lines; the tenths are `compare.progress` events instead."""
    from moa.testing import capture_events

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with capture_events() as events:
        bar = Progress(enabled=True)
        bar.start("runs", 4)
        for _ in range(4):
            bar.advance(0.25)
        bar.close()
    assert err.getvalue() == ""
    progress = [e for e in events if e["event"] == "compare.progress"]
    assert [(e["done"], e["total"]) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress[-1]["spent_usd"] == 1.0 and progress[-1]["eta"] == "0s"


def test_with_log_json_every_line_of_compares_stderr_is_an_event(tmp_path: Path) -> None:
    """`moa --log json compare ... 2> events.jsonl`: the closing "moa: reports written ..." line
    was plain text after the JSON events; it is a `compare.reports` event naming the files."""
    from exp_helpers import answers_of, questions, sim, write_experiment

    from moa.testing.sim import SimServer

    rows = questions(4)
    single, _ = sim(1.0, answers_of(rows))
    maj, _ = sim(1.0, answers_of(rows))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    with SimServer({"single-m": single, "maj-m": maj}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows)
        cmd = [sys.executable, "-m", "moa", "--log", "json", "compare", str(exp), "--out", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    last = events[-1]
    assert last["event"] == "compare.reports" and last["out"] == str(out)
    assert {"report.md", "summary.json", "results.jsonl"} <= set(last["files"])
