"""Each bad input is one clear line naming its place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa._run import Runner
from moa.cli import main
from moa.errors import BaselineFailed, DatasetError, ProviderError, TopologyError, UserError
from moa.experiment import Experiment
from moa.testing import FunctionModel

SINGLE = "name: single\nkind: single\nagent: a\nagents:\n  a: {model: sim/a, retry: {max_attempts: 1}}\n"


def _write(tmp: Path, *, data: bytes | None = None, exp: str | None = None, setup: str = SINGLE) -> Path:
    (tmp / "single.yaml").write_text(SINGLE)
    (tmp / "other.yaml").write_text(setup.replace("name: single", "name: other"))
    rows = b"".join(
        json.dumps({"id": str(i), "input": f"q{i}", "target": "x"}).encode() + b"\n" for i in range(3)
    )
    (tmp / "data.jsonl").write_bytes(rows if data is None else data)
    text = (
        exp or "name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n"
    )
    (tmp / "exp.yaml").write_text(text)
    return tmp / "exp.yaml"


def _run(path: Path, tmp: Path, fn: object = lambda r: "x") -> None:
    runner = Runner(models={"sim/*": FunctionModel(fn)})  # type: ignore[arg-type]
    Experiment.from_file(path, out=tmp / "out", runner=runner, progress=False).run()


def test_missing_dataset_file(tmp_path: Path) -> None:
    """A dataset path that does not exist names the file."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: nope.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    with pytest.raises(DatasetError, match=r"nope\.jsonl: dataset file not found"):
        _run(exp, tmp_path)


def test_row_without_input_names_its_line(tmp_path: Path) -> None:
    """A row without `input` fails with file:line."""
    exp = _write(tmp_path, data=b'{"input": "a", "target": "x"}\n{"target": "y"}\n')
    with pytest.raises(DatasetError, match=r"data\.jsonl:2: row has no `input`"):
        _run(exp, tmp_path)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported with their line."""
    exp = _write(tmp_path, data=b'{"input": "a"}\n{"input": "\xff\xfe"}\n')
    with pytest.raises(DatasetError, match=r"data\.jsonl:2: line is not valid UTF-8"):
        _run(exp, tmp_path)


def test_unknown_evaluator(tmp_path: Path) -> None:
    """An unknown evaluator names the experiment file and the known ones."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: data.jsonl\nevaluator: telepathy\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    with pytest.raises(
        UserError, match=r"exp\.yaml: evaluator: unknown evaluator `telepathy`; known: .*exact"
    ):
        _run(exp, tmp_path)


def test_setup_failing_validation_names_its_file(tmp_path: Path) -> None:
    """A setup that fails validation raises the topology error line with its file."""
    exp = _write(tmp_path, setup=SINGLE.replace("agent: a\n", "agent: zz\n"))
    with pytest.raises(TopologyError, match=r"other\.yaml") as info:
        _run(exp, tmp_path)
    assert "zz" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_unknown_field_in_experiment_file(tmp_path: Path) -> None:
    """A misspelt experiment field is one line naming the file and the field."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: d.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [a]\nconcurency: 3\n",
    )
    with pytest.raises(TopologyError) as info:
        _run(exp, tmp_path)
    assert str(info.value) == f"{exp}: concurency: unknown field; did you mean `concurrency`?"


def test_unknown_preset_names_the_setup(tmp_path: Path) -> None:
    """A setup that is neither a file nor a preset says which entry."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [no-such-preset]\n",
    )
    with pytest.raises(UserError, match=r"setups\[0\]: unknown topology `no-such-preset`"):
        _run(exp, tmp_path)


def test_baseline_with_no_quality_is_one_line(tmp_path: Path) -> None:
    """A baseline whose runs all failed stops with one line, a run failure (exit 1), not bad input
    (exit 2, as it was); the failing setup's errors are reported."""
    exp = _write(tmp_path)

    def fn(req: object) -> object:
        return ProviderError("upstream down") if getattr(req, "model", "") == "sim/a" else "x"

    with pytest.raises(BaselineFailed) as info:
        _run(exp, tmp_path, fn)
    msg = str(info.value)
    assert not isinstance(info.value, UserError)
    assert "baseline `single` has no quality: all 3 of its stored runs failed" in msg and "\n" not in msg
    report = (tmp_path / "out" / "report.md").read_text()
    assert "upstream down" in report


def test_moa_report_ends_as_compare_did_on_a_failed_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa report` on a store whose baseline runs all failed exits 1 with the line `moa compare`
    printed; it exited 2 (bad input) and said nothing on stderr."""
    exp = _write(tmp_path)

    def fn(req: object) -> object:
        return ProviderError("upstream down") if getattr(req, "model", "") == "sim/a" else "x"

    with pytest.raises(BaselineFailed):
        _run(exp, tmp_path, fn)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("Setup ")  # the table still
    assert captured.err.strip().startswith("moa: run failed: BaselineFailed: ")
    assert "baseline `single` has no quality: all 3 of its stored runs failed" in captured.err


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa compare` on a missing dataset exits 2 with one line on stderr."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: gone.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    code = main(["compare", str(exp), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "gone.jsonl" in err


