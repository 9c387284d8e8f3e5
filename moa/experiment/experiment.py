"""``Experiment``: the phases in order over one output folder, and ``rebuild_report`` (``moa report``).

1. answer (``run_pairs``): every (setup, item, sample) pair, the baseline included, run once under one
   concurrency limit and one shared budget and stored as it finishes;
2. score (``score_answers``): the stored answers scored by the evaluator (a judge shares the budget);
3. analyse (``analysis``): the summary from stored runs and scores only;
4. report (``report``): ``summary.json``, ``results.jsonl``, ``report.md``, ``report.html``, ``pareto.png``.
5. tune, when ``spec.tune`` asks (``tune``): a cascade setup's threshold swept, ``tune.json``.

The answer and score phases run where ``spec.executor`` says (``executors``): the pairs of setups whose
models are all local, and the sandboxed programs of an execution evaluator, may run on Dask workers;
API calls, and every write to the store, stay here.

Re-running with the same ``out`` resumes: stored pairs and scores are skipped without a request. An
experiment changed in a way that would mix results (a setup's topology, an item's input) is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa._run import Runner, every_agent, refuse_in_running_loop
from moa.calls.budget import Budget
from moa.calls.keys import unavailable_local_models
from moa.errors import BaselineFailed, StoreError, TopologyError, UserError
from moa.eval.datasets import Dataset, Item, load_dataset
from moa.eval.judge import JudgeEvaluator
from moa.eval.registry import known_evaluators, make_evaluator
from moa.eval.types import Evaluator, PairwiseEvaluator
from moa.experiment.analysis.summarize import summary_from_store
from moa.experiment.analysis.summary import Summary, baseline_problem
from moa.experiment.analysis.tuning import TuneResult
from moa.experiment.config import (
    ExperimentSpec,
    Setup,
    answers_read_tests,
    canonical_hash,
    evaluator_config,
    evaluator_id,
    evaluator_key,
    load_spec,
    resolve_setups,
    stored_evaluator_id,
    validate_spec,
)
from moa.experiment.estimate import ESTIMATE_ITEMS, Cost, Estimator, StoredPair, price_runs, spaced_indices
from moa.experiment.executors import open_executor
from moa.experiment.identity import (
    check_identity,
    first_ids,
    keep_named,
    refuse_mixing,
    stored_raters,
)
from moa.experiment.plan import Plan, SetupPlan, calls_per_run
from moa.experiment.progress import Progress
from moa.experiment.renames import find_renames, with_scopes
from moa.experiment.report.outputs import write_outputs
from moa.experiment.report.text import print_table
from moa.experiment.report.tune import format_tune_table
from moa.experiment.run_pairs import run_pairs
from moa.experiment.score_answers import is_pairwise, score_all
from moa.experiment.store.database import STORE_NAME, Store, damaged, item_hash
from moa.experiment.store.rows import RunRow
from moa.experiment.tune import plan_tuning, run_tuning
from moa.gc_tuning import tune_gc_for_long_runs

__all__ = ["Experiment", "rebuild_report"]


class Experiment:
    """Setups compared with a baseline over a dataset; results live in ``out``.

    ``runner`` injects backends (``Runner(models={"sim/*": FunctionModel(...)})``); its registry is
    shared by every setup, while the experiment adds its own call cache and budget."""

    def __init__(
        self,
        spec: ExperimentSpec,
        *,
        out: str | Path,
        runner: Runner | None = None,
        base_dir: str | Path | None = None,
        source: str | None = None,
        progress: bool = True,
        echo: bool = False,
        evaluator: Evaluator | PairwiseEvaluator | None = None,
    ) -> None:
        self.spec = spec
        #: an evaluator object used instead of ``spec.evaluator`` (e.g. a custom pairwise judge)
        self.evaluator = evaluator
        self.out = Path(out)
        self.runner = runner
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.source = source or "experiment"
        self.progress = progress
        #: print the table (and notes) to stdout at the end, as ``moa compare`` does
        self.echo = echo
        #: the reason the last run stopped early (budget), if any
        self.stopped: str | None = None
        #: what ``spec.tune`` found in the last run (also in ``out/tune.json``), if asked
        self.tuned: TuneResult | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        out: str | Path | None = None,
        runner: Runner | None = None,
        progress: bool = True,
        echo: bool = False,
        **overrides: Any,
    ) -> Experiment:
        """Load an experiment file; ``overrides`` replace fields (``concurrency=4``, ``limit=20``)."""
        p = Path(path)
        spec = load_spec(p)
        changes = {k: v for k, v in overrides.items() if v is not None}
        if changes:
            unknown = sorted(set(changes) - set(ExperimentSpec.model_fields))
            if unknown:
                raise UserError(f"unknown experiment field(s): {', '.join(unknown)}")
            # one line naming the field, as the file's own values get: a pydantic traceback was raised
            spec = validate_spec({**spec.model_dump(), **changes}, source=f"{p} (with {', '.join(changes)})")
        folder = Path(out) if out is not None else Path("moa-results") / spec.name
        return cls(
            spec, out=folder, runner=runner, base_dir=p.parent, source=str(p), progress=progress, echo=echo
        )

    def run(self) -> Summary:
        """Run (or resume) the experiment and return its summary (a fresh event loop)."""
        refuse_in_running_loop("Experiment.run()", "await experiment.arun()")
        return asyncio.run(self.arun())

    async def arun(self) -> Summary:
        """Run (or resume) the experiment and return its summary."""
        with tune_gc_for_long_runs():  # restored on return: see moa.gc_tuning
            # the runner (if the experiment's own) and the executor, closed whatever happens
            async with contextlib.AsyncExitStack() as closing:
                return await self._arun(closing)

    def _checked(self, base_runner: Runner, own_runner: bool) -> _Checked:
        """Everything a run checks before its first call (and before a store, a folder or an
        executor is made): the dataset, the setups, the evaluator, the tuning, keys and providers."""
        spec = self.spec
        dataset = self._dataset()
        setups = resolve_setups(spec, self.base_dir, source=self.source)
        if self.evaluator is not None:
            evaluator: Evaluator | PairwiseEvaluator = self.evaluator
            ev_config: dict[str, Any] = {"name": evaluator.name, "custom": True}
        else:
            ev_config = evaluator_config(spec) if spec.evaluator is not None else _layout_evaluator(dataset)
            evaluator = _make_evaluator(ev_config, self.source, self.base_dir)
        _check_executable(evaluator, dataset.items, self.source)
        _check_targets(evaluator, dataset.items, self.source)
        if hasattr(evaluator, "artefacts_dir"):  # screenshots of HTML answers go with the results
            evaluator.artefacts_dir = self.out / "artefacts"
        # a judge's id covers its topology's content, so an edited judge file re-scores
        identity = getattr(evaluator, "identity", {})
        ev_key = evaluator_key(ev_config, identity)
        ev_id = evaluator_id(ev_key)
        tuning = plan_tuning(spec, setups, evaluator, dataset.items, self.source)  # before any call
        # every setup's and the judge's keys and providers, before any call of any setup and before
        # the store is opened: a missing key left an empty experiment.sqlite (and its folders) behind
        for s in setups:
            base_runner.preflight(s.topology, source=f"{self.source}: setup `{s.name}`")
        judge = getattr(evaluator, "topology", None)
        if judge is not None:
            base_runner.preflight(judge, source=f"{self.source}: evaluator's judge")
        if own_runner and spec.executor == "local":
            _check_local_models(setups, judge, self.source)
        return _Checked(dataset, setups, evaluator, ev_config, ev_id, tuning, judge, ev_key, identity)

    def plan(self) -> Plan:
        """The experiment checked as ``run`` checks it, and what a run would send and cost (``moa
        compare --dry-run``): no call is made, and no store or folder is created."""
        runner = self.runner or Runner()
        c = self._checked(runner, self.runner is None)
        stored, spent, spent_max = _stored_runs(self.out, self.spec, c.setups, c.dataset)
        samples = self.spec.samples
        hashes = [(i, item_hash(i)) for i in c.dataset.items]
        counts = []
        todos: list[tuple[str, Any, bool, list[Item]]] = []
        judged = 0  # the runs a judge compares with the baseline's: the setups', turn by turn
        for s in c.setups:
            calls, at_most = calls_per_run(s.topology)
            done = stored.get(s.name, set())
            todo = [(i, j) for i, h in hashes for j in range(samples) if (i.id, h, j) not in done]
            runs = sum(len(i.turns or ()) or 1 for i, _ in todo)
            judged += 0 if s.is_baseline else runs
            counts.append((calls, at_most, len(hashes) * samples - len(todo), len(todo), runs * calls))
            todos.append((s.name, s.topology, s.is_baseline, [i for i, _ in todo]))
        judge_calls = None
        rebased = stored_turns = 0
        stored_pairs: list[StoredPair] = []
        if c.judge is not None:
            # and the answers stored without a verdict (a judge that failed, or was edited, last
            # time) or with one against another baseline: the run judges them too, which the runs
            # to do alone left out
            stored_turns, rebased, stored_pairs = _unjudged_turns(self.out, c)
            judged += stored_turns
            judge_calls = 2 * calls_per_run(c.judge)[0] * judged
        est = Estimator(
            budgeted=self.spec.budget_usd is not None,
            is_local=lambda m: _is_local(runner, m),
            shows_execution=isinstance(c.evaluator, JudgeEvaluator) and c.evaluator.config.show_execution,
        )
        priced = price_runs(
            est, todos, judge=c.judge, stored=stored_pairs, stored_turns=stored_turns, items=c.dataset.items
        )
        plans = [
            SetupPlan(
                s.name,
                s.source,
                *count,
                s.is_baseline,
                *_bounds(priced.setups[s.name]),
                estimated_usd_retried=priced.setups[s.name].retried,
            )
            for s, count in zip(c.setups, counts, strict=True)
        ]
        return Plan(
            self.source,
            c.dataset,
            c.ev_config,
            self.spec.evaluator is None and self.evaluator is None,
            judge_calls,
            samples,
            plans,
            str(self.out),
            bool(stored),
            self.spec.budget_usd,
            spent,
            spent_max,
            self.spec.executor,
            _reached_workers(self.spec.executor),
            rebased,
            next(s.name for s in c.setups if s.is_baseline),
            judge_estimated_usd_low=priced.judge.low,
            judge_estimated_usd_high=priced.judge.high,
            estimated_items=priced.read,
            items_to_do=priced.of,
            local_models=tuple(sorted(est.local)),
            judge_unpriced_models=tuple(sorted(priced.judge.unpriced)),
            judge_no_max_tokens=tuple(sorted(priced.judge.unbounded)),
            judge_estimated_usd_retried=priced.judge.retried,
        )

    async def _arun(self, closing: contextlib.AsyncExitStack) -> Summary:
        spec = self.spec
        own_runner = self.runner is None
        base_runner = self.runner or Runner()
        if own_runner:
            closing.push_async_callback(base_runner.aclose)
        c = self._checked(base_runner, own_runner)
        dataset, setups, evaluator, ev_config, ev_id, tuning = (
            c.dataset,
            c.setups,
            c.evaluator,
            c.ev_config,
            c.ev_id,
            c.tuning,
        )
        # opened once every check has passed (a missing key started, then stopped, a Dask cluster),
        # and before the store: an unreachable scheduler is refused before any model call
        executor = await open_executor(spec.executor)
        closing.push_async_callback(executor.aclose)
        # exclusive until closed: a second run on the same folder would resend every unfinished
        # pair and collide on the store's unique keys
        store = Store.open(self.out, exclusive=True, verify=True)
        store.text_limit = spec.max_text_kb * 1024 if spec.store_text else None
        bar = Progress(enabled=self.progress)
        compared: Summary | None = None
        doing = "storing the experiment's setups and items"  # named by a store failure's line
        try:
            notes = check_identity(store, spec, setups, dataset, self.out)
            setups = with_scopes(store, setups)  # a renamed setup replays what it cached before
            ev_id = c.stored_id(store)
            manifest = _manifest(spec, setups, dataset, ev_config, ev_id, pairwise=is_pairwise(evaluator))
            manifest["evaluator_key"] = canonical_hash(c.ev_key)
            store.put_items((i.id, item_hash(i), i.category, i.model_dump_json()) for i in dataset.items)
            store.set_meta("manifest", manifest)
            keep_named(store, setups)
            store.set_meta("executor", {"executor": executor.name, "workers": executor.workers})
            store.commit()
            budget = None
            if spec.budget_usd is not None:
                budget = Budget(spec.budget_usd)
                # a resumed run counts what was paid, calls of unknown usage at their worst case
                budget.settle(budget.reserve(0.0), store.spent_usd_max())
            sem = asyncio.Semaphore(spec.concurrency)
            # 1. answer: the pairs not stored yet (None until it returns: it may raise instead)
            self.stopped = None
            doing = "running the pairs"
            self.stopped = await run_pairs(
                spec, store, setups, dataset.items, base_runner, budget, sem, bar, executor
            )
            # 2. score: judge calls are cached in their own scope, one cache per judged pair
            # (``score_all``), and charged to the experiment's budget
            items = {i.id: i for i in dataset.items}
            judge_runner = base_runner.scoped(budget=budget or base_runner.budget)
            # workers take more programs at once than the runs' limit: each wants its next one queued
            slots = executor.slots_for(evaluator)
            doing = "scoring the answers"
            scoring = await score_all(
                store,
                setups,
                evaluator,
                ev_id,
                items.get,
                asyncio.Semaphore(slots) if slots > spec.concurrency else sem,
                judge_runner=judge_runner,
                judge_scope=f"judge:{ev_id}",
                executor=executor,
            )
            # 3. analyse and 4. report, from the store alone
            doing = "reading the results for the report"
            summary = summary_from_store(store, manifest)
            summary.executor, summary.workers = executor.name, executor.workers
            summary.notes[:0] = notes + _bad_row_notes(dataset)
            if scoring.rebased:
                summary.notes.append(
                    f"{scoring.rebased} judge scores were made with another baseline than "
                    f"`{summary.baseline}`: they were dropped and judged again"
                )
            if scoring.failures:
                summary.notes.append(
                    f"{len(scoring.failures)} answers could not be scored (re-run to retry); first: {scoring.failures[0]}"
                )
            if self.stopped:
                summary.notes.append(self.stopped)
            write_outputs(self.out, summary, store, manifest)
            self.tuned = None
            if tuning is not None and not baseline_problem(summary):
                compared = summary  # the comparison stands if the tuning fails (a budget, a key)
                doing = f"tuning setup `{tuning.setup.name}`"
                self.tuned = await run_tuning(
                    tuning,
                    spec=spec,
                    store=store,
                    setups=setups,
                    evaluator=evaluator,
                    evaluator_id=ev_id,
                    items=dataset.items,
                    runner=base_runner,
                    budget=budget,
                    sem=sem,
                    out=self.out,
                    source=self.source,
                )
        except sqlite3.Error as e:  # a page found damaged mid-run, a full disk: one line, not a traceback
            raise StoreError(damaged(store.path, str(e), f"while {doing}")) from None
        finally:
            bar.close()
            _close(store)
            if compared is not None and self.tuned is None and self.echo:
                print_table(compared)  # the tuning's error follows this table, not instead of it
        if self.echo:
            print_table(summary)
            if self.tuned is not None:
                print("\n" + format_tune_table(self.tuned))
        problem = baseline_problem(summary)
        if problem:
            # a budget that refused every call is the cause, not the baseline
            line = f"{self.source}: {problem}" + (f": {self.stopped}" if self.stopped else "")
            base = summary.setup(summary.baseline)
            if base.runs and base.errors >= base.runs:  # its runs failed: exit 1, not "bad input"
                raise BaselineFailed(line)
            raise UserError(line)
        return summary

    def _dataset(self) -> Dataset:
        spec = self.spec
        path = Path(spec.dataset)
        if self.base_dir is not None and not path.is_absolute():
            path = self.base_dir / path
        return load_dataset(
            path,
            format=spec.dataset_format,
            on_bad_row=spec.on_bad_row,
            limit=spec.limit,
            categories=spec.categories,
        )


@dataclass(frozen=True, slots=True)
class _Checked:
    """What ``Experiment._checked`` found, for a run or a plan."""

    dataset: Dataset
    setups: list[Setup]
    evaluator: Evaluator | PairwiseEvaluator
    ev_config: dict[str, Any]
    ev_id: str
    tuning: Any
    judge: Any
    ev_key: dict[str, Any]
    identity: dict[str, Any]

    def stored_id(self, store: Store) -> str:
        """The evaluator id to score under in ``store``: the stored one for the same evaluator."""
        return stored_evaluator_id(store.manifest(), self.ev_key, self.identity, self.ev_id)


def _stored_runs(
    out: Path, spec: ExperimentSpec, setups: Sequence[Setup], dataset: Dataset
) -> tuple[dict[str, set[tuple[str, str, int]]], float, float]:
    """The runs a resume would skip, by setup, what the store has paid, and that at most (the worst
    case of calls of unknown usage); none and 0 when ``out`` holds no store yet (nothing is created).
    A store the run would refuse (a setup or an item's input changed) is refused here too: counted
    as runs to do, a dry run passed what the run then refused."""
    if not (out / STORE_NAME).is_file():
        return {}, 0.0, 0.0
    store = Store.open(out, create=False)
    try:
        refuse_mixing(store, spec, setups, dataset, out)
        was = find_renames(store, setups, stored_raters(store)).stored_name  # the run carries them over
        done = {
            s.name: store.finished(was(s.name), s.hash, with_errors=not spec.retry_errors) for s in setups
        }
        rerun = set(store.rescoring(dataset.items))  # run again by a setup whose answers read tests
        for s in setups:
            if rerun and answers_read_tests(s.topology):
                done[s.name] = {d for d in done[s.name] if d[0] not in rerun}
        return done, store.spent_usd(), store.spent_usd_max()
    finally:
        store.close()


def _is_local(runner: Runner, model: str) -> bool:
    """Whether a run answers ``model`` with the embedded model (priced 0), as the runtime tells."""
    override = runner.registry.override_for(model)
    return bool(getattr(override, "local", False)) if override is not None else model.startswith("local/")


def _bounds(cost: Cost) -> tuple[float, float | None, tuple[str, ...], tuple[str, ...]]:
    return cost.low, cost.high, tuple(sorted(cost.unpriced)), tuple(sorted(cost.unbounded))


def _unjudged_turns(out: Path, c: _Checked) -> tuple[int, int, list[StoredPair]]:
    """The turns of the setups' stored answers (of the dataset's items) that have no score under the
    evaluator, whose item changed what it is scored against, or whose verdict was made against
    another baseline than the experiment's (the run forgets those scores): what the score phase asks
    the judge to compare, how many of them are the last kind (0 when ``out`` holds no store yet),
    and those answers with the baseline's on the same item and sample, read from the store (at most
    ``ESTIMATE_ITEMS``, evenly spaced, when there are more), for the estimate to price."""
    if not (out / STORE_NAME).is_file():
        return 0, 0, []
    store = Store.open(out, create=False)
    items = {i.id: i for i in c.dataset.items}
    turns = rebased = 0
    # (stored setup name, its hash, item, sample): the answers to judge, read once sampled
    todo: list[tuple[str, str, str, int]] = []
    try:
        evaluator = c.stored_id(store)
        rescoring = {i: items[i] for i in store.rescoring(c.dataset.items)}
        was = find_renames(store, c.setups, stored_raters(store)).stored_name  # the run carries them over
        base = next(s for s in c.setups if s.is_baseline)
        # a changed baseline: the verdicts judged against the old one are judged again
        stale = (
            store.rebased_runs(evaluator, was(base.name), base.hash) if is_pairwise(c.evaluator) else set()
        )
        for s in c.setups:
            if s.is_baseline:
                continue
            for rows in store.run_rows(was(s.name), s.hash, evaluator).values():
                # the unscored of them are counted below; a run both rescored and rebased, once
                for r in rows:
                    item = items.get(r.item_id)
                    if r.score is None or item is None:
                        continue
                    n = len(item.turns or ()) or 1
                    if r.item_id in rescoring or r.run_id in stale:
                        turns += n
                        rebased += n if r.run_id in stale else 0
                        todo.append((was(s.name), s.hash, r.item_id, r.sample))
            after = 0
            while page := store.unscored(was(s.name), s.hash, evaluator, after=after, limit=256):
                for r in page:
                    if r.item_id in items:
                        turns += len(r.turn_answers or ()) or 1
                        todo.append((was(s.name), s.hash, r.item_id, r.sample))
                after = page[-1].run_id
        pairs = []
        for k in sorted(spaced_indices(len(todo), ESTIMATE_ITEMS)):
            name, topo_hash, item_id, sample = todo[k]
            run = store.run_for(name, topo_hash, item_id, sample)
            if run is None:
                continue
            theirs = store.run_for(was(base.name), base.hash, item_id, sample)
            pairs.append(
                StoredPair(items[item_id], _answers(run), None if theirs is None else _answers(theirs))
            )
        return turns, rebased, pairs
    finally:
        store.close()


def _answers(run: RunRow) -> tuple[str, ...]:
    """A stored run's answer, turn by turn, as the judge is shown it."""
    return tuple(run.turn_answers) if run.turn_answers is not None else (run.answer or "",)


