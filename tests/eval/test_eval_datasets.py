"""Dataset loading: formats and every bad-row case with its line number."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import re
from pathlib import Path

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import DatasetFormat, load_dataset
from moa.eval.reference import NumericEvaluator


def _jsonl(tmp_path: Path, rows: list[object], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_generic_jsonl_defaults_id_to_row_number(tmp_path: Path) -> None:
    """Rows without `id` get their 1-based row number; extra keys go to meta."""
    path = _jsonl(tmp_path, [{"input": "2+2?", "target": 4, "extra": 1}, {"input": "hi", "id": "x"}])
    ds = load_dataset(path)
    assert [i.id for i in ds.items] == ["1", "x"]
    assert ds.items[0].target == "4" and ds.items[0].meta == {"extra": 1}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"target": "x"}), "row has no `input`"),
        (json.dumps({"input": 5}), "`input` must be a string"),
        (json.dumps({"input": "q", "id": "1"}), "duplicate id `1`"),
        (json.dumps([1, 2]), "not an object"),
        (json.dumps({"input": " \n\t"}), "`input` is blank"),
    ],
)
def test_bad_row_fails_with_file_and_line(tmp_path: Path, bad: str, reason: str) -> None:
    """The first bad row raises one line naming file:line."""
    path = _jsonl(tmp_path, [{"input": "a", "id": "1"}, {"input": "b", "id": "2"}, bad])
    with pytest.raises(DatasetError, match=rf"^data\.jsonl:3: .*{reason.split('`')[0]}") as info:
        load_dataset(path)
    assert reason in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("good", "blank", "reason"),
    [
        ({"question": "q", "answer": "#### 3"}, {"question": " ", "answer": "#### 3"}, "`question` is blank"),
        ({"question_id": 1, "turns": ["q"]}, {"question_id": 9, "turns": ["q", "  "]}, "`turns[1]` is blank"),
        (
            {"task_id": "a", "prompt": "def f():", "test": "def check(c): pass", "entry_point": "f"},
            {"task_id": "b", "prompt": "\n", "test": "def check(c): pass", "entry_point": "f"},
            "`prompt` is blank",
        ),
    ],
    ids=["gsm8k", "mtbench", "humaneval"],
)
def test_a_blank_prompt_is_a_bad_row_in_every_layout(
    tmp_path: Path, good: dict[str, object], blank: dict[str, object], reason: str
) -> None:
    """A blank prompt would pay every agent to answer nothing (and the runner refuses it, which
    stopped a whole experiment at that row): a bad row naming its line instead."""
    path = _jsonl(tmp_path, [good, blank])
    with pytest.raises(DatasetError, match=rf"^data\.jsonl:2: {re.escape(reason)}$"):
        load_dataset(path)
    assert [b.line for b in load_dataset(path, on_bad_row="skip").bad_rows] == [2]


def test_non_utf8_line_reports_its_number(tmp_path: Path) -> None:
    """Undecodable bytes on line 2 are reported as line 2; skip keeps the others."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"input": "a"}\n{"input": "\xff\xfe"}\n{"input": "c"}\n')
    with pytest.raises(DatasetError, match=r"data\.jsonl:2: line is not valid UTF-8"):
        load_dataset(path)
    ds = load_dataset(path, on_bad_row="skip")
    assert [i.input for i in ds.items] == ["a", "c"]
    assert [(b.line, b.reason) for b in ds.bad_rows] == [(2, "line is not valid UTF-8")]


def test_skip_records_and_logs_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Skipped rows are in bad_rows and in the log."""
    path = _jsonl(tmp_path, [{"input": "a"}, {"nope": 1}, "", {"input": "b"}])
    ds = load_dataset(path, on_bad_row="skip")
    assert len(ds.items) == 2 and ds.bad_rows[0].line == 2
    assert "data.jsonl:2" in caplog.text


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A missing file raises DatasetError naming it."""
    with pytest.raises(DatasetError, match=r"nothere\.jsonl"):
        load_dataset(tmp_path / "nothere.jsonl")


def test_empty_dataset_raises(tmp_path: Path) -> None:
    """No good rows is an error even when skipping."""
    path = _jsonl(tmp_path, [{"x": 1}])
    with pytest.raises(DatasetError, match="no readable rows"):
        load_dataset(path, on_bad_row="skip")


def test_limit_and_categories(tmp_path: Path) -> None:
    """Categories filter, then limit caps the items."""
    rows = [{"input": str(i), "category": "m" if i % 2 else "t"} for i in range(10)]
    ds = load_dataset(_jsonl(tmp_path, rows), categories={"m"}, limit=3)
    assert [i.input for i in ds.items] == ["1", "3", "5"]


