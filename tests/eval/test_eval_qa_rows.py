"""QA datasets with several accepted answers (NQ-open, TriviaQA, SQuAD) read in their published shapes."""

from __future__ import annotations

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


# written by hand after each benchmark's published rows (Hugging Face `nq_open`, `trivia_qa`
# rc.nocontext, `squad`)
NQ_OPEN = {"question": "where did they film hot tub time machine", "answer": ["Fernie Alpine Resort"]}
TRIVIA_QA = {
    "question": "Who was the man behind The Chipmunks?",
    "question_id": "tc_2",
    "question_source": "http://www.triviacountry.com/",
    "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
    "search_results": {
        "description": [],
        "filename": [],
        "rank": [],
        "title": [],
        "url": [],
        "search_context": [],
    },
    "answer": {
        "aliases": ["David Seville", "Ross Bagdasarian", "Ross Bagdasarian Sr."],
        "normalized_aliases": ["david seville", "ross bagdasarian", "ross bagdasarian sr"],
        "matched_wiki_entity_name": "",
        "normalized_matched_wiki_entity_name": "",
        "normalized_value": "david seville",
        "type": "WikipediaEntity",
        "value": "David Seville",
    },
}
SQUAD = {
    "id": "56be4db0acb8001400a502ec",
    "title": "Super_Bowl_50",
    "context": "Super Bowl 50 was an American football game to determine the champion of the NFL. ",
    "question": "Which NFL team represented the AFC at Super Bowl 50? ",
    "answers": {
        "text": ["Denver Broncos", "Denver Broncos", " Denver Broncos"],
        "answer_start": [177, 177, 176],
    },
}
SQUAD_QAS = {
    "id": "q1",
    "question": "Who?",
    "context": "Ann did.",
    "answers": [{"text": "Ann", "answer_start": 0}],
}
WEB_QUESTIONS = {
    "url": "http://www.freebase.com/view/en/jamaica",
    "question": "what do jamaican people speak?",
    "answers": ["Jamaican Creole English Language", "Jamaican English"],
}


@pytest.mark.parametrize(
    ("row", "item_id", "prompt", "answers", "category"),
    [
        (NQ_OPEN, "1", NQ_OPEN["question"], ["Fernie Alpine Resort"], None),
        (
            TRIVIA_QA,
            "tc_2",
            "Who was the man behind The Chipmunks?",
            ["David Seville", "Ross Bagdasarian", "Ross Bagdasarian Sr."],
            None,
        ),
        (
            SQUAD,
            "56be4db0acb8001400a502ec",
            "Super Bowl 50 was an American football game to determine the champion of the NFL.\n\n"
            "Which NFL team represented the AFC at Super Bowl 50?",
            ["Denver Broncos"],
            "Super_Bowl_50",
        ),
        (SQUAD_QAS, "q1", "Ann did.\n\nWho?", ["Ann"], None),
        (WEB_QUESTIONS, "1", WEB_QUESTIONS["question"], WEB_QUESTIONS["answers"], None),
    ],
    ids=["nq-open", "triviaqa", "squad", "squad-original", "webquestions"],
)
def test_each_published_qa_shape_is_read(
    tmp_path: Path, row: dict[str, Any], item_id: str, prompt: str, answers: list[str], category: str | None
) -> None:
    """The question (SQuAD: the context, a blank line, the question) is the prompt; the target is the
    first accepted answer and every one is kept once. These rows were refused ("`answer` must be a
    string, not list")."""
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.target, item.category) == (item_id, prompt, answers[0], category)
    assert item.meta == {"format": QA, "answers": answers}


def test_a_qa_row_keeps_nothing_else_of_the_row(tmp_path: Path) -> None:
    """TriviaQA's `rc` rows carry whole Wikipedia pages: they are not copied into every item."""
    row = {**TRIVIA_QA, "entity_pages": {"wiki_context": ["x" * 100_000]}}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert len(item.model_dump_json()) < 1000


def test_forced_qa_reads_a_single_string_answer(tmp_path: Path) -> None:
    """`dataset_format: qa` over `question` + a string `answer` (GSM8K's shape): one accepted answer."""
    rows = [{"question": "Capital of France?", "answer": "Paris"}]
    path = _jsonl(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"no `#### <number>` line"):
        load_dataset(path)  # auto: GSM8K, as before
    item = load_dataset(path, format="qa").items[0]
    assert (item.target, item.meta["answers"]) == ("Paris", ["Paris"])


def test_forced_qa_reads_a_csv_with_one_answer_per_row(tmp_path: Path) -> None:
    """A CSV of questions and their answers, forced `qa`."""
    path = tmp_path / "qa.csv"
    path.write_text("id,question,answer\nq1,Capital of France?,Paris\n")
    item = load_dataset(path, format="qa").items[0]
    assert (item.id, item.input, item.target) == ("q1", "Capital of France?", "Paris")


def test_a_generic_row_carrying_question_and_answers_stays_generic(tmp_path: Path) -> None:
    """`input` decides: a generic row with `question` and a list `answer` as extra fields is not QA."""
    row = {"input": "2+2?", "target": "4", "question": "x", "answer": ["y"]}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.input, item.target) == ("2+2?", "4") and "format" not in item.meta