def _check_local_models(setups: Sequence[Setup], judge: Any, source: str) -> None:
    """The embedded models run in this process (no Dask workers holding them): a missing extra,
    weights or GGUF file is found before the hosted setups of the first items are paid for."""
    named = [(f"setup `{s.name}`", s.topology) for s in setups]
    if judge is not None:
        named.append(("evaluator's judge", judge))
    problems = [
        f"{source}: {where}: {p}" for where, t in named for p in unavailable_local_models(every_agent(t))
    ]
    if problems:
        raise UserError("\n".join(problems))


#: bad rows listed one by one in the notes; past them a count (each was logged as it was read)
_BAD_ROW_NOTES = 10


def _bad_row_notes(dataset: Dataset) -> list[str]:
    """The skipped rows as the report's notes, ``file:line`` each: a file of 50,000 bad rows had as
    many notes, in the terminal, report.md and report.html alike."""
    name = Path(dataset.source).name
    notes = [f"{name}:{b.line}: skipped bad row: {b.reason}" for b in dataset.bad_rows[:_BAD_ROW_NOTES]]
    if len(dataset.bad_rows) > _BAD_ROW_NOTES:
        more = len(dataset.bad_rows) - _BAD_ROW_NOTES
        notes.append(f"{name}: {more} more bad rows skipped ({len(dataset.bad_rows)} in all)")
    return notes


