"""The score phase under a pairwise judge stores every run's score, failed runs' included, so the
summary, the per-language figures, results.jsonl and Bradley–Terry all read one number: the baseline
0.5 on each run, a failed setup run 0 against an answer and 0.5 against a failed baseline run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moa.errors import ProviderError, StoreError
from moa.eval.datasets import Item
from moa.eval.types import PairScore, Score
from moa.experiment.analysis import summary_from_store
from moa.experiment.config import Setup
from moa.experiment.score_answers import score_all
from moa.experiment.store import Store
from moa.results import RunResult, Usage

IDS = ["a", "b", "c", "d"]


class FixedJudge:
    """A pairwise evaluator that scores every judged pair 0.75 without a model call."""

    name = "fixed-judge"

    def __init__(self) -> None:
        self.judged = 0

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Any) -> PairScore:
        self.judged += 1
        return PairScore(Score(0.75, "judged"))


def _setups() -> list[Setup]:
    no_topology: Any = None
    return [Setup("base", no_topology, "b", "h0", True), Setup("moa", no_topology, "m", "h1", False)]


def _store(tmp_path: Path, failed: dict[str, set[str]]) -> Store:
    """base and moa over IDS, the runs in ``failed[setup]`` failed."""
    store = Store.open(tmp_path)
    store.put_items((i, "ih", None, Item(id=i, input=f"q{i}").model_dump_json()) for i in IDS)
    for s in _setups():
        for i in IDS:
            if i in failed.get(s.name, set()):
                store.record_run(s.name, s.hash, i, "ih", None, ProviderError("down"))
            else:
                store.record_run(s.name, s.hash, i, "ih", RunResult("x", "t", Usage(), 0.0, 1.0, 1.0, [], {}))
    store.commit()
    return store


def _score(store: Store, judge: FixedJudge) -> None:
    def item(item_id: str) -> Item | None:
        data = store.item_data(item_id)
        return None if data is None else Item.model_validate(data)

    report = asyncio.run(
        score_all(store, _setups(), judge, "j", item, asyncio.Semaphore(4), judge_runner=object())  # type: ignore[arg-type]
    )
    assert report.failures == []


def test_every_pairwise_score_is_stored_failed_runs_included(tmp_path: Path) -> None:
    """base failed on a and b, moa on b and c: stored base 0.5 ×4; moa a 1.0, b 0.5, c 0.0, d judged."""
    store = _store(tmp_path, {"base": {"a", "b"}, "moa": {"b", "c"}})
    judge = FixedJudge()
    try:
        _score(store, judge)
        rows = store.conn.execute(
            "SELECT r.setup, r.item_id, s.value, s.detail FROM runs r JOIN scores s ON s.run_id = r.run_id "
            "ORDER BY r.setup, r.item_id"
        ).fetchall()
    finally:
        store.close()
    assert judge.judged == 1
    assert rows == [
        *(("base", i, 0.5, "baseline") for i in IDS),
        ("moa", "a", 1.0, "the baseline failed on this item"),
        ("moa", "b", 0.5, "both failed on this item"),
        ("moa", "c", 0.0, "the setup failed on this item"),
        ("moa", "d", 0.75, "judged"),
    ]


def test_the_summary_reads_the_stored_pairwise_scores(tmp_path: Path) -> None:
    """The summary of that store: baseline quality 0.5, moa (1 + 0.5 + 0 + 0.75) / 4, Δ = that − 0.5."""
    store = _store(tmp_path, {"base": {"a", "b"}, "moa": {"b", "c"}})
    try:
        _score(store, FixedJudge())
        manifest = {
            "experiment": "p",
            "evaluator": {"name": "judge"},
            "evaluator_id": "j",
            "setups": [
                {"name": "base", "hash": "h0", "is_baseline": True},
                {"name": "moa", "hash": "h1", "is_baseline": False},
            ],
            "item_ids": IDS,
            "pairwise": True,
            "bootstrap_rounds": 100,
        }
        s = summary_from_store(store, manifest)
    finally:
        store.close()
    assert s.setup("base").quality == 0.5 and s.setup("base").n == 4
    moa = s.setup("moa")
    assert moa.quality == (1.0 + 0.5 + 0.0 + 0.75) / 4
    assert moa.delta_vs_baseline is not None and abs(moa.delta_vs_baseline - 0.0625) < 1e-12
    assert moa.judge is not None and (moa.judge.wins, moa.judge.ties, moa.judge.losses) == (2, 1, 1)


def test_a_failed_setup_run_waits_for_its_baseline_run(tmp_path: Path) -> None:
    """A failed setup run whose baseline run is not stored yet gets no score (it is not a loss yet)."""
    store = _store(tmp_path, {"moa": {"a"}})
    try:
        store.conn.execute("DELETE FROM runs WHERE setup = 'base' AND item_id = 'a'")
        store.commit()
        report = asyncio.run(
            score_all(
                store,
                _setups(),
                FixedJudge(),
                "j",
                lambda i: Item(id=i, input="q"),
                asyncio.Semaphore(4),
                judge_runner=object(),  # type: ignore[arg-type]
            )
        )
        scored = store.conn.execute(
            "SELECT COUNT(*) FROM scores s JOIN runs r ON r.run_id = s.run_id WHERE r.setup = 'moa' AND r.item_id = 'a'"
        ).fetchone()[0]
    finally:
        store.close()
    assert report.waiting == 1 and scored == 0


class HangingJudge:
    """A pairwise evaluator whose judge never answers (a stalled provider)."""

    name = "hanging-judge"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Any) -> PairScore:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_scores_without_a_judge_call_survive_an_interrupted_judge_phase(tmp_path: Path) -> None:
    """The judge stalls on the first pair and the phase is cancelled (Ctrl-C): the scores that need no
    judge (the baseline's, the failed runs') are stored already, so `moa report` counts them."""
    store = _store(tmp_path, {"base": {"c"}, "moa": {"b", "c"}})
    judge = HangingJudge()

    async def interrupted() -> None:
        task = asyncio.create_task(
            score_all(
                store,
                list(reversed(_setups())),  # the setup's pairs first: the judge is asked before the rest
                judge,
                "j",
                lambda i: Item(id=i, input="q"),
                asyncio.Semaphore(1),
                judge_runner=object(),  # type: ignore[arg-type]
            )
        )
        await judge.entered.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(interrupted())
        rows = store.conn.execute(
            "SELECT r.setup, r.item_id, s.value FROM runs r JOIN scores s ON s.run_id = r.run_id "
            "ORDER BY r.setup, r.item_id"
        ).fetchall()
    finally:
        store.close()
    assert rows == [*(("base", i, 0.5) for i in IDS), ("moa", "b", 0.0), ("moa", "c", 0.5)]


class BrokenJudge:
    """A pairwise evaluator that raises ``error`` on item `c` and scores the rest 0.75."""

    name = "broken-judge"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked: list[str] = []

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Any) -> PairScore:
        self.asked.append(item.id)
        if item.id == "c":
            raise self.error
        return PairScore(Score(0.75, "judged"))


def _score_broken(store: Store, judge: BrokenJudge) -> Any:
    return asyncio.run(
        score_all(
            store,
            _setups(),
            judge,
            "j",
            lambda i: Item(id=i, input="q"),
            asyncio.Semaphore(1),
            judge_runner=object(),  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("disk I/O error"), TypeError("'NoneType' object is not subscriptable")],
    ids=["store", "bug"],
)
def test_a_store_error_or_a_bug_while_judging_ends_the_phase_keeping_the_scores(
    tmp_path: Path, error: Exception
) -> None:
    """The judge's store write fails (its cache writes there), or a bug raises: the phase stops
    with that error, not "could not be scored" for every pair after it; the scores stored before it
    stay, and no pair is judged after it."""
    store = _store(tmp_path, {})
    judge = BrokenJudge(error)
    try:
        with pytest.raises(type(error), match=str(error)[:10]):
            _score_broken(store, judge)
        judged = store.conn.execute(
            "SELECT r.item_id FROM scores s JOIN runs r ON r.run_id = s.run_id WHERE r.setup = 'moa' "
            "ORDER BY r.item_id"
        ).fetchall()
    finally:
        store.close()
    assert judge.asked == ["a", "b", "c"]
    assert judged == [("a",), ("b",)]


def test_a_judge_that_fails_on_a_pair_leaves_it_unscored_and_goes_on(tmp_path: Path) -> None:
    """A judge failure (the provider is down) is that pair's: noted, left for the next run, and the
    other pairs are judged."""
    store = _store(tmp_path, {})
    judge = BrokenJudge(ProviderError("judge down"))
    try:
        report = _score_broken(store, judge)
    finally:
        store.close()
    assert judge.asked == ["a", "b", "c", "d"]
    assert report.failures == ["setup `moa`, item `c`: ProviderError: judge down"]


class ExactScore:
    """An evaluator scoring every answer 1."""

    name = "exact-score"

    async def score(self, item: Item, answer: str) -> Score:
        return Score(1.0)


def test_a_locked_store_while_scoring_raises_instead_of_failing_each_answer(tmp_path: Path) -> None:
    """Another program holds the store's write lock when a score is stored: the store's error ends
    the phase, in one line naming the store and the write, not "could not be scored"."""
    store = _store(tmp_path, {})
    store.conn.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "experiment.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(
            StoreError,
            match=r"\(SQLite: database is locked\) while storing the score of setup `\w+`, item `\w+`",
        ):
            asyncio.run(
                score_all(
                    store, _setups(), ExactScore(), "e", lambda i: Item(id=i, input="q"), asyncio.Semaphore(2)
                )
            )
    finally:
        other.close()
        store.close()


def test_a_store_error_while_judging_ends_the_experiment_in_one_line(tmp_path: Path) -> None:
    """``moa compare`` with a judge whose store write fails: one line naming the store, and the
    runs answered before it are kept."""
    from moa._run import Runner
    from moa.errors import UserError
    from moa.experiment import Experiment
    from moa.testing import FunctionModel

    for name in ("base", "moa"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}}}\n"
        )
    (tmp_path / "data.jsonl").write_text("".join(f'{{"id": "{i}", "input": "q{i}"}}\n' for i in IDS))
    (tmp_path / "exp.yaml").write_text(
        "name: p\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\nsetups: [moa.yaml]\nconcurrency: 1\n"
    )
    out = tmp_path / "out"
    e = Experiment.from_file(
        tmp_path / "exp.yaml",
        out=out,
        runner=Runner(models={"sim/*": FunctionModel(lambda r: "x")}),
        progress=False,
    )
    e.evaluator = BrokenJudge(sqlite3.OperationalError("disk I/O error"))
    with pytest.raises(UserError, match=r"experiment\.sqlite: the experiment store is damaged") as info:
        e.run()
    assert "\n" not in str(info.value) and "disk I/O error" in str(info.value)
    store = Store.open(out, create=False)
    try:
        assert store.conn.execute("SELECT COUNT(*) FROM runs WHERE error IS NULL").fetchone()[0] == 2 * len(
            IDS
        )
    finally:
        store.close()


def test_a_failed_pair_books_the_malformed_replies_it_paid_for(tmp_path: Path) -> None:
    """The judge gives the setup-first order a reply without a verdict (paid, never cached) and is
    down for the other order: the pair stays unscored, and the malformed replies are in the store's
    ledger of what was paid (they were in nothing: a resumed budget did not count them)."""
    from moa._run import Runner
    from moa.eval.judge import JudgeConfig, JudgeEvaluator
    from moa.models.base import ModelRequest
    from moa.testing import FunctionModel

    (tmp_path / "judge.yaml").write_text(
        "name: judge\nkind: single\nagent: a\nagents:\n  a: {model: sim/judge, retry: {max_attempts: 2, "
        "backoff_base_s: 0}, pricing: {input_per_mtok: 1000, output_per_mtok: 1000}}\n"
    )

    def reply(request: ModelRequest) -> str | BaseException:
        setup_first = "[Answer A]\nx" in str(request.messages[-1]["content"])
        return "no verdict" if setup_first else ProviderError("judge down")

    store = _store(tmp_path / "out", {})
    store.conn.execute("UPDATE runs SET answer = 'the baseline' WHERE setup = 'base'")
    store.commit()
    try:
        report = asyncio.run(
            score_all(
                store,
                _setups(),
                JudgeEvaluator(JudgeConfig(topology=str(tmp_path / "judge.yaml"))),
                "j",
                lambda i: Item(id=i, input="q"),
                asyncio.Semaphore(1),
                judge_runner=Runner(models={"sim/*": FunctionModel(reply)}),
                judge_scope="judge:j",
            )
        )
        paid = store.spent_usd()
    finally:
        store.close()
    assert len(report.failures) == len(IDS)
    # per pair, the setup-first order's two malformed attempts; the other order's failures cost nothing
    assert paid > 0


def test_the_judge_cost_counts_what_failed_pairs_paid(tmp_path: Path) -> None:
    """A judged pair whose setup-second order gets a reply without a verdict (paid, retried) and then
    an error: the report's judge cost is what the ledger paid for judging, the pair's answered order
    and malformed reply included (they were in the ledger only); and still so once a resumed run
    judges the pair, replaying the answered order from its cache."""
    from moa._run import Runner
    from moa.experiment import Experiment
    from moa.models.base import ModelRequest
    from moa.testing import FunctionModel

    price = "pricing: {input_per_mtok: 1000, output_per_mtok: 1000}"
    for name in ("base", "moa"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, {price}}}\n"
        )
    (tmp_path / "judge.yaml").write_text(
        "name: judge\nkind: single\nagent: a\nagents:\n  a: {model: sim/judge, retry: {max_attempts: 2, "
        f"backoff_base_s: 0}}, {price}}}\n"
    )
    (tmp_path / "data.jsonl").write_text("".join(f'{{"id": "{i}", "input": "q{i}"}}\n' for i in IDS))
    (tmp_path / "exp.yaml").write_text(
        "name: p\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
        "baseline: base.yaml\nsetups: [moa.yaml]\nconcurrency: 1\n"
    )
    down = [True]
    asked: list[str] = []

    def reply(request: ModelRequest) -> str | BaseException:
        if request.model != "sim/judge":
            return f"{request.model} says so"
        prompt = str(request.messages[-1]["content"])
        if down[0] and "qc" in prompt and "[Answer A]\nsim/base" in prompt:
            asked.append(prompt)
            return "no verdict at all" if len(asked) == 1 else ProviderError("judge down")
        return "Better. [[A>B]]"

    def run() -> float:
        runner = Runner(models={"sim/*": FunctionModel(reply)})
        summary = Experiment.from_file(
            tmp_path / "exp.yaml", out=tmp_path / "out", runner=runner, progress=False
        ).run()
        return summary.setup("moa").judge_cost_usd

    def paid_for_judging() -> float:
        store = Store.open(tmp_path / "out")
        try:
            runs = store.conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM runs").fetchone()[0]
            return store.spent_usd() - float(runs)
        finally:
            store.close()

    def by_model() -> tuple[float, int]:
        """``moa view``'s judge cost of the setup, by model: its sum and the calls it counts."""
        from moa.view.queries import judge_costs

        store = Store.open(tmp_path / "out")
        try:
            evaluator_id, topo_hash = store.conn.execute(
                "SELECT j.evaluator_id, r.topo_hash FROM judgments j JOIN runs r ON r.run_id = j.run_id "
                "WHERE r.setup = 'moa' LIMIT 1"
            ).fetchone()
            rows = judge_costs(store.conn, evaluator_id, "moa", topo_hash)
        finally:
            store.close()
        assert [r["model"] for r in rows] == ["sim/judge"]
        return rows[0]["cost_usd"], rows[0]["calls"]

    first = run()
    assert len(asked) == 2  # the malformed reply, then the error: the pair of item c is unscored
    assert first == pytest.approx(paid_for_judging()) and first > 0
    # moa view's judge cost by model agrees: the failed pair's two calls (its answered order, and the
    # order whose two attempts got a reply without a verdict, then an error) are in it, beside the
    # three other items' two orders each
    assert by_model() == (pytest.approx(first), 3 * 2 + 2)
    down[0] = False
    again = run()
    assert again > first and again == pytest.approx(paid_for_judging())
    assert by_model()[0] == pytest.approx(again)
