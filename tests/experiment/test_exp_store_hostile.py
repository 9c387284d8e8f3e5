"""A store damaged or edited by hand (a colleague's results folder, a downloaded artifact) is one line
naming the file and what is wrong in it, exit 2, never a traceback: SQLite's columns are not typed,
so any column can hold a text, a blob or (through an edited schema) a NULL."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from moa._run import Runner
from moa.cli import main
from moa.errors import UserError
from moa.experiment import Experiment
from moa.testing import FunctionModel

SINGLE = "name: single\nkind: single\nagent: a\nagents:\n  a: {model: sim/a, retry: {max_attempts: 1}}\n"


def _stored(tmp: Path) -> Path:
    """A finished experiment (`single` against `other`, 3 items); its output folder."""
    (tmp / "single.yaml").write_text(SINGLE)
    (tmp / "other.yaml").write_text(SINGLE.replace("name: single", "name: other"))
    rows = "".join(json.dumps({"id": str(i), "input": f"q{i}", "target": "x"}) + "\n" for i in range(3))
    (tmp / "data.jsonl").write_text(rows)
    (tmp / "exp.yaml").write_text(
        "name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n"
    )
    runner = Runner(models={"sim/*": FunctionModel(lambda r: "x")})
    Experiment.from_file(tmp / "exp.yaml", out=tmp / "out", runner=runner, progress=False).run()
    return tmp / "out"


def _edit(out: Path, *sql: str) -> int:
    """Runs ``sql`` on the store (``{rid}``: the run of `other` on item 1); returns that run's id."""
    conn = sqlite3.connect(out / "experiment.sqlite")
    rid = int(conn.execute("SELECT run_id FROM runs WHERE setup = 'other' AND item_id = '1'").fetchone()[0])
    for s in sql:
        conn.execute(s.format(rid=rid))
        if s == _NULLABLE[-1]:  # the edited schema is read by the next connection
            conn.commit()
            conn.close()
            conn = sqlite3.connect(out / "experiment.sqlite")
    conn.commit()
    conn.close()
    return rid


#: lets a NOT NULL column hold NULL, as a store written by another program may
_NULLABLE = (
    "PRAGMA writable_schema = ON",
    "UPDATE sqlite_schema SET sql = replace(sql, 'cost_usd REAL NOT NULL, latency_s', "
    "'cost_usd REAL, latency_s') WHERE name = 'runs'",
    "PRAGMA writable_schema = OFF",
)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            ("UPDATE runs SET cost_usd = 'abc' WHERE run_id = {rid}",),
            "`cost_usd` holds str 'abc', not a number",
        ),
        (("UPDATE runs SET sample = 'x' WHERE run_id = {rid}",), "`sample` holds str 'x', not an integer"),
        (("UPDATE runs SET answer = x'ff00' WHERE run_id = {rid}",), "`answer` holds bytes"),
        (("UPDATE scores SET value = x'01' WHERE run_id = {rid}",), "`score` holds bytes"),
        (
            ("UPDATE scores SET turn_scores = '[\"a\"]' WHERE run_id = {rid}",),
            "`turn_scores_json` is not a JSON list of numbers",
        ),
        ((*_NULLABLE, "UPDATE runs SET cost_usd = NULL WHERE run_id = {rid}"), "`cost_usd` holds NULL"),
    ],
)
def test_a_run_field_of_the_wrong_type_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: tuple[str, ...], problem: str
) -> None:
    """`moa report` on a store whose run holds a text, a blob or a NULL where a number is meant: it
    ended in a TypeError traceback (`must be real number, not str`)."""
    out = _stored(tmp_path)
    rid = _edit(out, *sql)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"experiment.sqlite: run {rid} (setup `other`, item `1`): {problem}" in err


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("'nope'", "manifest is not JSON"),
        ("'[1]'", "manifest `manifest`"),
        ("json_set(value, '$.setups', 'x')", "manifest `setups`"),
        ("json_set(value, '$.bootstrap_rounds', 1000000000000)", "manifest `bootstrap_rounds`"),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_manifest_that_is_not_one_is_one_line_naming_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str, command: str
) -> None:
    """A store whose manifest is not JSON, or holds a field of another type or out of bounds: `moa
    report` and a resuming `moa compare` ended in a JSONDecodeError or TypeError traceback."""
    out = _stored(tmp_path)
    _edit(out, f"UPDATE meta SET value = {value} WHERE key = 'manifest'")
    if command == "report":
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"experiment.sqlite: the store's {problem}" in err
        return
    model = FunctionModel(lambda r: "x")
    with pytest.raises(UserError, match=f"experiment.sqlite: the store's {re.escape(problem)}"):
        Experiment.from_file(
            tmp_path / "exp.yaml", out=out, runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    assert model.calls == []