def _layout_evaluator(dataset: Dataset) -> dict[str, Any]:
    """The evaluator of a file that names none: the dataset layout's own (``choice`` for
    multiple-choice items, ``exact`` on the final answer for MATH's, SQuAD's exact match against any
    accepted answer for QA's, ``execution`` for items with tests: HumanEval, MBPP, MultiPL-E), else
    a line asking for one."""
    from moa.eval.datasets import CHOICE, MATH, QA
    from moa.eval.execution import can_execute

    if dataset.items and all(i.meta.get("format") == CHOICE for i in dataset.items):
        return {"name": "choice"}
    if dataset.items and all(i.meta.get("format") == MATH for i in dataset.items):
        return {"name": "exact", "extract_final": True, "numbers": True}
    if dataset.items and all(i.meta.get("format") == QA for i in dataset.items):
        return {"name": "exact", "squad": True}
    if dataset.items and all(can_execute(i) for i in dataset.items):  # tests to run: code layouts
        return {"name": "execution"}
    raise UserError(
        f"{dataset.source}: this dataset's layout has no evaluator of its own: name one in the experiment "
        f"file's `evaluator` ({', '.join(known_evaluators())})"
    )


def _make_evaluator(
    config: dict[str, Any], source: str, base_dir: Path | None = None
) -> Evaluator | PairwiseEvaluator:
    try:
        ev = make_evaluator(config, base_dir=base_dir)
    except TopologyError:
        raise  # one line per problem already, naming the judge's topology file
    except UserError as e:
        raise UserError(f"{source}: evaluator: {e}") from None
    return ev


