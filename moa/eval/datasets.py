"""Dataset loading: generic JSONL/CSV/JSON plus the HumanEval, GSM8K, MT-Bench and MultiPL-E layouts,
and those read by a module each: MATH (``moa.eval._math_rows``), MBPP (``_mbpp_rows``), instruction
(``_instruction_rows``), multiple-choice (MMLU, ARC, TruthfulQA MC1, HellaSwag; ``_choice_rows``),
QA (NQ-open, TriviaQA, SQuAD, SimpleQA, BoolQ; ``_qa_rows``) and SVAMP/ASDiv
(``_word_problem_rows``), their fields read by ``_row_fields``.

A ``.json`` file holds either one array of rows or JSON lines (whichever its first character says).

Code items name their programming language in ``language`` (MultiPL-E rows always do; generic rows
may, with ``tests`` then either a test program or a list of assert lines in that language); the
name is stored canonical (``rs`` -> ``rust``, see ``moa.eval.languages.names``).

With ``format="auto"`` the layout is the one whose fields most of the first 32 rows
have, so a broken first row does not decide it; a row lacking a field its layout needs is a bad row
naming the fields.

A ``.gz`` file (``HumanEval.jsonl.gz``) is decompressed as it is read, under the bounds of
``moa.safe_read.iter_gzip_lines``; its format is the suffix before ``.gz``. A UTF-8 byte order mark
and CRLF line ends are accepted in every format.

Every row that cannot be read is reported with its file and 1-based line number, never dropped
silently: ``on_bad_row="fail"`` raises the first one as a ``DatasetError``; ``"skip"`` keeps going,
records it in ``Dataset.bad_rows`` and logs it.
"""

from __future__ import annotations

import itertools
import keyword
import logging
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from moa.errors import DatasetError
from moa.eval._choice_rows import ChoiceRowError, is_choice_row, read_choice_row
from moa.eval._dataset_rows import FileProblem, Row, csv_rows, json_rows, jsonl_rows
from moa.eval._instruction_rows import read_instruction_row
from moa.eval._math_rows import is_math_row, read_math_row
from moa.eval._mbpp_rows import is_mbpp_row, read_mbpp_row
from moa.eval._qa_rows import (
    QARowError,
    document_questions,
    is_qa_row,
    is_simpleqa_row,
    read_qa_row,
    unread_layout,
)
from moa.eval._row_fields import RowProblem as _BadRow
from moa.eval._row_fields import opt_str as _opt_str
from moa.eval._row_fields import prompt_text as _prompt
from moa.eval._row_fields import required_str as _required_str
from moa.eval._row_fields import str_list as _str_list
from moa.eval._row_fields import test_code as _test_code
from moa.eval._word_problem_rows import is_word_problem_row, read_word_problem_row
from moa.eval.languages.multiple import entry_of
from moa.eval.languages.names import canonical_language
from moa.eval.numeric import exact_numbers, show_number
from moa.safe_read import DATASET_MAX_BYTES, iter_gzip_lines, iter_lines, open_regular

__all__ = ["BadRow", "Dataset", "DatasetFormat", "Item", "load_dataset"]

DatasetFormat = Literal[
    "auto",
    "jsonl",
    "csv",
    "humaneval",
    "mbpp",
    "gsm8k",
    "math",
    "mtbench",
    "multiple",
    "choice",
    "instruction",
    "qa",
]
_RowKind = Literal[
    "generic",
    "humaneval",
    "mbpp",
    "gsm8k",
    "math",
    "mtbench",
    "multiple",
    "choice",
    "instruction",
    "qa",
    "word_problem",
]
#: ``Item.meta["format"]`` of a multiple-choice item
CHOICE = "choice"
#: ``Item.meta["format"]`` of a MATH item (a competition problem, its answer a LaTeX expression)
MATH = "math"
#: ``Item.meta["format"]`` of a QA item, whose accepted answers are ``Item.meta["answers"]``
QA = "qa"

_GSM8K_ANSWER = re.compile(r"####([^\n]*)")
_GENERIC_KEYS = {"id", "input", "target", "category", "tests", "meta", "language"}
_MULTIPLE_KEYS = {"name", "language", "prompt", "tests", "stop_tokens"}


