"""moa.eval's public names: every one resolves, and the package never reaches into the experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import moa.eval

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_every_name_in_all_resolves() -> None:
    """Every name in moa.eval.__all__ imports (names load on first use)."""
    assert len(set(moa.eval.__all__)) == len(moa.eval.__all__)
    for name in moa.eval.__all__:
        assert getattr(moa.eval, name) is not None, name


def test_evaluation_never_imports_the_experiment() -> None:
    """Resolving every moa.eval name imports no moa.experiment module: evaluation sits below it."""
    loaded = _modules_after("import moa.eval as e\nfor n in e.__all__: getattr(e, n)")
    assert sorted(m for m in loaded if m.startswith("moa.experiment")) == []


def test_datasets_and_statistics_load_no_runner() -> None:
    """Reading a dataset or computing a statistic does not load the topology and runner machinery."""
    loaded = _modules_after("from moa.eval import bootstrap_ci, load_dataset, Score")
    assert not {"moa._run", "moa.topology.loader", "moa.eval.judge"} & loaded
