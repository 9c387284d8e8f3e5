"""Simulated models: how long they take and what they answer, including answers right with a known
probability (so statistics can be checked against the truth) and usage they lie about."""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moa.errors import UserError
from moa.testing.sim.tokens import last_user_text

_WRONG_CHOICES = 20  # independent wrong answers agree with probability 1/20


def short_name(model: str) -> str:
    """The model name without a `provider/` prefix, as litellm sends it."""
    return model.split("/", 1)[1] if "/" in model else model


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
