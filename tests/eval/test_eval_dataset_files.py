"""Datasets as public benchmarks publish them: JSON arrays (AlpacaEval, sanitized MBPP), and what a
careless or hostile copy of such a file does."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import load_dataset

GSM8K = [
    {"question": "Janet has 3 ducks and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?", "answer": "#### 2,400"},
]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("gz", [False, True])
def test_a_json_array_file_loads_its_rows(tmp_path: Path, indent: int | None, gz: bool) -> None:
    """A `.json` file holding an array of rows (pretty-printed or on one line, gzipped or not, with a
    BOM and CRLF) loads like the JSONL file; it was refused as "invalid JSON" on its first line."""
    text = "\ufeff" + json.dumps(GSM8K, indent=indent).replace("\n", "\r\n") + "\r\n"
    path = tmp_path / ("data.json.gz" if gz else "data.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    items = load_dataset(path).items
    # rows without an id are numbered by their place: one line may hold them all
    assert [(i.id, i.target) for i in items] == [("1", "5"), ("2", "2400")]


def test_a_json_file_of_json_lines_still_loads(tmp_path: Path) -> None:
    """A `.json` file whose first character is not `[` is read as JSON lines, as before."""
    path = tmp_path / "data.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    assert [i.target for i in load_dataset(path).items] == ["5", "2400"]


def test_a_bad_element_of_a_json_array_is_a_bad_row_naming_its_line(tmp_path: Path) -> None:
    """An element that is not a good row is a bad row at the line it starts on; skip keeps the others."""
    path = tmp_path / "data.json"
    path.write_text('[\n  {"input": "a"},\n  [1, 2],\n  {"input": "b",\n   "x": NaN},\n  {"input": "c"}\n]\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == "data.json:3: row is a JSON list, not an object"
    data = load_dataset(path, on_bad_row="skip")
    assert [(i.id, i.input) for i in data.items] == [("1", "a"), ("4", "c")]
    assert [(b.line, b.reason) for b in data.bad_rows] == [
        (3, "row is a JSON list, not an object"),
        (4, "`x` must be a finite number, not nan"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[\n{"input": "a"},\n{"input": "b"},\n]\n', "4: a comma before `]`: JSON allows no trailing comma"),
        ('[\n{"input": "a"},\n{"input": "b"}\n', "3: the JSON array is never closed: `]` is missing"),
        ('[\n{"input": "a"},\n', "2: the JSON array is never closed: `]` is missing"),
        ('[\n{"input": "a"}\n{"input": "b"}\n]\n', "3: expected `,` or `]` after a row of the JSON array"),
        (
            '[\n{"input": "a"},\n{"input": "b" "t": 1}\n]\n',
            "3: invalid JSON: Expecting ',' delimiter (column 15)",
        ),
        ('[\n{"input": "a"}\n]\n]\n', "4: text after the `]` that closes the JSON array"),
        ('[\n{"input": "a", "m": ' + "[" * 5000 + "]" * 5000 + "}\n]", "2: nesting deeper than 64 levels"),
    ],
)
def test_a_broken_json_array_fails_in_one_line_naming_its_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Past a syntax error the rest of the array cannot be read: the load fails, in skip mode too,
    naming the line, before any call."""
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, on_bad_row="skip")
    assert str(info.value) == f"data.json:{problem}"


def test_invalid_utf8_in_a_json_array_names_its_line(tmp_path: Path) -> None:
    """A byte that is not UTF-8 inside the array fails the load naming its line."""
    path = tmp_path / "data.json"
    path.write_bytes(b'[\n{"input": "a"},\n{"input": "\xff"}\n]\n')
    with pytest.raises(DatasetError, match=r"^data\.json:3: line is not valid UTF-8$"):
        load_dataset(path, on_bad_row="skip")


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_csv_files_joined_with_their_headers_load_as_one(tmp_path: Path, bom: str) -> None:
    """The second file's header line (`cat a.csv b.csv`, or pandas' `to_csv(mode="a")`) is not an
    item whose prompt is "input": every setup was paid to answer it."""
    path = tmp_path / "data.csv"
    path.write_text(f"{bom}input,target\nwhat is 2+2?,4\n{bom}input,target\nwhat is 3+3?,6\n")
    assert [(i.id, i.input, i.target) for i in load_dataset(path)] == [
        ("2", "what is 2+2?", "4"),
        ("4", "what is 3+3?", "6"),
    ]