class Item(BaseModel):
    """One dataset item: the prompt plus whatever an evaluator needs to score an answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Unique within the dataset: the row's ``id`` (or task/question id), else its row number."""
    input: str
    """The prompt sent to the topology."""
    target: str | None = None
    """The reference answer for reference evaluators (exact, contains, regex, numeric)."""
    category: str | None = None
    """A grouping label used for filtering and per-category reports."""
    tests: list[str] | None = None
    """Assert lines for the execution evaluator, each run and reported separately."""
    test: str | None = None
    """HumanEval: the test source that defines ``check(candidate)``. MultiPL-E and generic items in
    another language: the test program run after the answer's code."""
    entry_point: str | None = None
    """HumanEval: the name of the function passed to ``check``; MultiPL-E: the prompt's function."""
    language: str | None = None
    """The language of the item's code (``c``, ``cpp``, ``go``, ``java``, ``javascript``,
    ``python``, ``rust``, ``typescript``; another name as written, lower case): the fence the
    execution evaluator looks for and the toolchain it runs. ``None`` is Python."""
    turns: list[str] | None = None
    """MT-Bench: every user turn (``input`` is the first)."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """Anything else the row carried (unknown keys, GSM8K solution, HumanEval prompt)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read: its 1-based line number and why."""

    line: int
    reason: str


@dataclass(slots=True)
class Dataset:
    """The items read from ``source`` and the rows that were skipped."""

    items: list[Item]
    source: str
    bad_rows: list[BadRow] = field(default_factory=list)
    #: the ids rows without one took from their place in the file (a row inserted renumbers the rest)
    numbered: frozenset[str] = frozenset()
    #: the layout its rows were read as ("GSM8K", "multiple-choice", ...: detected or forced)
    layout: str = "generic"

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def _shown(value: str, width: int = 40) -> str:
    """``value`` quoted for a one-line message, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "...'"


#: the fields each layout's rows must have, in the order layouts are tried (MultiPL-E rows also
#: have a `prompt`, so they come before HumanEval)
_FIELDS: dict[_RowKind, tuple[str, ...]] = {
    "multiple": ("name", "language", "prompt", "tests"),
    "humaneval": ("task_id", "prompt", "test", "entry_point"),
    # MBPP's own rows have `text`, its sanitized ones `prompt`: recognised by `is_mbpp_row`
    "mbpp": ("task_id", "test_list"),
    "gsm8k": ("question", "answer"),
    # NQ-open, TriviaQA, SQuAD: recognised by `is_qa_row` (after GSM8K, which wins a tie of shares)
    "qa": ("question", "answer"),
    # MATH (`solution` with a boxed answer) and MATH-500 / AIME (`answer`); recognised by
    # `is_math_row`, these count towards the share of a file whose rows match no layout in full
    "math": ("problem", "answer"),
    "mtbench": ("question_id", "turns"),
    # SVAMP and ASDiv (`body`, `question`, `answer` in ASDiv's converted files): `is_word_problem_row`
    "word_problem": ("Body", "Question", "Answer"),
    # a choice row's fields differ by benchmark (``is_choice_row``); these only count towards the
    # share of a file whose rows match no layout in full
    "choice": ("question", "choices", "answer"),
    # Alpaca, AlpacaEval, Dolly: an `instruction`, its `input` (or Dolly's `context`) the material it
    # works on, whatever else the row carries (a `target` included); after the code layouts, as
    # HumanEvalPack's and InstructHumanEval's rows carry an `instruction` beside HumanEval's fields
    "instruction": ("instruction",),
    "generic": ("input",),
}
_LABELS: dict[_RowKind, str] = {
    "multiple": "MultiPL-E",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "gsm8k": "GSM8K",
    "qa": "QA",
    "math": "MATH",
    "mtbench": "MT-Bench",
    "choice": "multiple-choice",
    "instruction": "instruction",
    "word_problem": "SVAMP/ASDiv",
    "generic": "generic",
}
_FORCED: dict[str, _RowKind] = {
    "jsonl": "generic",
    "csv": "generic",
    "humaneval": "humaneval",
    "mbpp": "mbpp",
    "gsm8k": "gsm8k",
    "math": "math",
    "mtbench": "mtbench",
    "multiple": "multiple",
    "choice": "choice",
    "instruction": "instruction",
    "qa": "qa",
}
#: files of a binary format, by suffix, and the pandas reader that converts each
_BINARY_FORMATS = {
    ".parquet": "parquet",
    ".feather": "feather",
    ".xlsx": "excel",
    ".xls": "excel",
}
#: rows read to recognise the layout: enough that a few broken rows at the top cannot outvote it
_SAMPLE_ROWS = 32