def _check_executable(evaluator: Evaluator | PairwiseEvaluator, items: Sequence[Item], source: str) -> None:
    """Refuse, before any call, the execution evaluator over items it has nothing to run against:
    each would be answered by every setup, paid for, and then score 0 whatever the answer."""
    from moa.eval._verdict import MAX_TESTS
    from moa.eval.execution import ExecutionEvaluator, can_execute, too_many_tests

    if not isinstance(evaluator, ExecutionEvaluator):
        return
    bare = [i.id for i in items if not can_execute(i)]
    if bare:
        raise UserError(
            f"{source}: evaluator `execution`: {len(bare)} of {len(items)} dataset items have no `tests` "
            f"(or `test`) to run the answers against (first: {first_ids(bare)}); give them tests, or use an "
            "evaluator that reads `target`"
        )
    crowded = [i.id for i in items if too_many_tests(i)]
    if crowded:
        raise UserError(
            f"{source}: evaluator `execution`: {len(crowded)} of {len(items)} dataset items have more "
            f"than {MAX_TESTS} assert lines, more than the sandbox runs (first: {first_ids(crowded)}); "
            "split them into several items"
        )


#: fields that hold the reference answer in other benchmarks' rows: named in the hint
_TARGET_LIKE = ("answer", "answerKey", "label", "output", "expected", "expected_output", "gold", "reference")


