"""Multiple-choice datasets (MMLU, ARC, TruthfulQA, HellaSwag, PIQA, Winogrande, GPQA...) and the `choice` grader."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.choice import ChoiceEvaluator, read_choice
from moa.eval.datasets import load_dataset
from moa.eval.registry import make_evaluator
from tests.probe import run_python

PARIS = ["Berlin", "Paris", "Rome", "Madrid"]


def _jsonl(tmp_path: Path, rows: list[Any], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# written by hand after each benchmark's published rows
MMLU = {"question": "Capital of France?", "subject": "geography", "choices": PARIS, "answer": 1}
ARC_HUB = {
    "id": "Mercury_7175875",
    "question": "Which is a gas at room temperature?",
    "choices": {"text": ["ice", "steam", "iron", "salt"], "label": ["A", "B", "C", "D"]},
    "answerKey": "B",
}
ARC_DIGITS = {
    "id": "NYSEDREGENTS_2015_4_8",
    "question": "Which tool measures mass?",
    "choices": {"text": ["ruler", "balance", "thermometer", "clock"], "label": ["1", "2", "3", "4"]},
    "answerKey": "2",
}
ARC_ORIGINAL = {
    "id": "Mercury_SC_415702",
    "question": {
        "stem": "Which is a gas at room temperature?",
        "choices": [
            {"text": "ice", "label": "A"},
            {"text": "steam", "label": "B"},
            {"text": "iron", "label": "C"},
        ],
    },
    "answerKey": "B",
}
TRUTHFULQA = {
    "question": "What colour is the sky on a clear day?",
    "mc1_targets": {"Green": 0, "Blue": 1, "Red": 0},
}
HELLASWAG_STR = {
    "ind": 24,
    "activity_label": "Cooking",
    "ctx": "She cracks the eggs",
    "endings": ["w", "x", "y", "z"],
    "label": "1",
}
HELLASWAG_INT = {"ind": 25, "ctx": "He opens the door", "endings": ["w", "x", "y", "z"], "label": 3}
OPENBOOKQA = {
    "id": "7-980",
    "question_stem": "The sun is responsible for",
    "choices": {"text": ["puppies", "plants sprouting"], "label": ["A", "B"]},
    "answerKey": "B",
}
PIQA = {
    "goal": "When boiling butter",
    "sol1": "pour it onto a plate",
    "sol2": "pour it into a jar",
    "label": 1,
}
WINOGRANDE = {
    "sentence": "Sarah was a better surgeon than Maria so _ got the harder cases.",
    "option1": "Sarah",
    "option2": "Maria",
    "answer": "1",
}
GPQA = {
    "Pre-Revision Question": "old wording",
    "Question": "Which particle has no charge?\n",
    "Correct Answer": "neutron",
    "Incorrect Answer 1": "proton",
    "Incorrect Answer 2": "electron",
    "Incorrect Answer 3": "positron",
    "Record ID": "recX1",
    "High-level domain": "Physics",
}
MMLU_PRO = {
    "question_id": 70,
    "question": "Which is a prime?",
    "options": ["4", "6", "8", "9", "10", "12", "14", "15", "11", "16"],
    "answer": "I",
    "answer_index": 8,
    "cot_content": "",
    "category": "math",
    "src": "ori_mmlu-high_school_mathematics",
}
MEDQA = {
    "question": "Which drug treats cystitis in pregnancy?",
    "answer": "Nitrofurantoin",
    "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"},
    "meta_info": "step2&3",
    "answer_idx": "D",
}
GENERIC = {"id": "g1", "question": "Pick the vowel.", "choices": ["b", "c", "e"], "answer": "C"}
GENERIC_TEXT = {
    "id": "g2",
    "question": "Pick the even one.",
    "choices": ["seven", "eight", "nine"],
    "answer": "eight",
}


@pytest.mark.parametrize(
    ("row", "target", "choice_text"),
    [
        (MMLU, "B", "Paris"),
        (ARC_HUB, "B", "steam"),
        (ARC_DIGITS, "B", "balance"),
        (ARC_ORIGINAL, "B", "steam"),
        (HELLASWAG_STR, "B", "x"),
        (HELLASWAG_INT, "D", "z"),
        (GENERIC, "C", "e"),
        (GENERIC_TEXT, "B", "eight"),
        (OPENBOOKQA, "B", "plants sprouting"),
        (PIQA, "B", "pour it into a jar"),
        (WINOGRANDE, "A", "Sarah"),
        (MMLU_PRO, "I", "11"),
        (MEDQA, "D", "Nitrofurantoin"),
        ({**MEDQA, "answer_idx": None}, "D", "Nitrofurantoin"),
        ({**WINOGRANDE, "answer": 2}, "B", "Maria"),
    ],
)
def test_each_published_layout_is_read_as_multiple_choice(
    tmp_path: Path, row: dict[str, Any], target: str, choice_text: str
) -> None:
    """Each benchmark's row is recognised: the target is the right letter, the choice's text is kept."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert item.target == target
    assert item.meta["format"] == "choice" and item.meta["answer_text"] == choice_text
    assert f"\n{target}. {choice_text}\n" in item.input


