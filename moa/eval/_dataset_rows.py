"""A dataset file's lines read as rows: ``(1-based line, ordinal, row)``, or ``(line, ordinal,
problem)`` for a line that cannot be one; the ordinal is a row's id when it has none (its line, or
its place in a JSON array, whose rows may share a line).

The layer under ``moa.eval.datasets``: it knows UTF-8, byte order marks, line ends, JSON and CSV,
and nothing of what a row's fields mean. A problem that spoils every later row (a CSV header) raises
``FileProblem`` instead.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from moa.safe_read import DATASET_MAX_BYTES, MAX_DEPTH, DuplicateKey, lone_surrogate, parse_json

__all__ = ["FileProblem", "Row", "csv_rows", "json_rows", "jsonl_rows"]

#: a row read from a line, or why the line is not one
Row = tuple[int, int, dict[str, Any] | str]

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decoded_lines(raw: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    """Yield (line number, text) per physical line, without a byte order mark or CR LF; text is None
    when it is not UTF-8."""
    for number, chunk in enumerate(raw, start=1):
        if number == 1:
            if chunk.startswith(_UTF16_BOMS):
                # Excel's "Unicode text" and PowerShell's `>`: every line was "not valid UTF-8"
                raise FileProblem(1, "the file is UTF-16 (its byte order mark says so): save it as UTF-8")
            chunk = chunk.removeprefix(_BOM)
        try:
            yield number, chunk.removesuffix(b"\n").decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            yield number, None


def jsonl_rows(raw: Iterable[bytes]) -> Iterator[Row]:
    """Yield (line, line, row) or (line, line, problem) for every non-blank line."""
    return _jsonl_of(_decoded_lines(raw))


def _jsonl_of(lines: Iterable[tuple[int, str | None]]) -> Iterator[Row]:
    for number, text in lines:
        if text is None:
            yield number, number, "line is not valid UTF-8"
        elif text.strip():
            yield number, number, _jsonl_row(text)


def json_rows(raw: Iterable[bytes]) -> Iterator[Row]:
    """Rows of a ``.json`` file: a JSON array of objects (AlpacaEval, sanitized MBPP and TruthfulQA
    are published so, read line by line they were one "invalid JSON" line) or, when its first
    character is not ``[``, JSON lines as many ``.json`` files hold (or one object over many lines,
    when its first line is no row and the whole file is one object). Each element is a row numbered
    by the line it starts on and checked as a JSONL row is; a syntax error between or inside
    elements spoils the rest of the array, so it is a ``FileProblem``."""
    lines = _decoded_lines(raw)
    head: list[tuple[int, str | None]] = []
    for number, text in lines:
        head.append((number, text))
        if text is None or text.strip():
            break
    first = head[-1][1] if head else None
    opening = first.lstrip().removeprefix("\ufeff")[:1] if first is not None else ""
    if opening == "{" and first is not None and isinstance(_jsonl_row(first), str):
        # one object over many lines (SQuAD's or TriviaQA's file saved indented): read line by line,
        # its every line was a bad row; a JSON lines file whose first row is broken is still read so
        yield from _object_or_lines(head, lines)
        return
    if opening != "[":
        yield from _jsonl_of(itertools.chain(head, lines))
        return
    texts: list[str] = []
    for number, text in itertools.chain(head, lines):
        if text is None:
            raise FileProblem(number, "line is not valid UTF-8")
        texts.append(text)
    yield from _array_rows("\n".join(texts).removeprefix("\ufeff"))


def _object_or_lines(
    head: list[tuple[int, str | None]], lines: Iterable[tuple[int, str | None]]
) -> Iterator[Row]:
    """The file as one JSON object spanning its lines when it parses as one, else as JSON lines."""
    read = list(itertools.chain(head, lines))
    if all(text is not None for _, text in read):
        row = _jsonl_row("\n".join(text or "" for _, text in read))
        if not isinstance(row, str):
            yield head[-1][0], 1, row
            return
    yield from _jsonl_of(read)


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\r\n]*")


def _array_rows(text: str) -> Iterator[Row]:
    """The elements of the JSON array ``text`` (its ``[`` first) as rows, each element parsed on its
    own as a JSONL row is, so it is refused for the same reasons and named by its first line."""
    line, counted, ordinal = 1, 0, 0

    def past_space(at: int) -> int:
        nonlocal line, counted
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]  # `*` matches the empty string
        line += text.count("\n", counted, at)
        counted = at
        return at

    pos = past_space(text.index("[") + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            if pos == len(text):
                raise FileProblem(line, "the JSON array is never closed: `]` is missing")
            if text[pos] == "]":
                raise FileProblem(line, "a comma before `]`: JSON allows no trailing comma")
            try:
                _, end = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise FileProblem(e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
            except RecursionError:
                raise FileProblem(line, f"nesting deeper than {MAX_DEPTH} levels") from None
            except ValueError as e:  # an integer of more digits than Python converts
                raise FileProblem(line, _number_problem(e)) from None
            ordinal += 1
            yield line, ordinal, _jsonl_row(text[pos:end])
            pos = past_space(end)
            if text.startswith("]", pos):
                pos += 1
                break
            if pos == len(text):
                raise FileProblem(line, "the JSON array is never closed: `]` is missing")
            if not text.startswith(",", pos):
                raise FileProblem(line, "expected `,` or `]` after a row of the JSON array")
            pos = past_space(pos + 1)
    if past_space(pos) < len(text):
        raise FileProblem(line, "text after the `]` that closes the JSON array")


def _number_problem(error: ValueError) -> str:
    if str(error).startswith("Exceeds the limit"):
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return _one_line(str(error))


def _jsonl_row(text: str) -> dict[str, Any] | str:
    """The JSON object on one line, or why it is not one."""
    # a byte order mark on a later line comes from files joined with `cat`; it is not part of the row
    text = text.removeprefix("\ufeff")
    try:
        # json keeps the last of two equal keys, so {"target": "4", "target": "5"} would score
        # against "5" unseen
        row = parse_json(text, unique_keys=True)
    except DuplicateKey as e:
        return f"key `{e.key}` appears twice in one object"
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and "\r" in text:
            return "two rows on one line, split by a carriage return (\\r): end lines with \\n or \\r\\n"
        return f"invalid JSON: {e.msg} (column {e.colno})"
    except ValueError as e:  # nesting too deep, or an integer of more digits than Python converts
        return _number_problem(e)
    if not isinstance(row, dict):
        return f"row is a JSON {type(row).__name__}, not an object"
    return lone_surrogate(text, row) or _non_finite(text, row) or row


#: only text holding one of these can parse to a float that is not finite: the walk below is skipped
#: for every other row (a HumanEval+ row carries thousands of numbers)
_MAYBE_NON_FINITE = re.compile(r"NaN|Infinity|[eE]\+?\d{3}")


def _non_finite(text: str, row: dict[str, Any]) -> str | None:
    """Why ``row`` is refused when a value anywhere in it is NaN or infinite (JSON has neither, but
    Python's json reads ``NaN``, ``Infinity`` and ``1e400``): NaN is unequal to itself, so an item
    holding one never matched its stored copy and every resume scored its answers again (a judge
    paid again), and a reference answer of ``nan`` would be shown to the judge."""
    if not _MAYBE_NON_FINITE.search(text):
        return None
    stack: list[tuple[str, Any]] = [(f"`{k}`", v) for k, v in row.items()]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} must be a finite number, not {value}"
        if isinstance(value, dict):
            stack.extend((f"{where[:-1]}.{k}`", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where[:-1]}[{i}]`", v) for i, v in enumerate(value))
    return None


def _one_line(text: str) -> str:
    return text.splitlines()[0] if text else text


class FileProblem(Exception):
    """A problem that spoils every row after it (a CSV header): fatal in both ``on_bad_row`` modes."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


_CSV_LIMIT_LOCK = threading.Lock()


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Let the csv module read cells of up to ``limit`` characters, for the duration of the block.

    ``csv.field_size_limit`` is process-global and defaults to 128 KiB, so a long cell (a HumanEval
    test, a document to summarise) escaped as ``_csv.Error``. It is raised only while one file is
    parsed and then put back, never at import; the lock keeps two loads in threads from restoring
    each other's value halfway through."""
    with _CSV_LIMIT_LOCK:
        previous = csv.field_size_limit(max(limit, csv.field_size_limit()))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def _csv_problem(error: csv.Error, first: int, line: int) -> str:
    """A one-line reason for a record the csv module refused, in the words of the file's author."""
    text = str(error)
    where = f" (line {line})" if line != first else ""
    if text.startswith("unexpected end of data"):
        return "a quoted cell is never closed: the rest of the file is inside it"
    if text.startswith("new-line character seen in unquoted field"):
        return f"a carriage return (\\r) outside a quoted cell{where}: end lines with \\n or \\r\\n"
    if text.endswith("expected after '\"'"):
        return f'text after the closing quote of a cell{where} (a quote inside a quoted cell is written "")'
    return f"invalid CSV{where}: {text}"


def _csv_records(texts: list[str]) -> list[tuple[int, int, list[str] | str]]:
    """(first line, last line, cells or problem) per CSV record, parsed at once so that the csv
    field limit is raised only for as long as this file takes."""
    # strict: without it a quote left open swallows every later line into one cell, and when that
    # is the last column the row still has the header's cell count and loads as a good row
    reader = csv.reader(texts, strict=True)
    records: list[tuple[int, int, list[str] | str]] = []
    last = 0
    # every cell is part of a file of at most DATASET_MAX_BYTES (a gzip file is capped below it),
    # so this limit refuses nothing the dataset cap allowed
    with _csv_field_limit(DATASET_MAX_BYTES):
        while True:
            first = last + 1
            try:
                cells: list[str] | str = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                cells = _csv_problem(e, first, reader.line_num)
            last = reader.line_num
            records.append((first, last, cells))
    return records


def _is_header(cells: list[str], header: list[str], line: int) -> bool:
    """Whether ``cells`` is the header line again: files joined with ``cat`` (the second one's byte
    order mark included), or rows appended by pandas' ``to_csv(mode="a")``, which writes the header
    each time. It is no row: sent as one, every setup was paid to answer the prompt "input". In
    another order it would put every row below it under the wrong columns, so it ends the load."""
    if cells[0].strip().removeprefix("\ufeff") not in header:
        return False
    names = [c.strip().removeprefix("\ufeff") for c in cells]
    if names == header:
        return True
    if sorted(names) == sorted(header):
        raise FileProblem(line, "the CSV header appears again with its columns in another order")
    return False


def _headerless_mmlu(header: list[str]) -> bool:
    """A first line shaped as a row of MMLU's published CSVs (question, 4 choices, answer letter),
    which have no header: its cells are no column names (the question is not one, nor ``A``)."""
    return (
        len(header) == 6
        and header[5].upper() in ("A", "B", "C", "D")
        and header[:5] != ["question", "A", "B", "C", "D"]
        and not any(c in ("input", "question", "id", "target", "answer") for c in header)
    )


def csv_rows(raw: Iterable[bytes]) -> Iterator[Row]:
    """Yield (first line of the record, the same, row) or (line, line, problem); quoted cells may
    span lines."""
    lines = list(_decoded_lines(raw))
    undecodable = {n for n, t in lines if t is None}
    texts = [(t if t is not None else "") + "\n" for _, t in lines]
    header: list[str] | None = None
    for first, last, cells in _csv_records(texts):
        bad = sorted(undecodable & set(range(first, last + 1)))
        if bad or isinstance(cells, str):
            line, problem = (bad[0], "line is not valid UTF-8") if bad else (first, str(cells))
            if header is None:
                raise FileProblem(line, f"CSV header: {problem}")
            yield line, line, problem
            continue
        if not cells or all(not c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            # counted once: list.count per column took minutes on a header line of 200,000 commas
            repeated = [c for c, n in Counter(header).items() if n > 1]
            if repeated:
                # a dict keeps the last of two same-named cells: the other would vanish unseen
                raise FileProblem(first, f"CSV header repeats the column `{repeated[0]}`")
            # Excel writes `;` where the decimal mark is a comma, and a .tsv renamed .csv has tabs:
            # read with commas, every row was one cell and "had no `input`"
            other = next((sep for sep in (";", "\t") if len(header) == 1 and sep in header[0]), None)
            if other is not None:
                raise FileProblem(
                    first, f"CSV header is one column split by {other!r}: moa reads comma-separated files"
                )
            if _headerless_mmlu(header):
                # MMLU's own files have no header line: their first question was read as one
                raise FileProblem(
                    first,
                    "CSV header looks like a row of MMLU's headerless files (a question, its choices, "
                    "a letter): add the header line `question,A,B,C,D,answer` first",
                )
            continue
        if len(cells) != len(header):
            yield first, first, f"row has {len(cells)} cells, the header has {len(header)}"
            continue
        if _is_header(cells, header, first):
            continue
        yield first, first, {k: v for k, v in zip(header, cells, strict=True) if v != "" or k == "input"}
