"""`moa compare` over a multiple-choice dataset, end to end on the loopback simulated models."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exp_helpers import write_experiment

from moa.errors import UserError
from moa.eval import load_dataset
from moa.experiment import Experiment
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "mmlu_sample.jsonl"


def _compare(exp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(
        [sys.executable, "-m", "moa", "compare", str(exp), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_compare_scores_the_shipped_mmlu_sample_by_the_chosen_letter(tmp_path: Path) -> None:
    """The example's rows through `moa compare` with no `evaluator:`: `choice` reads each reply's
    letter however it is written (letter, "(B) text", "Answer: b", the choice's text), and a reply
    naming two letters scores 0."""
    items = load_dataset(SAMPLE).items
    by_prompt = {i.input: i for i in items}
    styles = ["{l}", "The answer is ({l}) {t}", "**{l}**", "Answer: {lower}", "{t}", "Final answer: {l}."]

    def right(req: SimRequest) -> str:
        item = by_prompt[last_user_text(req.messages)]
        index = items.index(item)
        text = item.meta["answer_text"]
        return styles[index % len(styles)].format(l=item.target, lower=str(item.target).lower(), t=text)

    def half_ambiguous(req: SimRequest) -> str:
        item = by_prompt[last_user_text(req.messages)]
        return str(item.target) if items.index(item) < 3 else "A or B"

    models = {"single-m": SimModel(answer=right), "maj-m": SimModel(answer=half_ambiguous)}
    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, [])
        shutil.copy(SAMPLE, tmp_path / "e" / "data.jsonl")
        text = exp.read_text().replace('evaluator: "exact"\n', "")
        assert "evaluator" not in text
        exp.write_text(text)
        p = _compare(exp, tmp_path / "out")
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["evaluator"]["name"] == "choice"
    quality = {s["name"]: s["quality"] for s in summary["setups"]}
    assert quality == {"single": 1.0, "majority-3": 0.5}
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    details = {r["score_detail"] for r in rows if r["setup"] == "majority-3" and r["score"] == 0}
    expected = {"D (Carbon dioxide)", "A (56)", "D (William Shakespeare)"}
    assert details == {f"ambiguous: the reply names A and B; expected {e}" for e in expected}


def _items_file(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    folder = tmp_path / "e"
    exp = write_experiment(folder, "http://127.0.0.1:9", rows)
    return exp


def test_contains_over_multiple_choice_items_is_refused_before_any_call(tmp_path: Path) -> None:
    """`contains` would find the target letter in nearly any reply: refused, naming `choice`."""
    exp = _items_file(tmp_path, [])
    shutil.copy(SAMPLE, exp.parent / "data.jsonl")
    exp.write_text(exp.read_text().replace('evaluator: "exact"', "evaluator: contains"))
    with pytest.raises(
        UserError,
        match=r"evaluator `contains`: 6 of 6 dataset items are multiple-choice.*use `evaluator: choice`",
    ):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out" / "experiment.sqlite").exists()


def test_choice_over_items_without_choices_is_refused(tmp_path: Path) -> None:
    """`evaluator: choice` over generic items (no choices) is one line before any call."""
    exp = _items_file(tmp_path, [{"id": "q1", "input": "2+2?", "target": "4"}])
    exp.write_text(exp.read_text().replace('evaluator: "exact"', "evaluator: choice"))
    with pytest.raises(UserError, match=r"evaluator `choice`: 1 of 1 dataset items are not multiple-choice"):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()


def test_a_layout_without_its_own_evaluator_asks_for_one(tmp_path: Path) -> None:
    """No `evaluator:` over a generic dataset: one line asking the file to name one."""
    exp = _items_file(tmp_path, [{"id": "q1", "input": "2+2?", "target": "4"}])
    exp.write_text(exp.read_text().replace('evaluator: "exact"\n', ""))
    with pytest.raises(UserError, match=r"has no evaluator of its own: name one in the experiment file"):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
