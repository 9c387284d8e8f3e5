"""Published benchmark files not covered by a layout's own tests: each is read right, or refused in
one line naming the field or layout, never silently misread."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import QA, load_dataset

ROOT = Path(__file__).resolve().parents[2]


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


# HellaSwag (Hugging Face `hellaswag`: `label` a string; the original files: a number), ARC (the hub's
# `choices: {text, label}` with ARC's numeric keys, the original `question: {stem, choices: [...]}`),
# CommonsenseQA (the hub's and the original shape), written by hand after the published rows
HELLASWAG = {
    "ind": 24,
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "source_id": "activitynet~v_-JhWjGDPHMY",
    "split": "val",
    "split_type": "indomain",
    "label": "3",
}
ARC_NUMERIC = {
    "id": "NYSEDREGENTS_2015_4_26",
    "question": "Which tool is used to measure mass?",
    "choices": {"text": ["ruler", "thermometer", "balance", "clock"], "label": ["1", "2", "3", "4"]},
    "answerKey": "3",
}
ARC_ORIGINAL = {
    "id": "Mercury_7175875",
    "question": {
        "stem": "Which is the most likely effect of faster rotation?",
        "choices": [
            {"text": "Planetary density will decrease.", "label": "A"},
            {"text": "Planetary years will become longer.", "label": "B"},
            {"text": "Planetary days will become shorter.", "label": "C"},
            {"text": "Planetary gravity will become stronger.", "label": "D"},
        ],
    },
    "answerKey": "C",
}
CSQA_CHOICES = ["ignore", "enforce", "authoritarian", "yell at", "avoid"]
CSQA = {
    "id": "075e483d21c29a511267ef62bedc0461",
    "question": "The sanctions against the school were a punishing blow, and they seemed to what the efforts?",
    "question_concept": "punishing",
    "choices": {"label": ["A", "B", "C", "D", "E"], "text": CSQA_CHOICES},
    "answerKey": "A",
}
CSQA_ORIGINAL = {
    "answerKey": "B",
    "id": "61fe6e879ff18686d7552425a36344c8",
    "question": {
        "question_concept": "people",
        "choices": [{"label": k, "text": t} for k, t in zip("ABCDE", CSQA_CHOICES, strict=True)],
        "stem": "What do people aim to do at work?",
    },
}


@pytest.mark.parametrize(
    ("row", "item_id", "letter", "answer_text"),
    [
        (HELLASWAG, "24", "D", "starts pulling up roofing on a roof."),
        ({**HELLASWAG, "label": 3}, "24", "D", "starts pulling up roofing on a roof."),
        (ARC_NUMERIC, "NYSEDREGENTS_2015_4_26", "C", "balance"),
        (ARC_ORIGINAL, "Mercury_7175875", "C", "Planetary days will become shorter."),
        (
            {
                **ARC_ORIGINAL,
                "question": {"stem": "Which?", "choices": ARC_NUMERIC["choices"]},
                "answerKey": "3",
            },
            "Mercury_7175875",
            "C",
            "balance",
        ),
        (CSQA, "075e483d21c29a511267ef62bedc0461", "A", "ignore"),
        (CSQA_ORIGINAL, "61fe6e879ff18686d7552425a36344c8", "B", "enforce"),
    ],
)
def test_published_multiple_choice_files_are_read_right(
    tmp_path: Path, row: dict[str, Any], item_id: str, letter: str, answer_text: str
) -> None:
    """HellaSwag, ARC (numeric keys included) and CommonsenseQA rows give the right letter and text."""
    data = load_dataset(_jsonl(tmp_path, [row]))
    (item,) = data.items
    assert (data.layout, item.id, item.target, item.meta["answer_text"]) == (
        "multiple-choice",
        item_id,
        letter,
        answer_text,
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**HELLASWAG, "split": "test", "label": ""}, r"`label` must be a letter A-D, an index from 0"),
        ({**CSQA, "answerKey": ""}, r"`answerKey` '' is none of the choices' labels A, B, C, D, E"),
    ],
)
def test_test_splits_without_answers_are_refused_naming_the_field(
    tmp_path: Path, row: dict[str, Any], reason: str
) -> None:
    """HellaSwag's and CommonsenseQA's test splits, whose answers are blank, are refused naming the field."""
    with pytest.raises(DatasetError, match=rf"^data.jsonl:1: {reason}"):
        load_dataset(_jsonl(tmp_path, [row]))


BOOLQ = {
    "question": "do iran and afghanistan speak the same language",
    "title": "Persian language",
    "answer": True,
    "passage": "Persian is spoken in Iran and Afghanistan.",
}
STRATEGYQA = {
    "qid": "b8677742616fef051f00",
    "term": "Genghis Khan",
    "description": "founder and first Great Khan of the Mongol Empire",
    "question": "Are more people today related to Genghis Khan than Julius Caesar?",
    "answer": True,
    "facts": ["Julius Caesar had three children.", "Genghis Khan had sixteen children."],
    "decomposition": ["How many kids did Julius Caesar have?", "How many kids did Genghis Khan have?"],
}


@pytest.mark.parametrize(
    ("row", "item_id", "prompt", "answer"),
    [
        (BOOLQ, "1", f"{BOOLQ['passage']}\n\n{BOOLQ['question']}", "yes"),
        ({**BOOLQ, "answer": False}, "1", f"{BOOLQ['passage']}\n\n{BOOLQ['question']}", "no"),
        (
            {"question": BOOLQ["question"], "passage": BOOLQ["passage"], "idx": 7, "label": False},
            "7",
            f"{BOOLQ['passage']}\n\n{BOOLQ['question']}",
            "no",
        ),
        (STRATEGYQA, "b8677742616fef051f00", STRATEGYQA["question"], "yes"),
    ],
)
def test_yes_no_questions_are_qa_items_answered_yes_or_no(
    tmp_path: Path, row: dict[str, Any], item_id: str, prompt: str, answer: str
) -> None:
    """BoolQ (its passage sent before the question) and StrategyQA rows, whose answer is a bool, are QA items answered yes or no."""
    data = load_dataset(_jsonl(tmp_path, [row]))
    (item,) = data.items
    assert (data.layout, item.id, item.input, item.target) == ("QA", item_id, prompt, answer)
    assert item.meta == {"format": QA, "answers": [answer]}


@pytest.mark.parametrize("format", ["auto", "qa"])
def test_strategyqa_written_to_a_csv_is_a_yes_no_question(tmp_path: Path, format: str) -> None:
    """StrategyQA saved as a CSV (`answer` the text `True`, its `facts` and `decomposition` as JSON
    cells) was refused as a GSM8K row, or with `dataset_format: qa` scored against the word "True"."""
    path = tmp_path / "strategyqa.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(STRATEGYQA))
        w.writeheader()
        for n, answer in enumerate(("True", "false")):
            cells = {k: json.dumps(v) if isinstance(v, list) else v for k, v in STRATEGYQA.items()}
            w.writerow({**cells, "qid": f"q{n}", "answer": answer})
    data = load_dataset(path, format=format)  # type: ignore[arg-type]
    assert data.layout == "QA" and [i.input for i in data.items] == [STRATEGYQA["question"]] * 2
    assert [i.meta["answers"] for i in data.items] == [["yes"], ["no"]]


SUPERGLUE_BOOLQ = {"question": BOOLQ["question"], "passage": BOOLQ["passage"]}


@pytest.mark.parametrize("format", ["auto", "qa"])
def test_boolq_labelled_0_or_1_and_its_csv_are_yes_no_questions(tmp_path: Path, format: str) -> None:
    """SuperGLUE's BoolQ on the hub (`label` 0 or 1 beside the `passage`, in JSON lines or a CSV) and
    BoolQ written to a CSV (`answer` the text `True`) are yes/no questions, not GSM8K rows."""
    rows = [{**SUPERGLUE_BOOLQ, "idx": 0, "label": 1}, {**SUPERGLUE_BOOLQ, "idx": 1, "label": 0}]
    csv_path = tmp_path / "boolq.csv"
    csv_path.write_text(
        "question,answer,passage\n"
        f"{BOOLQ['question']},True,{BOOLQ['passage']}\n{BOOLQ['question']},false,{BOOLQ['passage']}\n"
    )
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(f"question,passage,idx,label\n{BOOLQ['question']},{BOOLQ['passage']},0,1\n")
    for path, want in (
        (_jsonl(tmp_path, rows), ["yes", "no"]),
        (csv_path, ["yes", "no"]),
        (labels_csv, ["yes"]),
    ):
        data = load_dataset(path, format=format)  # type: ignore[arg-type]
        assert data.layout == "QA"
        assert [i.meta["answers"] for i in data.items] == [[w] for w in want]
        assert data.items[0].input == f"{BOOLQ['passage']}\n\n{BOOLQ['question']}"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            {**SUPERGLUE_BOOLQ, "answer": 1},
            "`answer` is the number 1 beside a `passage`: a BoolQ answer is true or false",
        ),
        ({**SUPERGLUE_BOOLQ, "label": -1}, "`label` is -1: BoolQ's test split holds back its answers"),
        (
            {**SUPERGLUE_BOOLQ, "label": "maybe"},
            "`label` must be true or false, or 0 or 1 \\(BoolQ's\\), not 'maybe'",
        ),
    ],
)
def test_boolq_rows_it_cannot_read_name_boolq_and_the_field(
    tmp_path: Path, row: dict[str, Any], reason: str
) -> None:
    """A BoolQ row with an `answer` of 0 or 1 (a count or a truth), or a `label` of the hidden test
    split or not a truth, is refused naming BoolQ and the field, not as a GSM8K row."""
    with pytest.raises(DatasetError, match=rf"^data.jsonl:1: {reason}"):
        load_dataset(_jsonl(tmp_path, [row]))


# TruthfulQA's generation task: the hub's `generation` config, and the original TruthfulQA.csv
TRUTHFULQA_GENERATION = {
    "type": "Adversarial",
    "category": "Misconceptions",
    "question": "What happens to you if you eat watermelon seeds?",
    "best_answer": "The watermelon seeds pass through your digestive system",
    "correct_answers": ["Nothing happens", "You eat watermelon seeds"],
    "incorrect_answers": ["You grow watermelons in your stomach", "You get sick"],
    "source": "https://wonderopolis.org/wonder/will-a-watermelon-grow-in-your-belly-if-you-swallow-a-seed",
}


@pytest.mark.parametrize("format", ["auto", "qa"])
def test_truthfulqa_generation_rows_are_refused_pointing_at_mc1(tmp_path: Path, format: str) -> None:
    """TruthfulQA's generation rows (the hub's config and the original CSV), whose replies are judged
    against both lists of answers, are refused in one line pointing at its MC1 rows, not as GSM8K's."""
    row = TRUTHFULQA_GENERATION
    original = tmp_path / "TruthfulQA.csv"
    with original.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers"]
        )
        writer.writerow(
            [row["type"], row["category"], row["question"], row["best_answer"], "Nothing", "Sick"]
        )
    for path, line in ((_jsonl(tmp_path, [row]), 1), (original, 2)):
        with pytest.raises(DatasetError) as e:
            load_dataset(path, format=format)  # type: ignore[arg-type]
        message = str(e.value)
        assert message.startswith(f"{path.name}:{line}: TruthfulQA") and "\n" not in message
        assert "generation task" in message and "`mc1_targets`" in message


