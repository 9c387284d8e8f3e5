"""The progress bar falls back to a plain line when rich is not installed."""

from __future__ import annotations

import io
import sys

import pytest

from moa.experiment.progress import Progress


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


def test_no_bar_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that is not a terminal gets no bar."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(enabled=True)
    bar.start("setups", 2)
    bar.advance()
    bar.close()
    assert err.getvalue() == ""