def test_a_category_no_item_has_names_the_file_s_categories(tmp_path: Path) -> None:
    """`categories: [math]` over a file whose rows say `arithmetic` said only that none matched."""
    rows = [{"input": "q", "category": "facts"}, {"input": "r", "category": "arithmetic"}, {"input": "s"}]
    path = _jsonl(tmp_path, rows)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, categories=["math"])
    assert (
        str(info.value) == f"{path}: no item has a category in ['math'] (its categories: arithmetic, facts)"
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(_jsonl(tmp_path, [{"input": "q"}]), categories=["math"])
    assert str(info.value).endswith("no item has a category in ['math'] (no row has a category)")


def test_humaneval_detected(tmp_path: Path) -> None:
    """task_id+prompt+test+entry_point rows load as HumanEval."""
    row = {"task_id": "HumanEval/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.entry_point, item.test, item.meta["prompt"]) == (
        "HumanEval/0",
        "f",
        row["test"],
        "def f():\n",
    )


def test_gsm8k_target_after_hashes(tmp_path: Path) -> None:
    """The GSM8K target is the number after #### without commas."""
    row = {"question": "How many?", "answer": "Work...\n#### 1,234"}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert item.target == "1234" and item.input == "How many?"


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("48/2 = <<48/2=24>>24\n#### 24\nI am 95% sure.", "24"),
        ("Work...\n#### $1,234.", "1234"),
        ("Loss\n#### -12", "-12"),
        ("Each is 2.25 m\n#### 2.25 m", "2.25"),
        ("#### 3\nthen again\n#### 5", "5"),
    ],
)
def test_gsm8k_target_is_the_number_after_the_last_hashes(tmp_path: Path, answer: str, target: str) -> None:
    """The GSM8K target is the number after the last ####: text after that line, `$`, a period, a unit ignored."""
    row = {"question": "How many?", "answer": answer}
    assert load_dataset(_jsonl(tmp_path, [row])).items[0].target == target


def test_gsm8k_hashes_without_a_number_is_a_bad_row(tmp_path: Path) -> None:
    """A GSM8K answer whose `####` carries no number is a bad row naming its line."""
    path = _jsonl(tmp_path, [{"question": "q", "answer": "#### none"}], name="g.jsonl")
    with pytest.raises(
        DatasetError, match=r"^g\.jsonl:1: `answer` has no `#### <number>` line \(GSM8K.s\); "
    ):
        load_dataset(path, format="gsm8k")


def test_mtbench_first_turn_is_input(tmp_path: Path) -> None:
    """MT-Bench rows use the first turn as input and keep all turns."""
    row = {"question_id": 81, "category": "writing", "turns": ["one", "two"]}
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.turns, item.category) == ("81", "one", ["one", "two"], "writing")


def test_arena_hard_turns_hold_their_text_as_content(tmp_path: Path) -> None:
    """Arena-Hard's question files write each turn as `{"content": ...}`: refused as "not a list of
    strings" before, they are MT-Bench items; a turn without its text names the turn."""
    row = {
        "question_id": "328c",
        "category": "arena-hard-v0.1",
        "cluster": "Audio",
        "turns": [{"content": "Sing."}],
    }
    item = load_dataset(_jsonl(tmp_path, [row])).items[0]
    assert (item.id, item.input, item.turns, item.category) == ("328c", "Sing.", ["Sing."], "arena-hard-v0.1")
    bad = {**row, "question_id": "x", "turns": [{"content": "a"}, {"text": "b"}]}
    with pytest.raises(DatasetError, match=r":2: `turns\[1\]` must hold its text as `content` \(a string\)$"):
        load_dataset(_jsonl(tmp_path, [row, bad]))


def test_csv_with_multiline_cell_and_bad_row(tmp_path: Path) -> None:
    """CSV rows report the line they start on; quoted cells may span lines."""
    path = tmp_path / "data.csv"
    path.write_text('id,input,target,tests\na,"two\nlines",x,"[""assert 1""]"\nb,q\nc,ok,y,\n')
    ds = load_dataset(path, on_bad_row="skip")
    assert [i.id for i in ds.items] == ["a", "c"]
    assert ds.items[0].input == "two\nlines" and ds.items[0].tests == ["assert 1"]
    assert ds.bad_rows[0].line == 4


