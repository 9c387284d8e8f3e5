"""A store damaged or edited by hand (a colleague's results folder, a downloaded artifact) is one line
naming the file and what is wrong in it, exit 2, never a traceback: SQLite's columns are not typed,
so any column can hold a text, a blob or (through an edited schema) a NULL."""

from __future__ import annotations

import json
import math
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
    assert err.endswith("or delete that run (the next `moa compare` runs it again)")  # the way out


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


def _call_edit(out: Path, table: str, column: str, value: str) -> None:
    """Sets ``column`` of every row of ``table`` (``calls`` of the run of `other` on item 1, or the
    ``cache`` rows of its setup) to the SQL expression ``value``."""
    conn = sqlite3.connect(out / "experiment.sqlite")
    rid = int(conn.execute("SELECT run_id FROM runs WHERE setup = 'other' AND item_id = '1'").fetchone()[0])
    if table == "calls":
        conn.execute(f"UPDATE calls SET {column} = {value} WHERE run_id = ?", (rid,))
    else:
        conn.execute(
            f"UPDATE cache SET {column} = {value} WHERE key IN "
            "(SELECT key FROM cache_items WHERE scope LIKE 'other:%' AND item_id = '1')"
        )
        # the run is gone: the next `moa compare` replays its reply from the cache
        conn.execute("DELETE FROM calls WHERE run_id = ?", (rid,))
        conn.execute("DELETE FROM scores WHERE run_id = ?", (rid,))
        conn.execute("DELETE FROM runs WHERE run_id = ?", (rid,))
    conn.commit()
    conn.close()


#: a call field and what a hostile store puts there, and the line's words for it
_BAD_CALLS = [
    ("cost_usd", "'abc'", "`cost_usd` holds str 'abc', not a finite number"),
    ("cost_usd", "9e999", "`cost_usd` holds float 'inf', not a finite number"),
    ("cost_usd", "-1.5", "`cost_usd` holds float '-1.5', not a finite number, not negative"),
    ("prompt_tokens", "x'00'", "`prompt_tokens` holds bytes"),
    ("prompt_tokens", "2.5", "`prompt_tokens` holds float '2.5', not a count"),
    ("attempt_log", "'nope'", "`attempt_log` is not JSON"),
    ("attempt_log", "'{}'", "`attempt_log`: Input should be a valid list"),
    ("attempt_log", """'[{"status": "ok", "usage": {"prompt_tokens": 1e999}}]'""", "`attempt_log[0].usage.prompt_tokens`"),
    ("attempt_log", """'[{"status": "ok", "cost_usd": NaN}]'""", "`attempt_log[0].cost_usd`"),
    ("attempt_log", """'[{"status": "ok", "usage": {"completion_tokens": 99999999999999999999999}}]'""", "`attempt_log[0].usage.completion_tokens`"),
    ("attempt_log", """'[{"status": "gone"}]'""", "`attempt_log[0].status`"),
]  # fmt: skip


@pytest.mark.parametrize(("column", "value", "problem"), _BAD_CALLS)
def test_a_stored_call_of_the_wrong_type_is_one_line_naming_it_in_the_viewer(
    tmp_path: Path, column: str, value: str, problem: str
) -> None:
    """`moa view` on a store whose call holds a text, a negative number, or an attempt log of
    another shape: an item's page ended in a JSONDecodeError naming nothing, or showed the text as
    the call's cost; the costs table summed a text cost as 0 (a silently wrong table). An infinite
    cost is shown, as missing and named on the page (`test_view_browser`)."""
    from moa.experiment.store.database import Store
    from moa.view.queries import check_costs, item_detail

    out = _stored(tmp_path)
    _call_edit(out, "calls", column, value)
    store = Store.open(out, create=False)
    try:
        manifest = store.manifest()
        assert manifest is not None
        if value == "9e999":
            detail = item_detail(store, manifest, "1", 0)
            assert detail is not None and detail["runs"][1]["run"]["calls"][0]["cost_usd"] == math.inf
            check_costs(store, "other", manifest["setups"][1]["hash"])
            return
        with pytest.raises(UserError) as e:
            item_detail(store, manifest, "1", 0)
        line = str(e.value)
        assert len(line.splitlines()) == 1 and re.search(r"experiment\.sqlite: call \d+ \(run \d+\): ", line)
        assert problem in line
        if column != "attempt_log":
            with pytest.raises(UserError, match=re.escape(problem)):
                check_costs(store, "other", manifest["setups"][1]["hash"])
        check_costs(store, "single", manifest["setups"][0]["hash"])  # its calls are sound
    finally:
        store.close()


