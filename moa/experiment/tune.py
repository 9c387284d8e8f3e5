"""Tuning a cascade setup's threshold (``moa compare --tune-cascade SETUP``, or ``tune:`` in the
experiment file), run after the report of the comparison is written.

Each item runs the cascade once with every stage (``record_stages``), through the setup's own call
cache, so the calls its stored run made are not sent again, those that failed read back as failures
(``_WithFailures``): only the stages an item never reached are new. What those cost, failed calls
included, is booked apart (``TUNE_PAID``, summed over every run of the tuning, since a re-run reads
them back free; ``TUNE_UNKNOWN`` the worst case of those cut off in flight) and reported with the
tuning: the comparison's costs do not hold it. The answers are scored, and each item's trace is kept in the store
(``TUNE_TRACES``), so a re-run records only the items it lacks (and, with ``retry_errors``, those
whose escalated stage failed). Every setting of stage 1's threshold is then read off the traces
(``moa.cascade.tune``), chosen on a dev split and judged on the rest (``analysis.tuning``). The result
is ``tune.json`` and a section of ``report.md``.

Everything that can be wrong with the request (no such setup, not a cascade, a rule with no
threshold, too few items) is refused by ``plan_tuning`` before the experiment makes any call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from moa._run import Runner
from moa._run.engine import watch_run
from moa.calls.budget import Budget
from moa.calls.call import CachedFailure, CachedReply
from moa.cascade.context import item_scope
from moa.cascade.definition import Cascade
from moa.cascade.execute import StageRecord, record_stages
from moa.cascade.tune import ItemTrace, Setting, current_setting, describe, settings_for, trace
from moa.errors import (
    BudgetExceeded,
    MalformedReply,
    ModelError,
    ProviderError,
    RateLimited,
    RequestRejected,
    StoreError,
    TimedOut,
    UserError,
)
from moa.eval.datasets import Item
from moa.eval.hashing import canonical_hash
from moa.eval.types import Evaluator, PairwiseEvaluator
from moa.experiment.analysis.tuning import TuneResult, analyse, split_items
from moa.experiment.cancellation import cancel_and_drain
from moa.experiment.config import ExperimentSpec, Setup, TuneSpec
from moa.experiment.conversation import is_multi_turn
from moa.experiment.report.files import replacing
from moa.experiment.report.tune import add_tune_section
from moa.experiment.run_pairs import budget_stop
from moa.experiment.store.cache import StoreCache, sample_scope
from moa.experiment.store.calls import TEXT_LIMIT, cut_text
from moa.experiment.store.database import Store
from moa.experiment.store.failures import writing
from moa.models.base import ModelRequest
from moa.results import CallRecord

__all__ = [
    "MIN_SPLIT",
    "TUNE_PAID",
    "TUNE_TRACES",
    "TUNE_UNKNOWN",
    "TunePlan",
    "plan_tuning",
    "run_tuning",
    "tune_override",
    "tuning_paid",
]

#: items each split needs: fewer and a bootstrap interval says nothing
MIN_SPLIT = 10
#: the store's ``meta`` key of what tuning paid, by ``setup:hash`` (the ledger ``paid_usd`` holds it too)
TUNE_PAID = "tune_paid_usd"
#: the store's ``meta`` key of the worst case of the tuning's attempts of unknown usage (sent, then
#: cut off by a timeout, a budget stop or Ctrl-C: the provider may bill them), by ``setup:hash``:
#: ``paid_usd`` plus this is what tuning may have cost at most, as a run's ``cost_usd_max``
TUNE_UNKNOWN = "tune_unknown_usd"
#: the store's ``meta`` key of each item's trace, by ``setup:hash:evaluator`` then item id: a re-run
#: reads them back, as the comparison reads its stored runs
TUNE_TRACES = "tune_traces"


@dataclass(frozen=True, slots=True)
class TunePlan:
    """What to tune, checked: the setup, its settings, and the item ids of each split."""

    spec: TuneSpec
    setup: Setup
    cascade: Cascade
    settings: list[Setting]
    current: Setting
    dev: list[str]
    test: list[str]


def tune_override(spec: ExperimentSpec, setup: str) -> ExperimentSpec:
    """``--tune-cascade SETUP``: the file's ``tune`` (its split and seed), on ``setup``."""
    old = {} if spec.tune is None else spec.tune.model_dump()
    try:
        tune = TuneSpec.model_validate({**old, "setup": setup})
    except ValidationError as e:  # only the name is new: the rest was checked with the file
        why = e.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"--tune-cascade {setup!r}: {why}") from None
    return spec.model_copy(update={"tune": tune})


