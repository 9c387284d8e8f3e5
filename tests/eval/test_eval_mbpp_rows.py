"""MBPP datasets, in the original and the sanitized shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import load_dataset

# written by hand after MBPP's published rows
ORIGINAL = {
    "text": "Write a function to add two numbers.",
    "code": "def add(a, b):\n    return a + b",
    "task_id": 11,
    "test_setup_code": "",
    "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
    "challenge_test_list": ["assert add(10**9, 1) == 10**9 + 1"],
}
SANITIZED = {
    "source_file": "Benchmark Questions Verification V2.ipynb",
    "task_id": 12,
    "prompt": "Write a function to find the square root of a number.",
    "code": "import math\ndef root(x):\n    return math.sqrt(x)",
    "test_imports": ["import math"],
    "test_list": ["assert math.isclose(root(4), 2)"],
}


def _jsonl(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_original_mbpp_row_shows_its_tests_and_runs_them(tmp_path: Path) -> None:
    """The prompt is MBPP's: the task, then its tests, which name the function to write. Both shapes
    were refused ("row has no `input`", "a HumanEval row needs ...")."""
    item = load_dataset(_jsonl(tmp_path, [ORIGINAL])).items[0]
    assert item.id == "11"
    assert item.input == (
        "Write a function to add two numbers.\nYour code should pass these tests:\n\n"
        "assert add(1, 2) == 3\nassert add(0, 0) == 0"
    )
    assert item.tests == ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]


def test_a_sanitized_row_runs_its_imports_before_each_test(tmp_path: Path) -> None:
    """`test_imports` are the tests' own: run before each test, not shown in the prompt."""
    item = load_dataset(_jsonl(tmp_path, [SANITIZED])).items[0]
    assert item.input.endswith("\n\nassert math.isclose(root(4), 2)") and "import math" not in item.input
    assert item.tests == ["import math\nassert math.isclose(root(4), 2)"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**ORIGINAL, "test_list": []}, "`test_list` is empty"),
        ({**ORIGINAL, "test_list": ["assert add(1, 2) == 3", " "]}, "`test_list[1]` is blank"),
        ({**ORIGINAL, "test_list": "assert x"}, "`test_list` must be a list of strings"),
        ({**ORIGINAL, "text": ""}, "`text` is blank"),
        ({**ORIGINAL, "test_list": None}, "row has no `test_list`: an MBPP row needs"),
        ({**SANITIZED, "test_imports": [1]}, "`test_imports` must be a list of strings"),
    ],
)
def test_bad_mbpp_rows_name_the_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [ORIGINAL, row]))
    assert str(e.value).startswith("data.jsonl:2: ") and reason in str(e.value)
    assert "\n" not in str(e.value)
