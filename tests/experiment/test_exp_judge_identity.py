"""A judge's identity across edits of the experiment file: an edit that changes no verdict (a
default written out, the same judge file named another way) re-judges nothing, and a store whose
evaluator id was made by an older recipe is not re-judged once for it."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import sqlite3
from pathlib import Path

from moa.eval.hashing import canonical_hash, topology_hash
from moa.experiment import Experiment
from moa.testing.sim import SimServer
from moa.topology.loader import load
from tests.experiment.test_exp_judge import _experiment, _models, fair_judge

PLAIN = "evaluator: {name: judge, topology: judge.yaml}"


def _edit(exp: Path, evaluator: str) -> None:
    exp.write_text(exp.read_text().replace(PLAIN, evaluator))


def _judge_calls_planned(exp: Path, out: Path) -> int:
    plan = Experiment.from_file(exp, out=out, progress=False).plan()
    return plan.judge_calls or 0


def test_an_edit_that_changes_no_verdict_does_not_rejudge(tmp_path: Path) -> None:
    """`show_execution: false` written out and `./judge.yaml` (or its absolute path) keep the stored
    verdicts: no judge call, and --dry-run counts none."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        out = tmp_path / "out"
        first = Experiment.from_file(exp, out=out, progress=False).run()
        served = srv.stats.served_by_model["judge-m"]
        for evaluator in (
            "evaluator: {name: judge, topology: ./judge.yaml, show_execution: false}",
            f"evaluator: {{name: judge, topology: {json.dumps(str(tmp_path / 'e' / 'judge.yaml'))}}}",
        ):
            _edit(exp, evaluator)
            assert _judge_calls_planned(exp, out) == 0
            again = Experiment.from_file(exp, out=out, progress=False).run()
            assert srv.stats.served_by_model["judge-m"] == served
            assert again.setup("good").judge == first.setup("good").judge
            assert again.setup("good").judge_cost_usd == first.setup("good").judge_cost_usd
            exp.write_text(exp.read_text().replace(evaluator, PLAIN))


def _as_older_moa(out: Path, raw: dict[str, object], judge: Path) -> None:
    """Rewrite the store as a moa whose evaluator id hashed the raw `evaluator:` mapping left it."""
    content = topology_hash(load(judge).model_dump(mode="json"))
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        manifest = json.loads(conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0])
        old_id = manifest["evaluator_id"]
        manifest.pop("evaluator_key", None)
        legacy = f"judge:{canonical_hash({**raw, 'topology_hash': content})}"
        manifest.update(evaluator=raw, evaluator_id=legacy)
        conn.execute("UPDATE meta SET value=? WHERE key='manifest'", (json.dumps(manifest),))
        for table in ("scores", "judgments"):
            conn.execute(f"UPDATE {table} SET evaluator_id=? WHERE evaluator_id=?", (legacy, old_id))
        conn.commit()
    finally:
        conn.close()


def test_a_store_of_the_older_recipe_is_not_rejudged_for_it(tmp_path: Path) -> None:
    """Verdicts stored under the id an older moa made (the raw mapping hashed) are kept when the
    normalised configuration and the judge's content match, across later edits too; an edited
    judge still re-judges."""
    with SimServer(_models(fair_judge)) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url)
        out = tmp_path / "out"
        Experiment.from_file(exp, out=out, progress=False).run()
        _as_older_moa(out, {"name": "judge", "topology": "judge.yaml"}, tmp_path / "e" / "judge.yaml")
        served = srv.stats.served_by_model["judge-m"]
        _edit(exp, "evaluator: {name: judge, topology: ./judge.yaml, show_execution: false}")
        assert _judge_calls_planned(exp, out) == 0
        Experiment.from_file(exp, out=out, progress=False).run()
        _edit(exp, "evaluator: {name: judge, topology: judge.yaml, show_execution: false}")
        Experiment.from_file(exp, out=out, progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == served
        judge = tmp_path / "e" / "judge.yaml"
        judge.write_text(judge.read_text().replace("name: judge", "name: judge2"))
        assert _judge_calls_planned(exp, out) > 0
        Experiment.from_file(exp, out=out, progress=False).run()
        assert srv.stats.served_by_model["judge-m"] > served


def test_a_default_written_out_is_the_same_evaluator() -> None:
    """Every evaluator's defaults written out or left out normalise alike (the sandbox is not run
    again for `timeout_s: 10`), and a value that differs still tells them apart."""
    from moa.eval.registry import normal_config  # here: the tests above run against any moa

    assert normal_config({"name": "execution", "timeout_s": 10, "isolation": "auto"}) == {"name": "execution"}
    assert normal_config({"name": "numeric", "abs_tol": 0.01}) != normal_config({"name": "numeric"})
    shown = {"name": "judge", "topology": "j.yaml", "show_execution": True, "execution": {"timeout_s": 5}}
    assert normal_config(shown) == {"name": "judge", "show_execution": True, "execution": {"timeout_s": 5.0}}
