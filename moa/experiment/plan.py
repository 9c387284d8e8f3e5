"""What ``moa compare --dry-run`` shows: an experiment checked as a run would check it (the dataset
read, the evaluator chosen, every topology validated, every key and provider present), and what a
run would send, without a call, a store or a folder made (an existing store is read, for a resume).

Calls are counted before retries and fallbacks: a run may send more (a 429 retried) and a cascade
or a quorum fewer (a stage not escalated, stragglers cancelled), so a cascade's count is its most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moa._wording import counted
from moa.eval.datasets import Dataset
from moa.experiment.config import describe_evaluator
from moa.topology.graph import Graph

__all__ = ["Plan", "SetupPlan", "calls_per_run"]

#: the characters of the first item's prompt shown
_SHOWN = 300


def calls_per_run(target: Any) -> tuple[int, bool]:
    """The agent calls one run of ``target`` makes, and whether that is an upper bound (a cascade
    counts every stage: each may be reached)."""
    # parts first: a cascade has a `graph` too (its last stage's), and counted by it the dry run
    # left out every earlier stage and judge, and did not say "up to"
    if getattr(target, "parts", None) is not None:
        parts: Sequence[tuple[str, Graph]] = target.parts()
        return sum(_agents(g) for _, g in parts), True
    graph: Graph = target.graph
    return _agents(graph), False


def _agents(graph: Graph) -> int:
    return sum(1 for n in graph.nodes.values() if n.agent is not None)


@dataclass(frozen=True, slots=True)
class SetupPlan:
    """One setup: its calls per run, its runs stored already and still to do, and the calls those
    will send (an MT-Bench item runs once per turn)."""

    name: str
    source: str
    calls: int
    at_most: bool
    stored: int
    to_run: int
    calls_to_send: int
    is_baseline: bool

    def line(self) -> str:
        bound = "up to " if self.at_most else ""
        per_run = f"{bound}{self.calls} call{'s' if self.calls != 1 else ''} per run"
        role = " (baseline)" if self.is_baseline else ""
        runs = f"{self.to_run} of {counted(self.to_run + self.stored, 'run')} to do"
        source = "" if self.source == self.name else f" ({self.source})"
        return f"  {self.name}{source}{role}: {per_run}; {runs}, {bound}{counted(self.calls_to_send, 'call')}"


@dataclass(frozen=True, slots=True)
class Plan:
    """An experiment as a run would start it; ``lines()`` is what ``--dry-run`` prints."""

    source: str
    dataset: Dataset
    evaluator: Mapping[str, Any]
    evaluator_chosen: bool
    #: the judge's calls to send for the runs to do and the stored answers not judged yet (2
    #: verdicts per judged turn), if a judge scores
    judge_calls: int | None
    samples: int
    setups: Sequence[SetupPlan]
    out: str
    resumed: bool
    budget_usd: float | None = None
    #: what the store has paid already
    spent_usd: float = 0.0
    #: that at most, with the worst case of its calls of unknown usage: what a resumed run's budget
    #: counts (None: ``spent_usd``)
    spent_usd_max: float | None = None
    #: where the pairs are scored (``spec.executor``), and the workers a remote scheduler has now
    executor: str = "local"
    workers: int | None = None
    #: of the answers ``judge_calls`` counts, those judged again because their verdicts were made
    #: against another baseline than ``baseline`` (the experiment's changed since)
    rejudged: int = 0
    baseline: str = ""

    def lines(self) -> list[str]:
        data = self.dataset
        out = [f"{self.source}: dry run: every check passed; no call sent, no store created"]
        out.append(f"dataset: {data.source}: {counted(len(data.items), 'item')}, {data.layout} layout")
        if data.bad_rows:
            bad = data.bad_rows[0]
            out.append(f"  {len(data.bad_rows)} bad rows skipped (first: line {bad.line}: {bad.reason})")
        how = " (the dataset layout's own)" if self.evaluator_chosen else ""
        out.append(f"evaluator: {describe_evaluator(self.evaluator)}{how}")
        if self.judge_calls is not None:
            again = (
                f"; {counted(self.rejudged, 'answer')} judged again against the new baseline `{self.baseline}`"
                if self.rejudged
                else ""
            )
            out.append(
                f"  judge: up to {counted(self.judge_calls, 'call')} (both orders of each judged answer{again})"
            )
        if self.workers is not None:
            out.append(f"executor: {self.executor}: reached, {counted(self.workers, 'worker')} now")
        elif self.executor != "local":
            out.append(f"executor: {self.executor} (a loopback Dask cluster, started by the run)")
        where = "resumed from" if self.resumed else "written to"
        plural = "s" if self.samples != 1 else ""
        out.append(f"setups ({self.samples} sample{plural} per item; results {where} {self.out}):")
        out.extend(s.line() for s in self.setups)
        total = sum(s.calls_to_send for s in self.setups) + (self.judge_calls or 0)
        bound = "up to " if self.judge_calls or any(s.at_most for s in self.setups) else ""
        out.append(f"calls to send: {bound}{total}, before retries")
        if self.budget_usd is not None:
            worst = max(self.spent_usd, self.spent_usd_max or 0.0)
            left = max(self.budget_usd - worst, 0.0)
            spent = f"${self.spent_usd:.6f} spent already"
            if worst > self.spent_usd:
                spent += f" (up to ${worst:.6f}, calls of unknown usage at their worst case)"
            out.append(f"budget: ${self.budget_usd:g}, {spent}, ${left:.6f} left")
        if data.items:
            first = data.items[0]
            text = first.input if len(first.input) <= _SHOWN else first.input[:_SHOWN] + "..."
            out.append(f"first item `{first.id}`:")
            out.extend(f"  | {line}" for line in text.splitlines() or [""])
        return out