@pytest.mark.parametrize("entry", ["", "  ", "def", "add(a)", "1f"])
def test_humaneval_entry_point_must_be_a_function_name(tmp_path: Path, entry: str) -> None:
    """A HumanEval row whose entry_point is not a Python name is a bad row naming its line and the field."""
    good = {"task_id": "H/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}
    path = _jsonl(tmp_path, [good, {**good, "task_id": "H/1", "entry_point": entry}], name="he.jsonl")
    with pytest.raises(DatasetError, match=r"^he\.jsonl:2: `entry_point` must be a Python function name"):
        load_dataset(path)
    assert [i.id for i in load_dataset(path, on_bad_row="skip")] == ["H/0"]


def test_gsm8k_number_of_too_many_digits_is_a_bad_row(tmp_path: Path) -> None:
    """A GSM8K answer of 701 digits (past the 600 read) is a bad row naming its line, in fail and
    in skip mode."""
    rows = [{"question": "q1", "answer": "x\n#### 18"}, {"question": "q2", "answer": "x\n#### 1" + "0" * 700}]
    path = _jsonl(tmp_path, rows, name="g.jsonl")
    with pytest.raises(
        DatasetError, match=r"^g\.jsonl:2: `answer`: the number after `####` has too many digits"
    ):
        load_dataset(path)
    ds = load_dataset(path, on_bad_row="skip")
    assert [i.target for i in ds] == ["18"] and [b.line for b in ds.bad_rows] == [2]


def test_gsm8k_targets_are_exact_and_right_answers_score(tmp_path: Path) -> None:
    """A 20-digit or 401-digit GSM8K answer is the target digit for digit (through a float, the
    20-digit one became 12345678901234567000 and the right answer scored 0)."""
    big = "1" + "0" * 400
    rows = [
        {"question": "q1", "answer": "x\n#### 12,345,678,901,234,567,890"},
        {"question": "q2", "answer": f"x\n#### {big}"},
    ]
    ds = load_dataset(_jsonl(tmp_path, rows, name="g.jsonl"))
    assert [i.target for i in ds] == ["12345678901234567890", big]
    evaluator = NumericEvaluator()
    for item in ds:
        assert asyncio.run(evaluator.score(item, f"The answer is {item.target}.")).value == 1.0


def test_csv_cell_over_the_csv_module_default_limit_loads(tmp_path: Path) -> None:
    """A 200,000-character CSV cell loads (the csv module's 128 KiB default is raised for the read only)."""
    limit_before = csv.field_size_limit()
    path = tmp_path / "data.csv"
    path.write_text("id,input,target\nok1,2+2?,4\nhuge," + "x" * 200_000 + ",1\nok2,3+3?,6\n")
    ds = load_dataset(path)
    assert [(i.id, len(i.input)) for i in ds] == [("ok1", 4), ("huge", 200_000), ("ok2", 4)]
    assert csv.field_size_limit() == limit_before


@pytest.mark.parametrize(
    ("record", "line", "reason"),
    [
        ('b,"open,x\nc,ok,y\n', 3, "a quoted cell is never closed"),
        ('b,"q"x,y\nc,ok,y\n', 3, "text after the closing quote of a cell"),
        ("b,q,y\rc,ok,y\n", 3, r"a carriage return (\r) outside a quoted cell"),
    ],
)
def test_csv_record_the_csv_module_refuses_is_a_bad_row(
    tmp_path: Path, record: str, line: int, reason: str
) -> None:
    """A CSV record the csv module refuses is a bad row naming its line, skippable, and never swallows later rows."""
    path = tmp_path / "data.csv"
    path.write_bytes(("id,input,target\na,ok,x\n" + record).encode())
    with pytest.raises(DatasetError, match=rf"^data\.csv:{line}: ") as info:
        load_dataset(path)
    assert reason in str(info.value)
    ds = load_dataset(path, on_bad_row="skip")
    assert [b.line for b in ds.bad_rows] == [line] and "a" in [i.id for i in ds]


def test_csv_quote_left_open_in_the_last_column_is_not_a_good_row(tmp_path: Path) -> None:
    """An open quote in the last column is a bad row, not a good row whose target swallowed the file."""
    path = tmp_path / "data.csv"
    path.write_text('id,input,target\na,q,"4\nb,q,5\nc,q,6\n')
    with pytest.raises(DatasetError, match=r"^data\.csv:2: a quoted cell is never closed"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("id,input,input\na,q,r\n", "data.csv:1: CSV header repeats the column `input`"),
        (
            'id,"input\n',
            "data.csv:1: CSV header: a quoted cell is never closed: the rest of the file is inside it",
        ),
    ],
)
def test_bad_csv_header_fails_in_skip_mode_too(tmp_path: Path, text: str, reason: str) -> None:
    """A CSV header that spoils every row (a repeated column, an open quote) is one DatasetError even when skipping."""
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=rf"^{re.escape(reason)}$"):
        load_dataset(path, on_bad_row="skip")