def test_a_csv_header_repeated_in_another_order_fails_the_load(tmp_path: Path) -> None:
    """A second header with its columns swapped would put every row below it under the wrong
    columns (targets sent as prompts): the load fails naming its line, in skip mode too."""
    path = tmp_path / "data.csv"
    path.write_text("input,target\nwhat is 2+2?,4\ntarget,input\n6,what is 3+3?\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path, on_bad_row="skip")
    assert str(info.value) == "data.csv:3: the CSV header appears again with its columns in another order"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"input": "Write f.", "tests": ["assert f(1) == 1", " "]}, "`tests[1]` is blank"),
        ({"input": "Write f.", "language": "javascript", "tests": "\n"}, "`tests` is blank"),
        (
            {"task_id": "HumanEval/0", "prompt": "def f():\n", "test": "", "entry_point": "f"},
            "`test` is blank",
        ),
        (
            {
                "name": "HumanEval_0_f",
                "language": "js",
                "prompt": "function f() {",
                "tests": " ",
                "stop_tokens": [],
            },
            "`tests` is blank",
        ),
    ],
)
def test_a_blank_test_is_a_bad_row(tmp_path: Path, row: dict[str, object], reason: str) -> None:
    """A blank assert line or test program runs nothing, so every answer passed it (or, for
    HumanEval, none did): a bad row naming the field, not a score."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == f"data.jsonl:1: {reason}: there is nothing to run the answers against"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"limit": 0}, "limit must be a whole number of at least 1, not 0"),
        ({"limit": -1}, "limit must be a whole number of at least 1, not -1"),
        ({"on_bad_row": "Fail"}, "on_bad_row must be `skip` or `fail`, not 'Fail'"),
    ],
)
def test_load_dataset_refuses_arguments_it_would_misread(
    tmp_path: Path, arguments: dict[str, object], problem: str
) -> None:
    """A limit of 0 was reported as an empty file, and `on_bad_row="Fail"` skipped bad rows."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "q"}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **arguments)  # type: ignore[arg-type]
    assert str(info.value) == f"{path}: {problem}"


def test_one_category_may_be_named_as_a_string(tmp_path: Path) -> None:
    """`categories="math"` is the category math, not the letters m, a, t and h."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "q", "category": "math"}\n{"input": "r", "category": "a"}\n')
    assert [i.input for i in load_dataset(path, categories="math")] == ["q"]


def test_a_humaneval_test_without_check_is_a_bad_row(tmp_path: Path) -> None:
    """MBPP's assert lines put in a HumanEval row's `test` ran, then the harness's `check(f)` failed
    every answer, right or wrong, on a NameError: a bad row naming the field instead."""
    row = {
        "task_id": "Mbpp/2",
        "prompt": "def similar_elements(a, b):\n",
        "test": "assert set(similar_elements((3, 4), (4, 5))) == {4}\n",
        "entry_point": "similar_elements",
    }
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(
        DatasetError, match=r"^data\.jsonl:1: `test` never names `check`: a HumanEval test defines"
    ):
        load_dataset(path)


@pytest.mark.parametrize(
    ("row", "held"),
    [
        ({"prompt": "Write a poem.", "completion": "..."}, "prompt"),
        ({"query": "Find $x$.", "hint": "\\boxed{2}"}, "query"),
        ({"text": "Summarise this.", "summary": "..."}, "text"),
    ],
)
def test_a_row_without_input_names_the_field_that_holds_its_prompt(
    tmp_path: Path, row: dict[str, object], held: str
) -> None:
    """Another benchmark's name for the prompt is named in the bad-row line, with what to rename it to."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == f"data.jsonl:1: row has no `input` (it holds `{held}`: name that field `input`)"


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "'\\t'")])
def test_a_csv_split_by_semicolons_or_tabs_fails_naming_the_separator(
    tmp_path: Path, sep: str, shown: str
) -> None:
    """Excel's `;`-separated CSV (or a TSV named .csv) read with commas was one cell per row, and
    every row "had no `input`": the load fails once, naming the separator."""
    path = tmp_path / "data.csv"
    path.write_text(f"input{sep}target\nwhat is 2+2?{sep}4\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path, on_bad_row="skip")
    assert (
        str(info.value)
        == f"data.csv:1: CSV header is one column split by {shown}: moa reads comma-separated files"
    )


def test_a_duplicate_id_made_by_numbering_says_so(tmp_path: Path) -> None:
    """A row without an id on line 1 and `{"id": 1}` on line 2 clash: the line says where the first
    `1` came from (it read as two rows both claiming an id the file holds once); a real repeat,
    1 and "1", says nothing more."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "a"}\n{"id": 1, "input": "b"}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == (
        "data.jsonl:2: duplicate id `1` (first on line 1; a row without an `id` is numbered by its place in the file)"
    )
    path.write_text('{"id": 1, "input": "a"}\n{"id": "1", "input": "b"}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == "data.jsonl:2: duplicate id `1` (first on line 1)"


@pytest.mark.parametrize("name", ["mmlu.csv", "mmlu.csv.gz"])
def test_a_forced_layout_reads_a_csv_file_as_csv(tmp_path: Path, name: str) -> None:
    """`dataset_format: choice` over MMLU's CSV: read as CSV; it was read as JSON lines and refused
    on line 1 ("invalid JSON")."""
    text = b"id,question,A,B,C,D,answer\nq1,Capital of France?,Lyon,Paris,Nice,Metz,B\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    item = load_dataset(path, format="choice").items[0]
    assert (item.id, item.target) == ("q1", "B")


@pytest.mark.parametrize("name", ["test-00000-of-00001.parquet", "data.parquet.gz", "sheet.xlsx"])
def test_a_parquet_or_excel_file_is_refused_saying_how_to_convert_it(tmp_path: Path, name: str) -> None:
    """A Parquet file (the Hugging Face hub's download) or a spreadsheet is refused in one line naming
    its format and the conversion, not as a first line that is not UTF-8."""
    path = tmp_path / name
    path.write_bytes(b"PAR1\x15\x04\x15\x00\xff\xfe")
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    message = str(e.value)
    assert message.startswith(f"{path}: moa reads JSON lines, CSV and JSON datasets, not .")
    assert "pd.read_" in message and "\n" not in message


@pytest.mark.parametrize("name", ["data.csv", "data.jsonl", "data.json"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_refused_in_one_line_in_both_modes(tmp_path: Path, name: str, encoding: str) -> None:
    """A UTF-16 file (Excel's "Unicode text") is one line saying so, not every row "not valid UTF-8"."""
    path = tmp_path / name
    text = "input,target\na,b\n" if name.endswith(".csv") else '{"input": "a", "target": "b"}\n'
    path.write_bytes(("\ufeff" + text).encode(encoding))
    for mode in ("fail", "skip"):
        with pytest.raises(DatasetError, match=rf"^{name}:1: the file is UTF-16 .*: save it as UTF-8$"):
            load_dataset(path, on_bad_row=mode)  # type: ignore[arg-type]


SQUAD_FILE = {
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "The Denver Broncos won Super Bowl 50.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Who won?",
                            "answers": [{"text": "Denver Broncos", "answer_start": 4}],
                        }
                    ],
                }
            ],
        }
    ],
    "version": "1.1",
}