def test_gsm8k_and_generic_items_are_unchanged(tmp_path: Path) -> None:
    """The QA layout leaves the items of the existing layouts as they were: a stored experiment's
    answers are neither refused as changed nor scored again."""
    gsm8k = load_dataset(_jsonl(tmp_path, [{"question": "1+1?", "answer": "so\n#### 2"}])).items[0]
    assert gsm8k.model_dump(exclude_defaults=True) == {
        "id": "1",
        "input": "1+1?",
        "target": "2",
        "meta": {"solution": "so\n#### 2"},
    }
    generic = load_dataset(_jsonl(tmp_path, [{"input": "hi", "target": "a", "answers": ["b"]}])).items[0]
    assert generic.model_dump(exclude_defaults=True) == {
        "id": "1",
        "input": "hi",
        "target": "a",
        "meta": {"answers": ["b"]},
    }


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"question": "q", "answer": []}, "`answer` is empty: a QA row needs at least one accepted answer"),
        (
            {"question": "q", "context": "c", "answers": {"text": [], "answer_start": []}},
            "`answers` is empty: a QA row needs at least one accepted answer (unanswerable questions, as in SQuAD 2.0",
        ),
        ({"question": "q", "answer": ["a", " "]}, "`answer[1]` is blank"),
        ({"question": "q", "answer": ["a", 5]}, "`answer[1]` must be a string, not int"),
        ({"question": "q", "answer": ["a", None]}, "`answer[1]` must be a string, not NoneType"),
        ({"question": "q", "answers": {"text": ["a", True]}}, "`answers.text[1]` must be a string, not bool"),
        ({"question": "q", "answers": {"text": 3}}, "`answers.text` must be a list of strings, not int"),
        ({"question": "q", "answers": [{"text": 7}]}, "`answers[0].text` must be a string, not int"),
        (
            {"question": "q", "answer": {"value": "a", "aliases": ["b", 2]}},
            "`answer.aliases[1]` must be a string",
        ),
        (
            {"question": "q", "answer": {"value": "a", "aliases": "b"}},
            "`answer.aliases` must be a list of strings",
        ),
        (
            {"question": "q", "answer": {"value": "<unk>", "aliases": [], "normalized_aliases": []}},
            "`answer.value` is `<unk>`: TriviaQA's test split holds back its answers",
        ),
        ({"question": "", "answer": ["a"]}, "`question` is blank"),
        ({"question": ["q"], "answer": ["a"]}, "`question` must be a string, not list"),
        ({"question": "q", "context": " ", "answers": ["a"]}, "`context` is blank"),
        (
            {"question": "q", "answers": {"value_is": "x"}},
            "`answers` must be a string, a list of strings, or an object",
        ),
    ],
)
def test_bad_qa_rows_name_the_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    """A row with no answer, a blank one or one that is not a string is a bad row naming the field."""
    with pytest.raises(DatasetError) as e:
        load_dataset(_jsonl(tmp_path, [NQ_OPEN, NQ_OPEN, row]))
    assert str(e.value).startswith("data.jsonl:3: ") and reason in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"question": "q"}, "row has no `answer` or `answers`: a QA row needs its accepted answers"),
        ({"answer": ["a"]}, "row has no `question`: a QA row needs `question` and `answer` or `answers`"),
        ({"question": "q", "answer": 5}, "`answer` must be a string or a list of strings, not int"),
    ],
)
def test_forced_qa_names_the_missing_field(tmp_path: Path, row: dict[str, Any], reason: str) -> None:
    with pytest.raises(DatasetError, match=rf"^data\.jsonl:1: {reason}"):
        load_dataset(_jsonl(tmp_path, [row]), format="qa")


def test_a_qa_file_is_recognised_past_broken_rows_at_the_top(tmp_path: Path) -> None:
    """Most of the first rows decide: two broken NQ rows at the top do not make it GSM8K."""
    rows = [{"question": "q0", "answer": [1]}, {"question": "q1"}, *[NQ_OPEN] * 3]
    data = load_dataset(_jsonl(tmp_path, rows), on_bad_row="skip")
    assert len(data.items) == 3
    assert [(b.line, b.reason) for b in data.bad_rows] == [
        (1, "`answer[0]` must be a string, not int"),
        (2, "row has no `answer` or `answers`: a QA row needs its accepted answers"),
    ]


def test_a_row_of_many_aliases_is_read_at_once(tmp_path: Path) -> None:
    """Duplicates are removed through a set: 200,000 aliases were 10^10 list scans (a hung load)."""
    aliases = [f"alias {i % 100_000}" for i in range(200_000)]
    row = {"question": "q", "answer": {"value": "alias 0", "aliases": aliases}}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert len(item.meta["answers"]) == 100_000 and item.meta["answers"][:2] == ["alias 0", "alias 1"]