@pytest.mark.parametrize(("column", "value", "problem"), _BAD_CALLS)
def test_a_cached_reply_of_the_wrong_type_stops_a_resume_in_one_line(
    tmp_path: Path, column: str, value: str, problem: str
) -> None:
    """A resumed `moa compare` replaying a cached reply that holds a text cost, an infinite one or
    an attempt log of another shape: it crashed, or (an unreadable attempt log was read as none)
    replayed the call with the worst case of its attempts of unknown usage dropped."""
    out = _stored(tmp_path)
    _call_edit(out, "cache", column, value)
    model = FunctionModel(lambda r: "x")
    exp = Experiment.from_file(
        tmp_path / "exp.yaml", out=out, runner=Runner(models={"sim/*": model}), progress=False
    )
    with pytest.raises(UserError) as e:
        exp.run()
    line = str(e.value)
    assert (
        len(line.splitlines()) == 1 and "experiment.sqlite: cached reply " in line and "scope `other:" in line
    )
    assert problem in line and line.endswith("restore it from a copy, or use another --out")
    assert model.calls == []


@pytest.mark.parametrize("name", ["report.md", "results.jsonl"])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_report_file_that_cannot_be_written_is_one_line_and_the_runs_stay_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, command: str
) -> None:
    """A report file that cannot be written (here a folder in its place; a full disk or a read-only
    file alike) once every run is paid for and stored: `moa compare` and `moa report` ended in a
    PermissionError or IsADirectoryError traceback. One line names the file; the runs stay stored."""
    out = _stored(tmp_path)
    (out / name).unlink()
    (out / name).mkdir()
    model = FunctionModel(lambda r: "x")
    if command == "report":
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err.strip()
    else:
        exp = Experiment.from_file(
            tmp_path / "exp.yaml", out=out, runner=Runner(models={"sim/*": model}), progress=False
        )
        with pytest.raises(UserError) as e:
            exp.run()
        err = str(e.value)
    assert len(err.splitlines()) == 1, err
    assert f"{out / name}: cannot write the report (" in err and f"then run `moa report {out}`" in err
    (out / name).rmdir()
    assert main(["report", str(out)]) == 0 and (out / name).is_file()
    assert model.calls == []


def test_report_files_planted_as_symlinks_are_replaced_not_written_through(tmp_path: Path) -> None:
    """A results folder from elsewhere whose report files are symlinks to the user's own files:
    `moa report` wrote the report through them, overwriting what they pointed at. Each file is now
    written beside its name and renamed over it: the links are replaced, their targets untouched."""
    out = _stored(tmp_path)
    names = ["report.md", "report.html", "summary.json", "pareto.png", "results.jsonl", "results.jsonl.tmp"]
    for name in names:
        victim = tmp_path / f"mine-{name}"
        victim.write_text("precious\n")
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(victim)
    assert main(["report", str(out)]) == 0
    for name in names:
        assert (tmp_path / f"mine-{name}").read_text() == "precious\n", name
    for name in ("report.md", "report.html", "summary.json", "results.jsonl"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 9, name
    assert json.loads((out / "summary.json").read_text())["experiment"] == "t"