def _check_targets(evaluator: Evaluator | PairwiseEvaluator, items: Sequence[Item], source: str) -> None:
    """Refuse, before any call, a reference evaluator over items without a `target` (a row whose
    answer is under `answer` or `label`): every setup was paid to answer them, and each scored 0,
    "item has no target"; and regex targets that do not compile, which stopped the scoring."""
    from moa.eval.reference import (
        ContainsEvaluator,
        ExactEvaluator,
        F1Evaluator,
        NumericEvaluator,
        RegexEvaluator,
    )

    _check_choices(evaluator, items, source)
    reference = ExactEvaluator | ContainsEvaluator | F1Evaluator | NumericEvaluator | RegexEvaluator
    if not isinstance(evaluator, reference):
        return
    if isinstance(evaluator, RegexEvaluator) and evaluator.config.pattern is not None:
        return
    # a blank target (an empty cell) too: `contains` found it in every answer, the rest in none
    bare = [i for i in items if i.target is None or not i.target.strip()]
    if bare:
        held = next((k for k in _TARGET_LIKE if k in bare[0].meta), None)
        hint = f"; their rows hold `{held}`: name that field `target`" if held else ""
        blank = " (or a blank one)" if any(i.target is not None for i in bare) else ""
        raise UserError(
            f"{source}: evaluator `{evaluator.name}`: {len(bare)} of {len(items)} dataset items have no "
            f"`target`{blank} to score the answers against (first: {first_ids([i.id for i in bare])}){hint}"
        )
    if isinstance(evaluator, RegexEvaluator):
        try:
            for item in items:
                evaluator.patterns_of(item)
        except UserError as e:
            raise UserError(f"{source}: evaluator `regex`: {e}") from None


