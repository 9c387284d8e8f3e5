"""The parent's side of the verdict channel: the step tokens it hands the harness, and what it read
back, turned into pass/fail and one line of reason. Nothing the program prints or writes as a file
enters the verdict; see ``_prelude.py`` for the harness's side."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from moa.eval.isolation import ProcessOutcome

__all__ = ["MAX_TESTS", "TAMPERED", "Verdict", "VerdictPipe", "decide", "make_tokens", "parse"]

#: the reason of a run whose verdict pipe held anything but what the harness writes
TAMPERED = "the program wrote to the sandbox's verdict channel"

#: tests one run may carry: their tokens must fit the pipe's buffer before the program starts
MAX_TESTS = 1500


def make_tokens(steps: int) -> list[bytes]:
    """One fresh random token per step: knowing one tells nothing of the next."""
    return [secrets.token_hex(16).encode() for _ in range(steps)]


class VerdictPipe:
    """The pipe a harness writes its tokens to, read by the parent alone: the program inherits
    ``write_fd``; once it ended, ``collect`` closes the parent's copy and reads what is there
    without blocking (a straggler still holding the write end cannot stall the parent)."""

    def __init__(self, *, mode: int | None = None) -> None:
        self.read_fd, self.write_fd = os.pipe()
        if mode is not None:
            # bwrap as root runs the program as another uid, which may reopen the pipe via /proc
            os.fchmod(self.write_fd, mode)

    def collect(self, limit: int) -> bytes:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1
        os.set_blocking(self.read_fd, False)
        data = bytearray()
        with contextlib.suppress(BlockingIOError, OSError):
            while len(data) < limit and (chunk := os.read(self.read_fd, 65536)):
                data.extend(chunk)
        return bytes(data[:limit])

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def __enter__(self) -> VerdictPipe:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the verdict pipe held: steps completed in order, the harness's failure line, and
    whether anything else was written there."""

    completed: int
    steps: int
    failure: dict[str, Any] | None
    tampered: bool

    @property
    def finished(self) -> bool:
        return self.completed == self.steps and self.failure is None and not self.tampered


#: the failure kinds the harness (``_prelude``) reports
_HARNESS_KINDS = frozenset({"syntax", "memory", "blocked", "exit", "exception"})


def parse(data: bytes, tokens: list[bytes]) -> Verdict:
    done = 0
    rest = data
    for token in tokens:
        if not rest.startswith(token + b"\n"):
            break
        rest = rest[len(token) + 1 :]
        done += 1
    failure: dict[str, Any] | None = None
    tampered = False
    if rest.startswith(b"F ") and rest.endswith(b"\n") and rest.count(b"\n") == 1:
        try:
            loaded = json.loads(rest[2:])
        except ValueError:
            tampered = True
        else:
            # only the shapes the harness writes: anything else was written by the program
            genuine = isinstance(loaded, dict) and loaded.get("kind") in _HARNESS_KINDS
            failure, tampered = (loaded, False) if genuine else (None, True)
    elif rest:
        tampered = True
    return Verdict(completed=done, steps=len(tokens), failure=failure, tampered=tampered)


def _failure_reason(failure: dict[str, Any], step: int, steps: int, memory_mb: int) -> str:
    kind = failure.get("kind")
    detail = str(failure.get("detail", ""))
    if kind == "syntax":
        where = str(failure.get("file", "answer.py"))
        prefix = "syntax error" if where == "answer.py" else f"syntax error in {where}"
        return f"{prefix}: {detail}"
    if kind == "memory":
        return f"memory limit ({memory_mb:g} MB)"
    if kind == "blocked":
        return f"blocked: {detail}"
    if kind == "exit":
        return f"exited before the end (SystemExit {detail})"
    name = str(failure.get("type", "Exception"))
    text = f"{name}: {detail}" if detail else name
    if step >= 1 and steps > 1:
        text = f"test {step} of {steps - 1}: {text}"
    return f"tests failed: {text}" if name == "AssertionError" else f"error: {text}"


def _ended_reason(outcome: ProcessOutcome, cpu_s: int, file_size_mb: int) -> str:
    code = outcome.returncode
    if code is not None and code < 0:
        if -code == signal.SIGXCPU:
            return f"cpu limit ({cpu_s:g}s)"
        if -code == signal.SIGXFSZ:
            return f"file size limit ({file_size_mb:g} MB)"
        return f"killed by {outcome.killed_by}"
    return f"exited with code {code} before the end"


def decide(
    verdict: Verdict,
    outcome: ProcessOutcome,
    *,
    timeout_s: float,
    cpu_s: int,
    memory_mb: int,
    file_size_mb: int,
) -> tuple[bool, str]:
    """Passed only when every step's token arrived in order, nothing else did, and the run was
    not cut short; otherwise the first cause, in the order a reader needs it."""
    if verdict.tampered:
        return False, TAMPERED
    if outcome.timed_out:
        return False, f"timeout after {timeout_s:.1f}s"
    if verdict.failure is not None:
        return False, _failure_reason(verdict.failure, verdict.completed, verdict.steps, memory_mb)
    if verdict.finished:
        return True, "passed"
    reason = _ended_reason(outcome, cpu_s, file_size_mb)
    if verdict.steps > 1:
        reason += f" ({max(0, verdict.completed - 1)} of {verdict.steps - 1} tests completed)"
    return False, reason
