"""`moa compare` over MATH-500 rows, end to end on the loopback simulated models."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pathlib import Path

import pytest
from exp_helpers import compare_by_layout, write_experiment

from moa.errors import UserError
from moa.experiment import Experiment
from moa.testing.sim import SimModel, SimRequest, last_user_text

# (problem, the file's answer, a right reply written as models write it)
PROBLEMS = [
    (
        "Convert the point $(0,3)$ to polar coordinates.",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "So $r=3$ and the point is $\\boxed{(3,\\frac{\\pi}{2})}$.",
    ),
    ("Compute $\\frac{28}{6}$ in lowest terms.", "\\frac{14}{3}", "Reducing, $\\boxed{\\dfrac{14}{3}}$."),
    ("What is the angle?", "30^\\circ", "The angle is $\\boxed{30}$ degrees."),
    ("Find the remainder.", "204", "Adding up, 1+203 = 204.\nThe final answer is 204."),
    # equal values written differently: compared as numbers
    ("What is $1/2$?", "\\frac{1}{2}", "It is $\\boxed{0.5}$."),
    ("Find the AIME answer.", "33", "So the answer is $\\boxed{033}$."),
]


def test_compare_over_math_500_rows_scores_the_final_answer_as_math_graders_do(tmp_path: Path) -> None:
    """No `evaluator:` over MATH rows: `exact` on the final answer with MATH's equivalences, so
    `\\dfrac` and `\\frac`, `\\left(` and `(`, `30^\\circ` and `30` agree, and so do equal numbers
    (`0.5` and `\\frac{1}{2}`, `033` and `33`); a wrong box scores 0."""
    rows = [
        {"problem": p, "answer": a, "subject": "Algebra", "level": 3, "unique_id": f"test/{i}.json"}
        for i, (p, a, _) in enumerate(PROBLEMS)
    ]
    replies = {p: r for p, _, r in PROBLEMS}

    def right(req: SimRequest) -> str:
        return replies[last_user_text(req.messages)]

    def half_wrong(req: SimRequest) -> str:
        problem = last_user_text(req.messages)
        return replies[problem] if problem in list(replies)[:3] else "\\boxed{7}"

    models = {"single-m": SimModel(answer=right), "maj-m": SimModel(answer=half_wrong)}
    summary = compare_by_layout(tmp_path, models, rows)
    evaluator = summary["evaluator"]
    assert (evaluator["name"], evaluator["extract_final"], evaluator["numbers"]) == ("exact", True, True)
    assert {s["name"]: s["quality"] for s in summary["setups"]} == {"single": 1.0, "majority-3": 0.5}
    # the report says how the answers were compared, not only by which evaluator
    report = (tmp_path / "out" / "report.md").read_text()
    assert "evaluator `exact {extract_final: true, numbers: true}`" in report


def test_contains_over_math_items_is_refused_before_any_call(tmp_path: Path) -> None:
    """A MATH answer ("2") is in nearly any worked solution: `contains` is refused, naming `exact`."""
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}]
    exp = write_experiment(tmp_path / "e", "http://127.0.0.1:9", rows, evaluator="contains")
    with pytest.raises(UserError, match=r"evaluator `contains`: 2 of 2 dataset items are MATH problems"):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out" / "experiment.sqlite").exists()
