"""The parent's side of the verdict channel: the step tokens it hands the harness, and what it read
back, turned into pass/fail and one line of reason. Nothing the program prints or writes as a file
enters the verdict; see ``_prelude.py`` for the harness's side."""

from __future__ import annotations

import json
import secrets
import signal
from dataclasses import dataclass
from typing import Any

from moa.eval.isolation import ProcessOutcome

__all__ = ["MAX_TESTS", "Verdict", "decide", "make_tokens", "parse"]

#: tests one run may carry: their tokens must fit the pipe's buffer before the program starts
MAX_TESTS = 1500


def make_tokens(steps: int) -> list[bytes]:
    """One fresh random token per step: knowing one tells nothing of the next."""
    return [secrets.token_hex(16).encode() for _ in range(steps)]


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
        return False, "the program wrote to the sandbox's verdict channel"
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
