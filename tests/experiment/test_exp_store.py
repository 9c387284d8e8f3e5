"""The runner and its store: interruption, resume, bounded tasks, identity checks, the budget, the
pairwise hook, and the `compare`/`report` commands."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.cli import main
from moa.errors import RequestRejected, UserError
from moa.eval import Item, Judgment, PairScore, Score
from moa.experiment import Experiment, Store
from moa.experiment.store.schema import SCHEMA_VERSION
from moa.models.base import ModelRequest
from moa.results import CallRecord, RunResult, Usage
from moa.testing import FunctionModel
from moa.topology.loader import load_data


def _topo(name: str, model: str, samples: int = 1) -> str:
    price = "max_tokens: 5, pricing: {input_per_mtok: 100, output_per_mtok: 100}"
    if samples == 1:
        return f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: {model}, {price}}}\n"
    return (
        f"name: {name}\nkind: self_moa\nagent: a\nsamples: {samples}\nreduce: majority\n"
        f"agents:\n  a: {{model: {model}, temperature: 0.7, {price}}}\n"
    )


def _exp(tmp: Path, n: int = 20, extra: str = "", concurrency: int = 2) -> Path:
    (tmp / "base.yaml").write_text(_topo("base", "sim/base"))
    (tmp / "trio.yaml").write_text(_topo("trio", "sim/trio", 3))
    rows = [
        {"id": f"i{k}", "input": f"question {k}", "target": str(k), "category": "ab"[k % 2]} for k in range(n)
    ]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: store-test\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\nsetups: [trio.yaml]\n"
        f"concurrency: {concurrency}\n{extra}"
    )
    return tmp / "exp.yaml"


def _answer(req: ModelRequest) -> str:
    return req.messages[-1]["content"].split()[-1]


def _count_runs(out: Path) -> int:
    # a plain reader: WAL lets it read while the experiment's connection writes
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def test_cancellation_keeps_finished_pairs_and_resume_runs_only_the_rest(tmp_path: Path) -> None:
    """Cancelling mid-run (Ctrl-C) keeps stored pairs; the next run calls only for the others."""
    exp = _exp(tmp_path)
    slow = FunctionModel(_answer, delay_s=0.02)
    e = Experiment.from_file(exp, out=tmp_path / "out", runner=Runner(models={"sim/*": slow}), progress=False)
    task = asyncio.create_task(e.arun())
    for _ in range(1000):
        if task.done() or (
            (tmp_path / "out" / "experiment.sqlite").exists() and _count_runs(tmp_path / "out") >= 6
        ):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = _count_runs(tmp_path / "out")
    assert 6 <= kept < 40
    fast = FunctionModel(_answer)
    e2 = Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": fast}), progress=False
    )
    summary = await e2.arun()
    assert summary.complete and summary.setup("trio").n == 20 and summary.setup("base").quality == 1.0
    assert len(fast.calls) <= (40 - kept) * 3


async def test_tasks_stay_bounded_by_the_concurrency(tmp_path: Path) -> None:
    """200 items x 2 setups never create more than a handful of tasks at once."""
    seen: list[int] = []

    def fn(req: ModelRequest) -> str:
        seen.append(len(asyncio.all_tasks()))
        return _answer(req)

    model = FunctionModel(fn)
    exp = _exp(tmp_path, n=200, concurrency=3)
    e = Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
    )
    await e.arun()
    assert len(model.calls) == 800 and model.max_in_flight <= 3 * 3
    assert max(seen) <= 3 * 5 + 2  # per run: its task plus one per node; plus the experiment itself


async def test_changed_setup_under_the_same_out_is_refused(tmp_path: Path) -> None:
    """A setup whose topology changed cannot be mixed into the stored runs."""
    exp = _exp(tmp_path, n=3)
    runner = Runner(models={"sim/*": FunctionModel(_answer)})
    await Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False).arun()
    (tmp_path / "trio.yaml").write_text(_topo("trio", "sim/trio", 5))
    with pytest.raises(UserError, match=r"setup `trio` changed since its runs were stored"):
        await Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False).arun()


async def test_changed_dataset_under_the_same_out_is_refused(tmp_path: Path) -> None:
    """An item whose input changed under the same id is reported, not mixed."""
    exp = _exp(tmp_path, n=3)
    runner = Runner(models={"sim/*": FunctionModel(_answer)})
    await Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False).arun()
    data = (tmp_path / "data.jsonl").read_text().replace("question 1", "question one")
    (tmp_path / "data.jsonl").write_text(data)
    with pytest.raises(UserError, match=r"the dataset changed: item `i1`"):
        await Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False).arun()


async def test_budget_stops_the_experiment_and_a_larger_one_resumes(tmp_path: Path) -> None:
    """Over budget, pairs are left to do (not stored as failures); a larger budget finishes them."""
    # a call holds about $0.108 (its prompt's token ceiling and max_tokens) and costs about $0.0003:
    # calls go one at a time until about $0.007 is spent, some way into the 40
    exp = _exp(tmp_path, n=10, extra="budget_usd: 0.115\n")
    runner = Runner(models={"sim/*": FunctionModel(_answer)})
    e = Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False)
    summary = await e.arun()
    assert not summary.complete and e.stopped is not None
    assert any("budget" in n for n in summary.notes)
    e2 = Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False, budget_usd=100.0)
    assert (await e2.arun()).complete


async def test_failed_runs_keep_their_calls(tmp_path: Path) -> None:
    """A run that fails is stored with the calls it made and counts as an error in its setup."""

    def fn(req: ModelRequest) -> str | BaseException:
        return RequestRejected("no such model") if req.model == "sim/trio" else _answer(req)

    exp = _exp(tmp_path, n=4)
    summary = await Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": FunctionModel(fn)}), progress=False
    ).arun()
    trio = summary.setup("trio")
    assert trio.errors == 4 and trio.quality == 0.0 and "no such model" in trio.error_examples[0]["error"]
    store = Store.open(tmp_path / "out", create=False)
    try:
        assert (
            store.conn.execute(
                "SELECT COUNT(*) FROM calls c JOIN runs r USING(run_id) WHERE r.setup='trio'"
            ).fetchone()[0]
            == 12
        )
    finally:
        store.close()


class LengthJudge:
    """A pairwise evaluator: a judge topology says which answer is longer, in both orders."""

    name = "length-judge"

    def __init__(self) -> None:
        self.topology = load_data(
            {
                "name": "judge",
                "kind": "single",
                "agent": "j",
                "agents": {"j": {"model": "judge/m", "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}},
            }
        )

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Runner) -> PairScore:
        rows = []
        for position, (a, b) in (("a", (answer, baseline_answer)), ("b", (baseline_answer, answer))):
            result = await runner.run(self.topology, f"Q: {item.input}\nA: {a}\nB: {b}")
            verdict = result.output
            mine = verdict == ("A" if position == "a" else "B")
            rows.append(Judgment(position, verdict, 1.0 if mine else 0.0, None, None, result.calls))
        value = sum(r.value or 0.0 for r in rows) / 2
        return PairScore(Score(value), rows)


def _judge(req: ModelRequest) -> str:
    _, a, b = (line[3:] for line in req.messages[-1]["content"].splitlines())
    return "A" if len(a) > len(b) else "B"


async def test_pairwise_evaluator_stores_verdicts_and_judge_calls(tmp_path: Path) -> None:
    """The pairwise hook sees the baseline's answer; verdicts and judge calls are stored and cached."""
    exp = _exp(tmp_path, n=4)
    judge = FunctionModel(_judge)
    models = {
        "sim/base": FunctionModel(lambda r: "short"),
        "sim/trio": FunctionModel(lambda r: "a longer answer"),
        "judge/*": judge,
    }
    e = Experiment.from_file(exp, out=tmp_path / "out", runner=Runner(models=models), progress=False)
    e.evaluator = LengthJudge()
    summary = await e.arun()
    assert summary.setup("trio").quality == 1.0 and summary.setup("base").quality == 0.5
    assert len(judge.calls) == 8 and summary.setup("trio").judge_cost_usd > 0
    store = Store.open(tmp_path / "out", create=False)
    try:
        assert store.count("judgments") == 8
        assert (
            store.conn.execute("SELECT COUNT(*) FROM calls WHERE judgment_id IS NOT NULL").fetchone()[0] == 8
        )
        store.delete_scores()
    finally:
        store.close()
    e2 = Experiment.from_file(exp, out=tmp_path / "out", runner=Runner(models=models), progress=False)
    e2.evaluator = LengthJudge()
    again = await e2.arun()
    assert len(judge.calls) == 8, "judge calls come from the call cache"
    assert again.setup("trio").quality == 1.0