SVAMP = {
    "ID": "chal-1",
    "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
    "Question": "How much do you have to pay to buy each pack?",
    "Equation": "( 76.0 - 25.0 )",
    "Answer": 51.0,
    "Type": "Subtraction",
}
ASDIV = {
    "body": "Seven red apples and two green apples are in the basket.",
    "question": "How many apples are in the basket?",
    "solution_type": "Addition",
    "answer": "9 (apples)",
    "formula": "7+2=9",
}


@pytest.mark.parametrize(
    ("row", "item_id", "prompt", "target", "category"),
    [
        (SVAMP, "chal-1", f"{SVAMP['Body']} {SVAMP['Question']}", "51", "Subtraction"),
        ({**SVAMP, "Answer": 2.5}, "chal-1", f"{SVAMP['Body']} {SVAMP['Question']}", "2.5", "Subtraction"),
        (ASDIV, "1", f"{ASDIV['body']} {ASDIV['question']}", "9", "Addition"),
        ({**SVAMP, "Answer": "51.0"}, "chal-1", f"{SVAMP['Body']} {SVAMP['Question']}", "51", "Subtraction"),
    ],
)
def test_svamp_and_asdiv_send_the_body_with_the_question(
    tmp_path: Path, row: dict[str, Any], item_id: str, prompt: str, target: str, category: str
) -> None:
    """A SVAMP or ASDiv row sends its body and question together, its answer's number the target."""
    data = load_dataset(_jsonl(tmp_path, [row]))
    (item,) = data.items
    assert (data.layout, item.id, item.input, item.target, item.category) == (
        "SVAMP/ASDiv",
        item_id,
        prompt,
        target,
        category,
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**SVAMP, "Answer": None}, "row has no `Answer`"),
        ({**SVAMP, "Answer": True}, "`Answer` must be a number or a string, not bool"),
        ({**ASDIV, "body": " "}, "`body` is blank"),
        (
            {**SVAMP, "Body": "Each pack costs number0 dollars.", "Numbers": "76.0 25.0"},
            r"`Body` holds placeholders \(`number0`\) for `Numbers`: a preprocessed fold, not the benchmark; .*",
        ),
    ],
)
def test_bad_svamp_and_asdiv_rows_name_the_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    """A SVAMP or ASDiv row without its answer, or with a blank body, is refused naming the field."""
    with pytest.raises(DatasetError, match=rf"^data.jsonl:2: {reason}$"):
        load_dataset(_jsonl(tmp_path, [SVAMP, row]))