def test_truthfulqa_mc1_choices_are_shown_in_a_fixed_order_that_varies_across_rows(tmp_path: Path) -> None:
    """MC1 files put the right answer first: shown in the file's order, a model always answering A
    scored 1.0. Each row's order is drawn from its text, so a second load (a resume, another setup)
    shows the same one."""
    rows = [
        {
            "question": f"Question {i}?",
            "mc1_targets": {f"right {i}": 1, f"wrong {i}": 0, f"other {i}": 0, f"x {i}": 0},
        }
        for i in range(24)
    ]
    first = load_dataset(_jsonl(tmp_path, rows)).items
    again = load_dataset(_jsonl(tmp_path, rows)).items
    assert [i.input for i in first] == [i.input for i in again]
    assert len({i.target for i in first}) >= 3
    for i, item in enumerate(first):
        assert item.meta["answer_text"] == f"right {i}"
        assert f"\n{item.target}. right {i}\n" in item.input


def test_truthfulqa_mc1_in_the_hub_s_shape_is_read_as_the_original(tmp_path: Path) -> None:
    """The Hugging Face hub's TruthfulQA (`mc1_targets: {choices: [...], labels: [...]}`), the most
    common download, was read as two choices named "choices" and "labels" and refused for scoring
    no choice 1: it is the same item as the original `{choice: score}` row, in the same order."""
    hub = {
        "question": TRUTHFULQA["question"],
        "mc1_targets": {"choices": ["Green", "Blue", "Red"], "labels": [0, 1, 0]},
        "mc2_targets": {"choices": ["Green", "Blue", "Red"], "labels": [0, 1, 0]},
    }
    hub_item = load_dataset(_jsonl(tmp_path, [hub])).items[0]
    original = load_dataset(_jsonl(tmp_path, [TRUTHFULQA])).items[0]
    assert hub_item.input == original.input and hub_item.target == original.target
    assert hub_item.meta["answer_text"] == "Blue"


@pytest.mark.parametrize(
    ("targets", "reason"),
    [
        ({"choices": ["a", "b"], "labels": [1]}, "`mc1_targets` has 1 labels for 2 choices"),
        ({"choices": ["a", "b"], "labels": [1, 1]}, "must score exactly one choice 1, not 2"),
        ({"choices": ["a", ""], "labels": [1, 0]}, "`mc1_targets.choices[1]` is blank"),
    ],
)
def test_a_bad_hub_mc1_row_names_the_field(tmp_path: Path, targets: dict[str, Any], reason: str) -> None:
    path = _jsonl(tmp_path, [{"question": "Q?", "mc1_targets": targets}])
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    assert str(e.value).startswith("data.jsonl:1: ") and reason in str(e.value)


def test_gpqa_rows_are_shuffled_like_mc1_and_keep_their_id_and_domain(tmp_path: Path) -> None:
    """GPQA's CSV lists the right answer first (`Correct Answer`, then three wrong ones): shown in
    that order a model always answering A scored 1.0. The order is drawn from the row, as MC1's."""
    rows = [{**GPQA, "Question": f"Question {i}?", "Record ID": f"rec{i}"} for i in range(24)]
    path = tmp_path / "gpqa.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(GPQA))
        writer.writeheader()
        writer.writerows(rows)
    items = load_dataset(path).items
    assert [i.id for i in items] == [f"rec{i}" for i in range(24)]
    assert {i.category for i in items} == {"Physics"} and len({i.target for i in items}) >= 3
    assert all(f"\n{i.target}. neutron\n" in i.input and i.meta["answer_text"] == "neutron" for i in items)
    assert [i.input for i in items] == [i.input for i in load_dataset(path).items]


def test_a_generic_row_carrying_options_as_data_stays_generic(tmp_path: Path) -> None:
    """`options` names choices only beside a `question` (MMLU-Pro, MedQA): a generic row whose
    `options` is its own data was taken as multiple-choice and refused."""
    row = {"input": "Say hi", "target": "hi", "options": {"temperature": 0}}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.input, item.target, item.meta) == ("Say hi", "hi", {"options": {"temperature": 0}})


