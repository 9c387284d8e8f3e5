"""Judge verdicts dropped because their item changed what it is scored against keep what they
paid in the setups' judge cost (the ledger paid it), without counting a call twice when the
re-judged pair replays the same prompt from the cache."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import sqlite3
from pathlib import Path

import pytest

from moa.experiment import Experiment
from moa.testing.sim import SimModel, SimServer
from tests.experiment.test_exp_judge import _paid_for_judging, _topology

ROWS = [
    {"id": f"q{i}", "input": f"question {i}", "target": f"t{i}", "reference": f"ref {i}"} for i in range(4)
]


def _write(folder: Path, base_url: str, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "good", "judge"):
        _topology(folder, name, f"{name}-m", base_url)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "exp.yaml").write_text(
        "name: sup\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
        "baseline: base.yaml\nsetups: [good.yaml]\nconcurrency: 2\nbootstrap_rounds: 100\n"
    )
    return folder / "exp.yaml"


def _models() -> dict[str, SimModel]:
    return {
        "base-m": SimModel(answer="base answer"),
        "good-m": SimModel(answer="good answer"),
        "judge-m": SimModel(answer="Even. [[A=B]]"),
    }


def _superseded_rows(out: Path) -> int:
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        row = conn.execute("SELECT COUNT(*) FROM judge_failures WHERE error LIKE 'superseded:%'").fetchone()
        return int(row[0])
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("field", "value", "new_calls"), [("reference", "ref 0, corrected", 2), ("target", "t0, corrected", 0)]
)
def test_a_rescored_item_keeps_what_its_verdicts_paid_in_the_judge_cost(
    tmp_path: Path, field: str, value: str, new_calls: int
) -> None:
    """A corrected `reference` re-judges the item (two new calls, paid): the judge cost is still
    what the ledger paid for judging, old verdicts included; a corrected `target` (not shown to the
    judge) replays the verdicts free, and the judge cost does not count them twice."""
    with SimServer(_models()) as srv:
        exp = _write(tmp_path / "e", srv.base_url, ROWS)
        out = tmp_path / "out"
        first = Experiment.from_file(exp, out=out, progress=False).run()
        served = srv.stats.served_by_model["judge-m"]
        assert first.setup("good").judge_cost_usd == pytest.approx(_paid_for_judging(out))
        assert first.setup("good").judge_cost_usd > 0
        _write(tmp_path / "e", srv.base_url, [{**ROWS[0], field: value}, *ROWS[1:]])
        again = Experiment.from_file(exp, out=out, progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == served + new_calls
    assert again.setup("good").judge_cost_usd == pytest.approx(_paid_for_judging(out))
    assert _superseded_rows(out) > 0


def test_a_dry_run_counts_the_judge_calls_of_a_rescored_item(tmp_path: Path) -> None:
    """--dry-run after a corrected `reference` counts the item's re-judging (both orders), as the
    run then sends it; it changes nothing in the store."""
    with SimServer(_models()) as srv:
        exp = _write(tmp_path / "e", srv.base_url, ROWS)
        out = tmp_path / "out"
        Experiment.from_file(exp, out=out, progress=False).run()
        _write(tmp_path / "e", srv.base_url, [{**ROWS[0], "reference": "ref 0, corrected"}, *ROWS[1:]])
        assert Experiment.from_file(exp, out=out, progress=False).plan().judge_calls == 2
        assert Experiment.from_file(exp, out=out, progress=False).plan().judge_calls == 2
        served = srv.stats.served_by_model["judge-m"]
        Experiment.from_file(exp, out=out, progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == served + 2


def test_an_edited_judge_s_predecessor_s_cost_stays_in_the_report(tmp_path: Path) -> None:
    """After the judge is edited (re-judged under a new evaluator id), what the first judge paid is
    named in the report's notes: with the new judge's cost it is what the ledger paid for judging."""
    with SimServer(_models()) as srv:
        exp = _write(tmp_path / "e", srv.base_url, ROWS)
        out = tmp_path / "out"
        first = Experiment.from_file(exp, out=out, progress=False).run()
        assert not any("earlier judges" in n for n in first.notes)
        judge = tmp_path / "e" / "judge.yaml"
        judge.write_text(judge.read_text().replace("name: judge", "name: judge-v2"))
        again = Experiment.from_file(exp, out=out, progress=False).run()
    old = first.setup("good").judge_cost_usd
    note = next(n for n in again.notes if n.startswith("earlier judges"))
    assert f"${old:.6f}" in note and f"${old:.6f}" in (out / "report.md").read_text()
    assert again.setup("good").judge_cost_usd + old == pytest.approx(_paid_for_judging(out))


def test_a_dry_run_counts_the_re_judging_a_changed_baseline_causes(tmp_path: Path) -> None:
    """The baseline changed since the last run: every verdict judged against the old one is judged
    again (``forget_other_baselines``), both orders. --dry-run counted only the answers without a
    score, 0 here, while the run sent 16 judge calls; it counts them now, and changes nothing."""
    with SimServer({**_models(), "other-m": SimModel(answer="other answer")}) as srv:
        exp = _write(tmp_path / "e", srv.base_url, ROWS)
        _topology(tmp_path / "e", "other", "other-m", srv.base_url)
        text = exp.read_text()
        exp.write_text(text.replace("setups: [good.yaml]", "setups: [good.yaml, other.yaml]"))
        out = tmp_path / "out"
        Experiment.from_file(exp, out=out, progress=False).run()
        exp.write_text(
            text.replace("baseline: base.yaml", "baseline: other.yaml").replace(
                "setups: [good.yaml]", "setups: [good.yaml, base.yaml]"
            )
        )
        plan = Experiment.from_file(exp, out=out, progress=False).plan()
        # `good`'s 4 answers and `base`'s 4 (its 0.5 as the baseline), each in both orders
        assert plan.judge_calls == 16
        assert Experiment.from_file(exp, out=out, progress=False).plan().judge_calls == 16
        assert any("judged again against the new baseline" in line for line in plan.lines())
        served = srv.stats.served_by_model["judge-m"]
        Experiment.from_file(exp, out=out, progress=False).run()
        assert srv.stats.served_by_model["judge-m"] == served + 16