def _check_choices(evaluator: Evaluator | PairwiseEvaluator, items: Sequence[Item], source: str) -> None:
    """Refuse, before any call, ``choice`` over items that have no choices (each would score 0), and
    ``contains`` over multiple-choice or MATH items: their target (a letter, a short answer) is found
    in nearly any reply."""
    from moa.eval.choice import ChoiceEvaluator
    from moa.eval.datasets import CHOICE, MATH
    from moa.eval.reference import ContainsEvaluator

    if isinstance(evaluator, ChoiceEvaluator):
        plain = [i.id for i in items if i.meta.get("format") != CHOICE]
        if plain:
            raise UserError(
                f"{source}: evaluator `choice`: {len(plain)} of {len(items)} dataset items are not "
                f"multiple-choice (first: {first_ids(plain)}); they need `choices` and an `answer`"
            )
    elif isinstance(evaluator, ContainsEvaluator):
        # layouts whose short target is found in nearly any reply, what they are, what to use instead
        short_targets = (
            (CHOICE, "multiple-choice", "whose target letter is in nearly any answer", "`evaluator: choice`"),
            (
                MATH,
                "MATH problems",
                "whose short answer is in nearly any worked solution",
                "`{name: exact, extract_final: true}`",
            ),
        )
        for layout, what, why, instead in short_targets:
            found = [i.id for i in items if i.meta.get("format") == layout]
            if found:
                raise UserError(
                    f"{source}: evaluator `contains`: {len(found)} of {len(items)} dataset items are "
                    f"{what} (first: {first_ids(found)}), {why}: use {instead}"
                )