def _layout_of(row: Mapping[str, Any]) -> _RowKind | None:
    """The layout whose fields ``row`` has, or None when it has none's (it is broken, not evidence)."""
    # before GSM8K: MMLU's `question` + `answer` is a choice row when it has choices
    if is_choice_row(row):
        return "choice"
    if is_simpleqa_row(row):  # before MATH: SimpleQA's `problem` + `answer` is short-form factual QA
        return "qa"
    if is_word_problem_row(row):  # before GSM8K: ASDiv's `question` + `answer` needs its `body`
        return "word_problem"
    if is_math_row(row):
        return "math"
    if is_mbpp_row(row):
        return "mbpp"
    if is_qa_row(row):  # before GSM8K: NQ-open's `answer` is a list of answers
        return "qa"
    for kind, fields in _FIELDS.items():
        if kind == "qa":  # only by `is_qa_row`: a generic row may carry question/answer as extras
            continue
        if set(fields) <= row.keys():
            # a generic row may carry question/answer as extra fields; only a `####` marks GSM8K then
            if kind == "gsm8k" and "input" in row and "####" not in str(row["answer"]):
                continue
            if kind == "math" and "input" in row:
                continue
            return kind
    return None


def _detect(rows: Iterable[Mapping[str, Any]]) -> _RowKind:
    """The layout of a file, read from its first rows: the one most rows have the fields of (a tie
    goes to the specific layout); when no row has every field of one, the layout whose fields the
    rows share most, if that is at least half of them; else generic."""
    sample = list(rows)
    votes = Counter(kind for row in sample if (kind := _layout_of(row)) is not None)
    if votes:
        return max(votes, key=lambda k: (votes[k], k != "generic"))
    if not sample:
        return "generic"
    share = {
        kind: sum(f in row for row in sample for f in fields) / (len(fields) * len(sample))
        for kind, fields in _FIELDS.items()
    }
    best = max(share, key=lambda k: share[k])
    return best if share[best] >= 0.5 else "generic"


_INPUT_LIKE = ("prompt", "instruction", "question", "problem", "text", "query")


def _check_fields(kind: _RowKind, row: Mapping[str, Any]) -> None:
    """Refuse a row that lacks a field its layout needs, naming the field and the layout."""
    if kind in ("choice", "qa", "word_problem", "math"):  # fields differ by benchmark: the reader names them
        return
    if kind == "mbpp":
        for key in ("test_list", "text" if row.get("prompt") is None else "prompt"):
            if row.get(key) is None:
                raise _BadRow(f"row has no `{key}`: an MBPP row needs `text` (or `prompt`) and `test_list`")
        return
    if kind == "instruction":
        if row.get("instruction") is None:
            raise _BadRow("row has no `instruction`: an instruction row needs `instruction`")
        return
    missing = [f for f in _FIELDS[kind] if row.get(f) is None]
    if not missing:
        return
    have = ", ".join(f"`{f}`" for f in missing)
    if kind == "generic":
        # other benchmarks' names for the prompt (AlpacaEval, MATH, MBPP): say which one to rename
        held = next((f for f in _INPUT_LIKE if isinstance(row.get(f), str)), None)
        if held:
            raise _BadRow(f"row has no {have} (it holds `{held}`: name that field `input`)")
        # a file of one object wrapping its rows (`{"data": [...]}`, as exported by many tools)
        wrapper = next((k for k, v in row.items() if _holds_rows(v)), None) if len(row) <= 3 else None
        if wrapper is not None:
            raise _BadRow(
                f"row has no {have}: the file is one object holding its rows under `{wrapper}`; "
                f"write them one per line (JSONL: jq -c '.{wrapper}[]')"
            )
        raise _BadRow(f"row has no {have}")
    need = ", ".join(f"`{f}`" for f in _FIELDS[kind])
    raise _BadRow(f"row has no {have}: a {_LABELS[kind]} row needs {need}")


