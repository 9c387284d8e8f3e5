"""Running a cascade: stage after stage on one runner, under one budget and one deadline, until an
accept rule holds (the last stage always answers).

The account of the whole cascade is one ``RunResult``: every stage's calls (and any judge's), their
``started_s`` counted from the cascade's start, its nodes, and ``stage``/``stages_run``. A stage that
fails for a model's reasons (an error reply, a lost quorum, a call past its ``timeout_s``) escalates
to the next, its calls kept; a budget, the deadline or bad input ends the cascade, its error carrying
every call made so far.

``record_stages`` is the opt-in other mode, for tuning a threshold offline: every stage runs, none
answers early, and each leaves a ``StageRecord`` (its answer, its cost, what its rule measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from moa import log
from moa._run import Runner
from moa._run.engine import (
    LOCAL_COST_NOTE,
    callable_name,
    checked,
    claim_watch,
    log_cancelled,
    stamp_failure,
    watch_run,
)
from moa._run.runner import RunOptions
from moa._run.typed import TypedOutput
from moa.calls.budget import Budget
from moa.cascade.context import CascadeContext, current_item
from moa.cascade.rules import Agree, Custom, Judge, JudgeRun, Rule
from moa.cascade.stages import Stage
from moa.errors import (
    MalformedReply,
    MoAError,
    ModelError,
    QuorumNotReached,
    TimedOut,
    UserError,
)
from moa.models.base import TokenCallback
from moa.results import CallRecord, NodeResult, RunInput, RunResult, Usage, new_run_id
from moa.topology.definition import Topology
from moa.topology.prompts import boundary_tag

__all__ = ["StageRecord", "record_stages", "run_cascade", "with_earlier"]

_T = TypeVar("_T")

_EARLIER = "Earlier candidate answers (from a cheaper first pass; they may be wrong):"


def with_earlier(prompt: RunInput, answers: Sequence[str]) -> RunInput:
    """``prompt`` with the earlier stages' answers appended to its (last) user turn, so a stage
    that reuses starts from what was already paid for. Each answer is under an ``[n] <<tag>>``
    line, the tag one no answer holds (``boundary_tag``): a cheap answer holding ``[2] ...`` would
    otherwise pass for one more candidate (a consensus of its making). No end line: the next
    candidate's line ends one, and the last ends the turn; every token here is paid on each call
    of the escalated stage."""
    if not answers:
        return prompt
    texts = [a.strip() for a in answers]
    tag = boundary_tag(texts)
    block = "\n\n".join(f"[{i}] <<{tag}>>\n{a}" for i, a in enumerate(texts, 1))
    extra = f"\n\n{_EARLIER}\n\n{block}"
    if isinstance(prompt, str):
        return prompt + extra
    msgs = [dict(m) for m in prompt]
    if msgs and msgs[-1].get("role") == "user":
        msgs[-1]["content"] = msgs[-1].get("content", "") + extra
    return msgs


def _escalates(error: MoAError) -> bool:
    """A failure a later stage may do better on (not a budget, the deadline or bad input).

    A call past its own ``timeout_s`` is a model's failure like an error reply: its ``TimedOut``
    names the node. The run's deadline (the engine's, the account's or a rule's) names none."""
    if isinstance(error, TimedOut):
        return error.node is not None
    return isinstance(error, ModelError | QuorumNotReached)


class _Account:
    """Everything the cascade's runs left, on one clock, under one run id."""

    def __init__(self, name: str, deadline_s: float | None) -> None:
        self.name, self.deadline_s = name, deadline_s
        self.t0 = time.perf_counter()
        self.calls: list[CallRecord] = []
        self.nodes: dict[str, NodeResult] = {}
        self.critical_path_s = 0.0
        #: the cascade's own id, as the engine makes one per run: its stages' and judges' runs keep
        #: theirs, and each `cascade.part` event ties one of them to this one
        self.run_id = new_run_id()
        self.log = log.for_run(self.run_id)
        if self.log is not None:
            self.log.info("cascade.start", topology=name)
        # a caller watching (serve, for a client that leaves) sees every part's calls, the one
        # cancelled in flight included (``run`` adds them)
        claim_watch(self.run_id, self.calls)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float | None:
        if self.deadline_s is None:
            return None
        left = self.deadline_s - self.now()
        if left <= 0:
            raise TimedOut(f"run of `{self.name}` passed its deadline of {self.deadline_s}s")
        return left

    def add(self, calls: Sequence[CallRecord], nodes: dict[str, NodeResult], offset: float) -> None:
        self.calls.extend(dataclasses.replace(c, started_s=c.started_s + offset) for c in calls)
        for nid, n in nodes.items():
            self.nodes[nid] = dataclasses.replace(
                n, started_s=n.started_s + offset, ended_s=n.ended_s + offset
            )

    async def run(
        self,
        runner: Runner,
        topology: Topology,
        prompt: RunInput,
        budget: Budget | None,
        on_token: TokenCallback | None = None,
        validate: Callable[[str], None] | None = None,
        output_type: type[BaseModel] | Mapping[str, Any] | None = None,
    ) -> RunResult:
        offset = self.now()
        try:
            deadline_s = self.remaining()
            with watch_run() as part:
                result = await runner.run(
                    topology.graph,
                    prompt,
                    name=topology.name,
                    budget=budget,
                    deadline_s=deadline_s,
                    on_token=on_token,
                    validate_output=validate,
                    output_type=output_type,
                )
        except asyncio.CancelledError:
            # the part logs its own `run.cancelled`; its calls join the cascade's, so
            # `cascade.cancelled` totals the whole cascade, and this event ties the two
            self.add(part.calls, {}, offset)
            if self.log is not None and part.run_id is not None:
                self.log.warning(
                    "cascade.part", topology=topology.name, part_run_id=part.run_id, cancelled=True
                )
            raise
        except MoAError as e:
            self.add(e.calls, e.nodes or {}, offset)
            # the next stage waited for this one to fail: its calls stay on the cascade's path
            self.critical_path_s += _longest_chain_s(topology, e.nodes or {})
            if self.log is not None and e.run_id is not None:
                self.log.info("cascade.part", topology=topology.name, part_run_id=e.run_id, error=str(e))
            raise
        if self.log is not None:
            self.log.info("cascade.part", topology=topology.name, part_run_id=result.run_id)
        self.add(result.calls, result.nodes, offset)
        self.critical_path_s += result.critical_path_s
        return result

    def since(self, first: int) -> tuple[float, int, float]:
        """The known cost, the number and the worst-case cost of the calls made from call ``first``
        on (a ``StageRecord``'s ``cost_usd``, ``calls`` and ``cost_usd_max``)."""
        mine = self.calls[first:]
        return sum(c.cost_usd for c in mine), len(mine), sum(c.cost_usd_max for c in mine)

    def fail(self, error: MoAError) -> MoAError:
        return stamp_failure(
            error,
            run_id=self.run_id,
            calls=self.calls,
            nodes=dict(self.nodes),
            logger=self.log,
            event="cascade.failed",
            topology=self.name,
        )

    async def verdict(self, stage: Stage, ask: Callable[[], Awaitable[_T]]) -> _T:
        """What the stage's rule says, within what is left of the deadline. A rule that crashes (a
        bug in a Python rule) is a ``UserError`` naming the rule and its stage, raised with every
        call paid for, not a bare traceback that loses them."""
        rule = stage.rule
        # a judge's runs keep the deadline themselves: cut from out here, their calls would be lost
        left = None if isinstance(rule, Judge) else self.remaining()

        def late() -> TimedOut:
            return TimedOut(
                f"run of `{self.name}` passed its deadline of {self.deadline_s}s in the accept rule "
                f"of stage {stage.number}"
            )

        try:
            async with asyncio.timeout(left) as cm:
                verdict = await ask()
        except MoAError:
            raise
        except Exception as e:
            if cm.expired():
                raise late() from None
            what = (
                f"`{getattr(rule.fn, '__qualname__', type(rule.fn).__name__)}`"
                if isinstance(rule, Custom)
                else f"`{type(rule).__name__.lower()}`"
            )
            raise UserError(
                f"cascade `{self.name}`: the accept rule {what} of stage {stage.number} raised "
                f"{type(e).__name__}: {e}"
            ) from e
        if left is not None and self.deadline_s is not None and self.now() >= self.deadline_s:
            # a rule that never yields (a blocking Python function) is not cut by the timeout,
            # which fires only at its next await: its verdict came too late all the same
            raise late()
        return verdict

    @contextlib.contextmanager
    def cancellation(self) -> Iterator[None]:
        """Log what the cascade cost if its caller cancels it: every part's calls, those of the
        part cut off in flight included (which logs its own ``run.cancelled`` too)."""
        try:
            yield
        except asyncio.CancelledError:
            log_cancelled(self.log, "cascade.cancelled", self.name, self.calls)
            raise

    def result(self, answered: RunResult, stage: int) -> RunResult:
        """The cascade's result, whose answer (output, parsed value, finish reason) is the run
        ``answered`` of stage ``stage``."""
        usage = sum((c.usage for c in self.calls), Usage())
        result = RunResult(
            output=answered.output,
            parsed=answered.parsed,
            topology=self.name,
            usage=usage,
            cost_usd=sum(c.cost_usd for c in self.calls),
            latency_s=self.now(),
            critical_path_s=self.critical_path_s,
            calls=self.calls,
            nodes=self.nodes,
            unpriced_models=sorted({c.model for c in self.calls if not c.priced}),
            # from the calls, as the engine does: a failed stage's local calls are on the record too
            cost_note=LOCAL_COST_NOTE if any(c.local for c in self.calls) else None,
            stage=stage,
            stages_run=stage,
            finish_reason=answered.finish_reason,
            run_id=self.run_id,
        )
        self.log_end(result.latency_s, stage=stage)
        return result

    def log_end(self, latency_s: float, **fields: Any) -> None:
        """``cascade.end``: the whole cascade's totals, as ``run.end`` gives a run's (its parts'
        ``run.end`` events leave out a failed stage's calls, and the judges' are runs of their own)."""
        if self.log is None or not self.log.info_on:
            return
        cost = sum(c.cost_usd for c in self.calls)
        cost_max = sum(c.cost_usd_max for c in self.calls)
        self.log.info(
            "cascade.end",
            topology=self.name,
            **fields,
            cost_usd=cost,
            latency_s=round(latency_s, 4),
            calls=len(self.calls),
            **sum((c.usage for c in self.calls), Usage()).to_dict(),
            **({"cost_usd_max": cost_max} if cost_max > cost else {}),
        )


