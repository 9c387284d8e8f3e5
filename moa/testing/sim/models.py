"""The simulated side of the loopback server: models with latency and known accuracy, fault plans,
the token counting tests compute expectations with, and the server's counters."""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from moa.errors import UserError

FAULT_KINDS = ("429", "500", "503", "reset", "malformed", "hang")
# `malformed` picks one of these two at random; scripts and plans may name them directly.
_EXTRA_KINDS = ("malformed_json", "no_choices")
_WRONG_CHOICES = 20  # independent wrong answers agree with probability 1/20


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def count_tokens(text: str) -> int:
    """The simulated token count of a text: its whitespace-separated words."""
    return len(text.split())


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The server's `prompt_tokens`: words of every message plus 3 per message."""
    return sum(count_tokens(message_text(m)) + 3 for m in messages)


def count_completion_tokens(answer: str) -> int:
    """The server's `completion_tokens` for an answer: its words, at least 1."""
    return max(1, count_tokens(answer))


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last `user` message, or "" when there is none."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


@dataclass(frozen=True)
class SimRequest:
    """What an answer function sees: the resolved model, the messages, the raw body."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    body: Mapping[str, Any]
    call_index: int
    """How many times this model answered this last user message before (0 for the first)."""


def _default_answer(req: SimRequest) -> str:
    words = last_user_text(req.messages).split()[:8]
    return f"answer from {req.model}: {' '.join(words)}"


@dataclass(frozen=True)
class _Accuracy:
    p: float
    answers: Mapping[str, str]
    seed: int

    def __call__(self, req: SimRequest) -> str:
        text = last_user_text(req.messages)
        correct = self.answers.get(text, self.answers.get(text.strip()))
        if correct is None:
            # Longest key first so "q12" wins over "q1" inside an aggregator's prompt.
            for key in sorted(self.answers, key=lambda k: (-len(k), k)):
                if key and key in text:
                    correct = self.answers[key]
                    break
        if correct is None:
            return _default_answer(req)
        material = f"{self.seed}\x00{req.model}\x00{text}\x00{req.call_index}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))
        if rng.random() < self.p:
            return correct
        return _wrong(correct, rng.randint(1, _WRONG_CHOICES))


def _wrong(correct: str, k: int) -> str:
    with contextlib.suppress(ValueError):
        return str(int(correct) + k)
    with contextlib.suppress(ValueError):
        value = float(correct)
        if math.isfinite(value):
            return repr(value + k)
    return f"{correct}-wrong{k}"


@dataclass(frozen=True)
class SimModel:
    """A simulated model: how long it takes and what it answers."""

    latency_s: float = 0.0
    """Time to the full answer; a stream spreads it evenly across its chunks."""
    answer: str | Callable[[SimRequest], str] | None = None
    """A fixed answer, a function of the request, or None for "answer from <model>: <words>"."""
    stream_chunk_delay_s: float | None = None
    """Delay before each streamed chunk; None means latency_s / number of chunks."""
    reported_usage: Mapping[str, int] | None = None
    """Usage the server claims in its replies instead of the true counts: a provider that lies
    (``SimServer.stats`` keeps counting the truth)."""

    @classmethod
    def with_accuracy(
        cls, p: float, answers: Mapping[str, str], *, seed: int = 0, latency_s: float = 0.0
    ) -> SimModel:
        """A model right with probability `p` on the questions of `answers` (question -> answer).

        The question is the last user message (exact match, else the longest key it contains).
        Draws are reproducible: they depend on (seed, model, message, call index) only.
        """
        if not 0.0 <= p <= 1.0:
            raise UserError(f"SimModel.with_accuracy: p={p} is not within [0, 1]")
        return cls(latency_s=latency_s, answer=_Accuracy(p, dict(answers), seed))

    def reply(self, req: SimRequest) -> str:
        """The answer text for one request."""
        if self.answer is None:
            return _default_answer(req)
        return self.answer if isinstance(self.answer, str) else self.answer(req)


@dataclass(frozen=True)
class FaultPlan:
    """Random faults: each completion request gets one with probability `rate` (seeded)."""

    rate: float
    kinds: Sequence[str] = FAULT_KINDS
    retry_after_s: float | None = 0.2
    """Retry-After sent with 429; None sends none."""
    retry_after_http_date: bool = False
    """Send Retry-After as an HTTP date (whole seconds, rounded up) instead of seconds."""
    hang_s: float = 3600.0
    seed: int = 0
    models: Collection[str] | None = None
    """Only these models get faults; None means all."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"FaultPlan: rate={self.rate} is not within [0, 1]")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS + _EXTRA_KINDS]
        if unknown or not self.kinds:
            raise UserError(f"FaultPlan: kinds {unknown or '[]'} are not among {FAULT_KINDS + _EXTRA_KINDS}")


@dataclass
class SimStats:
    """Counters of a SimServer; `SimServer.stats` hands out a consistent copy."""

    served: int = 0
    """200 completions (plain or streamed) written in full."""
    served_by_model: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Every completion request, including faults and rejected ones."""
    faults: Counter[str] = field(default_factory=Counter)
    request_log: list[tuple[float, str, str]] = field(default_factory=list)
    """(time.monotonic(), model, fault kind or "ok" / "not_found" / "bad_request")."""
    in_flight: int = 0
    max_in_flight: int = 0
    disconnects: int = 0
    """Requests whose client went away before the reply was complete."""

    def copy(self) -> SimStats:
        by_model, faults, log = Counter(self.served_by_model), Counter(self.faults), list(self.request_log)
        return replace(self, served_by_model=by_model, faults=faults, request_log=log)
