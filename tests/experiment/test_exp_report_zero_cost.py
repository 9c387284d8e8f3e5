"""The report tells the truth when costs are zero: the token basis, the Pareto rule, per-correct ratios, the plot."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from matplotlib.text import Text

from moa.experiment.analysis import Summary, summarize
from moa.experiment.report import format_table, markdown_report, pareto_png, print_notes
from moa.experiment.report.plots import pareto_figure
from moa.experiment.report.text import table_headers, table_rows
from moa.experiment.store import RunRow

IDS = ["1", "2", "3", "4"]


def _rows(
    name: str,
    scores: Sequence[float],
    *,
    cost: float = 0.0,
    tokens: tuple[int, int] = (10, 5),
    failed: bool = False,
) -> dict[str, RunRow]:
    """One run per item: every run costs ``cost`` and ``tokens`` (prompt, completion)."""
    err = "ProviderError: boom" if failed else None
    return {
        item: RunRow(
            k, name, item, None, err, cost, 1.0, tokens[0], tokens[1], 1, score=None if failed else s
        )
        for k, (item, s) in enumerate(zip(IDS, scores, strict=True))
    }


def _summary(*setups: tuple[str, dict[str, RunRow]], name: str = "t") -> Summary:
    return summarize(
        experiment=name,
        evaluator={"name": "exact"},
        setups=[(n, i == 0, rows) for i, (n, rows) in enumerate(setups)],
        item_ids=IDS,
        categories={},
        rounds=200,
    )


def _demo() -> Summary:
    """The offline demo: everything local ($0); self-MoA spends 7.7x the tokens for the same quality."""
    return _summary(
        ("local-single", _rows("local-single", [1, 1, 0, 0], tokens=(10, 10))),
        ("local-self-moa", _rows("local-self-moa", [1, 1, 0, 0], tokens=(100, 54))),
        name="local-quiz",
    )


def test_higher_cost_for_equal_quality_is_not_pareto_optimal() -> None:
    """A setup costing more than another for the same quality is dominated, on the USD basis."""
    s = _summary(
        ("base", _rows("base", [1, 1, 0, 0], cost=0.01)),
        ("dear", _rows("dear", [1, 1, 0, 0], cost=0.03)),
    )
    assert s.cost_basis == "usd"
    assert [x.pareto for x in s.setups] == [True, False]


def test_equal_cost_and_quality_are_both_pareto_optimal() -> None:
    """Two setups equal in cost and quality do not dominate each other: both are starred."""
    s = _summary(
        ("base", _rows("base", [1, 0, 0, 0], cost=0.01)),
        ("twin", _rows("twin", [0, 1, 0, 0], cost=0.01)),
    )
    assert [x.pareto for x in s.setups] == [True, True]


def test_all_failed_or_unscored_setup_is_never_pareto_optimal() -> None:
    """A setup whose runs all failed is never starred and dominates nothing, even at a lower cost."""
    s = _summary(
        ("base", _rows("base", [0, 0, 0, 0], cost=0.02)),
        ("broken", _rows("broken", [0, 0, 0, 0], cost=0.0, failed=True)),
        ("absent", {}),
    )
    broken, absent = s.setup("broken"), s.setup("absent")
    assert broken.quality == 0.0 and broken.cost_per_item_usd == 0.0
    assert absent.quality is None
    assert [x.pareto for x in s.setups] == [True, False, False]


def test_zero_cost_baseline_switches_to_the_token_basis() -> None:
    """At a $0 baseline the ratios, the Pareto test and per-correct figures use tokens, and summary.json says so."""
    s = _demo()
    single, moa = s.setup("local-single"), s.setup("local-self-moa")
    assert s.cost_basis == "tokens"
    assert moa.cost_ratio is None and moa.token_ratio == pytest.approx(7.7)
    assert [single.pareto, moa.pareto] == [True, False]
    assert single.tokens_per_correct == pytest.approx(40.0)  # 4 runs x 20 tokens / 2 correct
    assert moa.tokens_per_correct == pytest.approx(308.0)
    assert moa.tokens_per_correct_ratio == pytest.approx(7.7) and moa.cost_per_correct_ratio is None
    data = json.loads(json.dumps(s.to_dict()))
    assert data["cost_basis"] == "tokens" and data["setups"][1]["tokens_per_correct"] == pytest.approx(308.0)


def test_token_basis_table_says_tokens_in_its_headers() -> None:
    """The table's cost columns read tokens × single and tokens per correct answer, with token values."""
    s = _demo()
    headers = table_headers(s)
    assert headers[1] == "tokens × single" and headers[4] == "tokens per correct answer"
    assert headers[5] == "tokens per correct × single"
    assert not any("$" in h or h.startswith("cost") for h in headers)
    single, moa = table_rows(s)
    assert single[0] == "local-single *" and moa[0] == "local-self-moa"
    assert moa[1] == "7.70×" and moa[4] == "308" and moa[5] == "7.70×"
    assert format_table(s).splitlines()[0].startswith("Setup") and "tokens × single" in format_table(s)
    assert "| tokens × single |" in markdown_report(s, png=None)
    note = next(n for n in print_notes(s) if n.startswith("cost × single is undefined"))
    assert "counted in tokens" in note and "tokens × single: local-self-moa 7.70×" in note