def test_gsm8k_file_whose_first_row_lacks_hashes_is_still_gsm8k(tmp_path: Path) -> None:
    """A GSM8K file whose first row has no `####` loads the 5 good rows; the first is the only bad row."""
    rows = [{"question": "bad", "answer": "no marker"}] + [
        {"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(1, 6)
    ]
    path = _jsonl(tmp_path, rows, name="g.jsonl")
    with pytest.raises(
        DatasetError, match=r"^g\.jsonl:1: `answer` has no `#### <number>` line \(GSM8K.s\); "
    ):
        load_dataset(path)
    ds = load_dataset(path, on_bad_row="skip")
    assert [i.target for i in ds] == ["1", "2", "3", "4", "5"] and [b.line for b in ds.bad_rows] == [1]


def test_humaneval_file_whose_first_row_lacks_test_names_the_missing_field(tmp_path: Path) -> None:
    """A HumanEval file whose first row has no `test` stays HumanEval; the error names the field it lacks."""
    good = {"task_id": "H/1", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}
    broken = {k: v for k, v in good.items() if k != "test"} | {"task_id": "H/0"}
    path = _jsonl(tmp_path, [broken, good, {**good, "task_id": "H/2"}], name="he.jsonl")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == (
        "he.jsonl:1: row has no `test`: a HumanEval row needs `task_id`, `prompt`, `test`, `entry_point`"
    )
    assert [i.id for i in load_dataset(path, on_bad_row="skip")] == ["H/1", "H/2"]


def test_layout_is_recognised_when_no_row_is_whole(tmp_path: Path) -> None:
    """Rows that all lack one HumanEval field are read as HumanEval (most of its fields), not as generic."""
    row = {"task_id": "H/0", "prompt": "def f():\n", "entry_point": "f"}
    with pytest.raises(DatasetError, match=r"^he\.jsonl:1: row has no `test`: a HumanEval row needs"):
        load_dataset(_jsonl(tmp_path, [row, {**row, "task_id": "H/1"}], name="he.jsonl"))


def test_forced_mtbench_row_without_question_id_is_a_bad_row(tmp_path: Path) -> None:
    """format="mtbench" and a row with no `question_id`: a bad row naming the field, not a KeyError."""
    path = _jsonl(tmp_path, [{"question_id": 1, "turns": ["a"]}, {"turns": ["b"]}], name="mt.jsonl")
    with pytest.raises(DatasetError, match=r"^mt\.jsonl:2: row has no `question_id`: a MT-Bench row needs"):
        load_dataset(path, format="mtbench")


def test_generic_file_whose_first_row_looks_like_gsm8k_stays_generic(tmp_path: Path) -> None:
    """A stray GSM8K-shaped first row does not turn the generic rows below it into bad rows."""
    rows = [{"question": "q", "answer": "#### 3"}, {"input": "a"}, {"input": "b"}]
    ds = load_dataset(_jsonl(tmp_path, rows), on_bad_row="skip")
    assert [i.input for i in ds] == ["a", "b"] and [(b.line, b.reason) for b in ds.bad_rows] == [
        (1, "row has no `input` (it holds `question`: name that field `input`)")
    ]


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("0.00001", "0.00001"),
        ("1e20", "100000000000000000000"),
        ("-2.5E-7", "-0.00000025"),
        ("1.5e16", "15000000000000000"),
        ("0.1", "0.1"),
    ],
)
def test_numeric_json_target_is_written_out_in_full(tmp_path: Path, raw: str, target: str) -> None:
    """A JSON number target is stored without an exponent, so the numeric evaluator reads the same value."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "q", "target": ' + raw + "}\n")
    assert load_dataset(path).items[0].target == target


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("NaN", "`target` must be a finite number, not nan"),
        ("Infinity", "`target` must be a finite number, not inf"),
        ("1e400", "`target` must be a finite number, not inf"),
        ("true", "`target` must be a string or a number, not bool"),
    ],
)
def test_non_finite_or_bool_target_is_a_bad_row(tmp_path: Path, raw: str, reason: str) -> None:
    """NaN, infinity and true/false targets are bad rows naming their line, not a text no answer matches."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "a"}\n{"input": "q", "target": ' + raw + "}\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == f"data.jsonl:2: {reason}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"input": "q", "difficulty": NaN}', "`difficulty` must be a finite number, not nan"),
        ('{"input": "q", "meta": {"w": [1, -Infinity]}}', "`meta.w[1]` must be a finite number, not -inf"),
        (
            '{"question_id": 1, "turns": ["q"], "reference": [1e400]}',
            "`reference[0]` must be a finite number, not inf",
        ),
    ],
)
def test_a_non_finite_number_anywhere_in_a_row_is_a_bad_row(tmp_path: Path, line: str, reason: str) -> None:
    """NaN or infinity in any field is a bad row naming it: NaN never equals its stored copy, so the
    item counted as changed and its answers were scored again (a judge paid again) on every resume."""
    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == f"data.jsonl:1: {reason}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"input": "q", "target": "4", "target": "5"}', "key `target` appears twice in one object"),
        ('{"input": "q", "meta": {"a": 1, "a": 2}}', "key `a` appears twice in one object"),
        ('{"input": "\\ud800"}', "a string holds a lone UTF-16 surrogate ('\\ud800'), which is not text"),
        ('{"input": "a"}\r{"input": "b"}', r"two rows on one line, split by a carriage return (\r)"),
        ('{"input": "q", "target": ' + "9" * 5000 + "}", "an integer of more than 4300 digits"),
    ],
)
def test_hostile_jsonl_row_is_a_bad_row_naming_its_line(tmp_path: Path, line: str, reason: str) -> None:
    """Duplicate keys, a lone surrogate, rows split by a bare CR, a 5000-digit integer: one bad-row line each."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(('{"input": "ok"}\n' + line + "\n").encode("utf-8", "surrogatepass"))
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"data.jsonl:2: {reason}")
    assert [i.input for i in load_dataset(path, on_bad_row="skip")] == ["ok"]


def test_lone_surrogate_in_a_csv_tests_cell_is_a_bad_row(tmp_path: Path) -> None:
    """A CSV `tests` cell whose JSON holds a lone surrogate is a bad row, not an item the store cannot write."""
    path = tmp_path / "data.csv"
    path.write_text('input,tests\na,"[""\\ud800""]"\n')
    with pytest.raises(DatasetError, match=r"^data\.csv:2: a string holds a lone UTF-16 surrogate"):
        load_dataset(path)


def test_byte_order_mark_on_a_later_jsonl_line_is_ignored(tmp_path: Path) -> None:
    """Two JSONL files joined with `cat`, each with a byte order mark, load as one."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"input": "a"}\n\xef\xbb\xbf{"input": "b"}\n')
    assert [i.input for i in load_dataset(path)] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "text"), [("e.jsonl", ""), ("b.jsonl", "\n  \n\r\n"), ("h.csv", "id,input\n")]
)
def test_file_without_rows_says_so(tmp_path: Path, name: str, text: str) -> None:
    """An empty file, one of blank lines or a CSV header alone is one line saying the file has no rows."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=rf"{re.escape(name)}: dataset has no rows \(the file is empty"):
        load_dataset(path, on_bad_row="skip")


HOSTILE_ROWS = [
    "[[[1]]]",
    "5",
    "null",
    '{"input": "a", "meta": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"question_id": 1.5, "turns": [["x"]]}',
    '{"task_id": 1, "prompt": "p", "test": "t", "entry_point": "f"}',
    '{"name": "n", "language": 5, "prompt": "p", "tests": "t", "stop_tokens": "[[["}',
    '{"question": "q", "answer": [["#### 5"]]}',
    '{"turns": ["b"]}',
    '{"input": null, "id": NaN}',
]


FORMATS: list[DatasetFormat] = ["auto", "jsonl", "humaneval", "gsm8k", "mtbench", "multiple", "qa"]


def test_hostile_rows_in_every_format_are_bad_rows(tmp_path: Path) -> None:
    """Every hostile row, read as every format, is a bad row naming its line: nothing else escapes."""
    for (index, row), format in itertools.product(enumerate(HOSTILE_ROWS), FORMATS):
        path = tmp_path / f"d{index}.jsonl"
        path.write_text(row + "\n")
        with pytest.raises(DatasetError, match=rf"^d{index}\.jsonl:1: "):
            load_dataset(path, format=format)
        with pytest.raises(DatasetError, match=r"dataset has no readable rows \(1 bad\)$"):
            load_dataset(path, format=format, on_bad_row="skip")
