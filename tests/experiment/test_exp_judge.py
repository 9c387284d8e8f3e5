"""The pairwise judge evaluator end to end against loopback simulated models: win/tie/loss and the
Bradley–Terry order recovered, swap consistency, malformed verdicts, and judge calls stored, costed
and cached."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from moa.errors import TopologyError, UserError
from moa.experiment import Experiment, Store, rebuild_report
from moa.testing.sim import FaultPlan, SimModel, SimRequest, SimServer, last_user_text

N = 40
ROWS = [{"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": f"n{2 * i}"} for i in range(N)]
TARGET = {r["input"]: r["target"] for r in ROWS}
PRICE = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"


def accuracy(p: float, seed: str) -> Callable[[SimRequest], str]:
    """Right (the target token) with probability ``p``, reproducibly per question; else `wrong`."""

    def answer(req: SimRequest) -> str:
        text = last_user_text(req.messages).strip()
        u = int.from_bytes(hashlib.sha256(f"{seed}|{text}".encode()).digest()[:8], "big") / 2**64
        return f"The answer is {TARGET[text]}." if u < p else "The answer is wrong."

    return answer


def _sections(prompt: str) -> tuple[str, str, str]:
    question = prompt.split("[Question]\n", 1)[1].split("\n\n[Answer A]", 1)[0]
    a = prompt.split("[Answer A]\n", 1)[1].split("[Answer B]\n", 1)[0]
    b = prompt.split("[Answer B]\n", 1)[1].split("First explain", 1)[0]
    return question, a, b


def fair_judge(req: SimRequest) -> str:
    """Prefers the answer holding the question's target token; equal answers are a tie."""
    question, a, b = _sections(last_user_text(req.messages))
    token = TARGET[question]
    ok_a, ok_b = token in a, token in b
    verdict = "A>B" if ok_a and not ok_b else "B>A" if ok_b and not ok_a else "A=B"
    return f"Comparing both answers.\n[[{verdict}]]"


def _topology(folder: Path, name: str, model: str, base_url: str, retry: str = "{max_attempts: 1}") -> None:
    agent = f"model: openai/{model}, api_base: {json.dumps(base_url)}, retry: {retry}, {PRICE}"
    (folder / f"{name}.yaml").write_text(f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{{agent}}}\n")


def _experiment(
    folder: Path, base_url: str, *, judge_retry: str = "{max_attempts: 1}", extra: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "good", "bad"):
        _topology(folder, name, f"{name}-m", base_url)
    _topology(folder, "judge", "judge-m", base_url, judge_retry)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "exp.yaml").write_text(
        "name: judged\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
        f"baseline: base.yaml\nsetups: [good.yaml, bad.yaml]\nconcurrency: 8\nbootstrap_rounds: 300\n{extra}"
    )
    return folder / "exp.yaml"


def _models(judge: Callable[[SimRequest], str]) -> dict[str, SimModel]:
    return {
        "base-m": SimModel(answer=accuracy(0.5, "base")),
        "good-m": SimModel(answer=accuracy(0.9, "good")),
        "bad-m": SimModel(answer=accuracy(0.15, "bad")),
        "judge-m": SimModel(answer=judge),
    }


