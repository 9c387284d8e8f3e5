"""`moa compare` over NQ-open, TriviaQA and SQuAD rows, end to end on the loopback simulated models."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from exp_helpers import compare_by_layout, write_experiment

from moa.errors import UserError
from moa.experiment import Experiment
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

ROWS = [
    {"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]},
    {
        "question": "Who was the man behind The Chipmunks?",
        "question_id": "tc_2",
        "answer": {"value": "David Seville", "aliases": ["David Seville", "Ross Bagdasarian"]},
    },
    {
        "id": "squad-1",
        "title": "Super_Bowl_50",
        "context": "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50.",
        "question": "Which team won Super Bowl 50?",
        "answers": {"text": ["Denver Broncos", "Denver Broncos"], "answer_start": [4, 4]},
    },
    {"question": "what is the capital of france", "answer": ["Paris"]},
]
# (a word of the prompt, a right reply as a model writes it: another alias, an article, a period)
RIGHT = {
    "hamlet": "shakespeare",
    "Chipmunks": "Ross Bagdasarian",
    "Super Bowl": "The Denver Broncos.",
    "france": "Paris",
}
WRONG = {"Super Bowl": "Carolina Panthers", "france": "Lyon"}


def _reply(wrong: dict[str, str]) -> Callable[[SimRequest], str]:
    def answer(req: SimRequest) -> str:
        prompt = last_user_text(req.messages)
        key = next(k for k in RIGHT if k in prompt)
        return wrong.get(key, RIGHT[key])

    return answer


def test_compare_over_qa_rows_scores_squad_exact_match_against_any_answer(tmp_path: Path) -> None:
    """No `evaluator:` over QA rows: SQuAD's exact match against every accepted answer, so another
    alias ("shakespeare") and an article and a period ("The Denver Broncos.") score 1."""
    models = {"single-m": SimModel(answer=_reply({})), "maj-m": SimModel(answer=_reply(WRONG))}
    summary = compare_by_layout(tmp_path, models, ROWS)
    assert summary["evaluator"] == {"name": "exact", "squad": True}
    assert {s["name"]: s["quality"] for s in summary["setups"]} == {"single": 1.0, "majority-3": 0.5}
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    wrong = {
        r["item_id"]: r["score_detail"] for r in results if r["setup"] == "majority-3" and r["score"] == 0
    }
    assert wrong == {"squad-1": "expected 'Denver Broncos'", "4": "expected 'Paris'"}


def test_f1_named_over_qa_rows_gives_partial_credit(tmp_path: Path) -> None:
    """`evaluator: f1`: "Broncos" against "Denver Broncos" is worth 2/3, the other items 1."""
    models = {
        "single-m": SimModel(answer=_reply({"Super Bowl": "Broncos"})),
        "maj-m": SimModel(answer=_reply({})),
    }
    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, ROWS, evaluator="f1")
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    quality = {s.name: s.quality for s in summary.setups}
    assert quality["majority-3"] == 1.0 and abs(quality["single"] - (3 + 2 / 3) / 4) < 1e-9


def test_f1_over_items_without_a_target_is_refused_before_any_call(tmp_path: Path) -> None:
    """Each would be paid for and score 0, "item has no target": refused as under `exact`."""
    rows = [{"input": "Capital of France?", "answer": "Paris"}, {"input": "Capital of Italy?"}]
    exp = write_experiment(tmp_path / "e", "http://127.0.0.1:9", rows, evaluator="f1")
    with pytest.raises(
        UserError, match=r"evaluator `f1`: 2 of 2 dataset items have no `target`.*hold `answer`"
    ):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out" / "experiment.sqlite").exists()