def test_mmlu_pro_keeps_its_question_id_and_ten_letters(tmp_path: Path) -> None:
    """MMLU-Pro's `options` (up to ten) were not choices: its rows were read as GSM8K and refused."""
    item = load_dataset(_jsonl(tmp_path, [MMLU_PRO])).items[0]
    assert (item.id, item.category) == ("70", "math") and "\nJ. 16\n" in item.input


def test_choice_texts_are_shown_without_their_surrounding_blanks(tmp_path: Path) -> None:
    """GPQA's cells end in spaces and line breaks: they put blank lines into the lettered list."""
    row = {**GPQA, "Correct Answer": "neutron \n", "Incorrect Answer 1": "\nproton  "}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert "\n\n\n" not in item.input and " \n" not in item.input
    assert item.meta["answer_text"] == "neutron" and f"\n{item.target}. neutron\n" in item.input


def test_winogrande_asks_which_choice_fills_the_blank(tmp_path: Path) -> None:
    """Winogrande's sentence, then the question its blank asks (its options alone ask nothing)."""
    item = load_dataset(_jsonl(tmp_path, [WINOGRANDE])).items[0]
    assert item.input.startswith(
        f"{WINOGRANDE['sentence']}\n\nWhich choice fills the blank (_)?\n\nA. Sarah\n"
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**WINOGRANDE, "answer": ""}, "`answer` '' is none of the choices' labels 1, 2"),
        ({**WINOGRANDE, "answer": "3"}, "`answer` '3' is none of the choices' labels 1, 2"),
        ({**WINOGRANDE, "option2": ""}, "`option2` is blank"),
        ({**PIQA, "label": 2}, "`label` 2 is outside the 2 choices"),
        ({**PIQA, "sol2": None}, "`sol2` must be a string, not NoneType"),
    ],
)
def test_bad_piqa_and_winogrande_rows_name_the_field(
    tmp_path: Path, row: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [row]))
    assert str(e.value).startswith("data.jsonl:1: ") and reason in str(e.value)


def test_an_mc2_only_row_points_at_mc1(tmp_path: Path) -> None:
    """A row with only MC2's several right answers was read as GSM8K ("row has no `answer`")."""
    row = {"question": "Q?", "mc2_targets": {"choices": ["a", "b"], "labels": [1, 1]}}
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [row]))
    assert "`mc2_targets` (TruthfulQA MC2, several right answers)" in str(e.value)
    assert "`mc1_targets`" in str(e.value)


def test_the_prompt_letters_the_choices_in_the_documented_format(tmp_path: Path) -> None:
    """The question, a blank line, `A. text` per choice, a blank line, the request for the letter."""
    item = load_dataset(_jsonl(tmp_path, [MMLU])).items[0]
    assert item.input == (
        "Capital of France?\n\nA. Berlin\nB. Paris\nC. Rome\nD. Madrid\n\n"
        "Answer with the letter of the correct choice."
    )
    assert item.category == "geography" and item.id == "1"


def test_an_mmlu_row_is_not_read_as_gsm8k(tmp_path: Path) -> None:
    """An MMLU row (`answer` an int) loads; it failed as GSM8K: "`answer` must be a string, not int"."""
    ds = load_dataset(_jsonl(tmp_path, [MMLU, {**MMLU, "answer": 0}]))
    assert [i.target for i in ds.items] == ["B", "A"]


def test_ids_come_from_the_row_when_it_has_one(tmp_path: Path) -> None:
    """ARC's `id` and HellaSwag's `ind` are the items' ids."""
    ds = load_dataset(_jsonl(tmp_path, [ARC_HUB, HELLASWAG_STR]))
    assert [i.id for i in ds.items] == ["Mercury_7175875", "24"]


def test_mmlu_csv_form_is_read(tmp_path: Path) -> None:
    """MMLU's CSV form (question,A,B,C,D,answer letter) with its header line loads."""
    path = tmp_path / "mmlu.csv"
    path.write_text('question,A,B,C,D,answer\n"What is 2+2?",3,4,5,6,B\nSky colour?,red,blue,green,grey,b\n')
    ds = load_dataset(path)
    assert [i.target for i in ds.items] == ["B", "B"]
    assert "A. 3\nB. 4\nC. 5\nD. 6" in ds.items[0].input


def test_mmlus_headerless_csv_asks_for_the_header_line(tmp_path: Path) -> None:
    """MMLU's published CSVs have no header: the first question was read as the column names and
    every row then failed as having no `input`."""
    path = tmp_path / "anatomy_test.csv"
    path.write_text('"What is 2+2?",3,4,5,6,B\nSky colour?,red,blue,green,grey,B\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == (
        "anatomy_test.csv:1: CSV header looks like a row of MMLU's headerless files (a question, its "
        "choices, a letter): add the header line `question,A,B,C,D,answer` first"
    )


