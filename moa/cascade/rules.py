"""Accept rules as small objects with one question each: is this stage's answer final?

``agree`` counts equal samples (normalised as the ``majority`` reducer does), ``judge`` asks a rater
for its confidence, ``tests`` runs the answer against the item's tests in the sandbox, and a Python
callable decides anything else. A rule that makes calls (the judge) makes them through the
``JudgeRun`` the cascade hands it, so they are recorded, costed and under the cascade's budget."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from moa._run.reducers import normalise
from moa._run.typed import answer_key
from moa.cascade.confidence import confidence_prompt, parse_confidence
from moa.cascade.context import CascadeContext
from moa.results import RunInput, RunResult
from moa.topology.definition import Topology
from moa.topology.graph import Graph

__all__ = ["Agree", "Custom", "Judge", "JudgeRun", "Rule", "Tests", "last_user_text"]

#: runs a rater topology on a prompt with an output check, on the cascade's account
JudgeRun = Callable[[Topology, str, Callable[[str], None]], Awaitable[RunResult]]


class Rule(Protocol):
    def graphs(self) -> Sequence[tuple[str, Graph]]:
        """The graphs the rule may run (checked before any call)."""
        ...

    async def accepts(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> bool: ...


def last_user_text(prompt: RunInput) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass(frozen=True, slots=True)
class Agree:
    """``k`` of the stage's samples are the same answer; an answer with nothing to compare (no
    number under ``last_number``, empty text) agrees with nothing. Under typed output, ``vote_on:
    text`` compares the samples' parsed values (``answer_key``), as the stage's vote does."""

    k: int
    vote_on: str = "text"

    def graphs(self) -> Sequence[tuple[str, Graph]]:
        return ()

    def agreeing(self, samples: Sequence[str], parsed: Sequence[Any] = ()) -> int:
        if parsed and self.vote_on == "text":
            counts = Counter(key for p in parsed if (key := answer_key(p)))
        else:
            counts = Counter(key for s in samples if (key := normalise(s, self.vote_on)))
        return max(counts.values(), default=0)

    async def accepts(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> bool:
        return self.agreeing(ctx.samples, ctx.parsed_samples) >= self.k


@dataclass(frozen=True, slots=True)
class Judge:
    """The rater's confidence in the answer is at least ``threshold``."""

    topology: Topology
    threshold: float
    label: str

    def graphs(self) -> Sequence[tuple[str, Graph]]:
        return ((self.label, self.topology.graph),)

    async def confidence(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> float:
        """The rater's confidence in ``answer`` (0..1); a reply that never reads is ``MalformedReply``."""
        out = self.topology.graph.nodes[self.topology.graph.output]
        model = out.agent.model if out.agent is not None else ""

        def check(text: str) -> None:
            parse_confidence(text, node=out.id, model=model)

        prompt = confidence_prompt(last_user_text(ctx.prompt), answer)
        result = await run_judge(self.topology, prompt, check)
        return parse_confidence(result.output, node=out.id, model=model)

    async def accepts(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> bool:
        return await self.confidence(answer, ctx, run_judge) >= self.threshold


@dataclass(frozen=True, slots=True)
class Tests:
    """The answer passes the item's tests in the sandbox; without an item or tests nothing can be
    verified, so the stage escalates."""

    def graphs(self) -> Sequence[tuple[str, Graph]]:
        return ()

    async def accepts(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> bool:
        item = ctx.item
        if item is None or not (item.tests or item.test):
            return False
        # the sandbox is heavy to import and only this rule needs it
        from moa.eval.execution import score_execution_async

        score = await score_execution_async(answer, item)
        return score.value >= 1.0


@dataclass(frozen=True, slots=True)
class Custom:
    """A Python callable ``(answer, context) -> bool`` (or an awaitable of it)."""

    fn: Callable[..., Any]

    def graphs(self) -> Sequence[tuple[str, Graph]]:
        return ()

    async def accepts(self, answer: str, ctx: CascadeContext, run_judge: JudgeRun) -> bool:
        verdict = self.fn(answer, ctx)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)