def test_compare_and_report_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa compare` prints the table and writes the reports; `moa report` rebuilds them from the store."""
    from moa.testing.sim import SimServer

    with SimServer({"m": __import__("moa.testing.sim", fromlist=["SimModel"]).SimModel(answer="7")}) as srv:
        agent = f"{{model: openai/m, api_base: {json.dumps(srv.base_url)}, pricing: {{input_per_mtok: 1, output_per_mtok: 1}}}}"
        (tmp_path / "one.yaml").write_text(f"name: one\nkind: single\nagent: a\nagents:\n  a: {agent}\n")
        (tmp_path / "two.yaml").write_text(
            f"name: two\nkind: self_moa\nagent: a\nsamples: 2\nreduce: majority\nagents:\n  a: {agent[:-1]}, temperature: 0.5}}\n"
        )
        (tmp_path / "d.jsonl").write_text('{"input": "q1", "target": "7"}\n{"input": "q2", "target": "8"}\n')
        (tmp_path / "e.yaml").write_text(
            "name: cli\ndataset: d.jsonl\nevaluator: exact\nbaseline: one.yaml\nsetups: [two.yaml]\n"
        )
        out = tmp_path / "out"
        assert main(["compare", str(tmp_path / "e.yaml"), "--out", str(out), "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert "cost × single" in printed and "$ per correct answer" in printed and "two" in printed
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "cost × single" in capsys.readouterr().out
    assert "| Setup |" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["setups"][1]["cost_ratio"] == pytest.approx(2.0)


def test_a_version_4_store_ties_pairwise_scores_to_their_baseline_run(tmp_path: Path) -> None:
    """Upgrading a v4 store: a judged score learns its baseline run from its verdicts, a score of
    "the baseline failed" from the manifest's baseline run on its item (dropping it, as this did,
    lost it from `moa report`, which never scores again)."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        DROP INDEX scores_baseline;
        ALTER TABLE scores DROP COLUMN baseline_run_id;
        UPDATE meta SET value = '4' WHERE key = 'schema_version';
        INSERT INTO meta VALUES ('manifest', '{"setups": [{"name": "s", "hash": "h1", "is_baseline": false},
          {"name": "b", "hash": "h0", "is_baseline": true}]}');
        INSERT INTO runs(run_id, setup, topo_hash, item_id, input_hash, answer, error, cost_usd, latency_s,
          critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at) VALUES
          (1, 's', 'h1', 'i1', 'x', '4', NULL, 0, 1, 1, 1, 1, 1, 0),
          (9, 'b', 'h0', 'i1', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0);
        INSERT INTO scores(run_id, evaluator_id, value, detail) VALUES
          (1, 'judge', 1.0, 'the baseline failed on this item'), (2, 'judge', 0.75, 'judged'),
          (3, 'exact', 1.0, 'match');
        INSERT INTO judgments(evaluator_id, run_id, baseline_run_id, position, verdict, value, cost_usd)
          VALUES ('judge', 2, 7, 'ab', 'A>B', 1.0, 0.01);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        rows = store.conn.execute("SELECT run_id, baseline_run_id FROM scores ORDER BY run_id").fetchall()
        assert rows == [(1, 9), (2, 7), (3, None)]
    finally:
        store.close()


def test_a_version_5_store_gains_the_usage_estimated_column(tmp_path: Path) -> None:
    """Upgrading a v5 store: its calls gain `usage_estimated`, 0 for the calls already stored, and
    the calls it held are kept."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        ALTER TABLE calls DROP COLUMN usage_estimated;
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO calls(run_id, seq, node, model, requested_model, prompt_tokens, completion_tokens,
          cost_usd, latency_s, attempts, started_s, priced, local, cached)
          VALUES (1, 0, 'n', 'm', 'm', 3, 1, 0.5, 1, 1, 0, 1, 0, 0);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        rows = store.conn.execute("SELECT node, cost_usd, usage_estimated FROM calls").fetchall()
        assert rows == [("n", 0.5, 0)]
    finally:
        store.close()


def test_each_calls_estimated_usage_is_stored(tmp_path: Path) -> None:
    """A run's calls keep their `usage_estimated` flag in the store's calls table."""
    calls = [
        CallRecord("a", "m", Usage(3, 1), 0.1, usage_estimated=True),
        CallRecord("b", "m", Usage(3, 1), 0.1),
    ]
    result = RunResult("x", "t", Usage(6, 2), 0.2, 1.0, 1.0, calls, {})
    store = Store.open(tmp_path / "out")
    try:
        run_id = store.record_run("s", "h", "i", "x", result)
        rows = store.conn.execute(
            "SELECT node, usage_estimated FROM calls WHERE run_id=? ORDER BY seq", (run_id,)
        ).fetchall()
    finally:
        store.close()
    assert rows == [("a", 1), ("b", 0)]


def test_a_store_whose_scores_lack_the_v5_column_is_one_line(tmp_path: Path) -> None:
    """A store that says version 5 but whose scores table lacks `baseline_run_id` (written by hand,
    or half copied) is refused in one line naming the file, not a raw SQLite error."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript("DROP INDEX scores_baseline; ALTER TABLE scores DROP COLUMN baseline_run_id;")
    conn.commit()
    conn.close()
    with pytest.raises(
        UserError, match=r"experiment\.sqlite: cannot open the experiment store: .*baseline_run_id"
    ):
        Store.open(out)


def test_a_version_5_pairwise_store_gets_the_scores_its_readers_derived(tmp_path: Path) -> None:
    """Upgrading a v5 store under a pairwise judge stores the scores v5 readers derived: the baseline's
    failed run 0.5; a failed setup run 0 against an answered baseline run, 0.5 against a failed one,
    nothing while the baseline's run is missing; an existing score and another evaluator's stay."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO meta VALUES ('manifest', '{"pairwise": true, "evaluator_id": "judge", "setups":
          [{"name": "s", "hash": "h1", "is_baseline": false}, {"name": "b", "hash": "h0", "is_baseline": true}]}');
        INSERT INTO runs(run_id, setup, topo_hash, item_id, input_hash, answer, error, cost_usd, latency_s,
          critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at, sample) VALUES
          (1, 'b', 'h0', 'i1', 'x', 'a', NULL, 0, 1, 1, 1, 1, 1, 0, 0),
          (2, 'b', 'h0', 'i2', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0, 0),
          (3, 's', 'h1', 'i1', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0, 0),
          (4, 's', 'h1', 'i2', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0, 0),
          (5, 's', 'h1', 'i3', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0, 0),
          (6, 's', 'h1', 'i2', 'x', 'c', NULL, 0, 1, 1, 1, 1, 1, 0, 1);
        INSERT INTO scores(run_id, evaluator_id, value, detail) VALUES
          (1, 'judge', 0.5, 'baseline'), (6, 'judge', 1.0, 'the baseline failed on this item'),
          (2, 'old-judge', 0.25, 'kept');
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        rows = store.conn.execute(
            "SELECT run_id, evaluator_id, value, detail, baseline_run_id FROM scores ORDER BY run_id, evaluator_id"
        ).fetchall()
    finally:
        store.close()
    assert rows == [
        (1, "judge", 0.5, "baseline", None),
        (2, "judge", 0.5, "baseline", None),
        (2, "old-judge", 0.25, "kept", None),
        (3, "judge", 0.0, "the setup failed on this item", 1),
        (4, "judge", 0.5, "both failed on this item", 2),
        (6, "judge", 1.0, "the baseline failed on this item", None),
    ]


def test_a_version_5_store_without_a_judge_gains_no_score(tmp_path: Path) -> None:
    """Upgrading a v5 store scored by a reference evaluator adds no score: a failed run scores 0 there."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO meta VALUES ('manifest', '{"evaluator_id": "exact", "setups":
          [{"name": "b", "hash": "h0", "is_baseline": true}]}');
        INSERT INTO runs(run_id, setup, topo_hash, item_id, input_hash, answer, error, cost_usd, latency_s,
          critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at) VALUES
          (2, 'b', 'h0', 'i2', 'x', NULL, 'ProviderError: down', 0, 1, 1, 1, 1, 1, 0);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        assert store.count("scores") == 0
    finally:
        store.close()