def _manifest(
    spec: ExperimentSpec,
    setups: Sequence[Setup],
    dataset: Dataset,
    ev_config: dict[str, Any],
    ev_id: str,
    *,
    pairwise: bool,
) -> dict[str, Any]:
    return {
        "experiment": spec.name,
        "dataset": dataset.source,
        "setups": [
            {"name": s.name, "hash": s.hash, "source": s.source, "is_baseline": s.is_baseline} for s in setups
        ],
        "evaluator": ev_config,
        "evaluator_id": ev_id,
        "pairwise": pairwise,
        "samples": spec.samples,
        "item_ids": [i.id for i in dataset.items],
        "seed": spec.seed,
        "bootstrap_rounds": spec.bootstrap_rounds,
    }


async def rebuild_report(out: str | Path, *, concurrency: int = 8) -> Summary:
    """``moa report DIR``: score what is unscored (reference evaluators only) and rewrite the reports."""
    store = Store.open(out, create=False, verify=True)
    try:
        manifest = store.manifest()
        if manifest is None:
            raise UserError(f"{out}: the store holds no experiment yet")
        # a custom or pairwise evaluator is not rebuilt here (a judge's topology file is relative to
        # the experiment file, unknown here): its stored scores are used as they are
        custom = bool(manifest["evaluator"].get("custom")) or bool(manifest.get("pairwise"))
        evaluator = None if custom else _make_evaluator(manifest["evaluator"], str(out))
        if evaluator is not None and not isinstance(evaluator, PairwiseEvaluator):
            # topologies are not needed to score stored answers: the hashes identify the runs
            no_topology: Any = None
            setups = [
                Setup(s["name"], no_topology, s["source"], s["hash"], s["is_baseline"])
                for s in manifest["setups"]
            ]

            def item(item_id: str) -> Item | None:
                data = store.item_data(item_id)
                return None if data is None else Item.model_validate(data)

            await score_all(
                store, setups, evaluator, manifest["evaluator_id"], item, asyncio.Semaphore(concurrency)
            )
        summary = summary_from_store(store, manifest)
        ran = store.get_meta("executor")  # where the stored scores came from (None before executors)
        if ran is not None:
            summary.executor, summary.workers = ran["executor"], ran["workers"]
        write_outputs(Path(out), summary, store, manifest)
    except sqlite3.Error as e:
        raise UserError(damaged(store.path, str(e))) from None
    finally:
        _close(store)
    return summary


def _close(store: Store) -> None:
    try:
        store.close()
    except sqlite3.Error as e:  # the last commit failed (a full disk): the earlier ones are kept
        raise UserError(damaged(store.path, str(e))) from None


def _reached_workers(executor: str) -> int | None:
    """The workers of a remote scheduler (``tcp://``), opened and closed as a run opens it, so a dry
    run checks what a run checks (an unreachable scheduler, no worker, a worker of another moa: the
    run's one-line ``UserError``); None for an executor that is started, not reached (``dask``: its
    extra is checked, as a run's start would)."""
    if executor == "local":
        return None
    if executor == "dask":
        from moa.experiment.executors.dask_executor import require_distributed

        require_distributed()
        return None

    async def probe() -> int:
        opened = await open_executor(executor)
        try:
            return opened.workers
        finally:
            await opened.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe())
    # called from async code (a notebook): its loop cannot run another to the end
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()