def test_squads_file_saved_indented_is_read_as_its_questions(tmp_path: Path) -> None:
    """SQuAD's own file saved indented (one object over many lines) is read as a row per question,
    not as one bad row per line; a JSON lines file whose first row is broken is still read line by line."""
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(SQUAD_FILE, indent=2))
    (item,) = load_dataset(path).items
    assert (item.id, item.target) == ("q1", "Denver Broncos")
    broken = tmp_path / "rows.json"
    broken.write_text('{"input": "a",\n{"input": "b", "target": "x"}\n')
    data = load_dataset(broken, on_bad_row="skip")
    assert [i.input for i in data.items] == ["b"] and [b.line for b in data.bad_rows] == [1]


def test_big_bench_hards_task_file_is_read_as_its_examples(tmp_path: Path) -> None:
    """BIG-Bench Hard's task file (one indented object: `canary`, `examples` of `input` and
    `target`) is read as a generic row per example, numbered in order."""
    path = tmp_path / "boolean_expressions.json"
    examples = [
        {"input": "not ( True ) and ( True ) is", "target": "False"},
        {"input": "True and not not ( not False ) is", "target": "True"},
    ]
    path.write_text(
        json.dumps({"canary": "BENCHMARK DATA SHOULD NEVER APPEAR ...", "examples": examples}, indent=4)
    )
    data = load_dataset(path)
    assert data.layout == "generic"
    assert [(i.id, i.input, i.target) for i in data.items] == [
        ("1", examples[0]["input"], "False"),
        ("2", examples[1]["input"], "True"),
    ]


def test_a_file_wrapping_its_rows_in_one_object_says_how_to_unwrap_them(tmp_path: Path) -> None:
    """`{"data": [{input, target}, ...]}` (a tool's export) failed as a row with no `input`, with no
    word of the rows it holds: the line names the key and the one-line conversion."""
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"version": 2, "data": [{"input": "2+2?", "target": "4"}] * 3}, indent=2))
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value) == (
        "export.json:1: row has no `input`: the file is one object holding its rows under `data`; "
        "write them one per line (JSONL: jq -c '.data[]')"
    )
