"""The score phase: every stored answer without a score under the experiment's evaluator is scored,
after the runs, under the experiment's concurrency limit, and stored per evaluator id. Changing the
evaluator re-scores without any model call.

Two kinds of evaluator (``moa.eval.types``) plug in here:

* an ``Evaluator``: ``await score(item, answer) -> Score``;
* a ``PairwiseEvaluator``: ``await score_pair(item, answer, baseline_answer, runner=...)`` returning a
  ``PairScore`` (the setup's score against the baseline on the same item plus the verdicts, e.g. both
  orders of a judge). Its ``runner`` carries the experiment's shared budget and a call cache of its
  own pair (scope ``judge:<evaluator>``, keyed by the item, the sample and both runs), so judge calls
  are costed, cached and stored like any other call; the verdicts and their ``CallRecord`` rows go
  to the ``judgments`` and ``calls`` tables with the score. Each pair's verdicts are its own calls:
  two pairs with the same question and answers (samples at temperature 0, two setups answering
  alike) are judged independently, and each judgment's cost is what was paid for it.

A multi-turn item's run holds every turn's answer: a ``ConversationEvaluator`` (the judge) scores it
turn by turn with ``score_conversation`` and the turns' scores are stored with the item's score; any
other evaluator scores the last turn's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from moa.calls.call import CachedReply
from moa.errors import MoAError, StoreError
from moa.eval.datasets import Item
from moa.eval.types import ConversationEvaluator, Evaluator, PairwiseEvaluator
from moa.experiment.cancellation import cancel_and_drain
from moa.experiment.executors.base import Executor, LocalExecutor
from moa.experiment.store.cache import StoreCache
from moa.experiment.store.database import RunRow, Store
from moa.experiment.store.failures import writing
from moa.experiment.store.schema import (
    BASELINE_FAILED_DETAIL,
    BOTH_FAILED_DETAIL,
    PAIRWISE_BASELINE_DETAIL,
    SETUP_FAILED_DETAIL,
)

if TYPE_CHECKING:
    from moa._run import Runner
    from moa.experiment.config import Setup

__all__ = ["PAIRWISE_BASELINE", "ScoringReport", "is_pairwise", "score_all"]

T = TypeVar("T")

#: the baseline's score on every run under a pairwise judge: parity with itself
PAIRWISE_BASELINE = 0.5
#: runs scored per page read from the store (memory stays flat with the number of items)
PAGE = 256


def is_pairwise(evaluator: object) -> bool:
    """Whether ``evaluator`` scores against the baseline's answer (a ``PairwiseEvaluator``)."""
    return isinstance(evaluator, PairwiseEvaluator)


@dataclass(slots=True)
class ScoringReport:
    """What the score phase did: scores stored, scorings that failed (retried by the next run)."""

    scored: int = 0
    failures: list[str] = field(default_factory=list)
    #: pairwise scores waiting for a baseline answer that is not stored yet
    waiting: int = 0
    #: pairwise scores dropped as made against another baseline than the experiment's (scored again)
    rebased: int = 0