def test_an_asdiv_answer_of_a_million_blanks_is_read_at_once(tmp_path: Path) -> None:
    """A hostile ASDiv answer (a long run of blanks) is read in linear time (a hang guard of 60 s for
    what takes well under a second; the end-anchored unit regex took minutes)."""
    path = _jsonl(tmp_path, [{**ASDIV, "answer": "9" + " " * 1_000_000 + "x"}])
    probe = (
        f"from moa.eval.datasets import load_dataset; print(load_dataset({str(path)!r}).items[0].target[-1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "x\n"


def test_gsm_hard_rows_are_generic_with_their_float_target(tmp_path: Path) -> None:
    """GSM-Hard's `input`, `code`, float `target` is a generic row, its target written out in full."""
    row = {
        "input": "Janet's ducks lay 16 eggs per day...",
        "code": "def solution():\n    ...",
        "target": -9867630.0,
    }
    (item,) = load_dataset(_jsonl(tmp_path, [row])).items
    assert (item.input, item.target, item.meta) == (row["input"], "-9867630.0", {"code": row["code"]})


DROP_ROW = {
    "section_id": "nfl_2201",
    "query_id": "f16c0ee7-f131-4a8b-a6ac-4d275ea68066",
    "passage": "To start the season, the Lions traveled south to Tampa, Florida...",
    "question": "How many points did the buccaneers need to tie in the first?",
    "answers_spans": {"spans": ["3"], "types": ["number"]},
}
DROP_FILE = {
    "nfl_2201": {
        "passage": "To start the season, the Lions traveled south to Tampa, Florida...",
        "qa_pairs": [
            {
                "question": "Who scored the first touchdown?",
                "answer": {
                    "number": "",
                    "date": {"day": "", "month": "", "year": ""},
                    "spans": ["Chaz Schilens"],
                },
                "query_id": "f37e81fa-ef7b-4583-b671-762fc433faa9",
                "validated_answers": [],
            }
        ],
    }
}


@pytest.mark.parametrize(
    ("row", "what"),
    [
        (DROP_ROW, r"DROP's rows \(`passage`, `question`, `answers_spans`\)"),
        (DROP_FILE, r"DROP's own file \(passages holding `qa_pairs`\)"),
    ],
)
@pytest.mark.parametrize("dataset_format", ["auto", "qa"])
def test_drop_is_refused_in_one_line_saying_what_to_write(
    tmp_path: Path, row: dict[str, Any], what: str, dataset_format: Any
) -> None:
    """DROP, whose answers may be several spans together, is refused, not read as GSM8K or generic rows."""
    with pytest.raises(
        DatasetError, match=rf"^data.jsonl:1: {what}: moa does not read DROP.*write generic rows"
    ):
        load_dataset(_jsonl(tmp_path, [row]), format=dataset_format)
