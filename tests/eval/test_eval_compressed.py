"""Compressed datasets (`.jsonl.gz`, `.json.gz`, `.csv.gz`), byte order marks and CRLF line ends, and
the hostile cases: a corrupt or truncated gzip file and a gzip bomb end in one line naming the file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from moa.errors import DatasetError
from moa.eval.datasets import Item, load_dataset
from moa.safe_read import GZIP_MIN_BYTES

REPO = Path(__file__).resolve().parents[2]
ROWS = [{"id": "a", "input": "one", "target": "1"}, {"id": "b", "input": "two\nlines", "target": "2"}]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS)
CSV = 'id,input,target\na,one,1\nb,"two\nlines",2\n'
HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": "def f():\n",
    "canonical_solution": "    return 1\n",
    "test": "def check(c): pass",
    "entry_point": "f",
}


def _pairs(items: list[Item]) -> list[tuple[str, str, str | None]]:
    return [(i.id, i.input, i.target) for i in items]


@pytest.mark.parametrize(("name", "text"), [("d.jsonl.gz", JSONL), ("d.json.gz", JSONL), ("d.csv.gz", CSV)])
def test_gzipped_formats_read_like_plain_ones(tmp_path: Path, name: str, text: str) -> None:
    """A `.gz` file reads as the format before `.gz`, with the same items as the plain file."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    assert _pairs(load_dataset(path).items) == [("a", "one", "1"), ("b", "two\nlines", "2")]


def test_humaneval_jsonl_gz_is_detected(tmp_path: Path) -> None:
    """`HumanEval.jsonl.gz`, as published, loads as HumanEval items."""
    path = tmp_path / "HumanEval.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(HUMANEVAL) + "\n").encode()))
    item = load_dataset(path).items[0]
    assert (item.id, item.entry_point, item.meta["canonical_solution"]) == (
        "HumanEval/0",
        "f",
        "    return 1\n",
    )


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("name", "text"), [("d.jsonl", JSONL), ("d.json", JSONL), ("d.csv", CSV)])
def test_bom_and_crlf_in_every_format(tmp_path: Path, name: str, text: str, gz: bool) -> None:
    """A UTF-8 byte order mark and CRLF line ends change nothing, plain or gzipped."""
    raw = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    path = tmp_path / (name + ".gz" if gz else name)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    assert _pairs(load_dataset(path).items) == [("a", "one", "1"), ("b", "two\nlines", "2")]


def test_explicit_format_applies_to_a_gz_file(tmp_path: Path) -> None:
    """`format="csv"` on `data.gz` decompresses and reads CSV."""
    path = tmp_path / "data.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    assert len(load_dataset(path, format="csv")) == 2


def test_bad_row_in_a_gz_file_names_its_line(tmp_path: Path) -> None:
    """A bad row inside a gzipped file is reported with the file and its decompressed line."""
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress((JSONL + "{oops\n").encode()))
    with pytest.raises(DatasetError, match=r"^d\.jsonl\.gz:3: invalid JSON"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: JSONL.encode(), "not a valid gzip file: Not a gzipped file"),
        (lambda: gzip.compress(JSONL.encode())[:-12], "not a valid gzip file: Compressed file ended"),
        (lambda: gzip.compress(JSONL.encode())[:10] + b"\xff" * 40, "not a valid gzip file"),
    ],
    ids=["not-gzip", "truncated", "corrupt"],
)
def test_corrupt_gz_is_one_line_naming_the_file(
    tmp_path: Path, make: Callable[[], bytes], problem: str
) -> None:
    """A `.gz` that is not gzip, is cut short or holds garbage raises one line naming the file."""
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(make())
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(f"{path}: dataset ") and problem in message and "\n" not in message


def _bomb(path: Path, decompressed: int) -> None:
    """A gzip file of ``decompressed`` zero bytes (about 1,000 to 1 compressed), written in chunks."""
    chunk = b"\0" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        for _ in range(decompressed // len(chunk)):
            f.write(chunk)


def test_gzip_bomb_is_refused_by_its_decompressed_size(tmp_path: Path) -> None:
    """A file that decompresses past the bound raises one line naming it, before memory runs out."""
    path = tmp_path / "bomb.jsonl.gz"
    _bomb(path, GZIP_MIN_BYTES + (8 << 20))
    with pytest.raises(
        DatasetError, match=r"bomb\.jsonl\.gz: dataset decompresses to over 64 MiB .*gzip bomb"
    ):
        load_dataset(path)


def test_gzip_bomb_from_the_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    """`moa compare` with a gzip bomb as its dataset exits 2 with one stderr line naming the file."""
    data = tmp_path / "bomb.jsonl.gz"
    _bomb(data, GZIP_MIN_BYTES * 2)
    agent = '{model: openai/m, api_base: "http://127.0.0.1:9/v1"}'
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {agent}\n"
        )
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"name: e\ndataset: {json.dumps(str(data))}\nevaluator: exact\nbaseline: one.yaml\nsetups: [two.yaml]\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "moa", "compare", str(exp), "--out", str(tmp_path / "out"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert str(data) in lines[0] and "gzip bomb" in lines[0] and "Traceback" not in proc.stderr
