"""The pairwise judge evaluator (``judge``): a judge topology compares a setup's answer with the
baseline's on the same item, once in each order, and the two verdicts make the setup's score.

::

    evaluator: {name: judge, topology: judge.yaml, show_execution: false}

* The prompt is ``JUDGE_PROMPT``; the verdict is parsed strictly (``parse_verdict``).
* The verdict parser validates the judge topology's answer inside the run (``validate_output``), so
  a malformed reply goes through the normal retry path of the output node (its agent's
  ``retry.max_attempts``) and is never cached. A malformed reply after the retries (or from a
  ``reduce`` output node, which has no call to retry) is stored as an erroring judgment, and the
  pair scores as a tie (0.5) with the reason in its detail.
* The two orders combine with ``combine_swapped``: opposite directions mean the judge followed the
  position, not the answer, and the pair is a tie.
* ``show_execution: true`` runs both answers against the item's tests in the sandbox first and shows
  the outcomes to the judge (items without tests show nothing).
* Any other judge failure (provider down, over budget) raises: the pair stays unscored and the next
  run of the experiment judges it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moa.errors import MalformedReply, MoAError
from moa.eval.base import Score
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionConfig, score_execution_async
from moa.eval.judge_parse import Verdict, combine_swapped, format_judge_prompt, parse_verdict
from moa.experiment.scoring import PairScore
from moa.experiment.store import JudgmentRow
from moa.results import CallRecord

if TYPE_CHECKING:
    from moa._run import Runner
    from moa.topology.definition import Topology

__all__ = ["JudgeConfig", "JudgeEvaluator"]


class JudgeConfig(BaseModel):
    """Configuration of the ``judge`` evaluator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["judge"] = "judge"
    topology: str = Field(..., min_length=1)
    """The judge: a topology file (relative to the experiment file) or a preset name."""
    show_execution: bool = False
    """Run both answers against the item's tests first and show the judge the outcomes."""
    execution: ExecutionConfig = ExecutionConfig()
    """Sandbox limits used when ``show_execution`` is on."""


class JudgeEvaluator:
    """Judges a setup's answer against the baseline's in both orders (see the module docstring)."""

    name = "judge"

    def __init__(
        self, config: JudgeConfig, *, base_dir: str | Path | None = None, topology: Topology | None = None
    ) -> None:
        from moa.topology.loader import load

        self.config = config
        # loaded (and validated) now, with the experiment, so a bad judge fails before any run
        self.topology = topology if topology is not None else load(config.topology, relative_to=base_dir)
        self._executions: dict[tuple[str, str], str | None] = {}

    @property
    def identity(self) -> dict[str, Any]:
        """What, beyond the configuration, makes two judges different: the topology's content."""
        from moa.experiment.spec import canonical_hash

        return {"topology_hash": canonical_hash(self.topology.model_dump(mode="json"))}

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Runner) -> PairScore:
        """The setup's score against the baseline: 1 much better, 0.5 parity, 0 much worse."""
        ex_setup = ex_base = None
        if self.config.show_execution:
            ex_setup, ex_base = await asyncio.gather(
                self._execution(item, answer), self._execution(item, baseline_answer)
            )
        first, second = await asyncio.gather(
            self._judge(item, answer, baseline_answer, ex_setup, ex_base, runner, "a"),
            self._judge(item, baseline_answer, answer, ex_base, ex_setup, runner, "b"),
        )
        return PairScore(_combine(first, second), (first, second))

    async def _execution(self, item: Item, answer: str) -> str | None:
        if item.test is None and not item.tests:
            return None
        key = (item.id, answer)
        if key not in self._executions:
            limits = self.config.execution.model_dump(exclude={"name"})
            s = await score_execution_async(answer, item, **limits)
            self._executions[key] = (
                "all tests passed" if s.value == 1.0 else f"the tests did not pass: {s.detail}"
            )
        return self._executions[key]

    async def _judge(
        self,
        item: Item,
        answer_a: str,
        answer_b: str,
        ex_a: str | None,
        ex_b: str | None,
        runner: Runner,
        position: Literal["a", "b"],
    ) -> JudgmentRow:
        """One judgment; ``position`` is where the setup's answer is (``a``: first)."""
        prompt = format_judge_prompt(item.input, answer_a, answer_b, execution_a=ex_a, execution_b=ex_b)
        calls: list[CallRecord] = []
        try:
            verdict = await self._ask(prompt, runner, calls)
        except MalformedReply as e:
            return JudgmentRow(position, None, None, None, f"MalformedReply: {e.message}", calls)
        setup_verdict = verdict if position == "a" else verdict.swapped()
        return JudgmentRow(position, verdict.value, setup_verdict.score, None, None, calls)

    async def _ask(self, prompt: str, runner: Runner, calls: list[CallRecord]) -> Verdict:
        # the parser validates the judge's answer inside the run, so a reply without a verdict is
        # retried like any malformed reply (and never cached), whatever the judge topology's shape
        try:
            result = await runner.run(self.topology, prompt, validate_output=_validate)
        except MoAError as e:
            calls.extend(e.calls)
            raise
        calls.extend(result.calls)
        return parse_verdict(result.output)


def _validate(text: str) -> None:
    parse_verdict(text)


def _combine(first: JudgmentRow, second: JudgmentRow) -> Score:
    if first.verdict is None or second.verdict is None:
        bad = first if first.verdict is None else second
        order = "setup first" if bad.position == "a" else "setup second"
        return Score(0.5, f"tie: no verdict ({order}): {bad.error}")
    v_ab, v_ba = Verdict(first.verdict), Verdict(second.verdict)
    value = combine_swapped(v_ab, v_ba)
    detail = f"setup first: [[{v_ab.value}]], setup second: [[{v_ba.value}]]"
    if (v_ab.score - 0.5) * (v_ba.swapped().score - 0.5) < 0:
        detail += " (inconsistent across orders: tie)"
    return Score(value, detail)
