"""Published benchmark files not covered by a layout's own tests: each is read right, or refused in
one line naming the field or layout, never silently misread."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import QA, load_dataset


def _jsonl(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# written by hand after SimpleQA's published files: `simple_qa_test_set.csv` (its metadata the text
# of a Python dict) and the Hugging Face copy as JSON lines (metadata an object)
SIMPLEQA_META = {
    "topic": "Science and technology",
    "answer_type": "Person",
    "urls": ["https://en.wikipedia.org/wiki/IEEE_Frank_Rosenblatt_Award"],
}
SIMPLEQA = {
    "metadata": SIMPLEQA_META,
    "problem": "Who received the IEEE Frank Rosenblatt Award in 2010?",
    "answer": "Michio Sugeno",
}


def test_simpleqa_rows_are_qa_items_not_math(tmp_path: Path) -> None:
    """A SimpleQA row is a QA item: its problem the prompt, its answer an accepted answer, its topic the category."""
    second = {**SIMPLEQA, "problem": "In what year was 2 + 2 first written down?", "answer": "1557"}
    data = load_dataset(_jsonl(tmp_path, [SIMPLEQA, second]))
    assert data.layout == "QA"
    first = data.items[0]
    assert (first.input, first.target, first.category) == (
        SIMPLEQA["problem"],
        "Michio Sugeno",
        "Science and technology",
    )
    assert first.meta == {"format": QA, "answers": ["Michio Sugeno"]}
    assert data.items[1].meta["answers"] == ["1557"]


def test_simpleqas_own_csv_is_read_as_qa(tmp_path: Path) -> None:
    """SimpleQA's CSV, whose metadata cell is a Python dict's text, is read as QA items."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["metadata", "problem", "answer"])
    writer.writerow([repr(SIMPLEQA_META), SIMPLEQA["problem"], SIMPLEQA["answer"]])
    path = tmp_path / "simple_qa_test_set.csv"
    path.write_text(out.getvalue())
    (item,) = load_dataset(path).items
    assert (item.input, item.target, item.category) == (
        SIMPLEQA["problem"],
        "Michio Sugeno",
        "Science and technology",
    )
    assert item.meta["format"] == QA


def test_a_simpleqa_row_without_its_answer_names_the_field(tmp_path: Path) -> None:
    """A SimpleQA row whose answer is blank is refused naming `answer`."""
    path = _jsonl(tmp_path, [SIMPLEQA, {**SIMPLEQA, "answer": " "}])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: `answer` is blank"):
        load_dataset(path)