def _generic(row: Mapping[str, Any], number: int) -> Item:
    text = _prompt(_required_str(row, "input"), "input")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise _BadRow("`meta` must be an object")
    meta = {**meta, **{k: v for k, v in row.items() if k not in _GENERIC_KEYS}}
    language = _language(row)
    tests = row.get("tests")
    program: str | None = None
    if language not in (None, "python") and isinstance(tests, str) and not tests.lstrip().startswith("["):
        program = _test_code(tests, "tests")  # a test program in the item's language
    lines = None if program is not None else _str_list(row, "tests")
    for i, line in enumerate(lines or ()):
        _test_code(line, f"tests[{i}]")
    return Item(
        id=_row_id("generic", row, number),
        input=text,
        target=_opt_str(row, "target", numbers=True),
        category=_opt_str(row, "category") or None,
        tests=lines,
        test=program,
        language=language,
        meta=meta,
    )


def _language(row: Mapping[str, Any]) -> str | None:
    """The row's ``language``, canonical when moa runs it (an unknown one is kept, lower case)."""
    raw = _opt_str(row, "language")
    if raw is None or not raw.strip():
        return None
    return canonical_language(raw) or raw.strip().lower()


_PY_DEF = re.compile(r"^def[ \t]+(\w+)[ \t]*\(", re.MULTILINE)


def _multiple(row: Mapping[str, Any], number: int) -> Item:
    """A MultiPL-E row: the program is ``prompt + completion + tests``, cut at ``stop_tokens``."""
    prompt = _prompt(_required_str(row, "prompt"), "prompt")
    tests = _test_code(_required_str(row, "tests"), "tests")
    language = _language(row)
    if language is None:
        raise _BadRow("`language` must be a non-empty string")
    stops = _str_list(row, "stop_tokens") or []
    if language == "python":
        defined = _PY_DEF.findall(prompt)
        entry = defined[-1] if defined else None
    else:
        entry = entry_of(prompt, language) if canonical_language(language) else None
    extra = {k: v for k, v in row.items() if k not in _MULTIPLE_KEYS}
    return Item(
        id=_required_str(row, "name"),
        input=prompt,
        test=tests,
        entry_point=entry,
        language=language,
        meta={**extra, "prompt": prompt, "stop_tokens": stops, "format": "multiple"},
    )


_CHECK = re.compile(r"\bcheck\b")


def _humaneval(row: Mapping[str, Any], number: int) -> Item:
    prompt = _prompt(_required_str(row, "prompt"), "prompt")
    entry = _required_str(row, "entry_point")
    # the test ends by calling check(<entry_point>): an empty or non-name entry point would make the
    # harness skip check(), and then every answer passes
    if not entry.isidentifier() or keyword.iskeyword(entry):
        raise _BadRow(f"`entry_point` must be a Python function name, not {_shown(entry)}")
    test = _test_code(_required_str(row, "test"), "test")
    # the harness ends with check(<entry_point>): assert lines alone (MBPP's, converted by hand) ran,
    # and then every answer, right or wrong, failed on a NameError
    if _CHECK.search(test) is None:
        raise _BadRow(
            "`test` never names `check`: a HumanEval test defines `check(candidate)`, called with the entry point"
        )
    meta: dict[str, Any] = {"prompt": prompt}
    if isinstance(row.get("canonical_solution"), str):
        meta["canonical_solution"] = row["canonical_solution"]
    return Item(
        id=_required_str(row, "task_id"),
        input=prompt,
        test=test,
        entry_point=entry,
        meta=meta,
    )