def _longest_chain_s(topology: Topology, nodes: dict[str, NodeResult]) -> float:
    """A failed run's critical path: its longest chain of node call times, wherever it stopped
    (the output may never have started)."""
    best: dict[str, float] = {}
    for nid in topology.graph.order:
        n = nodes.get(nid)
        if n is not None:
            best[nid] = n.call_latency_s + max((best.get(u, 0.0) for u in n.used_inputs), default=0.0)
    return max(best.values(), default=0.0)


def _answers(stage: Stage, result: RunResult) -> list[str]:
    """What a stage hands on with ``reuse``: an agent stage's samples, else its answer."""
    if not stage.samples:
        return [result.output]
    return [o for nid in stage.samples if (o := result.nodes[nid].output) is not None]


async def run_cascade(
    name: str,
    stages: Sequence[Stage],
    runner: Runner,
    prompt: RunInput,
    options: RunOptions,
) -> RunResult:
    """Run the stages in order; the first whose rule holds answers. Streaming streams the last stage
    live; an earlier stage's accepted answer is sent whole once accepted. With ``output_type`` every
    stage answers in JSON matching it, checked inside its run (a judge's rater is not told it)."""
    budget, budget_usd, deadline_s = options.budget, options.budget_usd, options.deadline_s
    if budget is not None and budget_usd is not None:
        raise UserError(f"cascade `{name}`: give `budget` or `budget_usd`, not both")
    if deadline_s is not None and not deadline_s > 0:
        raise UserError(f"deadline_s must be > 0 (got {deadline_s!r})")
    # one budget object for every stage: the cap spans the whole cascade
    shared = budget if budget is not None else (Budget(budget_usd) if budget_usd is not None else None)
    acct = _Account(name, deadline_s)
    typed = TypedOutput(options.output_type) if options.output_type is not None else None
    run = _run_stages(acct, stages, runner, prompt, shared, options.on_token, options.validate_output, typed)
    if runner.telemetry is None:
        return await run
    # the stages' runs become children of the cascade's span, which carries the cascade's run id
    return await runner.telemetry.traced(name, acct.run_id, run, acct.calls)