async def score_all(
    store: Store,
    setups: Sequence[Setup],
    evaluator: Evaluator | PairwiseEvaluator,
    evaluator_id: str,
    item: Callable[[str], Item | None],
    semaphore: asyncio.Semaphore,
    *,
    judge_runner: Runner | None = None,
    judge_scope: str | None = None,
    on_scored: Callable[[], None] | None = None,
    executor: Executor | None = None,
) -> ScoringReport:
    """Score every stored successful run that has no score under ``evaluator_id``.

    Under an ``Evaluator`` failed runs get no score row (the summary counts them as 0). Under a
    ``PairwiseEvaluator`` every run gets one, so every reader (summary, languages, results.jsonl,
    Bradley–Terry) reads the same stored number: the baseline 0.5 on each run, failed or not; a setup
    run the judge's score, 1 against a failed baseline run, and when it failed itself 0 against a
    baseline run that answered, 0.5 against one that failed too. A score made against a baseline run
    names it (``baseline_run_id``), so it goes when that run is replaced. A scoring the evaluator
    fails is not stored, so the next run tries again; its message lands in
    ``ScoringReport.failures``. A store error (``sqlite3.Error``) or a bug (``TypeError``...) is
    raised instead, after the scorings in flight are stopped; every score stored is kept.

    ``judge_scope`` is the judge's cache scope in ``store``: each judged pair runs on a runner scoped
    from ``judge_runner`` (its budget, limits and backends) with a cache of that pair alone (None:
    ``judge_runner`` as it is, its own cache or none).

    ``executor`` decides where an ``Evaluator`` scores (Dask workers run the sandboxed programs); a
    pairwise judge always scores here, its calls under the driver's rate limits and budget. The
    score is stored here either way."""
    report = ScoringReport()
    where: Executor = executor or LocalExecutor()
    baseline = next(s for s in setups if s.is_baseline)
    pairwise = isinstance(evaluator, PairwiseEvaluator)
    tasks: set[asyncio.Task[None]] = set()
    #: what ends the phase (a store error, a bug): the first one is raised once the tasks are drained
    fatal: list[Exception] = []

    async def one(setup: Setup, row: RunRow) -> None:
        try:
            it = item(row.item_id)
            if it is None:
                report.failures.append(f"item `{row.item_id}` is not in the store")
                return
            answer = row.answer or ""
            if isinstance(evaluator, PairwiseEvaluator):
                # with several samples, sample j of the setup meets sample j of the baseline
                base = (
                    None
                    if setup.is_baseline
                    else store.run_for(baseline.name, baseline.hash, row.item_id, row.sample)
                )
                if not setup.is_baseline and base is None:
                    report.waiting += 1
                    return
                settled = _without_judge(setup, row, base)
                if settled is not None:
                    with _writing(store, f"storing the score of {_pair(setup, row)}"):
                        _put(store, row, evaluator_id, settled)
                elif base is not None:  # two answers: the judge compares them
                    if judge_runner is None:
                        raise RuntimeError("a pairwise evaluator needs a judge runner")
                    runner = _pair_runner(
                        judge_runner, store, judge_scope, row, base, lambda: fatal[0] if fatal else None
                    )
                    turns, base_turns = row.turn_answers, base.turn_answers
                    if (
                        turns is not None
                        and base_turns is not None
                        and isinstance(evaluator, ConversationEvaluator)
                    ):
                        judged = evaluator.score_conversation(it, turns, base_turns, runner=runner)
                    else:
                        judged = evaluator.score_pair(it, answer, base.answer or "", runner=runner)
                    res = await _evaluated(judged, report, store, setup, row, (evaluator_id, base.run_id))
                    if res is None:
                        return
                    with _writing(store, f"storing the judge's verdicts on {_pair(setup, row)}"):
                        store.put_score(
                            row.run_id,
                            evaluator_id,
                            res.score.value,
                            res.score.detail,
                            baseline_run_id=base.run_id,
                            judgments=res.judgments,
                            turn_scores=list(res.turn_scores) or None,
                        )
            else:
                s = await _evaluated(where.score(evaluator, it, answer), report, store, setup, row)
                if s is None:
                    return
                with _writing(store, f"storing the score of {_pair(setup, row)}"):
                    store.put_score(row.run_id, evaluator_id, s.value, s.detail)
            report.scored += 1
            if on_scored is not None:
                on_scored()
        except Exception as e:  # the store or a bug, not the answer: no scoring after it
            # kept here, not raised: a task that ended is dropped from ``tasks`` before the gather
            fatal.append(e)
        finally:
            semaphore.release()

    if pairwise:
        # the baseline changed since: every verdict against the old one is judged again
        with _writing(store, f"dropping the verdicts made against another baseline than `{baseline.name}`"):
            report.rebased = store.forget_other_baselines(evaluator_id, baseline.name, baseline.hash)
        # before any judge call, so an interrupted judge phase keeps them
        with _writing(store, "storing the scores made without a judge call (a side that failed)"):
            _settle(store, setups, baseline, evaluator_id, report, on_scored)
    try:
        for setup in setups:
            after = 0
            while not fatal:
                page = store.unscored(
                    setup.name, setup.hash, evaluator_id, after=after, limit=PAGE, failed=pairwise
                )
                if not page:
                    break
                for row in page:
                    await semaphore.acquire()
                    if fatal:
                        semaphore.release()
                        break
                    t = asyncio.create_task(one(setup, row))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                after = page[-1].run_id
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        await cancel_and_drain(tasks)
        if not (fatal and isinstance(fatal[0], (sqlite3.Error, StoreError))):
            store.commit()  # after a store failure it would fail alike, hiding it
    if fatal:
        raise fatal[0]
    return report


#: what an evaluator raises only through a bug, in it or in moa: ending the run shows it (every
#: score stored so far is kept), where "could not be scored" hid it behind a re-run that fails alike
_BUGS = (TypeError, AttributeError, NameError, AssertionError)


async def _evaluated(
    scoring: Awaitable[T],
    report: ScoringReport,
    store: Store,
    setup: Setup,
    row: RunRow,
    pair: tuple[str, int] | None = None,
) -> T | None:
    """What the evaluator made of ``row``'s answer, or None when it failed on it (a judge that is
    down or over budget, a sandbox that broke, a worker lost): noted in ``report`` and retried by the
    next run. A store error (the judge's cache writes to the store: ``StoreError`` out of a judge
    call whose reply it could not keep) or a bug is not the answer's failure: it ends the phase in
    one line naming the store. The failed calls a
    ``MoAError`` carries are booked as paid: nothing is stored to hold them; for a judged ``pair``
    (the evaluator's id, the baseline's run), what they cost also goes to the setup's judge cost."""
    try:
        return await scoring
    except (sqlite3.Error, StoreError, *_BUGS):
        raise
    except Exception as e:
        with _writing(store, f"booking the failed scoring of {_pair(setup, row)}"):
            if isinstance(e, MoAError) and pair is not None:
                store.book_failed_pair(pair[0], setup.name, setup.hash, row.run_id, pair[1], e)
            elif isinstance(e, MoAError):
                store.book_unstored(e.calls)
        report.failures.append(f"setup `{setup.name}`, item `{row.item_id}`: {type(e).__name__}: {e}")
        return None