def _too_few(source: str, n_dev: int, n_test: int, why: str) -> UserError:
    return UserError(
        f"{source}: tune: {why} {n_dev} dev and {n_test} held-out items; each split needs at least "
        f"{MIN_SPLIT} (use more items or another dev_fraction)"
    )


def plan_tuning(
    spec: ExperimentSpec,
    setups: Sequence[Setup],
    evaluator: Evaluator | PairwiseEvaluator,
    items: Sequence[Item],
    source: str,
) -> TunePlan | None:
    """The checked plan of ``spec.tune`` (None when there is none); ``UserError`` naming the problem."""
    t = spec.tune
    if t is None:
        return None
    setup = next((s for s in setups if s.name == t.setup), None)
    if setup is None:
        known = ", ".join(f"`{s.name}`" for s in setups if not s.is_baseline)
        raise UserError(f"{source}: tune: no setup is named `{t.setup}` (setups: {known})")
    if setup.is_baseline or not isinstance(setup.topology, Cascade):
        what = "the baseline" if setup.is_baseline else f"a `{setup.topology.kind}` topology"
        raise UserError(f"{source}: tune: setup `{t.setup}` is {what}, not a cascade (`kind: cascade`)")
    cascade = setup.topology
    try:
        settings = settings_for(cascade.name, cascade.stage_list)
    except UserError as e:
        raise UserError(f"{source}: tune: setup `{t.setup}`: {e}") from None
    if isinstance(evaluator, PairwiseEvaluator):
        raise UserError(
            f"{source}: tune: the evaluator `{evaluator.name}` scores against the baseline's answer; "
            "tuning scores each stage's answer alone (use a reference evaluator)"
        )
    turns = next((i for i in items if is_multi_turn(i)), None)
    if turns is not None:
        raise UserError(f"{source}: tune: item `{turns.id}` has several turns; tuning takes one-turn items")
    dev, test = split_items([i.id for i in items], t.dev_fraction, t.seed)
    if min(len(dev), len(test)) < MIN_SPLIT:
        raise _too_few(
            source, len(dev), len(test), f"{len(items)} items at dev_fraction {t.dev_fraction} give"
        )
    current = current_setting(cascade.name, cascade.stage_list)
    return TunePlan(t, setup, cascade, settings, current, dev, test)


async def _scores(evaluator: Evaluator, item: Item, records: Sequence[StageRecord]) -> list[float]:
    """Each stage's answer scored (a failed stage 0), every distinct answer once."""
    seen: dict[str, float] = {}
    out = []
    for r in records:
        if r.answer is None:
            out.append(0.0)
            continue
        if r.answer not in seen:
            seen[r.answer] = (await evaluator.score(item, r.answer)).value
        out.append(seen[r.answer])
    return out


def _single_scores(store: Store, baseline: Setup, evaluator_id: str, samples: int) -> dict[str, float]:
    """The baseline's score per item (the mean over its first ``samples`` samples, as the report's;
    a failed run 0), where all are scored. Runs of a sample past ``samples`` (stored by a run with
    more) are not the report's."""
    out = {}
    for item_id, stored in store.run_rows(baseline.name, baseline.hash, evaluator_id).items():
        rows = [r for r in stored if r.sample < samples]
        values = [0.0 if r.error is not None else r.score for r in rows]
        if rows and all(v is not None for v in values):
            out[item_id] = math.fsum(v for v in values if v is not None) / len(values)
    return out


