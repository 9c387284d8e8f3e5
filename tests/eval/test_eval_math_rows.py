"""MATH-style datasets (MATH, MATH-500, AIME) read in their published shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import MATH, load_dataset


def _jsonl(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# written by hand after each benchmark's published rows
MATH_500 = {
    "problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
    "solution": "We have $r = 3$ ... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
    "subject": "Precalculus",
    "level": 2,
    "unique_id": "test/precalculus/807.json",
}
MATH_ORIGINAL = {
    "problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?",
    "level": "Level 1",
    "type": "Prealgebra",
    "solution": "Add: $\\frac{3}{6} + \\frac{2}{6} = \\boxed{\\frac{5}{6}}$.",
}
AIME = {"id": 60, "problem": "Find the remainder ...", "solution": "...", "answer": 204, "url": "https://x"}


@pytest.mark.parametrize(
    ("row", "item_id", "target", "category"),
    [
        (MATH_500, "test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)", "Precalculus"),
        (MATH_ORIGINAL, "1", "\\frac{5}{6}", "Prealgebra"),
        (AIME, "60", "204", None),
        ({"problem": "1+1?", "answer": "2"}, "1", "2", None),
    ],
)
def test_each_published_math_shape_is_read(
    tmp_path: Path, row: dict[str, Any], item_id: str, target: str, category: str | None
) -> None:
    """The problem is the prompt; the target is `answer`, else the solution's last boxed answer.
    These rows were refused ("row has no `input`", "row has no `question`")."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.target, item.category) == (item_id, row["problem"], target, category)
    assert item.meta["format"] == MATH


def test_the_last_boxed_answer_of_a_solution_is_the_target(tmp_path: Path) -> None:
    """A solution boxes an intermediate result before its answer: the last box, braces balanced."""
    row = {"problem": "p", "solution": "First $\\boxed{1}$, then $\\boxed{\\frac{a}{\\sqrt{b}}}$."}
    assert load_dataset(_jsonl(tmp_path, [row])).items[0].target == "\\frac{a}{\\sqrt{b}}"


def test_a_row_with_input_stays_generic(tmp_path: Path) -> None:
    """`input` decides: a generic row that also carries `problem` and `answer` is not MATH."""
    row = {"input": "2+2?", "target": "4", "problem": "x", "answer": "y"}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.input, item.target) == ("2+2?", "4") and "format" not in item.meta


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"problem": "p", "solution": "no box here"}, "`solution` has no \\boxed{...} answer"),
        ({"problem": "p", "solution": "\\boxed{ }"}, "`solution` has no \\boxed{...} answer"),
        ({"problem": "", "answer": "2"}, "`problem` is blank"),
        ({"problem": "p", "answer": " "}, "`answer` is blank"),
        ({"problem": "p", "answer": True}, "`answer` must be a string or a number, not bool"),
        ({"problem": "p", "answer": None, "solution": None}, "row has no `answer` or `solution`"),
        ({"problem": "p", "hint": "2"}, "row has no `answer` or `solution`: a MATH row needs"),
    ],
)
def test_bad_math_rows_name_the_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [MATH_500, row]))
    assert str(e.value).startswith("data.jsonl:2: ") and reason in str(e.value)
    assert "\n" not in str(e.value)


def test_format_math_forces_the_layout(tmp_path: Path) -> None:
    """`dataset_format: math` names the missing field of a row that is not MATH's."""
    with pytest.raises(DatasetError, match=r"row has no `problem`: a MATH row needs"):
        load_dataset(_jsonl(tmp_path, [{"question": "q", "answer": "2"}]), format="math")


@pytest.mark.parametrize(
    "solution",
    [
        "First $x = \\boxed{1}$, so the answer is $\\boxed 5$.",
        "The answer is $\\boxed 5$.",
        "So the sum is \\boxed 5\nas claimed.",
    ],
)
def test_a_box_without_braces_is_the_answer(tmp_path: Path, solution: str) -> None:
    """MATH's solutions write `\\boxed 5` too (its graders read it up to the `$`): the last box was
    read as the intermediate `\\boxed{1}` before it, or the row refused as having none."""
    row = {"problem": "p", "level": "Level 2", "type": "Algebra", "solution": solution}
    assert load_dataset(_jsonl(tmp_path, [row])).items[0].target == "5"


def test_the_word_boxed_in_prose_is_no_answer(tmp_path: Path) -> None:
    """Only a `\\boxed` followed by an answer is one: "in \\boxed notation" after the box is prose."""
    row = {"problem": "p", "solution": "So $\\boxed{5}$, written in \\boxed notation."}
    assert load_dataset(_jsonl(tmp_path, [row])).items[0].target == "5"


@pytest.mark.parametrize(
    ("answer", "target"), [("\\boxed{5}", "5"), ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}")]
)
def test_an_answer_written_boxed_is_its_content(tmp_path: Path, answer: str, target: str) -> None:
    """A file whose `answer` is written `\\boxed{5}`: kept boxed, no reply's final answer equalled it."""
    item = load_dataset(_jsonl(tmp_path, [{"problem": "p", "answer": answer}])).items[0]
    assert item.target == target


def test_a_question_answer_row_without_hashes_says_which_layouts_fit(tmp_path: Path) -> None:
    """AIME 2025's `question` + `answer: "70"` is read as GSM8K: the refusal names MATH and QA."""
    with pytest.raises(DatasetError, match=r"name its `question` `problem`\) or a QA row"):
        load_dataset(_jsonl(tmp_path, [{"question": "Find n.", "answer": "70"}]))


# AIME on the Hugging Face hub: AIME 2024's capitalised fields, and AIME 1983-2024's `Question`
AIME_2024 = {
    "ID": "2024-I-4",
    "Problem": "Jen enters a lottery ...",
    "Solution": "... $\\boxed{116}$",
    "Answer": 116,
}
AIME_ALL_YEARS = {
    "ID": "1983-1",
    "Year": 1983,
    "Problem Number": 1,
    "Question": "Let $x$ ...",
    "Answer": 60,
    "Part": None,
}


@pytest.mark.parametrize(
    ("row", "item_id", "prompt", "target"),
    [
        (AIME_2024, "2024-I-4", AIME_2024["Problem"], "116"),
        ({**AIME_2024, "Answer": None}, "2024-I-4", AIME_2024["Problem"], "116"),
        (AIME_ALL_YEARS, "1983-1", AIME_ALL_YEARS["Question"], "60"),
    ],
)
def test_aime_files_with_capitalised_fields_are_math_rows(
    tmp_path: Path, row: dict[str, Any], item_id: str, prompt: str, target: str
) -> None:
    """AIME's files on the hub (`Problem`, `Answer`, `Solution`, `ID`; or `Question` beside `Problem
    Number`) are MATH rows, not generic or SVAMP rows without their fields."""
    for format in ("auto", "math"):
        data = load_dataset(_jsonl(tmp_path, [row]), format=format)  # type: ignore[arg-type]
        (item,) = data.items
        assert (data.layout, item.id, item.input, item.target) == ("MATH", item_id, prompt, target)
        assert item.meta["format"] == MATH


def test_a_capitalised_math_row_without_its_answer_names_its_fields(tmp_path: Path) -> None:
    """A capitalised AIME row lacking its answer and solution names them as the row spells them."""
    with pytest.raises(DatasetError, match=r"^data.jsonl:1: row has no `Answer` or `Solution`: a MATH row"):
        load_dataset(_jsonl(tmp_path, [{"ID": "x", "Problem": "p", "Answer": None}]))