def _pair(setup: Setup, row: RunRow) -> str:
    sample = f", sample {row.sample}" if row.sample else ""
    return f"setup `{setup.name}`, item `{row.item_id}`{sample}"


def _writing(store: Store, what: str) -> contextlib.AbstractContextManager[None]:
    return writing(store.path, store.conn, what)


def _pair_runner(
    runner: Runner,
    store: Store,
    scope: str | None,
    row: RunRow,
    base: RunRow,
    stopped: Callable[[], Exception | None] = lambda: None,
) -> Runner:
    """The runner judging ``row`` against ``base``: with ``scope``, a cache keyed by this pair (its
    item, sample and both runs). Shared across pairs, one cached verdict served every pair asking
    the same question with the same answers, and its cost was counted in each of their judgments
    though paid once; whether it was shared depended on which pair finished first. Once
    ``stopped`` returns what ended the phase, the pair sends no further call (``_StoppingCache``)."""
    if scope is None:
        return runner
    pair = json.dumps([row.item_id, row.sample, row.run_id, base.run_id])
    return runner.scoped(cache=_StoppingCache(store, scope, pair, stopped), budget=runner.budget)


class _StoppingCache(StoreCache):
    """A judged pair's cache that lets no call start once the score phase has stopped (a store that
    failed, a bug): the pairs in flight then went on to their judge's next step, paying for replies
    the store could no longer keep. A reply already cached still replays (free); the calls in flight
    finish and are cached if the store takes them, so what was paid is kept where it can be."""

    def __init__(
        self, store: Store, scope: str, item_id: str, stopped: Callable[[], Exception | None]
    ) -> None:
        super().__init__(store, scope, item_id)
        self._stopped = stopped

    def get(self, key: str) -> CachedReply | None:
        hit = super().get(key)
        why = self._stopped() if hit is None else None
        if why is not None:
            # StoreError: no retry, fallback or quorum takes it for the model's failure
            reason = " ".join(str(why).split())[:200]
            raise StoreError(f"{self.store.path}: judge call not sent: the score phase stopped ({reason})")
        return hit


@dataclass(frozen=True, slots=True)
class _Settled:
    """A pairwise score that needs no judge call."""

    value: float
    detail: str
    #: the baseline run it was made against (None for the baseline's own runs)
    baseline_run_id: int | None
    #: a multi-turn answer's turns, each scored ``value`` too
    turns: int | None


def _without_judge(setup: Setup, row: RunRow, base: RunRow | None) -> _Settled | None:
    """The pairwise score of ``row`` (against ``base``, the baseline's run on its item and sample)
    when one side did not answer or ``row`` is the baseline's, else ``None``: the judge compares."""
    answers = row.turn_answers if row.error is None else None
    turns = None if answers is None else len(answers)
    if setup.is_baseline:
        # the baseline against itself is a tie by definition, failed or not (its failure counts
        # once, in the setups' scores)
        return _Settled(PAIRWISE_BASELINE, PAIRWISE_BASELINE_DETAIL, None, turns)
    if base is None:
        return None
    if row.error is not None:
        # the setup did not answer: it loses to an answer, ties with no answer
        both = base.error is not None
        return _Settled(
            PAIRWISE_BASELINE if both else 0.0,
            BOTH_FAILED_DETAIL if both else SETUP_FAILED_DETAIL,
            base.run_id,
            None,
        )
    if base.error is not None:
        return _Settled(1.0, BASELINE_FAILED_DETAIL, base.run_id, turns)
    return None


def _put(store: Store, row: RunRow, evaluator_id: str, settled: _Settled, *, commit: bool = True) -> None:
    store.put_score(
        row.run_id,
        evaluator_id,
        settled.value,
        settled.detail,
        baseline_run_id=settled.baseline_run_id,
        turn_scores=None if settled.turns is None else [settled.value] * settled.turns,
        commit=commit,
    )


def _settle(
    store: Store,
    setups: Sequence[Setup],
    baseline: Setup,
    evaluator_id: str,
    report: ScoringReport,
    on_scored: Callable[[], None] | None,
) -> None:
    """Store every unscored pairwise score that needs no judge call, a page per transaction."""
    for setup in setups:
        after = 0
        while page := store.unscored(
            setup.name, setup.hash, evaluator_id, after=after, limit=PAGE, failed=True
        ):
            for row in page:
                base = (
                    None
                    if setup.is_baseline
                    else store.run_for(baseline.name, baseline.hash, row.item_id, row.sample)
                )
                settled = _without_judge(setup, row, base)
                if settled is not None:
                    _put(store, row, evaluator_id, settled, commit=False)
                    report.scored += 1
                    if on_scored is not None:
                        on_scored()
            store.commit()
            after = page[-1].run_id
