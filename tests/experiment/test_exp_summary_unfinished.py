"""An unfinished experiment (Ctrl-C, a deadline, the budget): the table, its Pareto stars and the plot
compare the runs every setup stored, and say how many items that is."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from moa._run import Runner
from moa.experiment import Experiment, rebuild_report
from moa.experiment.analysis import Summary, baseline_problem, summarize
from moa.experiment.report import markdown_report
from moa.experiment.report.text import print_notes
from moa.experiment.store import RunRow
from moa.models.base import ModelRequest
from moa.testing import FunctionModel

IDS = [str(i) for i in range(1, 11)]


def _run(name: str, item: str, score: float | None, *, usd: float, seconds: float = 1.0) -> RunRow:
    return RunRow(int(item), name, item, "x", None, usd, seconds, 10, 5, 1, score=score)


def _summary(*setups: tuple[str, dict[str, RunRow]], pairwise: bool = False) -> Summary:
    return summarize(
        experiment="cut",
        evaluator={"name": "judge" if pairwise else "exact"},
        setups=[(name, name == "base", rows) for name, rows in setups],
        item_ids=IDS,
        categories={},
        rounds=200,
        pairwise=pairwise,
    )


def _base() -> dict[str, RunRow]:
    """Right on the first five items, wrong on the last five, $0.001 a run."""
    return {i: _run("base", i, 1.0 if int(i) <= 5 else 0.0, usd=0.001) for i in IDS}


def test_an_interrupted_setup_is_not_starred_for_items_it_never_ran() -> None:
    """A setup stopped after the first five items, right on each at twice the baseline's cost: on
    those items the baseline is right too, so the setup costs more for the same quality and is off
    the Pareto front (it was starred: 1.0 on its five easy items against the baseline's 0.5 on all ten)."""
    half = {i: _run("m", i, 1.0, usd=0.002) for i in IDS[:5]}
    s = _summary(("base", _base()), ("m", half))
    base, m = s.setup("base"), s.setup("m")
    assert base.pareto and not m.pareto
    assert base.quality == m.quality == 1.0 and m.delta_vs_baseline == 0.0
    assert s.compared_items == 5 and not s.complete
    # what was spent still counts every stored run
    assert base.cost_usd == pytest.approx(0.01) and base.runs == 10


def test_every_row_of_the_table_rests_on_the_same_items() -> None:
    """Two setups stopped at items 4 and 8: every row is taken over items 1-4, so the rows' quality
    differ by exactly the quality Δ, and the ratios compare the same runs."""
    a = {i: _run("a", i, 1.0 if int(i) % 2 else 0.0, usd=0.003) for i in IDS[:4]}
    b = {i: _run("b", i, 1.0, usd=0.002 * int(i), seconds=2.0) for i in IDS[:8]}
    s = _summary(("base", _base()), ("a", a), ("b", b))
    base, sb = s.setup("base"), s.setup("b")
    assert s.compared_items == 4 and sb.n == 4 and sb.delta_n == 4
    for x in (s.setup("a"), sb):
        assert x.quality is not None and base.quality is not None and x.delta_vs_baseline is not None
        assert x.quality - base.quality == pytest.approx(x.delta_vs_baseline)
    assert sb.cost_ratio == pytest.approx(0.002 * (1 + 2 + 3 + 4) / 0.004)
    assert sb.latency_ratio == pytest.approx(2.0)
    assert sb.cost_per_correct_usd == pytest.approx(0.002 * (1 + 2 + 3 + 4) / 4)
    note = " ".join(s.notes)
    assert "covering 4 of the 10 items" in note and "every setup stored" in note


def test_the_plot_says_how_many_items_its_points_rest_on() -> None:
    """The plot's points are the table's rows (quality over the compared items) and its title says
    how many items those are."""
    pytest.importorskip("matplotlib")
    from moa.experiment.report.plots import pareto_figure

    half = {i: _run("m", i, 1.0, usd=0.002) for i in IDS[:5]}
    s = _summary(("base", _base()), ("m", half))
    fig = pareto_figure(s)
    assert not isinstance(fig, str)
    ax = fig.axes[0]
    assert "5 of 10 items" in ax.get_title()
    ys = sorted(float(line.get_ydata()[0]) for line in ax.lines if line.get_marker() in ("*", "o"))
    assert ys == [1.0, 1.0]


def test_setups_that_share_no_item_yet_are_not_blamed_on_the_baseline() -> None:
    """The setup ran items 1-2 and the baseline 3-10: nothing is compared yet, which the note says;
    the baseline, scored on its runs, is not said to have none scored (which ended the run in error)."""
    base = {i: r for i, r in _base().items() if int(i) >= 3}
    other = {i: _run("m", i, 1.0, usd=0.002) for i in IDS[:2]}
    s = _summary(("base", base), ("m", other))
    assert s.compared_items == 0 and baseline_problem(s) is None
    assert "covering 0 of the 10 items" in " ".join(s.notes)
    assert s.setup("m").delta_vs_baseline is None and not any(x.pareto for x in s.setups)


def test_items_left_unscored_by_a_judge_are_counted_under_the_table() -> None:
    """A judge that failed on two items leaves them unscored: the report says the quality Δ rests on
    the 8 items judged of the 10 compared."""
    base = {i: _run("base", i, 0.5, usd=0.001) for i in IDS}
    judged = {i: _run("m", i, None if i in ("3", "7") else 0.75, usd=0.002) for i in IDS}
    s = _summary(("base", base), ("m", judged), pairwise=True)
    m = s.setup("m")
    assert s.compared_items == 10 and m.n == 8 and m.delta_n == 8
    line = "m: of the 10 items compared, quality rests on the 8 it has a score on, quality Δ and p on the 8"
    assert any(n.startswith(line) for n in print_notes(s))
    assert line in markdown_report(s, png=None)


def test_a_complete_experiment_compares_every_run() -> None:
    """Nothing left out: the compared items are all the items and no line about them is added."""
    s = _summary(("base", _base()), ("m", {i: _run("m", i, 1.0, usd=0.002) for i in IDS}))
    assert s.compared_items == 10 and s.complete and s.setup("base").quality == 0.5
    assert not any("items compared" in n for n in print_notes(s))


def test_the_per_language_figures_of_an_unfinished_experiment_compare_the_same_runs(tmp_path: Path) -> None:
    """Ten items in one language, the setup stopped after the first five (its other runs deleted, as
    a kill leaves them): the per-language rows rest on those five items like the table's, so the
    baseline's is its quality there, 1.0 (it was 0.5, over its ten runs, beside a Δ over five)."""
    rows = [{"id": f"i{k}", "input": f"q{k}", "target": "x", "language": "python"} for k in range(10)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("base", "m"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}}}\n"
        )
    (tmp_path / "exp.yaml").write_text(
        "name: langs\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\nsetups: [m.yaml]\n"
        "bootstrap_rounds: 100\n"
    )

    def answer(req: ModelRequest) -> str:
        k = int(str(req.messages[-1]["content"])[1:])
        return "x" if req.model == "sim/m" or k < 5 else "y"

    out = tmp_path / "out"
    runner = Runner(models={"sim/*": FunctionModel(answer)})
    Experiment.from_file(tmp_path / "exp.yaml", out=out, runner=runner, progress=False).run()
    conn = sqlite3.connect(out / "experiment.sqlite")
    late = "SELECT run_id FROM runs WHERE setup = 'm' AND CAST(substr(item_id, 2) AS INTEGER) >= 5"
    conn.execute(f"DELETE FROM scores WHERE run_id IN ({late})")
    conn.execute(f"DELETE FROM calls WHERE run_id IN ({late})")
    conn.execute("DELETE FROM runs WHERE setup = 'm' AND CAST(substr(item_id, 2) AS INTEGER) >= 5")
    conn.commit()
    conn.close()
    s = asyncio.run(rebuild_report(out))
    base, m = s.setup("base"), s.setup("m")
    assert s.compared_items == 5 and base.quality == 1.0
    assert base.languages["python"].n == 5 and base.languages["python"].quality == 1.0
    assert m.languages["python"].delta_vs_baseline == m.delta_vs_baseline == 0.0
