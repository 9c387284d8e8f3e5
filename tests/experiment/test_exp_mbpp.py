"""`moa compare` over MBPP rows, end to end on the loopback simulated models and the sandbox."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import re
from pathlib import Path

from exp_helpers import compare_by_layout

from moa.testing.sim import SimModel, SimRequest, last_user_text

ROWS = [
    {
        "task_id": 2,
        "prompt": "Write a function to find the square root of a number.",
        "code": "...",
        "test_imports": ["import math"],
        "test_list": ["assert math.isclose(root(4), 2)", "assert math.isclose(root(9), 3)"],
    },
    {
        "task_id": 3,
        "prompt": "Write a function to add two numbers.",
        "code": "...",
        "test_imports": [],
        "test_list": ["assert add(1, 2) == 3"],
    },
]
RIGHT = {
    "root": "```python\nimport math\n\ndef root(x):\n    return math.sqrt(x)\n```",
    "add": "Here:\n```python\ndef add(a, b):\n    return a + b\n```",
}


def _function(req: SimRequest) -> str:
    m = re.search(r"assert (?:math\.isclose\()?(\w+)\(", last_user_text(req.messages))
    assert m is not None
    return m.group(1)


def test_compare_over_sanitized_mbpp_rows_runs_each_answer_against_its_tests(tmp_path: Path) -> None:
    """No `evaluator:` over MBPP rows: `execution`, each test run after the row's imports (the
    answer to `root` passes only because `import math` runs before `math.isclose`)."""

    def right(req: SimRequest) -> str:
        return RIGHT[_function(req)]

    def wrong_add(req: SimRequest) -> str:
        name = _function(req)
        return RIGHT[name] if name == "root" else "```python\ndef add(a, b):\n    return a - b\n```"

    models = {"single-m": SimModel(answer=right), "maj-m": SimModel(answer=wrong_add)}
    summary = compare_by_layout(tmp_path, models, ROWS)
    assert summary["evaluator"]["name"] == "execution"
    assert {s["name"]: s["quality"] for s in summary["setups"]} == {"single": 1.0, "majority-3": 0.5}
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    failed = {r["score_detail"] for r in rows if r["score"] == 0}
    assert len(failed) == 1 and "assert add(1, 2) == 3" in failed.pop()
