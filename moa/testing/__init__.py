"""Fakes for users' own tests (and moa's): models that answer without a network, and a way to
capture moa's log events. ``moa.testing.sim`` holds a loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import copy
import io
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from moa import log
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.results import Usage

__all__ = ["FunctionModel", "ScriptedModel", "capture_events", "count_words"]


def count_words(text: str) -> int:
    """The fakes' token count: whitespace-separated words (at least 1)."""
    return max(1, len(text.split()))


def _usage(request: ModelRequest, text: str) -> Usage:
    return Usage(sum(count_words(m.get("content", "")) for m in request.messages), count_words(text))


class FunctionModel:
    """A model whose reply is ``fn(request)``: a string, a ``ModelReply``, or an exception to raise.

    ``delay_s`` simulates latency (without blocking the loop); streaming yields word by word.
    ``calls`` keeps every request received."""

    local = False

    def __init__(
        self,
        fn: Callable[[ModelRequest], str | ModelReply | BaseException],
        *,
        delay_s: float = 0.0,
    ) -> None:
        self.fn = fn
        self.delay_s = delay_s
        self.calls: list[ModelRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            out = self.fn(request)
            if isinstance(out, BaseException):
                raise out
            reply = (
                out if isinstance(out, ModelReply) else ModelReply(out, _usage(request, out), request.model)
            )
            if on_token is not None:
                words = reply.text.split(" ")
                for i, w in enumerate(words):
                    on_token(w if i == len(words) - 1 else w + " ")
                    await asyncio.sleep(0)
            return reply
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


class ScriptedModel(FunctionModel):
    """Answers from a script, in order: strings are replies, exceptions are raised (e.g.
    ``moa.RateLimited("slow down")``). After the script runs out, the last entry repeats."""

    def __init__(self, script: Sequence[str | ModelReply | BaseException], *, delay_s: float = 0.0) -> None:
        if not script:
            raise ValueError("ScriptedModel needs at least one entry")
        self.script = list(script)
        self.position = 0

        def next_entry(_: ModelRequest) -> str | ModelReply | BaseException:
            entry = self.script[min(self.position, len(self.script) - 1)]
            self.position += 1
            if isinstance(entry, BaseException):
                # a fresh copy each time: one exception instance raised twice grows its traceback
                try:
                    return copy.copy(entry)
                except Exception:
                    return entry
            return entry

        super().__init__(next_entry, delay_s=delay_s)


@contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Turn moa's logging on (JSON) for the block and collect each event as a dict."""
    buf = io.StringIO()
    events: list[dict[str, Any]] = []
    previous = log.logger()
    log.configure_logging("json", stream=buf)
    try:
        yield events
    finally:
        log.use_logger(previous)
        for line in buf.getvalue().splitlines():
            if line.strip():
                events.append(json.loads(line))
