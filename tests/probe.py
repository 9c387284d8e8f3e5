"""A short program run in a fresh interpreter on this checkout: a hang guard's timeout (a regex that
backtracks for minutes cannot be interrupted inside the test process) without a timed assertion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(*argv: str, timeout: float = 60) -> str:
    """The stdout of ``python *argv`` (``-c CODE`` or a script, and its arguments) run from the
    checkout's root with it on ``PYTHONPATH``; a failure or ``timeout`` raises."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout
