"""Instruction datasets (Alpaca, AlpacaEval, Dolly) read in their published shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import load_dataset


def _jsonl(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# written by hand after each set's published rows
ALPACA = {"instruction": "Translate to French.", "input": "Hello, friend.", "output": "Bonjour, ami."}
ALPACA_NO_INPUT = {"instruction": "Name a prime number.", "input": "", "output": "7"}
ALPACA_EVAL = {
    "instruction": "Write a haiku about rain.",
    "output": "...",
    "generator": "gpt4_1106_preview",
    "dataset": "helpful_base",
}
DOLLY = {
    "instruction": "Summarise the passage.",
    "context": "A long passage.",
    "response": "Short.",
    "category": "summarization",
}


@pytest.mark.parametrize(
    ("row", "prompt", "category"),
    [
        (ALPACA, "Translate to French.\n\nHello, friend.", None),
        (ALPACA_NO_INPUT, "Name a prime number.", None),
        (ALPACA_EVAL, "Write a haiku about rain.", "helpful_base"),
        (DOLLY, "Summarise the passage.\n\nA long passage.", "summarization"),
    ],
)
def test_the_instruction_comes_first_and_its_material_after(
    tmp_path: Path, row: dict[str, Any], prompt: str, category: str | None
) -> None:
    """Read as generic rows, Alpaca's sent its `input` alone (the instruction dropped) and AlpacaEval's
    and Dolly's were refused: the prompt is the instruction, a blank line and its input or context."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.input, item.category, item.target) == (prompt, category, None)


def test_a_target_is_kept_and_the_instruction_still_sent(tmp_path: Path) -> None:
    """An Alpaca row whose `output` was renamed `target` for `exact` keeps both its parts."""
    row = {"id": "a1", "instruction": "Answer in one word.", "input": "Capital of France?", "target": "Paris"}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.target) == ("a1", "Answer in one word.\n\nCapital of France?", "Paris")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"instruction": " ", "output": "x"}, "`instruction` is blank"),
        ({"instruction": 3, "output": "x"}, "`instruction` must be a string, not int"),
        ({"instruction": "Do it.", "input": ["a"]}, "`input` must be a string, not list"),
        ({"instruction": None, "input": "x"}, "row has no `instruction`"),
    ],
)
def test_bad_instruction_rows_name_the_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [ALPACA, row]))
    assert str(e.value).startswith("data.jsonl:2: ") and reason in str(e.value)


# HumanEvalPack's and InstructHumanEval's rows: HumanEval's fields, and an `instruction` beside them
HUMANEVALPACK = {
    "task_id": "Python/0",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "declaration": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "buggy_solution": "    return a - b\n",
    "entry_point": "add",
    "test": "def check(add):\n    assert add(1, 2) == 3\n\ncheck(add)",
    "instruction": "Write a Python function `add(a, b)` to solve the following problem:\nAdd two numbers.",
}
INSTRUCT_HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
    "signature": "add(a, b)",
    "docstring": "Add two numbers.",
    "context": "def add(a, b):",
    "instruction": "Write a function to add two numbers:\ndef add(a, b):",
}


@pytest.mark.parametrize("row", [HUMANEVALPACK, INSTRUCT_HUMANEVAL])
def test_a_humaneval_row_with_an_instruction_stays_humaneval(tmp_path: Path, row: dict[str, Any]) -> None:
    """HumanEvalPack and InstructHumanEval rows were read as instruction rows: their tests and ids
    were dropped, and `execution` refused the file as items without tests."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.test, item.entry_point) == (
        row["task_id"],
        row["prompt"],
        row["test"],
        "add",
    )


def test_an_alpaca_row_in_a_file_read_as_generic_is_a_bad_row(tmp_path: Path) -> None:
    """Below generic rows (the file's layout, from its first rows), an Alpaca row read as generic sent
    its `input` alone, its instruction dropped unseen: it is a bad row naming both layouts."""
    rows = [{"input": f"q{i}", "target": "a"} for i in range(3)] + [ALPACA]
    ds = load_dataset(_jsonl(tmp_path, rows), on_bad_row="skip")
    assert [i.input for i in ds] == ["q0", "q1", "q2"]
    assert [(b.line, b.reason) for b in ds.bad_rows] == [
        (
            4,
            "row has the instruction layout's fields in a file read as generic from its first rows: "
            "give the file one layout, or name it with `dataset_format`",
        )
    ]
    # named, the layout is the user's: the row is read as generic, as asked
    assert len(load_dataset(_jsonl(tmp_path, rows), format="jsonl")) == 4


def test_a_row_numbered_by_its_place_says_so_when_its_number_clashes(tmp_path: Path) -> None:
    """An instruction row's id is its `id` only: a `question_id` beside it counted as an id of its
    own in the duplicate check, so the clash below lost its hint that the first row was numbered."""
    rows = [{"instruction": "a", "question_id": "x"}, {"instruction": "b", "id": 1}]
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, rows))
    assert str(e.value) == (
        "data.jsonl:2: duplicate id `1` (first on line 1; a row without an `id` is numbered by its place in the file)"
    )