def _fingerprint(item: Item) -> str:
    """What an item's trace was scored against: a corrected target must not reuse the old scores."""
    return canonical_hash(item.model_dump(mode="json", exclude={"category"}))


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _stored_trace(entry: object, item: Item, retry_errors: bool) -> ItemTrace | None:
    """The trace stored for ``item`` if it is still good: the item unchanged, every value a number,
    and (with ``retry_errors``) its escalated path answered, as a failed run is run again."""
    if not isinstance(entry, dict) or entry.get("item") != _fingerprint(item):
        return None
    data = entry.get("trace")
    names = [f.name for f in dataclasses.fields(ItemTrace)]
    if not isinstance(data, dict) or set(data) != set(names):
        return None  # damaged, or written by a moa whose traces differ: recorded again
    flags = {"escalated_failed"}
    if not all(
        isinstance(data[n], bool) if n in flags else _number(data[n]) or (n == "measure" and data[n] is None)
        for n in names
    ):
        return None
    t = ItemTrace(**data)
    return None if retry_errors and t.escalated_failed else t


#: the errors a stored failed call is read back as, by the class name its record gives
_REPLAYED = {
    c.__name__: c for c in (ModelError, MalformedReply, ProviderError, RateLimited, RequestRejected, TimedOut)
}


class _WithFailures:
    """The setup's call cache for one item, which also reads back the calls that failed in the item's
    stored run (``CachedFailure``): a failure is that run's result as much as a reply is, and sent
    again it was paid again, and could answer where the run it stands for did not. Each stored
    failure replays once, for the same node, model and (where the store kept them) messages; a
    request the run never made is sent."""

    def __init__(self, cache: StoreCache, failed: Sequence[CallRecord]) -> None:
        self.cache = cache
        self.failed = list(failed)
        self._asked: dict[str, tuple[str, ModelRequest]] = {}

    def key(self, node: str, request: ModelRequest) -> str:
        key = self.cache.key(node, request)
        if self.failed:
            self._asked[key] = (node, request)
        return key

    def get(self, key: str) -> CachedReply | CachedFailure | None:
        hit = self.cache.get(key)
        asked = self._asked.pop(key, None)
        if hit is not None or asked is None:
            return hit
        node, request = asked
        for i, rec in enumerate(self.failed):
            error = _replayed_error(rec)
            if (
                rec.node == node
                and rec.model == request.model
                and error is not None
                and self._same(rec, request)
            ):
                del self.failed[i]
                return CachedFailure(rec, error)
        return None

    def _same(self, rec: CallRecord, request: ModelRequest) -> bool:
        """Whether ``request`` sends the messages ``rec`` stored (as the store keeps them: each
        content cut and scrubbed); a record without them (``store_text: false``) matches by node
        and model alone, as the earlier calls it read were read back the same."""
        if rec.messages is None:
            return True
        store = self.cache.store
        limit = store.text_limit if store.text_limit is not None else TEXT_LIMIT
        sent = [
            {k: cut_text(str(v), limit, store.secrets) if k == "content" else str(v) for k, v in m.items()}
            for m in request.messages
        ]
        return sent == [dict(m) for m in rec.messages]

    def put(self, key: str, value: CachedReply) -> None:
        self.cache.put(key, value)


def _replayed_error(rec: CallRecord) -> ModelError | None:
    """The error ``rec`` failed with, to raise again; None for one that is no model's failure (a
    budget's refusal), which is not read back. A call cancelled in the stored run (its stage ended by
    a sibling sample's failure, a quorum met without it) is read back as a failure too: its step's
    outcome is the same either way, and sent again it was paid for nothing (whether it went out
    before the replayed failure ended its step was a race)."""
    if rec.error == "cancelled":
        return ModelError(
            "cancelled in the stored run (its step ended without it)", model=rec.model, node=rec.node
        )
    name, _, message = (rec.error or "").partition(": ")
    cls = _REPLAYED.get(name)
    return None if cls is None or not message else cls(message, model=rec.model, node=rec.node)


def _stored_failures(store: Store, setup: Setup, item_id: str) -> list[CallRecord]:
    # a damaged row is a `UserError` naming it: read as no failures, its calls were sent and paid again
    return store.failed_calls(setup.name, setup.hash, item_id)


def _traces_key(setup: Setup, evaluator_id: str) -> str:
    return f"{setup.name}:{setup.hash}:{evaluator_id}"


def _keep_traces(store: Store, key: str, new: Mapping[str, ItemTrace], items: Mapping[str, Item]) -> None:
    if not new:
        return
    book = store.get_meta(TUNE_TRACES)
    book = dict(book) if isinstance(book, dict) else {}
    mine = book.get(key)
    mine = dict(mine) if isinstance(mine, dict) else {}
    for item_id, t in new.items():
        mine[item_id] = {"item": _fingerprint(items[item_id]), "trace": dataclasses.asdict(t)}
    book[key] = mine
    store.set_meta(TUNE_TRACES, book)