def _document(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


SQUAD_FILE = {
    "version": "1.1",
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "The Denver Broncos won Super Bowl 50.",
                    "qas": [
                        {
                            "id": "a1",
                            "question": "Who won?",
                            "answers": [{"text": "Denver Broncos", "answer_start": 4}],
                        },
                        {
                            "id": "a2",
                            "question": "Which game?",
                            "answers": [{"text": "Super Bowl 50", "answer_start": 23}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Warsaw",
            "paragraphs": [
                {
                    "context": "Warsaw is in Poland.",
                    "qas": [
                        {
                            "id": "b1",
                            "question": "Where?",
                            "answers": [
                                {"text": "Poland", "answer_start": 13},
                                {"text": "in Poland", "answer_start": 10},
                            ],
                        }
                    ],
                }
            ],
        },
    ],
}


@pytest.mark.parametrize("name", ["dev-v1.1.json", "dev-v1.1.jsonl"])
def test_squads_own_file_is_read_as_a_row_per_question(tmp_path: Path, name: str) -> None:
    """The file the official SQuAD script reads (one object: data -> paragraphs -> qas) was refused
    as one row "row has no `input`"."""
    data = load_dataset(_document(tmp_path, name, SQUAD_FILE))
    got = [(i.id, i.input, i.meta["answers"], i.category) for i in data.items]
    assert got == [
        ("a1", "The Denver Broncos won Super Bowl 50.\n\nWho won?", ["Denver Broncos"], "Super_Bowl_50"),
        ("a2", "The Denver Broncos won Super Bowl 50.\n\nWhich game?", ["Super Bowl 50"], "Super_Bowl_50"),
        ("b1", "Warsaw is in Poland.\n\nWhere?", ["Poland", "in Poland"], "Warsaw"),
    ]


def test_an_unanswerable_question_of_squad_2_is_a_bad_row(tmp_path: Path) -> None:
    doc = {
        "version": "v2.0",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "c",
                        "qas": [
                            {
                                "id": "x",
                                "question": "q?",
                                "answers": [{"text": "c", "answer_start": 0}],
                                "is_impossible": False,
                            },
                            {
                                "id": "y",
                                "question": "r?",
                                "answers": [],
                                "plausible_answers": [{"text": "c"}],
                                "is_impossible": True,
                            },
                        ],
                    }
                ],
            }
        ],
    }
    data = load_dataset(_document(tmp_path, "dev-v2.0.json", doc), on_bad_row="skip")
    assert [i.id for i in data.items] == ["x"]
    assert [b.reason for b in data.bad_rows] == [
        "`answers` is empty: a QA row needs at least one accepted answer (unanswerable questions, as in "
        "SQuAD 2.0, cannot be scored)"
    ]


def test_triviaqas_own_file_is_read_as_a_row_per_question(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "Version": 1.0,
        "Domain": "Wikipedia",
        "Data": [
            {
                "Question": "Who was the man behind The Chipmunks?",
                "QuestionId": "tc_2",
                "Answer": {
                    "Value": "David Seville",
                    "Aliases": ["David Seville", "Ross Bagdasarian"],
                    "NormalizedAliases": ["david seville", "ross bagdasarian"],
                },
            },
        ],
    }
    item = load_dataset(_document(tmp_path, "wikipedia-dev.json", doc)).items[0]
    assert (item.id, item.input, item.meta["answers"]) == (
        "tc_2",
        "Who was the man behind The Chipmunks?",
        ["David Seville", "Ross Bagdasarian"],
    )
    del doc["Data"][0]["Answer"]
    with pytest.raises(DatasetError, match=r"`answer.value` is `<unk>`: TriviaQA's test split holds back"):
        load_dataset(_document(tmp_path, "wikipedia-test-without-answers.json", doc))


def test_a_generic_row_with_data_and_version_stays_a_row(tmp_path: Path) -> None:
    row = {"input": "hi", "data": [{"paragraphs": []}], "version": "1"}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert item.input == "hi" and item.meta["version"] == "1"


def test_a_csv_of_nq_open_rows_holds_each_list_as_json(tmp_path: Path) -> None:
    """NQ-open written as CSV: the `answer` cell is a JSON list, recognised without a forced format."""
    path = tmp_path / "nq.csv"
    path.write_text('question,answer\nwho painted the mona lisa,"[""Leonardo da Vinci"", ""Leonardo""]"\n')
    item = load_dataset(path).items[0]
    assert (item.target, item.meta["answers"]) == ("Leonardo da Vinci", ["Leonardo da Vinci", "Leonardo"])


def test_a_pandas_export_of_squad_answers_is_a_bad_row_not_one_answer(tmp_path: Path) -> None:
    """`{'text': array([...])}` (pandas' CSV of SQuAD) was taken as one accepted answer no reply matches."""
    path = tmp_path / "squad.csv"
    cell = "{'text': array(['Denver Broncos'], dtype=object), 'answer_start': array([177], dtype=int32)}"
    path.write_text(f'id,title,context,question,answers\nx,T,Some context.,Who?,"{cell}"\n')
    with pytest.raises(
        DatasetError, match=r"^squad\.csv:2: `answers` is text opening a list or an object, not valid JSON"
    ):
        load_dataset(path, format="qa")