def test_judge_recovers_win_tie_loss_and_bradley_terry_order(tmp_path: Path) -> None:
    """A fair judge: the better setup wins more than it loses, the worse one the reverse; BT orders
    good > baseline (1000) > bad, and summary.json and the reports carry it all."""
    prompts: list[str] = []

    def judge(req: SimRequest) -> str:
        prompts.append(last_user_text(req.messages))
        return fair_judge(req)

    with SimServer(_models(judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        # every pair is judged in both orders, even when two setups gave the same answer
        assert len(set(prompts)) <= srv.stats.served_by_model["judge-m"] == 2 * 2 * N
    base, good, bad = summary.setup("base"), summary.setup("good"), summary.setup("bad")
    assert good.judge is not None and bad.judge is not None and base.judge is None
    assert good.judge.wins + good.judge.ties + good.judge.losses == N
    assert good.judge.wins > good.judge.losses and bad.judge.losses > bad.judge.wins
    assert good.judge.score_ci95[0] > 0.5 > bad.judge.score_ci95[1]
    assert base.bt_rating == pytest.approx(1000.0)
    assert good.bt_rating is not None and bad.bt_rating is not None
    assert good.bt_rating > 1000.0 > bad.bt_rating
    assert good.bt_ci95 is not None and good.bt_ci95[0] <= good.bt_rating <= good.bt_ci95[1]
    assert good.power_note is not None and good.power_note.startswith(f"n={N} items")
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    judged = on_disk["setups"][1]
    assert {"wins", "ties", "losses", "win_rate", "score", "score_ci95"} <= set(judged["judge"])
    assert judged["bt_rating"] > 1000 and len(judged["bt_ci95"]) == 2
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Judge (pairwise against `base`)" in report and "(anchor)" in report and "## Power" in report
    assert "Bradley–Terry" in (tmp_path / "out" / "report.html").read_text()


def test_judge_calls_are_stored_costed_and_cached(tmp_path: Path) -> None:
    """Judge calls land in the calls table linked to their judgment, cost money, count in
    judge_cost_usd; a re-run sends nothing, and re-judging after forgetting the scores is served
    from the cache."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        served = srv.stats.served
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == served
        store = Store.open(tmp_path / "out")
        store.delete_scores()
        store.close()
        rejudged = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == served
    rebuilt = asyncio.run(rebuild_report(tmp_path / "out"))  # `moa report DIR`: no judge needed
    assert first.setup("good").judge == again.setup("good").judge == rejudged.setup("good").judge
    assert rebuilt.setup("good").judge == first.setup("good").judge
    assert rebuilt.setup("good").bt_rating == pytest.approx(first.setup("good").bt_rating or 0.0)
    assert first.setup("good").judge_cost_usd > 0
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    try:
        judgments = conn.execute("SELECT COUNT(*) FROM judgments WHERE error IS NULL").fetchone()[0]
        linked = conn.execute(
            "SELECT COUNT(*), SUM(cost_usd) FROM calls WHERE judgment_id IS NOT NULL AND model LIKE '%judge-m'"
        ).fetchone()
    finally:
        conn.close()
    assert judgments == 2 * 2 * N
    assert linked[0] == 2 * 2 * N and linked[1] > 0  # cached calls are stored too, with their cost


def test_a_judge_that_always_prefers_position_a_yields_ties(tmp_path: Path) -> None:
    """Swap consistency: a judge that always says [[A>B]] contradicts itself across orders: all ties."""
    with SimServer(_models(lambda req: "A looks better. [[A>B]]")) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    for name in ("good", "bad"):
        j = summary.setup(name).judge
        assert j is not None and (j.wins, j.ties, j.losses) == (0, N, 0) and j.score == 0.5
        assert j.inconsistent == N and j.no_verdict == 0
        assert summary.setup(name).bt_rating == pytest.approx(1000.0, abs=1e-6)
    details = [json.loads(line)["score_detail"] for line in (tmp_path / "out" / "results.jsonl").open()]
    assert any("inconsistent across orders" in (d or "") for d in details)


def test_malformed_verdicts_are_retried_then_recorded_as_error_and_tie(tmp_path: Path) -> None:
    """A reply without a verdict is retried (max_attempts), then stored as an erroring judgment and
    the pair scores 0.5 with the reason."""
    with SimServer(_models(lambda req: "Both answers have merit.")) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, judge_retry="{max_attempts: 2, backoff_base_s: 0}")
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        # 2 setups, 2 orders, 2 attempts; a malformed reply is never cached, so no prompt is spared
        assert srv.stats.served_by_model["judge-m"] == 2 * 2 * 2 * N
    j = summary.setup("good").judge
    assert j is not None and j.ties == N and j.no_verdict == N and j.score == 0.5
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    try:
        errors = [e for (e,) in conn.execute("SELECT error FROM judgments")]
        attempts = {a for (a,) in conn.execute("SELECT attempts FROM calls WHERE judgment_id IS NOT NULL")}
    finally:
        conn.close()
    assert len(errors) == 2 * 2 * N and all(e and e.startswith("MalformedReply") for e in errors)
    assert attempts == {2}
    details = {json.loads(line)["score_detail"] for line in (tmp_path / "out" / "results.jsonl").open()}
    assert any(d and d.startswith("tie: no verdict") for d in details)


def test_a_judge_reply_that_cannot_be_read_leaves_the_pair_to_judge_again(tmp_path: Path) -> None:
    """A judge endpoint sending bodies cut short (not JSON) fails the pair, which the next run
    judges; it is no reply without a verdict: each pair had been stored as a tie for good."""
    broken = FaultPlan(rate=1.0, kinds=("malformed_json",), models=["judge-m"])
    with SimServer(_models(fair_judge), faults=broken) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, extra="limit: 4\n")
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert first.setup("good").judge is None and first.setup("good").quality is None
        assert any("8 answers could not be scored" in n and "not JSON" in n for n in first.notes)
        srv.faults = None
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    good = summary.setup("good").judge
    assert good is not None and good.wins + good.ties + good.losses == 4 and good.no_verdict == 0


def test_show_execution_puts_the_sandbox_outcome_in_the_judge_prompt(tmp_path: Path) -> None:
    """With show_execution, each answer's test outcome follows it in the prompt; a judge that trusts
    it prefers the passing program."""
    rows = [
        {
            "task_id": f"t{i}",
            "prompt": f"def twice_{i}(x):\n    '''Return 2 * x.'''\n",
            "entry_point": f"twice_{i}",
            "test": "def check(f):\n    assert f(3) == 6\n",
        }
        for i in range(3)
    ]

    def coder(ok: bool) -> Callable[[SimRequest], str]:
        def answer(req: SimRequest) -> str:
            name = re.search(r"def (twice_\d+)", last_user_text(req.messages))
            assert name is not None
            return f"```python\ndef {name.group(1)}(x):\n    return {'2 * x' if ok else 'x + 1'}\n```"

        return answer

    prompts: list[str] = []

    def trusting_judge(req: SimRequest) -> str:
        text = last_user_text(req.messages)
        prompts.append(text)
        _, a, b = _sections(text)
        return "[[A>>B]]" if "all tests passed" in a and "all tests passed" not in b else "[[B>>A]]"

    models = {"base-m": SimModel(answer=coder(False)), "good-m": SimModel(answer=coder(True))}
    models["judge-m"] = SimModel(answer=trusting_judge)
    with SimServer(models) as srv:
        folder = tmp_path / "e"
        folder.mkdir()
        for name in ("base", "good"):
            _topology(folder, name, f"{name}-m", srv.base_url)
        _topology(folder, "judge", "judge-m", srv.base_url)
        (folder / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "exp.yaml").write_text(
            "name: judged-code\ndataset: code.jsonl\nbaseline: base.yaml\nsetups: [good.yaml]\n"
            "evaluator: {name: judge, topology: judge.yaml, show_execution: true}\n"
        )
        summary = Experiment.from_file(folder / "exp.yaml", out=tmp_path / "out", progress=False).run()
    j = summary.setup("good").judge
    assert j is not None and (j.wins, j.losses) == (3, 0) and j.score == 1.0
    assert all("[Execution result]" in p for p in prompts) and any("tests failed" in p for p in prompts)


def test_an_invalid_judge_topology_fails_before_any_call(tmp_path: Path) -> None:
    """A judge topology with an unknown field is refused with a line naming its file; nothing is sent."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        (tmp_path / "e" / "judge.yaml").write_text(
            "name: judge\nkind: single\nagent: a\nagents:\n  a: {model: x, temprature: 0}\n"
        )
        with pytest.raises(TopologyError, match=r"judge\.yaml: agents\.a\.temprature: unknown field"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        (tmp_path / "e" / "judge.yaml").unlink()
        with pytest.raises(UserError, match=r"exp\.yaml: evaluator: .*judge\.yaml"):
            Experiment.from_file(exp, out=tmp_path / "out2", progress=False).run()
        assert srv.stats.requests == 0


def test_a_multi_node_judge_topology_runs_as_a_topology(tmp_path: Path) -> None:
    """A judge made of two samples reduced by majority runs as a whole topology: both calls are
    stored with their judgment, each sample without a verdict is retried (its reply is the output
    the vote returns), and a verdict still missing is a tie."""
    with SimServer(_models(lambda req: "no verdict at all")) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, extra="limit: 5\n")
        agent = f"model: openai/judge-m, api_base: {json.dumps(srv.base_url)}, retry: {{max_attempts: 3}}, {PRICE}"
        (tmp_path / "e" / "judge.yaml").write_text(
            "name: judge\nkind: self_moa\nagent: a\nsamples: 2\nreduce: majority\n"
            f"agents:\n  a: {{{agent}, temperature: 0.5}}\n"
        )
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        # one call per sample, 2 samples, 2 orders, 2 setups, 5 items, each retried (as far as the
        # endpoint's retry budget lets it) since its reply is checked as the output it may become
        assert srv.stats.served_by_model["judge-m"] > 2 * 2 * 2 * 5
    j = summary.setup("good").judge
    assert j is not None and j.ties == 5
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    try:
        per_judgment = {
            n
            for (n,) in conn.execute(
                "SELECT COUNT(*) FROM calls WHERE judgment_id IS NOT NULL GROUP BY judgment_id"
            )
        }
    finally:
        conn.close()
    assert per_judgment == {2}


def test_a_multi_node_judge_retries_a_malformed_verdict_of_its_aggregator(tmp_path: Path) -> None:
    """A judge topology whose output is an LLM aggregator gets the same retry path as a single judge:
    its first reply without a verdict is retried, so every pair gets a verdict."""

    def judge(req: SimRequest) -> str:
        if "synthesize these responses" not in last_user_text(req.messages):
            return "some thoughts"  # the samplers
        return "[[A=B]]" if req.call_index else "still thinking"  # the aggregator: bad first, then good

    with SimServer(_models(judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, extra="limit: 3\n")
        agent = f"model: openai/judge-m, api_base: {json.dumps(srv.base_url)}, {PRICE}"
        (tmp_path / "e" / "judge.yaml").write_text(
            "name: judge\nkind: self_moa\nagent: a\nsamples: 2\naggregator: agg\n"
            f"agents:\n  a: {{{agent}, temperature: 0.5}}\n"
            f"  agg: {{{agent}, retry: {{max_attempts: 2, backoff_base_s: 0}}}}\n"
        )
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    j = summary.setup("good").judge
    assert j is not None and j.no_verdict == 0 and j.ties == 3


def _baseline_failed_scores(out: Path) -> int:
    store = Store.open(out)
    try:
        row = store.conn.execute(
            "SELECT COUNT(*) FROM scores WHERE detail = 'the baseline failed on this item'"
        )
        return int(row.fetchone()[0])
    finally:
        store.close()


def test_a_retried_baseline_run_is_judged_again(tmp_path: Path) -> None:
    """A setup's score made because the baseline's run failed goes with that run: once the failed
    run is retried (retry_errors) and answers, the setup is judged against the answer (the 1.0 of
    "the baseline failed" had outlived the run it was made against)."""
    faults = FaultPlan(rate=0.5, kinds=("503",), models=["base-m"])
    with SimServer(_models(fair_judge), faults=faults) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, extra="retry_errors: true\n")
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert first.setup("base").errors > 0 and _baseline_failed_scores(tmp_path / "out") > 0
        srv.faults = None
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.setup("base").errors == 0
    assert _baseline_failed_scores(tmp_path / "out") == 0
    good = summary.setup("good").judge
    assert good is not None and good.wins + good.ties + good.losses == N


def _paid_for_judging(out: Path) -> float:
    store = Store.open(out)
    try:
        runs = store.conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM runs").fetchone()[0]
        return store.spent_usd() - float(runs)
    finally:
        store.close()


def test_identical_pairs_are_judged_independently_and_cost_what_was_paid(tmp_path: Path) -> None:
    """Two items asking the same question, 3 samples at temperature 0, one pair at a time: every
    pair is its own judge call (12), and the report's judge cost is what the ledger paid for them
    (one cached verdict had served all six pairs and been counted six times)."""
    models = {
        "base-m": SimModel(answer="base answer"),
        "good-m": SimModel(answer="good answer"),
        "judge-m": SimModel(answer="Even. [[A=B]]"),
    }
    with SimServer(models) as srv:
        folder = tmp_path / "e"
        folder.mkdir()
        for name in ("base", "good", "judge"):
            _topology(folder, name, f"{name}-m", srv.base_url)
        (folder / "data.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "input": "the same question"}) + "\n" for i in range(2))
        )
        (folder / "exp.yaml").write_text(
            "name: same\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
            "baseline: base.yaml\nsetups: [good.yaml]\nsamples: 3\nconcurrency: 1\n"
        )
        summary = Experiment.from_file(folder / "exp.yaml", out=tmp_path / "out", progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == 2 * 3 * 2
        again = Experiment.from_file(folder / "exp.yaml", out=tmp_path / "out", progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == 2 * 3 * 2
    paid = _paid_for_judging(tmp_path / "out")
    assert paid > 0
    assert summary.setup("good").judge_cost_usd == pytest.approx(paid)
    assert again.setup("good").judge_cost_usd == pytest.approx(paid)


def test_a_judge_reply_the_store_cannot_keep_stops_the_judging_at_once(tmp_path: Path) -> None:
    """A judge reply whose caching fails (a full disk; a trigger refuses the judge's rows here, so
    every other write still succeeds) failed its pair as a provider error, stored as "could not be
    scored", and the judging went on paying for every verdict it could not keep. It stops at once in
    the one line naming the store; only the calls in flight are paid."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        judged = exp.read_text()
        exp.write_text(judged.replace("{name: judge, topology: judge.yaml}", "contains"))
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()  # the answers, stored
        conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON cache WHEN NEW.model LIKE '%judge-m' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        conn.close()
        exp.write_text(judged)
        with pytest.raises(
            UserError, match=r"experiment\.sqlite: .* cannot be written \(SQLite: database or disk is full\)"
        ):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        paid = srv.stats.served_by_model.get("judge-m", 0)
    assert 0 < paid <= 2 * 8, paid  # both orders of the pairs in flight (concurrency 8), not 2 × 2 × 40


def test_a_verdict_the_store_cannot_keep_names_the_write_and_loses_nothing_paid(tmp_path: Path) -> None:
    """Storing one pair's verdicts fails (a full disk; a trigger refuses that pair's rows here): the
    line named the store only, not what it was writing. It names the pair now; no pair starts after
    it, the pairs in flight keep their verdicts, and the failed pair's judge replies stay cached: a
    re-run judges every other pair once and replays that one, so each pair is paid for once."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        judged = exp.read_text()
        exp.write_text(judged.replace("{name: judge, topology: judge.yaml}", "contains"))
        out = tmp_path / "out"
        Experiment.from_file(exp, out=out, progress=False).run()  # the answers, stored
        conn = sqlite3.connect(out / "experiment.sqlite")
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON judgments WHEN NEW.run_id = (SELECT run_id FROM runs "
            "WHERE setup = 'good' AND item_id = 'q3') BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        conn.close()
        exp.write_text(judged)
        with pytest.raises(UserError) as info:
            Experiment.from_file(exp, out=out, progress=False).run()
        line = str(info.value)
        assert "\n" not in line and "(SQLite: database or disk is full)" in line
        assert "while storing the judge's verdicts on setup `good`, item `q3`" in line, line
        first = srv.stats.served_by_model.get("judge-m", 0)
        conn = sqlite3.connect(out / "experiment.sqlite")
        kept = conn.execute(
            "SELECT COUNT(*) FROM calls WHERE judgment_id IS NOT NULL AND cached = 0"
        ).fetchone()[0]
        conn.execute("DROP TRIGGER full_disk")
        conn.commit()
        conn.close()
        assert first - kept == 2, (first, kept)  # only the failed pair's calls have no verdict
        Experiment.from_file(exp, out=out, progress=False).run()
        total = srv.stats.served_by_model.get("judge-m", 0)
    assert total == 2 * 2 * N  # both orders of each of the 2 setups' 40 pairs, each paid once
    conn = sqlite3.connect(out / "experiment.sqlite")
    # the failed pair's score was left in the open transaction and committed by the next pair's:
    # a score without its verdicts, never judged again
    verdicts = conn.execute("SELECT COUNT(*) FROM judgments WHERE turn = 0").fetchone()[0]
    conn.close()
    assert verdicts == 2 * 2 * N
