"""The files of an experiment folder after a report is written again: none of them is left from an
earlier report it no longer matches."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from moa.experiment import rebuild_report
from tests.view.helpers import build_big


def test_a_plot_that_cannot_be_drawn_again_removes_the_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`moa report` without matplotlib removes the pareto.png of an earlier report (the folder showed
    an older run's plot) and says so in the summary and report.md."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "exp"
    build_big(out, 30)
    asyncio.run(rebuild_report(out))
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    # matplotlib as a Python without the `report` extra sees it: not importable
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    summary = asyncio.run(rebuild_report(out))
    assert not (out / "pareto.png").exists()
    said = [n for n in summary.notes if "pareto.png" in n]
    assert len(said) == 1 and "matplotlib is not installed" in said[0] and "removed" in said[0]
    assert said[0] in json.loads((out / "summary.json").read_text())["notes"]
    report = (out / "report.md").read_text()
    assert said[0] in report and "](pareto.png)" not in report