async def _traces(
    plan: TunePlan,
    spec: ExperimentSpec,
    store: Store,
    evaluator: Evaluator,
    items: Mapping[str, Item],
    runner: Runner,
    budget: Budget | None,
    sem: asyncio.Semaphore,
    source: str,
    evaluator_id: str,
) -> tuple[dict[str, ItemTrace], list[str]]:
    """Every item's trace, and one line per item left out (a timed-out run, a failed scoring).

    An item recorded by an earlier run is read back from the store: recorded again, it would resend
    every call that failed in it (a rater's unreadable reply is cached nowhere), pay for them again,
    and change the numbers from one run to the next."""
    # the setup's own cache scope: what its stored runs already paid for is read back, not resent
    scope = sample_scope(plan.setup.name, plan.setup.hash, 0, base=plan.setup.cache_scope)
    key = _traces_key(plan.setup, evaluator_id)
    what = f"setup `{plan.setup.name}`"  # a failing write names itself (``writing``)
    book = store.get_meta(TUNE_TRACES)
    stored = book.get(key) if isinstance(book, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    traces: dict[str, ItemTrace] = {}
    recorded: dict[str, ItemTrace] = {}
    dropped: list[str] = []
    fatal: list[UserError] = []
    unknown: list[float] = []  # the worst case of each item's attempts of unknown usage

    async def one(item: Item) -> None:
        old = _stored_trace(stored.get(item.id), item, spec.retry_errors)
        if old is not None:
            traces[item.id] = old
            return
        async with sem:
            if fatal:
                return
            # keyed by item, as the answer phase keys its replies
            cache = _WithFailures(
                StoreCache(store, scope, item.id), _stored_failures(store, plan.setup, item.id)
            )
            scoped = runner.scoped(cache=cache, budget=runner.budget)
            try:
                # every call of the item's recording, whatever ends it: a reply is booked in the
                # ledger when it is cached, but a failed call (a rater's unreadable reply) is
                # cached nowhere, and was paid all the same
                with item_scope(item), watch_run() as watch:
                    try:
                        records = await record_stages(
                            plan.cascade.name,
                            plan.cascade.stage_list,
                            scoped,
                            item.input,
                            budget=budget,
                            deadline_s=spec.deadline_s,
                        )
                    finally:
                        with writing(
                            store.path, store.conn, f"booking the calls of tuning {what} on item `{item.id}`"
                        ):
                            store.book_unstored(watch.calls)
                        # a replayed call's unknown attempts were the comparison's, bounded there
                        unknown.append(
                            math.fsum(c.cost_usd_max - c.cost_usd for c in watch.calls if not c.cached)
                        )
                traces[item.id] = recorded[item.id] = trace(records, await _scores(evaluator, item, records))
            except StoreError:
                # a reply the store could not cache (a full disk): going on would pay for every
                # call it could no longer keep; raised as it is, the tuning stops at once
                raise
            except BudgetExceeded as e:
                fatal.append(
                    UserError(
                        f"{source}: tune: {budget_stop(spec.budget_usd, e)}; the comparison's reports are "
                        "written, and a re-run resends no call already made"
                    )
                )
            except UserError as e:  # a missing key and the like: every item would fail the same way
                fatal.append(UserError(f"{source}: tune: {e}"))
            except Exception as e:  # a timeout, a scoring bug: the other items still tell
                dropped.append(f"item `{item.id}`: {type(e).__name__}: {' '.join(str(e).split())}")

    before = store.spent_usd()
    tasks = [asyncio.ensure_future(one(items[i])) for i in [*plan.dev, *plan.test]]
    try:
        await asyncio.gather(*tasks)
    finally:
        # on Ctrl-C, gather ends as soon as the first item stops: the others were still unwinding,
        # and their calls cut off in flight missed the books (and then found the store closed)
        await cancel_and_drain([t for t in tasks if not t.done()])
        # booked even when a budget stop or Ctrl-C ends the tuning: those calls were paid too
        with writing(store.path, store.conn, f"storing what tuning {what} paid and its items' traces"):
            _book_tuning(store, plan.setup, store.spent_usd() - before, math.fsum(unknown))
            _keep_traces(store, key, recorded, items)  # those finished before a Ctrl-C too
            store.commit()  # the cache entries of the calls made
    if fatal:
        raise fatal[0]
    return traces, dropped


def _tuning_key(setup: Setup) -> str:
    return f"{setup.name}:{setup.hash}"


def _book_tuning(store: Store, setup: Setup, usd: float, unknown_usd: float) -> None:
    """Add ``usd`` to what tuning ``setup`` has paid in this store, over every run of it (a re-run
    reads its calls back free, and the report must still say what they cost), and ``unknown_usd``
    to the worst case of its attempts of unknown usage."""
    key = _tuning_key(setup)
    for meta, add in ((TUNE_PAID, usd), (TUNE_UNKNOWN, unknown_usd)):
        old = store.get_meta(meta)
        book = dict(old) if isinstance(old, dict) else {}
        book[key] = _amount(book.get(key)) + max(add, 0.0)
        store.set_meta(meta, book)


def _amount(v: object) -> float:
    """A booked amount as read back: a damaged entry counts nothing rather than raise."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return 0.0


def tuning_paid(store: Store, setup: Setup) -> tuple[float, float]:
    """What the tuning of ``setup`` has paid in this store (its own calls, apart from the
    comparison's), and that at most: with the worst case of its attempts of unknown usage."""
    key = _tuning_key(setup)
    paid, unknown = (store.get_meta(m) for m in (TUNE_PAID, TUNE_UNKNOWN))
    known = _amount(paid.get(key)) if isinstance(paid, dict) else 0.0
    extra = _amount(unknown.get(key)) if isinstance(unknown, dict) else 0.0
    return known, known + extra


async def run_tuning(
    plan: TunePlan,
    *,
    spec: ExperimentSpec,
    store: Store,
    setups: Sequence[Setup],
    evaluator: Evaluator | PairwiseEvaluator,
    evaluator_id: str,
    items: Sequence[Item],
    runner: Runner,
    budget: Budget | None,
    sem: asyncio.Semaphore,
    out: Path,
    source: str,
) -> TuneResult:
    """Record, score and sweep; write ``tune.json`` and the report's section; return the result."""
    assert not isinstance(evaluator, PairwiseEvaluator)  # plan_tuning refused it
    baseline = next(s for s in setups if s.is_baseline)
    traces, dropped = await _traces(
        plan, spec, store, evaluator, {i.id: i for i in items}, runner, budget, sem, source, evaluator_id
    )
    single = _single_scores(store, baseline, evaluator_id, spec.samples)
    missing = [i for i in [*plan.dev, *plan.test] if i in traces and i not in single]
    notes = (
        [f"left out {len(dropped)} item(s) whose recording or scoring failed; first: {dropped[0]}"]
        if dropped
        else []
    )
    if missing:
        notes.append(f"left out {len(missing)} item(s) with no scored baseline run; first: `{missing[0]}`")

    def pairs(ids: Sequence[str]) -> list[tuple[ItemTrace, float]]:
        return [(traces[i], single[i]) for i in ids if i in traces and i in single]

    dev, test = pairs(plan.dev), pairs(plan.test)
    if min(len(dev), len(test)) < MIN_SPLIT:
        # the split was big enough when planned: the items left out are the culprit, not its size
        raise UserError(
            f"{source}: tune: {len(dev)} dev and {len(test)} held-out items are left, fewer than the "
            f"{MIN_SPLIT} each split needs: {'; '.join(notes)}"
        )
    header = {
        "setup": plan.setup.name,
        "setup_hash": plan.setup.hash,
        "baseline": baseline.name,
        "stage": describe(plan.cascade.name, plan.cascade.stage_list),
        "dev_fraction": plan.spec.dev_fraction,
        "seed": plan.spec.seed,
    }
    header["paid_usd"], header["paid_usd_max"] = tuning_paid(store, plan.setup)
    result = analyse(
        settings=plan.settings,
        current=plan.current,
        dev=dev,
        test=test,
        rounds=spec.bootstrap_rounds,
        header=header,
        notes=notes,
    )
    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / "tune.json") as f:
        f.write(result.model_dump_json(indent=2) + "\n")
    add_tune_section(out / "report.md", result)
    return result
