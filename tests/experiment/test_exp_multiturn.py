"""Multi-turn items (MT-Bench layout) end to end against loopback simulated models: every turn runs
with the setup's own earlier answers as history, every turn's answer is stored, the judge sees each
conversation (with the reference) and judges its last turn, and summary.json gives ``turn_scores``."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moa import Runner, RunResult, TimedOut
from moa.eval.datasets import Item, load_dataset
from moa.eval.judge import format_conversation_prompt
from moa.experiment import Experiment, Store
from moa.experiment.conversation import run_item
from moa.experiment.store.schema import SCHEMA_VERSION
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text
from moa.topology.loader import load_data

PRICE = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"
N = 6
ROWS: list[dict[str, Any]] = [
    {
        "question_id": 81 + i,
        "category": "writing" if i % 2 else "math",
        "turns": [f"Question {i}, first turn.", f"Question {i}, follow-up."],
        **({"reference": [f"ref {i} one", f"ref {i} two"]} if i % 2 == 0 else {}),
    }
    for i in range(N)
]


def answerer(name: str, second: str) -> Callable[[SimRequest], str]:
    """Turn 1: a fixed answer naming the model. Turn 2: ``second`` plus the assistant message it was
    given as history, so the test can see whose earlier answer reached the model."""

    def answer(req: SimRequest) -> str:
        history = [m["content"] for m in req.messages if m.get("role") == "assistant"]
        if "follow-up" not in last_user_text(req.messages):
            return f"{name} first answer"
        return f"{second} (after: {' | '.join(history)})"

    return answer


def _judge_prompt_parts(prompt: str) -> tuple[int, str, str]:
    turn = int(re.search(r"user's last question \(turn (\d+)\)", prompt).group(1))  # type: ignore[union-attr]
    a = prompt.split("<|The Start of Assistant A's Conversation with User|>", 1)[1].split("<|The End", 1)[0]
    b = prompt.split("<|The Start of Assistant B's Conversation with User|>", 1)[1].split("<|The End", 1)[0]
    return turn, a, b


def last_answer(conversation: str) -> str:
    return conversation.rsplit("### Assistant", 1)[1]


def content_judge(req: SimRequest) -> str:
    """Prefers the conversation whose last answer says GOOD over one saying BAD; equal is a tie."""
    _, a, b = _judge_prompt_parts(last_user_text(req.messages))
    rank = {"GOOD": 2, "SAME": 1, "BAD": 0}

    def score(conv: str) -> int:
        last = last_answer(conv)
        return next((v for k, v in rank.items() if k in last), 1)

    sa, sb = score(a), score(b)
    verdict = "A>B" if sa > sb else "B>A" if sb > sa else "A=B"
    return f"Reasoning.\n[[{verdict}]]"


def _topology(folder: Path, name: str, base_url: str, retry: str = "{max_attempts: 1}") -> None:
    agent = f"model: openai/{name}-m, api_base: {json.dumps(base_url)}, retry: {retry}, {PRICE}"
    (folder / f"{name}.yaml").write_text(f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{{agent}}}\n")


def _experiment(folder: Path, base_url: str, *, rows: list[dict[str, Any]] = ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "good", "bad", "judge"):
        _topology(folder, name, base_url)
    (folder / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "exp.yaml").write_text(
        "name: mt\ndataset: question.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
        "baseline: base.yaml\nsetups: [good.yaml, bad.yaml]\nconcurrency: 4\nbootstrap_rounds: 200\n"
    )
    return folder / "exp.yaml"


def _models(judge: Callable[[SimRequest], str]) -> dict[str, SimModel]:
    return {
        "base-m": SimModel(answer=answerer("base", "SAME")),
        "good-m": SimModel(answer=answerer("good", "GOOD")),
        "bad-m": SimModel(answer=answerer("bad", "BAD")),
        "judge-m": SimModel(answer=judge),
    }


def test_every_turn_runs_with_its_own_history_and_is_judged_on_its_conversation(tmp_path: Path) -> None:
    prompts: list[str] = []

    def judge(req: SimRequest) -> str:
        prompts.append(last_user_text(req.messages))
        return content_judge(req)

    with SimServer(_models(judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        # every turn of every item for each of the three setups; judged per turn in both orders
        assert srv.stats.served_by_model["good-m"] == 2 * N
        assert srv.stats.served_by_model["judge-m"] == 2 * 2 * 2 * N
    store = Store.open(tmp_path / "out")
    try:
        for setup in ("base", "good", "bad"):
            for row in store.iter_runs(setup, summary_hash(store, setup), "x"):
                turns = row.turn_answers
                assert turns is not None and len(turns) == 2
                # turn 2 was sent with this setup's own turn-1 answer as history
                assert turns[0] == f"{setup} first answer"
                assert turns[1].endswith(f"(after: {setup} first answer)")
                assert row.answer == turns[1] and row.n_calls == 2
    finally:
        store.close()
    good, bad, base = summary.setup("good"), summary.setup("bad"), summary.setup("base")
    # [[A>B]] scores 0.75; the item's score is the mean of its turns'
    assert good.turn_scores == pytest.approx([0.5, 0.75])
    assert bad.turn_scores == pytest.approx([0.5, 0.25])
    assert base.turn_scores == pytest.approx([0.5, 0.5])
    assert good.quality == pytest.approx(0.625) and bad.quality == pytest.approx(0.375)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["setups"][1]["turn_scores"] == pytest.approx([0.5, 0.75])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Per turn" in report and "turn 2" in report
    # the judge saw whole conversations; turn 2's prompts hold both turns; references when the row has one
    turn2 = [p for p in prompts if _judge_prompt_parts(p)[0] == 2]
    assert turn2 and all("Question" in p and "follow-up" in p and "first turn" in p for p in turn2)
    with_ref = [p for p in turn2 if "ref 0 two" in p]
    assert with_ref and all("ref 0 one" in p for p in with_ref)
    assert not any("ref 1 " in p for p in prompts)  # item 1 has no reference
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    turns = conn.execute("SELECT turn, COUNT(*) FROM judgments GROUP BY turn ORDER BY turn").fetchall()
    conn.close()
    assert turns == [(1, 2 * 2 * N), (2, 2 * 2 * N)]


def summary_hash(store: Store, setup: str) -> str:
    manifest = store.get_meta("manifest")
    return next(s["hash"] for s in manifest["setups"] if s["name"] == setup)


def test_a_judge_without_the_verdict_format_ties_the_turn(tmp_path: Path) -> None:
    """A judge that answers turn 2 with no verdict: that turn ties (0.5), turn 1 stands."""

    def judge(req: SimRequest) -> str:
        turn, _, _ = _judge_prompt_parts(last_user_text(req.messages))
        return "I cannot decide." if turn == 2 else content_judge(req)

    with SimServer(_models(judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.setup("good").turn_scores == pytest.approx([0.5, 0.5])
    store = Store.open(tmp_path / "out")
    try:
        manifest = store.get_meta("manifest")
        rows = list(store.iter_runs("good", summary_hash(store, "good"), manifest["evaluator_id"]))
    finally:
        store.close()
    assert rows and all("turn 2: tie: no verdict" in (r.detail or "") for r in rows)
    # the forced ties are counted (and reported), not only scored 0.5
    good = summary.setup("good").judge
    assert good is not None and good.no_verdict == len(rows)


def test_a_failing_second_turn_keeps_the_first_turns_calls(tmp_path: Path) -> None:
    """The good setup's model errors on every follow-up: its runs fail, and each stored run still
    holds the (paid) first-turn call next to the failed one."""

    def flaky(req: SimRequest) -> str:
        if "follow-up" in last_user_text(req.messages):
            raise RuntimeError("model crashed")
        return "good first answer"

    models = _models(content_judge)
    models["good-m"] = SimModel(answer=flaky)
    with SimServer(models) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    good = summary.setup("good")
    assert good.errors == N
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    per_run = conn.execute(
        "SELECT r.run_id, COUNT(c.call_id), SUM(c.error IS NULL), r.cost_usd FROM runs r "
        "JOIN calls c ON c.run_id=r.run_id WHERE r.setup='good' GROUP BY r.run_id"
    ).fetchall()
    conn.close()
    assert len(per_run) == N
    assert all(n >= 2 and ok == 1 and cost > 0 for _, n, ok, cost in per_run)


def test_mt_bench_rows_load_every_turn_and_reference(tmp_path: Path) -> None:
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    items = load_dataset(path).items
    assert items[0].turns == ROWS[0]["turns"] and items[0].input == ROWS[0]["turns"][0]
    assert items[0].meta["reference"] == ROWS[0]["reference"] and "reference" not in items[1].meta


def test_conversation_prompt_names_the_judged_turn_and_shows_references() -> None:
    p = format_conversation_prompt(["q1", "q2"], ["a1", "a2"], ["b1", "b2"], references=["r1", "r2"])
    assert "(turn 2)" in p and "### Reference answer to turn 2:\nr2" in p
    assert p.index("### Assistant A:\na1") < p.index("### Assistant A:\na2") < p.index("Assistant B's")
    with pytest.raises(ValueError):
        format_conversation_prompt(["q1", "q2"], ["a1"], ["b1", "b2"])


def test_an_edited_follow_up_turn_is_a_changed_dataset(tmp_path: Path) -> None:
    """Runs are keyed by every turn: editing only turn 2 is refused like any edited input."""
    with SimServer(_models(content_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        edited = [dict(r) for r in ROWS]
        edited[0]["turns"] = [ROWS[0]["turns"][0], "A different follow-up."]
        exp = _experiment(tmp_path / "e", srv.base_url, rows=edited)
        with pytest.raises(Exception, match="the dataset changed: item `81`"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()


def test_a_version_3_store_is_upgraded_keeping_its_judgments(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '3');
        CREATE TABLE scores(run_id INTEGER NOT NULL, evaluator_id TEXT NOT NULL, value REAL NOT NULL,
          detail TEXT, PRIMARY KEY(run_id, evaluator_id));
        CREATE TABLE judgments(judgment_id INTEGER PRIMARY KEY, evaluator_id TEXT NOT NULL,
          run_id INTEGER NOT NULL, baseline_run_id INTEGER NOT NULL, position TEXT NOT NULL,
          verdict TEXT, value REAL, detail TEXT, error TEXT, cost_usd REAL NOT NULL,
          UNIQUE(evaluator_id, run_id, baseline_run_id, position));
        INSERT INTO scores VALUES (1, 'ev', 0.75, 'd');
        INSERT INTO judgments VALUES (7, 'ev', 1, 2, 'a', 'A>B', 0.75, NULL, NULL, 0.01);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        assert store.conn.execute("SELECT judgment_id, turn FROM judgments").fetchall() == [(7, 0)]
        assert store.conn.execute("SELECT turn_scores FROM scores").fetchall() == [(None,)]
    finally:
        store.close()


class _SlowFirstTurn:
    """A runner whose first run ends ``pause_s`` after its calls (a slow first turn), recording the
    ``deadline_s`` each run was given."""

    def __init__(self, inner: Runner, pause_s: float) -> None:
        self.inner, self.pause_s = inner, pause_s
        self.deadlines: list[float | None] = []

    async def run(self, target: Any, prompt: Any, **kwargs: Any) -> RunResult:
        self.deadlines.append(kwargs.get("deadline_s"))
        result = await self.inner.run(target, prompt, **kwargs)
        if len(self.deadlines) == 1:
            await asyncio.sleep(self.pause_s)
        return result


def _two_turns() -> tuple[Item, Any, FunctionModel]:
    item = Item(id="q1", input="First?", turns=["First?", "Then?"])
    topology = load_data(
        {"name": "one", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}}
    )
    return item, topology, FunctionModel(lambda req: "an answer")


async def test_the_turns_of_an_item_share_its_deadline() -> None:
    """The second turn gets what the first left of `deadline_s` (one setup on one item), not the
    whole again: a conversation of n turns ran up to n times as long as the experiment allowed."""
    item, topology, model = _two_turns()
    runner = _SlowFirstTurn(Runner(models={"fake/*": model}), pause_s=0.2)
    await run_item(runner, topology, item, deadline_s=30.0)  # type: ignore[arg-type]
    first, second = runner.deadlines
    assert first is not None and second is not None and second <= first - 0.15


async def test_a_deadline_spent_by_the_first_turn_stops_the_second_with_its_calls() -> None:
    """The first turn outlasting the item's deadline is a TimedOut before the second is sent,
    carrying the first turn's (paid) call."""
    item, topology, model = _two_turns()
    runner = _SlowFirstTurn(Runner(models={"fake/*": model}), pause_s=2.1)
    with pytest.raises(TimedOut, match=r"item `q1` passed its deadline of 2.0s before turn 2") as info:
        await run_item(runner, topology, item, deadline_s=2.0)  # type: ignore[arg-type]
    assert len(model.calls) == 1 and len(info.value.calls) == 1