async def _run_stages(
    acct: _Account,
    stages: Sequence[Stage],
    runner: Runner,
    prompt: RunInput,
    shared: Budget | None,
    on_token: TokenCallback | None,
    validate_output: Callable[[str], None] | None,
    typed: TypedOutput | None,
) -> RunResult:
    item = current_item()
    earlier: list[str] = []

    async def run_judge(topology: Topology, text: str, check: Callable[[str], None]) -> RunResult:
        return await acct.run(runner, topology, text, shared, validate=check)

    with acct.cancellation():
        for stage in stages:
            last = stage.rule is None
            text = with_earlier(prompt, earlier) if stage.reuse else prompt
            try:
                result = await acct.run(
                    runner,
                    stage.topology,
                    text,
                    shared,
                    on_token=on_token if last else None,
                    validate=validate_output if last else None,
                    output_type=None if typed is None else typed.given,
                )
            except MoAError as e:
                if last or not _escalates(e):
                    raise acct.fail(e) from None
                continue
            if last:
                return acct.result(result, stage.number)
            answers = _answers(stage, result)
            samples = tuple(answers) if stage.samples else ()
            assert stage.rule is not None
            try:
                # each sample passed the schema's check in its call: its value, for `agree` and the
                # rule (a reply nested so deeply that only the check's shallower stack read it fails
                # here, and the stage escalates)
                parsed = tuple(typed.parse(a) for a in samples) if typed is not None else ()
                ctx = CascadeContext(prompt, item, stage.number, samples, result, parsed)
                accepted = await acct.verdict(
                    stage, partial(stage.rule.accepts, result.output, ctx, run_judge)
                )
                if accepted and validate_output is not None:
                    what = f"validate_output `{callable_name(validate_output)}`"
                    checked(validate_output, what, stage.topology.graph.output)(result.output)
            except MalformedReply:
                accepted = False  # the rater never read, or the answer failed the caller's check
            except MoAError as e:
                if not _escalates(e):
                    # a crashed rule's own traceback stays on (its cause); nothing else's does
                    raise acct.fail(e) from e.__cause__
                accepted = False
            if accepted:
                if on_token is not None:
                    on_token(result.output)
                return acct.result(result, stage.number)
            earlier.extend(answers)
    raise AssertionError("unreachable: the last stage always answers")


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage of a ``record_stages`` run."""

    #: 1-based
    number: int
    #: the stage's answer; None when the stage failed for a model's reasons
    answer: str | None
    #: its calls' cost and its rule's (a judge's), in USD: what their replies reported
    cost_usd: float
    #: its calls and its rule's
    calls: int
    #: ``cost_usd`` plus the worst case of every attempt whose usage is unknown (cut off by a
    #: timeout or a cancellation after it was sent): the bound, as ``RunResult.cost_usd_max``
    cost_usd_max: float
    #: an ``agree`` rule's measure: how many samples give the same answer
    agreeing: int | None = None
    #: a ``judge`` rule's measure: the rater's confidence (None when it never read)
    confidence: float | None = None
    #: the stage's rule as written holds (always False for the last stage, which has none)
    accepted: bool = False
    #: why the stage (or its rule) failed, one line
    error: str | None = None


async def _measure(
    rule: Rule, answer: str, ctx: CascadeContext, run_judge: JudgeRun
) -> tuple[bool, int | None, float | None]:
    """The rule's verdict and, for a rule with a threshold, the quantity it compares."""
    if isinstance(rule, Agree):
        n = rule.agreeing(ctx.samples, ctx.parsed_samples)
        return n >= rule.k, n, None
    if isinstance(rule, Judge):
        c = await rule.confidence(answer, ctx, run_judge)
        return c >= rule.threshold, None, c
    return await rule.accepts(answer, ctx, run_judge), None, None


