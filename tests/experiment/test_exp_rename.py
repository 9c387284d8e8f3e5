"""A setup renamed in the experiment file (same topology, same models) is the same setup: its stored
runs, scores and cached replies carry over to the new name and nothing is paid again. Two setups of
one topology in one experiment stay independent samples."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from moa import Runner
from moa.experiment import Experiment
from moa.experiment.analysis import Summary
from moa.testing import FunctionModel

N = 6


def _write(tmp: Path, setups: str) -> Path:
    price = "pricing: {input_per_mtok: 1, output_per_mtok: 1}"
    for name in ("base", "one"):
        (tmp / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, temperature: 0.7, {price}}}\n"
        )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(N)]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: renamed\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\n"
        f"setups: [{setups}]\nconcurrency: 2\n"
    )
    return tmp / "exp.yaml"


def _experiment(exp: Path, out: Path, model: FunctionModel | None = None) -> Experiment:
    backend = model or FunctionModel(lambda r: "x")
    return Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": backend}), progress=False)


def _run(exp: Path, out: Path) -> tuple[FunctionModel, Summary]:
    model = FunctionModel(lambda r: "x")
    return model, _experiment(exp, out, model).run()


def test_a_renamed_setup_carries_its_runs_over_and_pays_nothing(tmp_path: Path) -> None:
    """`one` renamed `first` in the experiment file: it ran every item again and paid for it. Its
    runs and scores are now `first`'s, the dry run has nothing to do, and no model is called."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    exp = _write(tmp_path, "{topology: one.yaml, name: first}")
    plan = _experiment(exp, out).plan()
    assert [(s.name, s.to_run, s.stored) for s in plan.setups] == [("base", 0, N), ("first", 0, N)]
    model, summary = _run(exp, out)
    assert model.calls == []
    first = summary.setup("first")
    assert (first.runs, first.quality) == (N, 1.0)
    _, again = _run(exp, out)
    assert again.setup("first").runs == N


def test_the_rename_is_noted_once(tmp_path: Path) -> None:
    """The run that carries the runs over says so in its notes; the setup is not listed as added."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    exp = _write(tmp_path, "{topology: one.yaml, name: first}")
    _, summary = _run(exp, out)
    assert any("setup `one` is now `first`" in n for n in summary.notes), summary.notes
    assert not any("added since" in n or "left out of the report" in n for n in summary.notes)


def test_a_renamed_setup_replays_the_cached_replies_of_its_unfinished_pairs(tmp_path: Path) -> None:
    """Pairs a kill left unstored (their replies cached, their runs not) are replayed under the new
    name: the cache follows the setup, not its name."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.execute("DELETE FROM scores WHERE run_id IN (SELECT run_id FROM runs WHERE setup='one')")
    conn.execute(
        "DELETE FROM calls WHERE run_id IN (SELECT run_id FROM runs WHERE setup='one' AND item_id<>'i0')"
    )
    conn.execute("DELETE FROM runs WHERE setup='one' AND item_id<>'i0'")
    conn.commit()
    conn.close()
    model, summary = _run(_write(tmp_path, "{topology: one.yaml, name: first}"), out)
    assert model.calls == []
    assert summary.setup("first").runs == N


def test_a_new_setup_under_the_old_name_draws_its_own_samples(tmp_path: Path) -> None:
    """After `one` became `first`, a setup named `one` again (same topology) is another setup: it
    calls its model for every item, replaying none of `first`'s replies (which were cached under
    `one`): identical draws would make the two setups' paired comparison a comparison with itself."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    _run(_write(tmp_path, "{topology: one.yaml, name: first}"), out)
    model, _ = _run(_write(tmp_path, "{topology: one.yaml, name: first}, one.yaml"), out)
    assert len(model.calls) == N


def test_two_setups_of_one_topology_are_two_samples_not_a_rename(tmp_path: Path) -> None:
    """A second setup of a stored setup's topology, the first still in the experiment, is run."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    model, _ = _run(_write(tmp_path, "one.yaml, {topology: one.yaml, name: copy}"), out)
    assert len(model.calls) == N


def test_an_ambiguous_rename_runs_anew_and_says_why(tmp_path: Path) -> None:
    """Two stored setups of one topology gone, one new setup of it: which one it renames is not
    known, so it runs; the notes say so."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml, {topology: one.yaml, name: two}"), out)
    exp = _write(tmp_path, "{topology: one.yaml, name: three}")
    model, summary = _run(exp, out)
    assert len(model.calls) == N
    assert summary.setup("three").runs == N
    assert any(
        "setup `three` of the same topology as stored setups `one`, `two`" in n for n in summary.notes
    ), summary.notes


def test_a_renamed_baseline_keeps_its_judged_verdicts(tmp_path: Path) -> None:
    """The baseline renamed under a pairwise judge: the setups' verdicts were made against its runs,
    which are its runs still, so neither the dry run nor the run judges anything again."""
    exp = _write(tmp_path, "one.yaml")
    (tmp_path / "judge.yaml").write_text(
        "name: judge\nkind: single\nagent: a\nagents:\n  a: {model: sim/judge, "
        "pricing: {input_per_mtok: 1, output_per_mtok: 1}}\n"
    )
    judged = exp.read_text().replace("evaluator: exact", "evaluator: {name: judge, topology: judge.yaml}")
    exp.write_text(judged)
    out = tmp_path / "out"

    def runner(judge: FunctionModel) -> Runner:
        base, one = FunctionModel(lambda r: "b"), FunctionModel(lambda r: "o")
        return Runner(models={"sim/judge": judge, "sim/base": base, "sim/one": one})

    first = FunctionModel(lambda r: "[[A=B]]")
    Experiment.from_file(exp, out=out, runner=runner(first), progress=False).run()
    assert len(first.calls) == 2 * N  # both orders of each pair
    exp.write_text(judged.replace("baseline: base.yaml", "baseline: {topology: base.yaml, name: reference}"))
    plan = Experiment.from_file(exp, out=out, runner=runner(first), progress=False).plan()
    assert (plan.judge_calls, plan.rejudged) == (0, 0)
    again = FunctionModel(lambda r: "[[A=B]]")
    summary = Experiment.from_file(exp, out=out, runner=runner(again), progress=False).run()
    assert again.calls == []
    assert summary.baseline == "reference" and summary.setup("one").runs == N


def test_people_s_votes_follow_the_renamed_setup(tmp_path: Path) -> None:
    """A blind A/B vote on `one` against the baseline is `first`'s after the rename (votes name setups
    without their topology), on either side of the vote."""
    out = tmp_path / "out"
    _run(_write(tmp_path, "one.yaml"), out)
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.execute(
        "INSERT INTO votes(item_id, sample, setup, other_setup, left_setup, verdict, voter, voted_at) "
        "VALUES ('i0', 0, 'one', 'base', 'one', 'A>B', 'me', 0)"
    )
    conn.commit()
    conn.close()
    _run(_write(tmp_path, "{topology: one.yaml, name: first}"), out)
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        votes = conn.execute("SELECT setup, other_setup, left_setup FROM votes").fetchall()
    finally:
        conn.close()
    assert votes == [("first", "base", "first")]
