"""The sandbox contains hostile answers and scores passing and failing code."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from moa.eval import _fallback, execution
from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.registry import make_evaluator
from moa.eval.sandbox import SandboxResult, run_python_async


async def test_fork_bomb_is_refused() -> None:
    """A fork bomb fails at its first fork."""
    result = await run_python_async("import os\nwhile True: os.fork()", timeout_s=5)
    assert not result.passed and "os.fork" in result.reason


async def test_subprocess_is_refused() -> None:
    """Starting a process fails."""
    result = await run_python_async("import subprocess\nsubprocess.run(['true'])", timeout_s=5)
    assert not result.passed and "subprocess.Popen" in result.reason


async def test_infinite_loop_times_out() -> None:
    """An infinite loop is killed at the timeout."""
    result = await run_python_async("while True:\n    pass", timeout_s=1.5)
    assert not result.passed and result.reason == "timeout after 1.5s"
    assert result.duration_s < 10


async def test_huge_allocation_hits_memory_limit() -> None:
    """Allocating 50 GB fails with the memory limit."""
    result = await run_python_async("x = bytearray(50 * 1024**3)", timeout_s=5)
    assert not result.passed and result.reason.startswith("memory limit")


async def test_write_outside_directory_is_refused() -> None:
    """Writing outside the sandbox directory fails and leaves no file (not below /tmp: under bwrap
    that is the run's own tmpfs, where writing is allowed)."""
    target = Path(f"/var/tmp/moa_sandbox_escape_{uuid.uuid4().hex}")
    result = await run_python_async(f"open({str(target)!r}, 'w').write('x')", timeout_s=5)
    assert not result.passed and "outside the sandbox directory" in result.reason
    assert not target.exists()


async def test_write_inside_directory_is_allowed() -> None:
    """Writing into its own directory works."""
    result = await run_python_async("open('x.txt', 'w').write('x')\nprint(open('x.txt').read())", timeout_s=5)
    assert result.passed and result.stdout == "x\n"


async def test_parent_environment_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's environment holds no secret of the parent."""
    monkeypatch.setenv("MOA_SECRET_TEST", "xyz")
    result = await run_python_async("import os\nprint(dict(os.environ))", timeout_s=5)
    assert result.passed and "MOA_SECRET_TEST" not in result.stdout and "xyz" not in result.stdout


async def test_socket_to_local_listener_makes_no_connection() -> None:
    """A connection attempt to a loopback listener never arrives."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        code = (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')"
        )
        result = await run_python_async(code, timeout_s=5)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert not result.passed and "network" in result.reason
    assert result.network_isolation in ("namespace", "python-guard")


async def test_output_is_truncated() -> None:
    """Output past the limit is dropped and the reason says so."""
    result = await run_python_async("print('x' * 50000)", output_limit=100, timeout_s=5)
    assert len(result.stdout) == 100 and result.reason.endswith("output truncated")


async def test_syntax_error_reason() -> None:
    """Code that does not compile fails with a syntax error."""
    result = await run_python_async("def f(:\n  pass", timeout_s=5)
    assert not result.passed and result.reason.startswith("syntax error: line 1")


async def test_sandbox_directory_is_removed() -> None:
    """The temporary directory is gone afterwards."""
    result = await run_python_async("import os\nprint(os.getcwd())", timeout_s=5)
    assert result.passed and not os.path.exists(result.stdout.strip())


HUMANEVAL = Item(
    id="HumanEval/x",
    input="def add(a, b):\n    ",
    test="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    entry_point="add",
    meta={"prompt": "def add(a, b):\n    "},
)


async def test_humaneval_passing_answer() -> None:
    """A correct fenced function passes check(entry_point)."""
    score = await score_execution_async(
        "```python\ndef add(a, b):\n    return a + b\n```", HUMANEVAL, timeout_s=5
    )
    assert (score.value, score.detail) == (1.0, "passed")


async def test_humaneval_failing_answer() -> None:
    """A wrong function fails with the assertion as reason."""
    score = await score_execution_async(
        "```python\ndef add(a, b):\n    return a - b\n```", HUMANEVAL, timeout_s=5
    )
    assert score.value == 0.0 and (score.detail or "").startswith("tests failed: AssertionError")


async def test_assert_list_reports_failing_index() -> None:
    """The first failing assert line is reported by its 1-based index and quoted."""
    item = Item(id="1", input="q", tests=["assert sq(2) == 4", "assert sq(3) == 10", "assert sq(0) == 0"])
    evaluator = make_evaluator({"name": "execution", "timeout_s": 5})
    score = await evaluator.score(
        item, "def sq(x):\n    return x * x\n\nif __name__ == '__main__':\n    input()"
    )
    assert score.value == 0.0
    assert score.detail == "tests failed: test 2 of 3 `assert sq(3) == 10`: AssertionError"
    passing = await evaluator.score(
        item.model_copy(update={"tests": ["assert sq(2) == 4"]}), "def sq(x): return x*x"
    )
    assert passing.value == 1.0


async def test_answer_without_code() -> None:
    """Prose without code scores 0 with a reason."""
    score = await score_execution_async("I do not know.", HUMANEVAL)
    assert (score.value, score.detail) == (0.0, "no code found in the answer")


async def test_python_guard_fallback_blocks_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without namespaces the Python-level guard refuses sockets and says so."""
    monkeypatch.setattr(_fallback, "_unshare_function", lambda: None)
    result = await run_python_async(
        "import socket\nsocket.create_connection(('127.0.0.1', 9))", timeout_s=5, isolation="fallback"
    )
    assert result.network_isolation == "python-guard" and result.isolation == "fallback"
    assert not result.passed and "network" in result.reason


@pytest.mark.parametrize(
    ("code", "tests", "reason"),
    [
        ("x = 1\n" + "#" * (2 << 20), ["assert x == 1"], "the answer's code does not fit the sandbox's disk"),
        ("x = 1\n", ["assert x == 1 # " + "#" * (1 << 20)] * 2, "the answer and its tests do not fit"),
    ],
    ids=["answer", "tests"],
)
async def test_answer_larger_than_the_disk_fails_naming_it(code: str, tests: list[str], reason: str) -> None:
    """An answer (or its tests) too large for the sandbox's disk scores a failure that says so; bwrap
    stopping while it copied the file in raised "bwrap failed to build the sandbox", the machine's
    fault, out of the evaluator."""
    result = await run_python_async(code, tests=tests, disk_mb=1)
    assert not result.passed and result.reason.startswith(reason), result.reason


async def test_programs_run_one_per_core_so_a_busy_experiment_does_not_time_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An experiment scores ``concurrency`` answers at once (8 by default): all eight programs ran
    together, and on two cores correct answers whose tests need a few CPU-seconds each ended as
    ``timeout after 10.0s``. Now at most one program per core runs at once (its clock starts when
    it starts), and every answer still passes."""
    monkeypatch.setattr(execution, "_cores", lambda: 2, raising=False)
    running: list[int] = [0, 0]  # now, most
    real = execution.run_python_async

    async def counted(*args: Any, **kwargs: Any) -> SandboxResult:
        running[0] += 1
        running[1] = max(running)
        try:
            return await real(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(execution, "run_python_async", counted)
    item = Item(id="1", input="q", tests=["assert sq(3) == 9"])
    answer = "def sq(x):\n    return x * x\n"
    scores = await asyncio.gather(*(score_execution_async(answer, item, timeout_s=30) for _ in range(6)))
    assert [s.value for s in scores] == [1.0] * 6
    assert running[1] == 2


def test_an_ended_loop_whose_programs_queued_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-loop limit was weak-keyed, but a Semaphore that was waited on holds its loop: every
    `Experiment.run` (a loop) whose scoring queued was kept for good. Ended loops go as a new one
    comes."""
    import gc
    import weakref

    monkeypatch.setattr(execution, "_cores", lambda: 1, raising=False)
    item = Item(id="1", input="q", tests=["assert sq(3) == 9"])
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def score_two() -> list[float]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        answer = "def sq(x):\n    return x * x\n"
        scores = await asyncio.gather(*(score_execution_async(answer, item, timeout_s=30) for _ in range(2)))
        return [s.value for s in scores]

    assert [asyncio.run(score_two()) for _ in range(3)] == [[1.0, 1.0]] * 3
    gc.collect()
    assert [r() is None for r in loops[:-1]] == [True, True]  # the last goes when the next comes


@pytest.mark.parametrize("isolation", ["bwrap", "fallback"])
async def test_the_cpu_limit_is_the_whole_limit(isolation: str) -> None:
    """With ``cpu_s=3`` a program needing 2.2 CPU-seconds passes and an endless one meets the limit
    (SIGXCPU came one second early: 2 seconds into a 3-second limit).

    The program burns by the clock the limit reads: the kernel's tick-sampled user + system time
    (the process's ``CPUCLOCK_PROF`` clock, clock id ``-8`` on Linux). ``time.process_time`` reads
    the exact scheduler clock instead, and on a busy machine tick sampling charged a program that
    had burnt 2.2 s by that clock 3 s, so the limit fired in a run beside other work."""
    burn = (
        "import time\n"
        "PROF = -8  # Linux: ((~pid 0) << 3) | CPUCLOCK_PROF, what RLIMIT_CPU counts\n"
        "def burn(s):\n"
        "    end = time.clock_gettime(PROF) + s\n"
        "    while time.clock_gettime(PROF) < end:\n"
        "        pass\n"
    )
    limits: dict[str, Any] = {"cpu_s": 3, "timeout_s": 120, "isolation": isolation}
    # 2.2 CPU-seconds and the start-up: past the old soft limit (2 s), well within the new one
    within = await run_python_async(burn, tests=["burn(2.2)"], **limits)
    endless = await run_python_async(burn, tests=["burn(1e9)"], **limits)
    assert (within.passed, within.reason) == (True, "passed")
    assert not endless.passed and endless.reason.startswith("cpu limit (3s)"), endless.reason