def _gsm8k(row: Mapping[str, Any], number: int) -> Item:
    question = _prompt(_required_str(row, "question"), "question")
    answer = _required_str(row, "answer")
    # the number after the last `####`; text after that line ("I am 95% sure.") is not the answer
    after = _GSM8K_ANSWER.findall(answer)
    # exactly: through a float, a 20-digit answer became 12345678901234567000 and right answers
    # scored 0 against it
    numbers = exact_numbers(after[-1]) if after else []
    if numbers and isinstance(numbers[0], float):
        raise _BadRow("`answer`: the number after `####` has too many digits to read")
    if not numbers:
        raise _BadRow(
            "`answer` has no `#### <number>` line (GSM8K's); a row whose `answer` is the answer "
            "itself is a MATH row (name its `question` `problem`) or a QA row (`dataset_format: qa`)"
        )
    return Item(
        id=_row_id("gsm8k", row, number),
        input=question,
        target=show_number(numbers[0]),
        meta={"solution": answer},
    )


def _math(row: Mapping[str, Any], number: int) -> Item:
    read = read_math_row(row)
    return Item(
        id=_row_id("math", row, number),
        input=read.input,
        target=read.target,
        category=read.category,
        meta={"format": MATH, **read.meta},
    )


def _mbpp(row: Mapping[str, Any], number: int) -> Item:
    read = read_mbpp_row(row)
    return Item(id=_row_id("mbpp", row, number), input=read.input, tests=read.tests)


def _instruction(row: Mapping[str, Any], number: int) -> Item:
    read = read_instruction_row(row)
    return Item(
        id=_row_id("instruction", row, number), input=read.input, target=read.target, category=read.category
    )


def _word_problem(row: Mapping[str, Any], number: int) -> Item:
    read = read_word_problem_row(row)
    return Item(
        id=_row_id("word_problem", row, number), input=read.input, target=read.target, category=read.category
    )


def _mtbench(row: Mapping[str, Any], number: int) -> Item:
    value = row.get("turns")
    if isinstance(value, list) and value and all(isinstance(t, Mapping) for t in value):
        # Arena-Hard's question files: each turn an object holding its `content`
        for i, turn in enumerate(value):
            if not isinstance(turn.get("content"), str):
                raise _BadRow(f"`turns[{i}]` must hold its text as `content` (a string)")
        row = {**row, "turns": [t["content"] for t in value]}
    turns = _str_list(row, "turns")
    if not turns:
        raise _BadRow("`turns` must be a non-empty list of strings")
    for i, turn in enumerate(turns):
        _prompt(turn, f"turns[{i}]")
    qid = row["question_id"]
    if isinstance(qid, bool) or not isinstance(qid, str | int):
        raise _BadRow("`question_id` must be a string or an integer")
    meta: dict[str, Any] = {}
    if row.get("reference") is not None:
        meta["reference"] = row["reference"]
    return Item(id=str(qid), input=turns[0], category=_opt_str(row, "category"), turns=turns, meta=meta)


def _choice(row: Mapping[str, Any], number: int) -> Item:
    """A multiple-choice row: the prompt letters its choices, the target is the right letter."""
    try:
        read = read_choice_row(row)
    except ChoiceRowError as e:
        raise _BadRow(str(e)) from None
    category = row.get("subject", row.get("category", row.get("High-level domain")))  # GPQA's last
    return Item(
        id=_row_id("choice", row, number),
        input=read.prompt(),
        target=read.letter,
        category=category if isinstance(category, str) and category else None,
        meta={"format": CHOICE, "choices": list(read.choices), "answer_text": read.choices[read.answer]},
    )


def _qa(row: Mapping[str, Any], number: int) -> Item:
    """A QA row: the target is its first accepted answer, every one kept in ``meta["answers"]``."""
    try:
        read = read_qa_row(row)
    except QARowError as e:
        raise _BadRow(str(e)) from None
    category = read.category or row.get("category", row.get("title"))  # SQuAD's article
    return Item(
        id=_row_id("qa", row, number),
        input=read.prompt,
        target=read.answers[0],
        category=category if isinstance(category, str) and category else None,
        meta={"format": QA, "answers": list(read.answers)},
    )


_BUILDERS = {
    "generic": _generic,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "gsm8k": _gsm8k,
    "math": _math,
    "mtbench": _mtbench,
    "multiple": _multiple,
    "choice": _choice,
    "instruction": _instruction,
    "qa": _qa,
    "word_problem": _word_problem,
}


