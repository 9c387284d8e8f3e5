"""What ``moa compare --dry-run`` shows: an experiment checked as a run would check it (the dataset
read, the evaluator chosen, every topology validated, every key and provider present), and what a
run would send, without a call, a store or a folder made (an existing store is read, for a resume).

Calls are counted before retries and fallbacks: a run may send more (a 429 retried) and a cascade
or a quorum fewer (a stage not escalated, stragglers cancelled), so a cascade's count is its most.
Their cost is estimated as bounds, the most with retries apart (``moa.experiment.estimate`` says
how each is counted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moa._wording import counted
from moa.eval.datasets import Dataset
from moa.eval.judge import EXECUTION_SHOWN_BYTES
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
    #: what the runs to do would cost, USD: about the least (the prompts alone, at about 4
    #: characters a token, every answer empty) and the most (every prompt at its token bound, every
    #: answer at its ``max_tokens``); the most is None when an agent sets no ``max_tokens`` and no
    #: budget makes moa send one (``no_max_tokens`` names their models)
    estimated_usd_low: float = 0.0
    estimated_usd_high: float | None = 0.0
    #: the models nothing prices (counted $0), and those of agents without ``max_tokens``
    unpriced_models: tuple[str, ...] = ()
    no_max_tokens: tuple[str, ...] = ()
    #: the most if every attempt fails after it was sent and is retried, then each fallback: each
    #: call ``retry.max_attempts`` times at each model of its chain (None: no upper bound)
    estimated_usd_retried: float | None = 0.0

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
    #: what the judge's calls would cost, USD, bounded as a setup's are (0 without a judge)
    judge_estimated_usd_low: float = 0.0
    judge_estimated_usd_high: float | None = 0.0
    #: the distinct items to do whose prompts the estimate read, of how many (fewer when evenly
    #: spaced items stood for a huge dataset's, scaled)
    estimated_items: int = 0
    items_to_do: int = 0
    #: the embedded models the runs call, at $0
    local_models: tuple[str, ...] = ()
    #: the judge's models nothing prices, and those of its agents without ``max_tokens``
    judge_unpriced_models: tuple[str, ...] = ()
    judge_no_max_tokens: tuple[str, ...] = ()
    #: the judge's most with every attempt billed and retried, as a setup's
    judge_estimated_usd_retried: float | None = 0.0

    @property
    def estimated_usd_low(self) -> float:
        """About the least the runs to do and the judge's calls on them cost, USD."""
        return sum(s.estimated_usd_low for s in self.setups) + self.judge_estimated_usd_low

    @property
    def estimated_usd_high(self) -> float | None:
        """The most the runs to do and the judge's calls on them can book, USD, when no attempt
        fails after it was sent (each call's budget hold once, at the dearest model of its
        fallbacks); None when some call has no upper bound."""
        highs = [s.estimated_usd_high for s in self.setups] + [self.judge_estimated_usd_high]
        return None if None in highs else sum(h or 0.0 for h in highs)

    @property
    def estimated_usd_retried(self) -> float | None:
        """The most they can book if every attempt fails after it was sent and is retried, then
        each fallback, USD; None when some call has no upper bound."""
        highs = [s.estimated_usd_retried for s in self.setups] + [self.judge_estimated_usd_retried]
        return None if None in highs else sum(h or 0.0 for h in highs)

    @property
    def budget_left_usd(self) -> float | None:
        """What the budget leaves the run (what the store paid, at its worst case, taken off)."""
        if self.budget_usd is None:
            return None
        return max(self.budget_usd - max(self.spent_usd, self.spent_usd_max or 0.0), 0.0)

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
        out.extend(self._cost_lines())
        if data.items:
            first = data.items[0]
            text = first.input if len(first.input) <= _SHOWN else first.input[:_SHOWN] + "..."
            out.append(f"first item `{first.id}`:")
            out.extend(f"  | {line}" for line in text.splitlines() or [""])
        return out

    def _cost_lines(self) -> list[str]:
        read = (
            "no item left to do"
            if not self.items_to_do
            else "from the prompts of the 1 item to do"
            if self.items_to_do == 1
            else f"from the prompts of all {self.items_to_do} items to do"
            if self.estimated_items >= self.items_to_do
            else f"from the prompts of {self.estimated_items} evenly spaced of the {self.items_to_do} items to do, scaled"
        )
        out = [f"estimated cost of the runs to do ({read}):"]
        for s in self.setups:
            out.append(
                f"  {s.name}: {_usd_range(s.estimated_usd_low, s.estimated_usd_high, s.no_max_tokens)}"
            )
        if self.judge_calls is not None:
            rng = _usd_range(
                self.judge_estimated_usd_low, self.judge_estimated_usd_high, self.judge_no_max_tokens
            )
            # the sandbox's results shown beside the answers: the most counts them at their cap
            shown = (
                f"; the execution results it is shown at up to {EXECUTION_SHOWN_BYTES} bytes each"
                if self.evaluator.get("show_execution")
                else ""
            )
            out.append(f"  judge: {rng}{shown}")
        left = self.budget_left_usd
        budget = "" if left is None else f" (budget left ${left:.6f})"
        no_cap = sorted({m for s in self.setups for m in s.no_max_tokens} | set(self.judge_no_max_tokens))
        out.append(f"  total: {_usd_range(self.estimated_usd_low, self.estimated_usd_high, no_cap)}{budget}")
        retried = self.estimated_usd_retried
        if retried is not None and retried != self.estimated_usd_high:
            out.append(
                f"  up to ${retried:.6f} if every attempt fails after it was sent (a timeout, a reply broken or"
                " rejected) and is retried, then each fallback"
            )
        unpriced = sorted(
            {m for s in self.setups for m in s.unpriced_models} | set(self.judge_unpriced_models)
        )
        if unpriced:
            out.append(f"  unpriced, counted $0 (set the agent's `pricing:`): {', '.join(unpriced)}")
        if self.local_models:
            out.append(f"  embedded, $0: {', '.join(self.local_models)}")
        out.append(
            "  (least: the prompts alone at ~4 characters a token; most: each call's budget hold once, at"
            " the dearest model of its fallbacks)"
        )
        high = self.estimated_usd_high
        way_out = "raise `budget_usd`, or lower `limit` or `samples`"
        if left is not None and self.estimated_usd_low > left:
            out.append(
                f"warning: even the least estimate, ${self.estimated_usd_low:.6f}, passes the ${left:.6f} the"
                f" budget leaves: the run will stop at the budget with runs still to do; {way_out}"
            )
        elif left is not None and (high is None or high > left):
            most = "has no upper bound" if high is None else f"${high:.6f}"
            out.append(
                f"warning: the estimate's most, {most}, passes the ${left:.6f} the budget leaves: the run may"
                f" stop at the budget with runs still to do; {way_out}"
            )
        elif left is not None and retried is not None and retried > left:
            out.append(
                f"note: with every attempt retried, ${retried:.6f}, the estimate passes the ${left:.6f} the"
                " budget leaves: failures a provider bills may stop the run at the budget"
            )
        return out


def _usd_range(low: float, high: float | None, no_cap: Sequence[str]) -> str:
    if high is None:
        # a judge's own agents may all set max_tokens and the answers it compares not
        why = (
            f"no max_tokens: {', '.join(sorted(no_cap))}" if no_cap else "it reads answers without max_tokens"
        )
        return f"${low:.6f} to no upper bound ({why})"
    return f"${low:.6f} to ${high:.6f}"