def test_csv_choices_as_a_json_list_are_read(tmp_path: Path) -> None:
    """A CSV `choices` cell holding a JSON list (as generic CSV `tests` cells do) is the list."""
    path = tmp_path / "mc.csv"
    path.write_text('question,choices,answer\nCapital of France?,"[""Berlin"", ""Paris""]",B\n')
    item = load_dataset(path).items[0]
    assert item.target == "B" and item.meta["choices"] == ["Berlin", "Paris"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**MMLU, "answer": 4}, "`answer` 4 is outside the 4 choices (A-D, or 0-3)"),
        ({**MMLU, "answer": "E"}, "`answer` 'E' is outside the 4 choices (A-D, or 0-3)"),
        ({**MMLU, "answer": -1}, "`answer` -1 is outside the 4 choices"),
        ({**ARC_HUB, "answerKey": "E"}, "`answerKey` 'E' is none of the choices' labels A, B, C, D"),
        ({**MMLU, "choices": ["only"]}, "needs at least 2 choices, not 1"),
        (
            {**ARC_HUB, "choices": {"text": ["a", "b"], "label": ["A", "A"]}},
            "`choices`: the label `A` appears twice",
        ),
        (
            {**TRUTHFULQA, "mc1_targets": {"a": 1, "b": 1}},
            "`mc1_targets` must score exactly one choice 1, not 2",
        ),
        ({**MMLU, "answer": True}, "`answer` must be a letter or a choice's index, not bool"),
        ({**MMLU, "choices": ["a", ""]}, "`choices[1]` is blank"),
    ],
)
def test_bad_choice_rows_are_one_line_naming_file_line_and_field(
    tmp_path: Path, row: dict[str, Any], reason: str
) -> None:
    """An answer outside the choices, fewer than 2 choices, duplicate labels: file:line and the field."""
    path = _jsonl(tmp_path, [MMLU, row])
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    assert str(e.value).startswith("data.jsonl:2: ") and reason in str(e.value)
    assert "\n" not in str(e.value)


def test_forced_choice_format_names_a_missing_question(tmp_path: Path) -> None:
    """`format="choice"` on a row without a question says what a multiple-choice row needs."""
    path = _jsonl(tmp_path, [{"choices": ["a", "b"], "answer": 0}])
    with pytest.raises(DatasetError, match=r"data.jsonl:1: row has no `question`"):
        load_dataset(path, format="choice")


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("[b].", "B"),
        ("**B**", "B"),
        ("Answer: B", "B"),
        ("answer: (c)", "C"),
        ("answer: b, since Paris is the capital", "B"),
        ("The answer is B) Paris", "B"),
        ("The correct option is **D**.", "D"),
        ("Final answer: **C**", "C"),
        ("\\boxed{D}", "D"),
        ("B) Paris", "B"),
        ("(B) Paris", "B"),
        ("C. Rome", "C"),
        ("I think B.", "B"),
        ("A good pick is B", "B"),
        ("Reasoning: (A) is wrong and (C) too.\nAnswer: B", "B"),
        ("Answer: I think it is C", "C"),
        ("Answer: A because it is the largest city", "A"),
        ("B\n\nParis is the capital; A. Berlin is Germany's.", "B"),
        ("Paris", "B"),
        ("It is Paris.", "B"),
    ],
)
def test_the_chosen_letter_is_read(reply: str, letter: str) -> None:
    """Every documented way of naming a choice is read as that choice."""
    assert read_choice(reply, PARIS)[0] == letter


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("B or C", "ambiguous"),
        ("Answer: B and C", "ambiguous"),
        ("(A) and (C) both look right", "ambiguous"),
        ("Paris or Rome", "ambiguous"),
        ("E", "past the choices"),
        ("The answer is E", "past the choices"),
        ("The answer is a city", "names no choice"),
        ("I do not know", "names no choice"),
        # the prompt's list repeated without a marker: its first line is no choice of the reply's
        ("A. Berlin\nB. Paris\nC. Rome\nD. Madrid\n\nParis, I think.", "ambiguous"),
    ],
)
def test_ambiguous_or_absent_choices_are_no_answer(reply: str, why: str) -> None:
    """A reply naming two choices, none, or a letter past them chose nothing, and says why."""
    letter, how = read_choice(reply, PARIS)
    assert letter is None and why in how


