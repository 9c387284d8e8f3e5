"""The code conventions that tools can check: strict typing and lint (module size and import
direction: tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_strict_passes() -> None:
    """mypy --strict is clean on moa/."""
    p = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]


def test_ruff_passes() -> None:
    """ruff finds nothing in moa/ and tests/."""
    p = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "moa", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-3000:]