async def record_stages(
    name: str,
    stages: Sequence[Stage],
    runner: Runner,
    prompt: RunInput,
    *,
    budget: Budget | None,
    deadline_s: float | None,
) -> list[StageRecord]:
    """Run every stage in order as if each escalated (a stage that reuses reads every earlier
    stage's answers, as it would after escalating), measuring each rule without acting on it.

    One run then tells what any threshold of the rules would have done. A stage or rule failing for
    a model's reasons is recorded; a budget, a deadline or bad input raises, as ``run_cascade`` does."""
    if deadline_s is not None and not deadline_s > 0:
        raise UserError(f"deadline_s must be > 0 (got {deadline_s!r})")
    acct = _Account(name, deadline_s)
    run = _record(acct, stages, runner, prompt, budget)
    tel = runner.telemetry
    if tel is None:
        return await run
    # as ``run_cascade``'s: the stages' and judges' runs nest under one span with the cascade's id
    with tel.run_span(name, acct.run_id) as span:
        try:
            records = await run
        except BaseException as e:
            tel.end_run(span, None, e, acct.calls)
            raise
        tel.end_run(span, None, None, acct.calls)
        return records


async def _record(
    acct: _Account, stages: Sequence[Stage], runner: Runner, prompt: RunInput, budget: Budget | None
) -> list[StageRecord]:
    item = current_item()
    earlier: list[str] = []
    records: list[StageRecord] = []

    async def run_judge(topology: Topology, text: str, check: Callable[[str], None]) -> RunResult:
        return await acct.run(runner, topology, text, budget, validate=check)

    with acct.cancellation():
        for stage in stages:
            first = len(acct.calls)
            text = with_earlier(prompt, earlier) if stage.reuse else prompt
            try:
                result = await acct.run(runner, stage.topology, text, budget)
            except MoAError as e:
                if not _escalates(e):
                    raise acct.fail(e) from None
                records.append(StageRecord(stage.number, None, *acct.since(first), error=_line(e)))
                continue
            if stage.rule is None:
                records.append(StageRecord(stage.number, result.output, *acct.since(first)))
                continue
            answers = _answers(stage, result)
            ctx = CascadeContext(prompt, item, stage.number, tuple(answers) if stage.samples else (), result)
            try:
                accepted, agreeing, confidence = await acct.verdict(
                    stage, partial(_measure, stage.rule, result.output, ctx, run_judge)
                )
            except MoAError as e:
                if not isinstance(e, MalformedReply) and not _escalates(e):
                    raise acct.fail(e) from e.__cause__
                rec = StageRecord(stage.number, result.output, *acct.since(first), error="rule: " + _line(e))
            else:
                rec = StageRecord(
                    stage.number,
                    result.output,
                    *acct.since(first),
                    agreeing=agreeing,
                    confidence=confidence,
                    accepted=accepted,
                )
            records.append(rec)
            earlier.extend(answers)
    # as a cascade's run ends with one: tuning's runs were on no event with their cost
    acct.log_end(acct.now(), stages_run=len(records))
    return records


def _line(error: MoAError) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