@pytest.mark.parametrize("with_tests", [0, 2])
def test_execution_over_items_without_tests_is_refused_before_any_call(
    tmp_path: Path, with_tests: int
) -> None:
    """The execution evaluator over items with no tests to run is one line naming them, before any
    setup is paid for (each had been answered, then scored 0 as "no code found")."""
    rows = [
        {"id": f"i{i}", "input": f"q{i}", **({"tests": ["assert True"]} if i < with_tests else {})}
        for i in range(5)
    ]
    exp = _write(
        tmp_path,
        data=b"".join(json.dumps(r).encode() + b"\n" for r in rows),
        exp="name: t\ndataset: data.jsonl\nevaluator: execution\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    model = FunctionModel(lambda r: "```python\nx = 1\n```")
    with pytest.raises(UserError) as info:
        Experiment.from_file(
            exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    first = ", ".join(f"`i{i}`" for i in range(with_tests, with_tests + 3))
    assert str(info.value) == (
        f"{exp}: evaluator `execution`: {5 - with_tests} of 5 dataset items have no `tests` (or `test`) "
        f"to run the answers against (first: {first}); give them tests, or use an evaluator that reads `target`"
    )
    assert model.calls == []


def test_execution_over_items_with_more_assert_lines_than_the_sandbox_runs_is_refused(tmp_path: Path) -> None:
    """An item of 1,501 assert lines could only score 0 after every setup answered it: refused
    before any call, naming it."""
    rows = [
        {"id": "ok", "input": "q", "tests": ["assert True"]},
        {"id": "big", "input": "q", "tests": ["assert True"] * 1501},
    ]
    exp = _write(
        tmp_path,
        data=b"".join(json.dumps(r).encode() + b"\n" for r in rows),
        exp="name: t\ndataset: data.jsonl\nevaluator: execution\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    model = FunctionModel(lambda r: "```python\nx = 1\n```")
    with pytest.raises(UserError, match=r"1 of 2 dataset items have more than 1500 assert lines.*`big`"):
        Experiment.from_file(
            exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    assert model.calls == []


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE scores SET value = 5.0 WHERE run_id = {rid}", "score 5.0 is outside [0, 1]"),
        ("UPDATE scores SET value = 9e999 WHERE run_id = {rid}", "score inf is outside [0, 1]"),
        ("UPDATE runs SET cost_usd = -0.5 WHERE run_id = {rid}", "cost_usd -0.5 is not a finite number >= 0"),
        (
            "UPDATE runs SET latency_s = 9e999 WHERE run_id = {rid}",
            "latency_s inf is not a finite number >= 0",
        ),
    ],
)
def test_a_damaged_run_in_the_store_is_named_by_moa_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, problem: str
) -> None:
    """A store whose run holds a score outside [0, 1] or a cost or time that cannot be (damaged, edited
    by hand) is refused by `moa report` in one line naming the store, the setup, item and sample, and
    what is wrong: it printed a quality of 5.0 or ended in a traceback from the statistics."""
    import sqlite3

    _run(_write(tmp_path), tmp_path)
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    rid = conn.execute("SELECT run_id FROM runs WHERE setup = 'other' AND item_id = '1'").fetchone()[0]
    conn.execute(sql.format(rid=rid))
    conn.commit()
    conn.close()
    assert main(["report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"experiment.sqlite: setup `other`, item `1`, sample 0 (run {rid}): {problem}" in err


@pytest.mark.parametrize("name", ["../../elsewhere", "/tmp/elsewhere", "runs/../../elsewhere", "C:elsewhere"])
def test_a_name_that_leads_out_of_the_results_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The default output folder is moa-results/<name>: a shared experiment file named `../..` put
    its store and reports (summary.json, report.md) two folders up. Refused before anything is written."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    exp = _write(
        work,
        exp=f"name: {json.dumps(name)}\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\n"
        "setups: [other.yaml]\n",
    )
    monkeypatch.chdir(work)
    with pytest.raises(TopologyError, match=r"name: .* would put the default output folder"):
        Experiment.from_file(
            exp, runner=Runner(models={"sim/*": FunctionModel(lambda r: "x")}), progress=False
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["a", "b", "data.jsonl", "exp.yaml", "other.yaml", "single.yaml"]
    )


def test_skipped_rows_are_noted_by_file_and_line_and_counted_past_ten(tmp_path: Path) -> None:
    """Each skipped row was a note without its file, and 50,000 bad rows were 50,000 notes in every
    report: the first ten name file and line, a count follows."""
    good = [json.dumps({"id": str(i), "input": f"q{i}", "target": "x"}) for i in range(3)]
    data = "\n".join(good + ["{oops"] * 15) + "\n"
    exp = _write(
        tmp_path,
        data=data.encode(),
        exp="name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n"
        "on_bad_row: skip\n",
    )
    runner = Runner(models={"sim/*": FunctionModel(lambda r: "x")})
    summary = Experiment.from_file(exp, out=tmp_path / "out", runner=runner, progress=False).run()
    skipped = [n for n in summary.notes if "bad row" in n]
    assert (
        skipped[0]
        == "data.jsonl:4: skipped bad row: invalid JSON: Expecting property name enclosed in double quotes (column 2)"
    )
    assert [n.split(":")[1] for n in skipped[:10]] == [str(line) for line in range(4, 14)]
    assert skipped[10:] == ["data.jsonl: 5 more bad rows skipped (15 in all)"]


def test_items_without_a_target_are_refused_before_any_call(tmp_path: Path) -> None:
    """Rows whose answer is under `answer` (not `target`) were all answered, paid for, and scored 0
    ("item has no target"): refused before the first call, naming the field they hold."""
    rows = [{"id": str(i), "input": f"q{i}", "answer": "x"} for i in range(3)]
    exp = _write(tmp_path, data="".join(json.dumps(r) + "\n" for r in rows).encode())
    model = FunctionModel(lambda r: "x")
    with pytest.raises(UserError) as info:
        Experiment.from_file(
            exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    assert str(info.value) == (
        f"{exp}: evaluator `exact`: 3 of 3 dataset items have no `target` to score the answers against "
        "(first: `0`, `1`, `2`); their rows hold `answer`: name that field `target`"
    )
    assert model.calls == []


@pytest.mark.parametrize("evaluator", ["contains", "exact", "numeric", "f1", "regex"])
def test_a_blank_target_is_refused_before_any_call(tmp_path: Path, evaluator: str) -> None:
    """A row whose `target` is blank (an empty cell, spaces) is refused like one without: under
    `contains` every answer held it and scored 1, under the others each was paid for and scored 0."""
    rows = [{"id": "a", "input": "q", "target": "4"}, {"id": "b", "input": "r", "target": " "}]
    exp = _write(
        tmp_path,
        data="".join(json.dumps(r) + "\n" for r in rows).encode(),
        exp=f"name: t\ndataset: data.jsonl\nevaluator: {evaluator}\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    model = FunctionModel(lambda r: "42")
    with pytest.raises(UserError) as info:
        Experiment.from_file(
            exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    assert str(info.value) == (
        f"{exp}: evaluator `{evaluator}`: 1 of 2 dataset items have no `target` (or a blank one) to "
        "score the answers against (first: `b`)"
    )
    assert model.calls == []


def test_a_regex_target_that_does_not_compile_is_refused_before_any_call(tmp_path: Path) -> None:
    """An item's target used as its regex is compiled before the run, not when its answers are scored."""
    rows = [{"id": "a", "input": "q", "target": "4\\d"}, {"id": "b", "input": "r", "target": "(4"}]
    exp = _write(
        tmp_path,
        data="".join(json.dumps(r) + "\n" for r in rows).encode(),
        exp="name: t\ndataset: data.jsonl\nevaluator: regex\nbaseline: single.yaml\nsetups: [other.yaml]\n",
    )
    model = FunctionModel(lambda r: "42")
    with pytest.raises(UserError, match=r"evaluator `regex`: item `b` target: invalid regex `\(4`"):
        Experiment.from_file(
            exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
        ).run()
    assert model.calls == []


def test_an_override_out_of_range_is_one_line_naming_the_field(tmp_path: Path) -> None:
    """`Experiment.from_file(..., limit=0)` raised pydantic's multi-line ValidationError, outside
    moa's exception tree; it is one line naming the file, the override and the field."""
    exp = _write(tmp_path)
    with pytest.raises(TopologyError) as info:
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=0)
    assert str(info.value) == f"{exp} (with limit): limit: Input should be greater than or equal to 1 (got 0)"


def test_a_missing_api_key_leaves_no_output_folder_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key preflight runs before the store is opened: a missing key left a fresh
    experiment.sqlite (and the folders to it) in the output folder."""
    monkeypatch.delenv("MOA_TEST_EXP_NO_KEY", raising=False)
    keyed = SINGLE.replace("retry:", "api_key_env: MOA_TEST_EXP_NO_KEY, retry:")
    exp = _write(tmp_path)
    keyed = keyed.replace("sim/a", "openai/m")
    (tmp_path / "single.yaml").write_text(keyed)
    (tmp_path / "other.yaml").write_text(keyed.replace("name: single", "name: other"))
    out = tmp_path / "runs" / "out"
    code = main(["compare", str(exp), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "`MOA_TEST_EXP_NO_KEY` is not set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("limit: true", "limit"),
        ("seed: true", "seed"),
        ("concurrency: true", "concurrency"),
        ("budget_usd: true", "budget_usd"),
        ("samples: false", "samples"),
        ("tune: {setup: other, seed: true}", "tune.seed"),
    ],
)
def test_a_boolean_where_a_number_is_meant_is_refused_naming_the_field(
    tmp_path: Path, line: str, field: str
) -> None:
    """Lax pydantic read `limit: true` as 1 (an experiment on one item, reported as complete)."""
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [other.yaml]\n"
        + line
        + "\n",
    )
    with pytest.raises(TopologyError) as info:
        Experiment.from_file(exp, out=tmp_path / "out", progress=False)
    value = "false" if "false" in line else "true"
    assert str(info.value) == f"{exp}: {field}: expected a number, not a boolean (got {value})"


def test_a_boolean_number_in_a_json_experiment_file_is_refused(tmp_path: Path) -> None:
    """The same refusal for an experiment written as JSON."""
    _write(tmp_path)
    exp = tmp_path / "exp.json"
    fields = {"dataset": "data.jsonl", "evaluator": "exact", "baseline": "single.yaml"}
    exp.write_text(json.dumps({"name": "t", **fields, "setups": ["other.yaml"], "limit": True}))
    with pytest.raises(TopologyError, match=r"limit: expected a number, not a boolean \(got true\)$"):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False)


def test_every_number_field_of_the_experiment_refuses_a_boolean() -> None:
    """A number field added later refuses `true` too (the list of fields checked is by name)."""
    from moa.experiment.config import ExperimentSpec, validate_spec

    base = {"name": "t", "dataset": "d.jsonl", "evaluator": "exact", "baseline": "b", "setups": ["s"]}
    numbers = [
        name
        for name, f in ExperimentSpec.model_fields.items()
        if f.annotation in (int, float, int | None, float | None)
    ]
    accepted = []
    for name in numbers:
        try:
            validate_spec({**base, name: True}, source="e.yaml")
        except TopologyError:
            continue
        accepted.append(name)
    assert len(numbers) >= 8 and accepted == []


def test_an_embedded_model_this_machine_cannot_run_is_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hosted baseline and a setup on a GGUF file that is not there: the local executor runs the
    embedded model in this process, so the experiment stops before the baseline's calls are paid
    (it paid for the first items' hosted calls, then failed)."""
    from moa.testing.sim import SimModel, SimServer

    monkeypatch.setenv("MOA_SIM_KEY", "k")
    with SimServer(models={"sim": SimModel()}) as srv:
        (tmp_path / "hosted.yaml").write_text(
            "name: hosted\nkind: single\nagent: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", api_key_env: MOA_SIM_KEY}}\n'
        )
        (tmp_path / "here.yaml").write_text(
            f"name: here\nkind: single\nagent: b\nagents:\n  b: {{model: local/{tmp_path}/missing.gguf}}\n"
        )
        exp = _write(
            tmp_path,
            exp="name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: hosted.yaml\nsetups: [here.yaml]\n",
        )
        with pytest.raises(UserError) as info:
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        served = srv.stats.served
    assert served == 0
    assert str(info.value).startswith(f"{exp}: setup `here`: ")
    assert f"GGUF file {tmp_path}/missing.gguf does not exist" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_an_experiment_whose_only_setup_is_its_baseline_is_refused_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`setups: [single.yaml]` beside `baseline: single.yaml` ran the baseline alone and wrote a
    report comparing nothing; it is one line naming the file, before a call, a store or a folder."""
    sent: list[object] = []
    exp = _write(
        tmp_path,
        exp="name: t\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.yaml\nsetups: [single.yaml]\n",
    )
    with pytest.raises(UserError, match=r"exp\.yaml: setups: every setup is the baseline `single`"):
        _run(exp, tmp_path, lambda r: sent.append(r) or "x")
    assert sent == [] and not (tmp_path / "out").exists()
    assert main(["compare", str(exp), "--dry-run"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("rows", [3, 1])
def test_a_dataset_given_as_the_experiment_file_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: int
) -> None:
    """`moa compare data.jsonl` read the rows as YAML: "expected '<document start>'" (or, for one
    row, a list of unknown fields), with no word of the experiment file it wants."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"input": f"q{i}", "target": "x"}) + "\n" for i in range(rows)))
    assert main(["compare", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"moa: {data}: a dataset, not an experiment file: give `moa compare` an experiment file (YAML) "
        "naming it as `dataset: data.jsonl`, with `evaluator`, `baseline` and `setups`\n"
    )
    assert not (tmp_path / "out").exists()
