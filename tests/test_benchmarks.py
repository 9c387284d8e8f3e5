"""The benchmark scripts run end to end at toy sizes (their figures are read from real runs, not here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = {
    "critical_path.py": ["--runs", "1", "--latency-ms", "20"],
    "throughput.py": [
        "--calls",
        "60",
        "--litellm-calls",
        "20",
        "--rounds",
        "1",
        "--concurrency",
        "8",
        "--fanout-runs",
        "2",
        "--fanout-latency-ms",
        "20",
        "100",
    ],
    "experiment_scale.py": ["--items", "60", "--concurrency", "8"],
    "startup.py": ["--runs", "1", "--litellm-runs", "1"],
    "accounting.py": ["--calls", "50", "--books", "2000", "--rounds", "1"],
    "serve_throughput.py": ["--calls", "60", "--rounds", "1", "--concurrency", "8"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_script_runs(script: str, tmp_path: Path) -> None:
    """Each benchmark starts its loopback server, measures, and prints its ratio table."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *SMOKE[script]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # exit 1 means a target was missed, which toy sizes on a busy machine may do; anything else is a crash
    assert p.returncode in (0, 1), p.stderr[-2000:]
    assert "target" in p.stdout and "|" in p.stdout, p.stdout[-2000:]
    assert "Traceback" not in p.stderr
    if script == "throughput.py":  # one fan-out row per latency, each with its overhead in ms
        assert "20 ms per call" in p.stdout and "100 ms per call" in p.stdout, p.stdout[-2000:]
        # the collector's share per call, and where the fan-out's time over the ideal goes
        assert "in the collector µs/call" in p.stdout and "first of 32 replies" in p.stdout


@pytest.mark.slow
def test_fanout_against_the_go_server_runs(tmp_path: Path) -> None:
    """fanout_server.py builds the Go server and measures the fan-out against both servers."""
    import shutil

    if shutil.which("go") is None:
        if os.environ.get("MOA_REQUIRE_TOOLCHAINS"):
            pytest.fail("MOA_REQUIRE_TOOLCHAINS is set and `go` is not on PATH")
        pytest.skip("no Go toolchain")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fanout_server.py"), "--rounds", "1", "--runs", "1",
         "--latency-ms", "20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| Python sim server |" in p.stdout and "| Go server " in p.stdout, p.stdout[-2000:]


@pytest.mark.slow
def test_instruction_counts_run(tmp_path: Path) -> None:
    """instructions.py counts a served request's instructions under callgrind (the app answers 200)."""
    import shutil

    if shutil.which("valgrind") is None:
        if os.environ.get("MOA_REQUIRE_TOOLCHAINS"):
            pytest.fail("MOA_REQUIRE_TOOLCHAINS is set and `valgrind` is not on PATH")
        pytest.skip("no valgrind")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "instructions.py"), "--small", "2", "--large", "4",
         "--serve-concurrency", "2", "--only", "moa serve app"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"\| moa serve app +\| 2 +\| [1-9][\d.]*k ", p.stdout), p.stdout  # a count, not 0