def test_choice_evaluator_scores_items_by_letter(tmp_path: Path) -> None:
    """`choice` from the registry: 1 for the item's letter, 0 naming what was chosen otherwise."""
    item = load_dataset(_jsonl(tmp_path, [MMLU])).items[0]
    ev = make_evaluator("choice")
    assert isinstance(ev, ChoiceEvaluator)
    assert asyncio.run(ev.score(item, "The answer is (B)")).value == 1.0
    wrong = asyncio.run(ev.score(item, "Answer: C"))
    assert wrong.value == 0.0 and wrong.detail == "chose C (after the answer marker), expected B (Paris)"
    assert asyncio.run(ev.score(item, "B or C")).value == 0.0


@pytest.mark.parametrize("reply", ["A or B", "A is right, or maybe B", "Answer: A or C"])
def test_the_letter_a_before_a_conjunction_is_a_letter(reply: str) -> None:
    """ "A or B" names two letters: the article rule ("A good pick") does not hide the A."""
    letter, how = read_choice(reply, PARIS)
    assert letter is None and how.startswith("ambiguous")


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("Answer: B\n\nExplanation: Option A is wrong: Berlin is Germany's capital.", "B"),
        ("The answer is B.\n\nWhy not the others:\n- Choice A is Berlin\n- Choice C is Rome", "B"),
        ("The answer is option B.\n\nOption A is Germany's capital.", "B"),
        ("The correct answer is choice B", "B"),
        ("I choose option B.", "B"),
    ],
)
def test_an_option_named_in_the_explanation_is_not_the_answer(reply: str, letter: str) -> None:
    """ "Option A is wrong" after "Answer: B" names A without choosing it: only `is`, `:` or `=` after
    "option" or "choice" makes an answer marker, as documented (A, then C, was read as the answer)."""
    assert read_choice(reply, PARIS)[0] == letter


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("Ｂ", "B"),
        ("（Ｂ）", "B"),
        ("答案：Ｂ", "B"),
        ("The answer is Ｂ.", "B"),
        ("Answer: 𝐁", "B"),
        ("Ｂ and Ｃ", None),
        ("Ｐａｒｉｓ", "B"),
    ],
)
async def test_a_fullwidth_or_mathematical_letter_is_its_letter(
    tmp_path: Path, reply: str, letter: str | None
) -> None:
    """Fullwidth letters as CJK replies write them (`Ｂ`, `（Ｂ）`, `答案：Ｂ`) and mathematical ones
    (`𝐁`) are the letters they show: the right `Ｂ` scored 0 as "past the choices" or "no choice"."""
    assert read_choice(reply, PARIS)[0] == letter
    item = load_dataset(_jsonl(tmp_path, [MMLU])).items[0]
    assert (await ChoiceEvaluator().score(item, reply)).value == (1.0 if letter == "B" else 0.0)


# RACE and AGIEval: the question asks about a passage the row carries beside it
RACE = {
    "example_id": "high10001.txt",
    "article": "Tom walked to school in the rain and forgot his umbrella.",
    "answer": "B",
    "question": "What did Tom forget?",
    "options": ["His bag", "His umbrella", "His shoes", "His lunch"],
}
AGIEVAL = {
    "passage": "All birds in the park are pigeons. Ann saw a bird in the park.",
    "question": "Which must be true?",
    "options": ["(A)Ann saw a crow", "(B)Ann saw a pigeon"],
    "label": "B",
    "other": None,
}


@pytest.mark.parametrize(("row", "passage"), [(RACE, RACE["article"]), (AGIEVAL, AGIEVAL["passage"])])
def test_the_passage_a_question_asks_about_is_sent_before_it(
    tmp_path: Path, row: dict[str, Any], passage: str
) -> None:
    """RACE's `article` and AGIEval's `passage` were dropped: every item asked about a text it did
    not show, and scored near chance whatever the setup."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert item.input.startswith(f"{passage}\n\n{row['question']}\n\nA. ") and item.target == "B"


def test_a_reply_of_many_answer_markers_on_one_line_is_read_at_once(tmp_path: Path) -> None:
    """400,000 `answer: ` markers on one line (3.2 MB, under the 16 MiB a reply may be) are read in
    linear time: each marker once copied the rest of its line (a hang guard of 60 s for about one)."""
    (tmp_path / "reply.txt").write_text("answer: " * 400_000 + "none\nB")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from moa.eval.choice import read_choice\n"
        "print(read_choice((Path(sys.argv[1]) / 'reply.txt').read_text(), ['Berlin', 'Paris'])[0])\n"
    )
    assert run_python(str(probe), str(tmp_path)) == "B\n"