#: where a row of each layout whose ids are optional finds its id; one without is numbered by its
#: place in the file (the builders and the duplicate check ask the same fields)
_ID_KEYS: dict[_RowKind, tuple[str, ...]] = {
    "generic": ("id",),
    "gsm8k": ("id",),
    "instruction": ("id",),
    "math": ("unique_id", "id", "ID"),
    "mbpp": ("task_id",),
    "choice": ("id", "ind", "Record ID", "question_id"),
    "qa": ("id", "question_id", "qid", "idx"),
    "word_problem": ("ID", "@ID", "id"),
}


def _id_key(kind: _RowKind, row: Mapping[str, Any]) -> str | None:
    """The field ``row``'s own id is in, or None when it has none (it is numbered)."""
    return next((k for k in _ID_KEYS[kind] if row.get(k) not in (None, "")), None)


def _row_id(kind: _RowKind, row: Mapping[str, Any], number: int) -> str:
    key = _id_key(kind, row)
    return (_opt_str(row, key, numbers=True) if key else None) or str(number)


def _holds_rows(value: object) -> bool:
    """Whether ``value`` is a list of objects (rows) holding an ``input``."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and "input" in v for v in value[:10])
    )


def _fatal_as_error(rows: Iterator[Row], name: str) -> Iterator[Row]:
    """``rows``, with a problem that spoils the whole file raised as one ``DatasetError`` line."""
    try:
        yield from rows
    except FileProblem as e:
        raise DatasetError(f"{name}:{e.line}: {e.reason}") from None


def _bbh_examples(row: Mapping[str, Any]) -> list[dict[str, Any] | str] | None:
    """BIG-Bench Hard's task file (``{"canary", "examples": [{"input", "target"}]}``): its examples,
    generic rows; None for any other row."""
    examples = row.get("examples")
    if "input" in row or not isinstance(examples, list) or not examples:
        return None
    if not all(isinstance(e, dict) and "input" in e and "target" in e for e in examples):
        return None
    return list(examples)


def _per_question(rows: Iterator[Row]) -> Iterator[Row]:
    """``rows``, with SQuAD's, TriviaQA's or BIG-Bench Hard's own file (one JSON object holding every
    question) read as a row per question, each on the object's line and numbered in the file's order."""
    for number, ordinal, row in rows:
        questions = None if isinstance(row, str) else document_questions(row)
        if questions is None and not isinstance(row, str):
            questions = _bbh_examples(row)
        if questions is None:
            yield number, ordinal, row
        else:
            yield from ((number, i, q) for i, q in enumerate(questions, start=1))


#: how many of a file's categories an error naming none of them lists
_SHOWN_CATEGORIES = 20


def load_dataset(
    path: str | Path,
    *,
    format: DatasetFormat = "auto",
    on_bad_row: Literal["skip", "fail"] = "fail",
    limit: int | None = None,
    categories: Collection[str] | None = None,
) -> Dataset:
    """Read a dataset file; raise ``DatasetError`` naming ``file:line`` for the first bad row
    (``on_bad_row="fail"``) or collect bad rows in ``Dataset.bad_rows`` (``"skip"``)."""
    source = str(path)
    name = Path(path).name
    if format not in get_args(DatasetFormat):
        raise DatasetError(f"{source}: unknown dataset format `{format}`")
    # checked like `format`: "Fail" read as skip, a limit of 0 said the file was empty, and the
    # category "math" filtered on the letters m, a, t and h
    if on_bad_row not in ("skip", "fail"):
        raise DatasetError(f"{source}: on_bad_row must be `skip` or `fail`, not {on_bad_row!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"{source}: limit must be a whole number of at least 1, not {limit!r}")
    if isinstance(categories, str):
        categories = [categories]
    # stat-checked before it is opened: a FIFO or /dev/zero named as the dataset never blocks or fills memory
    with open_regular(
        path,
        max_bytes=DATASET_MAX_BYTES,
        what="dataset",
        error=DatasetError,
        missing="dataset file not found",
    ) as f:
        suffixes = [x.lower() for x in Path(path).suffixes]
        compressed = suffixes[-1:] == [".gz"]
        read = iter_gzip_lines if compressed else iter_lines
        lines = read(f, max_bytes=DATASET_MAX_BYTES, path=path, what="dataset", error=DatasetError)
        inner = suffixes[-2:-1] if compressed else suffixes[-1:]
        if inner and inner[0] in _BINARY_FORMATS:
            # the hub's own download is Parquet: read as JSON lines, it was "line 1 is not valid UTF-8"
            raise DatasetError(
                f"{source}: moa reads JSON lines, CSV and JSON datasets, not {inner[0]}: convert it "
                f'(pandas: `pd.read_{_BINARY_FORMATS[inner[0]]}(path).to_json(out, orient="records", lines=True)`)'
            )
        # a forced layout (`dataset_format: choice` over MMLU's CSV) is read as its file is written:
        # only `jsonl` says how to read the file, and a `.csv` read as JSON lines failed on line 1
        is_csv = format == "csv" or (format != "jsonl" and inner == [".csv"])
        parse = csv_rows if is_csv else json_rows if inner == [".json"] else jsonl_rows
        rows = _per_question(_fatal_as_error(parse(lines), name))
        kind = _FORCED.get(format, "generic")
        if format == "auto":
            # a file's layout is read from its first rows, not its first row alone: one broken row at
            # the top must not make every good row below it unreadable
            head = list(itertools.islice(rows, _SAMPLE_ROWS))
            kind = _detect(row for _, _, row in head if not isinstance(row, str))
            rows = itertools.chain(head, rows)
        wanted = set(categories) if categories is not None else None
        items: list[Item] = []
        bad_rows: list[BadRow] = []
        seen: dict[str, int] = {}
        others: set[str] = set()  # categories of the rows `categories` left out, for its error
        numbered: set[str] = set()  # ids a row without one took from its place
        log = logging.getLogger(__name__)
        for number, ordinal, row in rows:
            if limit is not None and len(items) >= limit:
                break
            try:
                if isinstance(row, str):
                    raise _BadRow(row)
                if format in ("auto", "qa") and (why := unread_layout(row)) is not None:
                    raise _BadRow(why)
                _check_fields(kind, row)
                own_kind = _layout_of(row) if format == "auto" else None
                if own_kind not in (None, kind):
                    # read as the file's layout, an Alpaca row below generic ones lost its instruction
                    raise _BadRow(
                        f"row has the {_LABELS[own_kind]} layout's fields in a file read as {_LABELS[kind]} "
                        "from its first rows: give the file one layout, or name it with `dataset_format`"
                    )
                item = _BUILDERS[kind](row, ordinal)
                own = kind not in _ID_KEYS or _id_key(kind, row) is not None
                if item.id in seen:
                    # `{"input": ...}` on line 3 and `{"id": 3, ...}`: say where the second 3 came from
                    why = (
                        ""
                        if own and item.id not in numbered
                        else "; a row without an `id` is numbered by its place in the file"
                    )
                    raise _BadRow(f"duplicate id `{item.id}` (first on line {seen[item.id]}{why})")
                if not own:
                    numbered.add(item.id)
            # what a row's values can raise while they are converted: ValueError (bad text, nesting
            # past parse_json's bound, which also keeps RecursionError out); anything else is a bug
            # in moa and must show as one
            except (_BadRow, ValueError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                if on_bad_row == "fail":
                    raise DatasetError(f"{name}:{number}: {reason}") from None
                bad_rows.append(BadRow(number, reason))
                log.warning("%s:%d: skipped bad row: %s", name, number, reason)
                continue
            seen[item.id] = number
            if wanted is not None and item.category not in wanted:
                if item.category is not None and len(others) < _SHOWN_CATEGORIES:
                    others.add(item.category)
                continue
            items.append(item)
    if not items:
        if wanted is not None and seen:
            # the way out: the categories the file does have (a typo, `math` for `arithmetic`)
            held = f"its categories: {', '.join(sorted(others))}" if others else "no row has a category"
            raise DatasetError(f"{source}: no item has a category in {sorted(wanted)} ({held})")
        if not bad_rows:
            raise DatasetError(
                f"{source}: dataset has no rows (the file is empty, blank, or a CSV header alone)"
            )
        raise DatasetError(f"{source}: dataset has no readable rows ({len(bad_rows)} bad)")
    return Dataset(
        items=items, source=source, bad_rows=bad_rows, numbered=frozenset(numbered), layout=_LABELS[kind]
    )