def test_per_correct_ratio_on_the_usd_basis() -> None:
    """$ per correct × single is a setup's $ per correct answer over the baseline's."""
    s = _summary(
        ("base", _rows("base", [1, 1, 0, 0], cost=0.01)),
        ("moa", _rows("moa", [1, 1, 1, 0], cost=0.03)),
    )
    moa = s.setup("moa")
    assert moa.cost_per_correct_usd == pytest.approx(0.04) and s.setup("base").cost_per_correct_usd == 0.02
    assert moa.cost_per_correct_ratio == pytest.approx(2.0)
    headers = table_headers(s)
    assert headers[4] == "$ per correct answer" and headers[5] == "$ per correct × single"
    assert table_rows(s)[1][5] == "2.00×" and table_rows(s)[0][5] == "1.00×"


def test_older_summary_json_without_the_new_keys_still_loads() -> None:
    """A summary.json written before the cost basis existed reads back on the USD basis."""
    data = _demo().to_dict()
    del data["cost_basis"]
    for setup in data["setups"]:
        for key in ("tokens_per_correct", "cost_per_correct_ratio", "tokens_per_correct_ratio"):
            del setup[key]
    old = Summary.from_dict(data)
    assert old.cost_basis == "usd" and old.setups[1].tokens_per_correct is None


def test_zero_cost_plot_starts_at_zero_and_labels_do_not_overlap(tmp_path: Path) -> None:
    """pareto.png of a $0 experiment: x in tokens × single from 0, and no two labels overlap."""
    twins = [(f"twin-{k}", _rows(f"twin-{k}", [1, 1, 0, 0], tokens=(10, 10))) for k in range(3)]
    s = _summary(
        ("local-single", _rows("local-single", [1, 1, 0, 0], tokens=(10, 10))),
        *twins,
        ("local-self-moa", _rows("local-self-moa", [1, 1, 0, 0], tokens=(100, 54))),
        name="local-quiz",
    )
    fig = pareto_figure(s)
    assert not isinstance(fig, str)
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    assert low == 0.0 and high >= 7.7
    assert "tokens × single" in ax.get_xlabel()
    fig.canvas.draw()  # as saved: every label at its final place
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the label, not its leader line
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    assert all(fig.bbox.contains(b.x0, b.y0) and fig.bbox.contains(b.x1, b.y1) for b in boxes)
    path = tmp_path / "pareto.png"
    assert pareto_png(s, path) is None
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_baseline_whose_runs_all_failed_at_zero_cost_is_not_called_free() -> None:
    """Every baseline run failed before a priced reply: the token-basis footer says that, not that the
    models are local-compute or unpriced."""
    s = _summary(
        ("single", _rows("single", [0, 0, 0, 0], failed=True)),
        ("moa", _rows("moa", [1, 1, 0, 0], cost=0.02)),
    )
    assert s.cost_basis == "tokens"
    note = next(n for n in print_notes(s) if n.startswith("cost × single is undefined"))
    assert "every run of the baseline failed and cost $0" in note and "local-compute" not in note


def test_dollar_signs_in_names_are_text_not_a_formula(tmp_path: Path) -> None:
    """A setup, experiment or evaluator named with `$...$` (prices, or a bad formula) is drawn as
    written: matplotlib read it as mathtext and a formula it cannot parse raised, so no report at all."""
    odd = r"$\undefined$ a$\frac{1}{0$b"
    s = _summary(
        ("single $5", _rows("single $5", [1, 0, 0, 0], cost=0.01)),
        (odd, _rows(odd, [1, 1, 0, 0], cost=0.02)),
        name="$\\x$ prices: $5 vs $10",
    )
    s.evaluator["name"] = "$\\bad$"
    path = tmp_path / "pareto.png"
    assert pareto_png(s, path) is None and path.read_bytes().startswith(b"\x89PNG")
    fig = pareto_figure(s)
    assert not isinstance(fig, str)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted([odd, "single $5 (baseline)"])
