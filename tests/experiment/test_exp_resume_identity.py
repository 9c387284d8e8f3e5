"""What a resumed experiment may reuse: the runs of a setup are its own only while everything the
setup runs is unchanged, the files it names included (a cascade's stage judge named by file)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import sqlite3
from pathlib import Path

import pytest

from moa.errors import UserError
from moa.experiment import Experiment
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

MODELS = {
    "cheap": SimModel(answer="The answer is 1"),
    "strong": SimModel(answer="The answer is 2"),
    "rater-yes": SimModel(answer="0.9"),
    "rater-no": SimModel(answer="0.1"),
}


def _write(folder: Path, base_url: str) -> Path:
    """A cascade whose first stage is accepted by the rater of ``rater.yaml``, against one model."""
    agent = f"api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}"
    (folder / "single.yaml").write_text(
        f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/cheap, {agent}}}\n"
    )
    (folder / "rater.yaml").write_text(
        f"name: rater\nkind: single\nagent: r\nagents:\n  r: {{model: openai/rater-yes, {agent}}}\n"
    )
    (folder / "cascade.yaml").write_text(
        "name: cascade\nkind: cascade\nstages:\n"
        "  - {agent: c, accept: {judge: {topology: rater.yaml, threshold: 0.5}}}\n"
        "  - {agent: s}\n"
        f"agents:\n  c: {{model: openai/cheap, {agent}}}\n  s: {{model: openai/strong, {agent}}}\n"
    )
    rows = [{"id": f"q{k}", "input": f"question {k}", "target": "2"} for k in range(4)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "exp.yaml").write_text(
        "name: rater\ndataset: data.jsonl\nevaluator: numeric\nbaseline: single.yaml\n"
        "setups: [cascade.yaml]\nbootstrap_rounds: 200\n"
    )
    return folder / "exp.yaml"


def test_an_edited_stage_judge_file_is_a_changed_setup(tmp_path: Path) -> None:
    """The rater file a cascade's stage judge names, edited between runs, refuses the resume (and
    its dry run) as an edited topology does. The cascade's hash held the file's name only: the
    resume kept the runs the old rater accepted at stage 1 and ran the rest under the new one."""
    with SimServer(MODELS) as srv:
        exp = _write(tmp_path, srv.base_url)
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=2).run()
        assert first.setup("cascade").stage_shares == {"1": 1.0}
        rater = tmp_path / "rater.yaml"
        rater.write_text(rater.read_text().replace("rater-yes", "rater-no"))
        refused = r"setup `cascade` changed since its runs were stored \(a stage judge's topology file"
        with pytest.raises(UserError, match=refused):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan()
        with pytest.raises(UserError, match=refused):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        # the file as it was: the stored runs are the setup's again, and the resume runs the rest
        rater.write_text(rater.read_text().replace("rater-no", "rater-yes"))
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert again.setup("cascade").n == 4 and again.setup("cascade").stage_shares == {"1": 1.0}


def test_a_cascade_left_out_of_a_run_is_checked_when_added_back(tmp_path: Path) -> None:
    """The raters' hash is kept for every setup ever run: a cascade left out of one run, its rater
    file edited, then added back is refused (its stored runs are still under its name and hash)."""
    with SimServer(MODELS) as srv:
        exp = _write(tmp_path, srv.base_url)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=2).run()
        strong = (tmp_path / "single.yaml").read_text().replace("name: single", "name: strong")
        (tmp_path / "strong.yaml").write_text(strong.replace("openai/cheap", "openai/strong"))
        exp.write_text(exp.read_text().replace("setups: [cascade.yaml]", "setups: [strong.yaml]"))
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=2).run()
        rater = tmp_path / "rater.yaml"
        rater.write_text(rater.read_text().replace("rater-yes", "rater-no"))
        exp.write_text(
            exp.read_text().replace("setups: [strong.yaml]", "setups: [strong.yaml, cascade.yaml]")
        )
        with pytest.raises(UserError, match=r"setup `cascade` changed since its runs were stored"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()


def test_a_store_without_the_raters_hash_resumes(tmp_path: Path) -> None:
    """A store of an older moa kept no hash of the named raters: it resumes (what its rater was is
    unknown), and from then on keeps one."""
    with SimServer(MODELS) as srv:
        exp = _write(tmp_path, srv.base_url)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=2).run()
        conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
        with conn:
            (raw,) = conn.execute("SELECT value FROM meta WHERE key='named_raters'").fetchone()
            assert [key.split(":")[0] for key in json.loads(raw)] == ["cascade"]
            conn.execute("DELETE FROM meta WHERE key='named_raters'")
        conn.close()
        resumed = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert resumed.setup("cascade").n == 4
        rater = tmp_path / "rater.yaml"
        rater.write_text(rater.read_text().replace("rater-yes", "rater-no"))
        with pytest.raises(UserError, match=r"setup `cascade` changed since its runs were stored"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()


def test_a_tests_rule_answers_again_when_the_items_tests_change(tmp_path: Path) -> None:
    """A cascade whose stage is accepted by the item's tests chose its answer by them: when the
    tests change (the input unchanged), its runs of that item run again, the first stage replayed
    from the cache. Only re-scored, the stage-1 answer the old tests passed stayed, scored 0 by the
    new ones, though the cascade would now escalate and answer right."""
    code = "```python\ndef f():\n    return {}\n```"
    strong = SimModel(answer=code.format(2))
    counted: list[str] = []

    def cheap(_: object) -> str:
        counted.append("cheap")
        return code.format(1)

    models = {"cheap": SimModel(answer=cheap), "strong": strong}
    with SimServer(models) as srv:
        agent = f"api_base: {json.dumps(srv.base_url)}, retry: {{max_attempts: 1}}"
        (tmp_path / "single.yaml").write_text(
            f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/strong, {agent}}}\n"
        )
        (tmp_path / "tested.yaml").write_text(
            "name: tested\nkind: cascade\nstages:\n  - {agent: c, accept: tests}\n  - {agent: s}\n"
            f"agents:\n  c: {{model: openai/cheap, {agent}}}\n  s: {{model: openai/strong, {agent}}}\n"
        )
        data = tmp_path / "data.jsonl"
        data.write_text(json.dumps({"id": "q", "input": "write f", "tests": ["assert f() == 1"]}) + "\n")
        (tmp_path / "exp.yaml").write_text(
            "name: tested\ndataset: data.jsonl\nevaluator: execution\nbaseline: single.yaml\n"
            "setups: [tested.yaml]\nbootstrap_rounds: 200\n"
        )
        first = Experiment.from_file(tmp_path / "exp.yaml", out=tmp_path / "out", progress=False).run()
        assert first.setup("tested").quality == 1.0 and first.setup("single").quality == 0.0
        data.write_text(data.read_text().replace("f() == 1", "f() == 2"))
        plan = Experiment.from_file(tmp_path / "exp.yaml", out=tmp_path / "out", progress=False).plan()
        assert any(line.startswith("  tested ") and "1 of 1 run to do" in line for line in plan.lines())
        again = Experiment.from_file(tmp_path / "exp.yaml", out=tmp_path / "out", progress=False).run()
    assert again.setup("single").quality == 1.0
    assert again.setup("tested").quality == 1.0 and again.setup("tested").stage_shares == {"2": 1.0}
    assert counted == ["cheap"]  # the first stage's answer came from the cache
    assert any("`tested` ran them again" in n for n in again.notes)


def _judge(req: SimRequest) -> str:
    """Prefers the answer that says `right`; two alike are a tie."""
    text = last_user_text(req.messages)
    a = "right" in text.split("[Answer A]\n", 1)[1].split("[Answer B]\n", 1)[0]
    b = "right" in text.split("[Answer B]\n", 1)[1].split("First explain", 1)[0]
    return f"[[{'A>B' if a and not b else 'B>A' if b and not a else 'A=B'}]]"


def test_a_new_baseline_is_judged_against_not_the_old_one(tmp_path: Path) -> None:
    """Under the pairwise judge, a baseline changed between runs (here the two setups swapped) has
    every setup judged again against it, and the new baseline scores 0.5. The verdicts against the
    old baseline were kept: no judge call, the old baseline at its 0.5 as a setup, the new one at
    its score as a setup, and `good` at its score against the old baseline."""
    models = {
        "good": SimModel(answer="right"),
        "bad": SimModel(answer="wrong"),
        "judge": SimModel(answer=_judge),
    }
    with SimServer(models) as srv:
        agent = f"api_base: {json.dumps(srv.base_url)}, retry: {{max_attempts: 1}}"
        for name in models:
            (tmp_path / f"{name}.yaml").write_text(
                f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: openai/{name}, {agent}}}\n"
            )
        rows = [{"id": f"q{k}", "input": f"question {k}"} for k in range(3)]
        (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        exp = tmp_path / "exp.yaml"
        exp.write_text(
            "name: judged\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
            "baseline: bad.yaml\nsetups: [good.yaml]\nbootstrap_rounds: 200\n"
        )
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert first.setup("good").quality == 0.75 and first.setup("bad").quality == 0.5
        judged = srv.stats.served_by_model["judge"]
        exp.write_text(
            exp.read_text().replace(
                "baseline: bad.yaml\nsetups: [good.yaml]", "baseline: good.yaml\nsetups: [bad.yaml]"
            )
        )
        swapped = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served_by_model["judge"] - judged == 2 * 3  # both orders of 3 items
    assert swapped.baseline == "good"
    assert swapped.setup("good").quality == 0.5 and swapped.setup("bad").quality == 0.25
    assert any("made with another baseline than `good`" in n for n in swapped.notes)
