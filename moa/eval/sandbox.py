"""Run untrusted Python (a model's answer plus its tests) in the sandbox and decide pass or fail.

The process boundary is ``moa.eval.isolation`` (bubblewrap where it works, the weaker fallback
otherwise; ``SandboxResult.isolation`` says which). Inside it, ``_prelude.py`` is the harness: an
audit hook, then the answer's code and each test, each step followed by a token only the harness
holds, written to a pipe only the parent reads (``_verdict.py``). The run passes when every token
arrived in order and nothing else did: printing, writing files, exiting early (``sys.exit``,
``os._exit``), killing the harness or writing into the pipe all end as a failure with a reason.

The interpreter is the running one's base installation (``sys.base_prefix``), bound read-only, run
with ``-I -S``: the standard library only, never the project's virtual environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moa.eval._verdict import MAX_TESTS, Verdict, VerdictPipe, decide, make_tokens, parse
from moa.eval.isolation import Limits, ProcessOutcome, resolve_isolation, run_isolated

__all__ = ["SandboxResult", "run_python", "run_python_async"]

NetworkIsolation = Literal["namespace", "python-guard"]
_REPORT_LIMIT = 1 << 20
_SYSTEM = ("/usr/", "/bin/", "/lib/", "/lib64/")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How a sandboxed run ended; ``passed`` only when the program and every test ran to the end."""

    passed: bool
    reason: str
    stdout: str
    stderr: str
    returncode: int | None
    duration_s: float
    network_isolation: NetworkIsolation = "python-guard"
    isolation: str = "fallback"
    """``"bwrap"`` (the kernel-enforced sandbox) or ``"fallback"`` (rlimits and the audit hook)."""


def _interpreter() -> tuple[str, list[str]]:
    """The base interpreter's real path and the host paths it needs bound read-only (none when it
    is the system's, under /usr)."""
    executable = os.path.realpath(sys.executable)
    binds: list[str] = []
    for path in (os.path.realpath(sys.base_prefix), os.path.dirname(executable)):
        if (
            path != "/usr"
            and not path.startswith(_SYSTEM)
            and not any(path.startswith(b + "/") for b in binds)
        ):
            binds.append(path)
    return executable, binds


def _too_big(code: str, tests: Sequence[str], disk_mb: int) -> str | None:
    """Why the answer and its tests cannot be written into the sandbox's disk, if they cannot (bwrap
    would stop while building the sandbox, which reads as the machine's fault)."""
    answer = len(code.encode("utf-8", "replace"))
    written = answer + len(json.dumps(list(tests)).encode()) + (64 << 10)  # the harness and config
    if written <= disk_mb << 20:
        return None
    what = "the answer's code does" if answer + (64 << 10) > disk_mb << 20 else "the answer and its tests do"
    return f"{what} not fit the sandbox's disk ({written / (1 << 20):.1f} MB of {disk_mb} MB)"


async def _run_harness(
    code: str, tests: Sequence[str], run_name: str, limits: Limits, isolation: str
) -> tuple[ProcessOutcome, Verdict]:
    tokens = make_tokens(1 + len(tests))
    token_r, token_w = os.pipe()
    try:
        with VerdictPipe() as report:
            # the whole set fits the pipe's buffer (MAX_TESTS): written before the program exists
            os.write(token_w, b"".join(t + b"\n" for t in tokens))
            os.close(token_w)
            token_w = -1
            config = {"tokens_fd": token_r, "run_name": run_name, "tests": list(tests)}
            prelude = Path(__file__).with_name("_prelude.py").read_bytes()
            files = {"run.py": prelude, "answer.py": code.encode("utf-8", "replace"),
                     "config.json": json.dumps(config).encode()}  # fmt: skip
            python, binds = _interpreter()
            outcome, _ = await run_isolated(
                [python, "-I", "-S", "-B", "run.py", str(report.write_fd)],
                files=files,
                limits=limits,
                isolation=isolation,
                readonly_binds=binds,
                pass_fds=(token_r, report.write_fd),
            )
            return outcome, parse(report.collect(_REPORT_LIMIT), tokens)
    finally:
        for fd in (token_r, token_w):
            if fd >= 0:
                os.close(fd)


async def run_python_async(
    code: str,
    *,
    timeout_s: float = 10,
    cpu_s: int = 10,
    memory_mb: int = 512,
    file_size_mb: int = 16,
    max_procs: int = 64,
    max_open_files: int = 256,
    output_limit: int = 10_000,
    run_name: str = "__main__",
    tests: Sequence[str] = (),
    disk_mb: int = 64,
    isolation: str = "auto",
) -> SandboxResult:
    """Run ``code`` in the sandbox, then each of ``tests`` (Python sources run in the code's globals,
    each compiled alone); ``passed`` when all ran to their end without an exception.

    ``output_limit`` caps the bytes kept of stdout and of stderr (the rest is read and dropped; the
    reason then says ``output truncated``). ``run_name`` is the ``__name__`` the code sees: pass
    something other than ``"__main__"`` to skip its ``if __name__ == ...`` demo. ``isolation``:
    ``"auto"``, ``"bwrap"`` (an error where it does not work) or ``"fallback"``.
    """
    if len(tests) > MAX_TESTS:
        raise ValueError(f"{len(tests)} tests in one run; at most {MAX_TESTS}")
    limits = Limits(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        max_procs=max_procs + 1,  # the harness's worker thread counts
        max_output_bytes=output_limit,
        disk_mb=disk_mb,
        max_file_mb=file_size_mb,
        cpu_s=cpu_s,
        max_open_files=max_open_files,
    )
    if (too_big := _too_big(code, tests, disk_mb)) is not None:
        where = resolve_isolation(isolation)
        return SandboxResult(False, too_big, "", "", None, 0.0, isolation=where)
    outcome, verdict = await _run_harness(code, tests, run_name, limits, isolation)
    passed, reason = decide(
        verdict, outcome, timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, file_size_mb=file_size_mb
    )
    if outcome.output_truncated:
        reason += "; output truncated"
    return SandboxResult(
        passed=passed,
        reason=reason,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        returncode=outcome.returncode,
        duration_s=outcome.duration_s,
        network_isolation="namespace" if outcome.network_isolated else "python-guard",
        isolation=outcome.isolation,
    )


def run_python(code: str, **limits: Any) -> SandboxResult:
    """Synchronous ``run_python_async`` (not from inside a running event loop)."""
    return asyncio.run(run_python_async(code, **limits))
