"""The summary's statistics against values computed by hand on a tiny dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from moa.experiment.analysis import Summary, summarize
from moa.experiment.store import RunRow

IDS = ["1", "2", "3", "4"]


def _rows(
    name: str,
    scores: list[float | None],
    costs: list[float],
    lat: list[float],
    errors: set[str] = frozenset(),
) -> dict[str, RunRow]:  # type: ignore[assignment]
    out = {}
    for i, (s, c, t) in enumerate(zip(scores, costs, lat, strict=True)):
        item = IDS[i]
        err = "ProviderError: boom" if item in errors else None
        out[item] = RunRow(
            i, name, item, None, err, c, t, 10, 5, 2 if name != "base" else 1, score=None if err else s
        )
    return out


def _summary() -> object:
    base = _rows("base", [1, 1, 0, 0], [0.01] * 4, [1, 2, 3, 4])
    good = _rows("good", [1, 1, 1, 0], [0.03] * 4, [2, 4, 6, 8], errors={"4"})
    bad = _rows("bad", [0, 0, 1, 0], [0.05] * 4, [1, 1, 1, 1])
    return summarize(
        experiment="tiny",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("good", False, good), ("bad", False, bad)],
        item_ids=IDS,
        categories={"1": "x", "2": "x", "3": "y", "4": "y"},
        rounds=500,
        seed=3,
    )


def test_quality_delta_and_tests_match_hand_computation() -> None:
    """quality, paired delta, McNemar p and Holm on 4 items."""
    s = _summary()
    base, good, bad = s.setup("base"), s.setup("good"), s.setup("bad")  # type: ignore[attr-defined]
    assert base.quality == 0.5 and good.quality == 0.75 and bad.quality == 0.25
    assert good.delta_vs_baseline == pytest.approx(0.25)
    assert bad.delta_vs_baseline == pytest.approx(-0.25)
    assert good.test == "mcnemar" and good.p_value == pytest.approx(1.0)  # 1 discordant pair: 2 * 0.5
    # bad vs base: discordant 1 vs 2 -> 2 * (C(3,0) + C(3,1)) / 8 = 1.0
    assert bad.p_value == pytest.approx(1.0)
    assert good.p_value_holm == pytest.approx(1.0) and base.p_value is None


def test_costs_latency_ratios_and_cost_per_correct() -> None:
    """cost ratio, latency p50/p95 and ratio, tokens, calls per item, $ per correct answer."""
    s = _summary()
    base, good = s.setup("base"), s.setup("good")  # type: ignore[attr-defined]
    assert good.cost_ratio == pytest.approx(3.0)
    assert base.latency_p50_s == pytest.approx(2.5) and base.latency_p95_s == pytest.approx(3.85)
    # good's run on item 4 failed: its latency (8 s) is left out, p50 of [2, 4, 6] = 4; the ratio
    # compares the items both answered, 1-3, where good takes twice the baseline's time on each
    assert good.latency_p50_s == pytest.approx(4.0) and good.latency_ratio == pytest.approx(4.0 / 2.0)
    assert good.tokens == 60 and good.token_ratio == pytest.approx(1.0)
    assert good.calls_per_item == 2.0 and base.calls_per_item == 1.0
    assert good.cost_per_correct_usd == pytest.approx(0.12 / 3)
    assert good.cost_per_correct_ratio == pytest.approx((0.12 / 3) / (0.04 / 2))
    assert good.tokens_per_correct == pytest.approx(60 / 3)
    assert good.errors == 1 and good.error_examples == [{"error": "ProviderError: boom", "count": 1}]


def test_pareto_and_categories() -> None:
    """a dominated setup is off the front (costs in USD); categories get their own quality and delta."""
    s = _summary()
    assert s.cost_basis == "usd"  # type: ignore[attr-defined]
    assert [x.pareto for x in s.setups] == [True, True, False]  # type: ignore[attr-defined]
    good = s.setup("good")  # type: ignore[attr-defined]
    assert good.categories["x"].quality == 1.0 and good.categories["y"].quality == 0.5
    assert good.categories["y"].delta_vs_baseline == pytest.approx(0.5)


def test_non_binary_scores_use_the_sign_test() -> None:
    """scores other than 0/1 switch McNemar for the exact sign test."""
    base = _rows("base", [0.5, 0.5, 0.5, 0.5], [0.01] * 4, [1, 1, 1, 1])
    other = _rows("o", [1, 1, 1, 0.5], [0.01] * 4, [1, 1, 1, 1])
    s = summarize(
        experiment="t",
        evaluator={"name": "x"},
        setups=[("base", True, base), ("o", False, other)],
        item_ids=IDS,
        categories={},
        rounds=200,
    )
    o = s.setup("o")
    assert o.test == "sign" and o.p_value == pytest.approx(0.25)  # 3 wins, 0 losses: 2 / 8
    assert o.cost_per_correct_usd == pytest.approx(0.04 / 3.5)


def test_no_correct_answer_means_no_cost_per_correct() -> None:
    """cost per correct answer is None when nothing was right, and the baseline problem is one line."""
    base = _rows("base", [0, 0, 0, 0], [0.01] * 4, [1, 1, 1, 1], errors=set(IDS))
    s = summarize(
        experiment="t", evaluator={"name": "x"}, setups=[("base", True, base)], item_ids=IDS, categories={}
    )
    b = s.setup("base")
    assert b.cost_per_correct_usd is None and b.quality == 0.0
    assert any("baseline `base` has no quality: all 4 of its stored runs failed" in n for n in s.notes)


def test_summary_reads_back_field_for_field_and_refuses_unknown_keys() -> None:
    """Summary.from_dict rebuilds what to_dict wrote, in the same key order, and refuses a key it never writes."""
    summary = _summary()
    assert isinstance(summary, Summary)
    data = json.loads(json.dumps(summary.to_dict()))
    again = Summary.from_dict(data)
    assert list(again.to_dict()) == list(data) and again.to_dict() == data
    assert list(again.setups[1].model_dump()) == list(data["setups"][1])
    data["setups"][0]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        Summary.from_dict(data)


def test_the_baseline_is_found_by_its_flag_not_its_position() -> None:
    """The baseline passed last: ratios are still against it, and the summary lists it first."""
    base = _rows("base", [1, 1, 0, 0], [0.01] * 4, [1, 2, 3, 4])
    good = _rows("good", [1, 1, 1, 0], [0.03] * 4, [2, 4, 6, 8])
    s = summarize(
        experiment="t",
        evaluator={"name": "exact"},
        setups=[("good", False, good), ("base", True, base)],
        item_ids=IDS,
        categories={},
        rounds=200,
    )
    assert [x.name for x in s.setups] == ["base", "good"]
    assert s.setup("good").cost_ratio == pytest.approx(3.0)
    assert s.setup("good").latency_ratio == pytest.approx(2.0)
    assert s.setup("base").cost_ratio == pytest.approx(1.0)


def test_a_summary_without_a_flagged_baseline_is_refused() -> None:
    """No setup flagged: refused, not ratios against whichever setup came first."""
    good = _rows("good", [1, 1, 1, 0], [0.03] * 4, [2, 4, 6, 8])
    with pytest.raises(ValueError, match="one setup flagged as the baseline"):
        summarize(
            experiment="t",
            evaluator={"name": "exact"},
            setups=[("good", False, good)],
            item_ids=IDS,
            categories={},
            rounds=200,
        )


def test_latency_leaves_out_failed_runs() -> None:
    """Three of four runs failing in 10 ms do not make a setup faster: latency counts answered runs."""
    base = _rows("base", [1, 1, 1, 1], [0.01] * 4, [2, 2, 2, 2])
    fast_fail = _rows("ff", [1, 1, 1, 1], [0.01] * 4, [4, 0.01, 0.01, 0.01], errors={"2", "3", "4"})
    dead = _rows("dead", [1, 1, 1, 1], [0.01] * 4, [0.01] * 4, errors=set(IDS))
    s = summarize(
        experiment="lat",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("ff", False, fast_fail), ("dead", False, dead)],
        item_ids=IDS,
        categories={},
        rounds=100,
    )
    ff, gone = s.setup("ff"), s.setup("dead")
    assert ff.latency_p50_s == pytest.approx(4.0) and ff.latency_ratio == pytest.approx(2.0)
    assert gone.latency_p50_s is None and gone.latency_ratio is None


def test_latency_ratio_compares_the_items_both_answered() -> None:
    """Item k takes k seconds for the setup and for the baseline, but the baseline fails fast on the
    five slowest: latency × is 1.00 on the items both answered (it was 1.83, the setup's median over
    all ten items against the baseline's over its five fast ones)."""
    ids = [str(k) for k in range(1, 11)]

    def rows(name: str, failed: set[int]) -> dict[str, RunRow]:
        return {
            str(k): RunRow(
                k, name, str(k), None, "ProviderError: down" if k in failed else None, 0.01, float(k), 1, 1, 1
            )
            for k in range(1, 11)
        }

    s = summarize(
        experiment="lat",
        evaluator={"name": "exact"},
        setups=[("base", True, rows("base", {6, 7, 8, 9, 10})), ("m", False, rows("m", set()))],
        item_ids=ids,
        categories={},
        rounds=100,
    )
    m = s.setup("m")
    assert m.latency_ratio == pytest.approx(1.0) and m.latency_p95_ratio == pytest.approx(1.0)
    assert m.latency_p50_s == pytest.approx(5.5)  # its own median still counts every run it answered


def _means_in_thirds(setup: list[list[float]], base: list[list[float]]) -> object:
    """samples: 3 over items a, b: each list holds an item's three sample scores."""

    def rows(name: str, per_item: list[list[float]]) -> dict[str, list[RunRow]]:
        return {
            item: [
                RunRow(0, name, item, None, None, 0.01, 1.0, 1, 1, 1, sample=k, score=v)
                for k, v in enumerate(vs)
            ]
            for item, vs in zip("ab", per_item, strict=True)
        }

    return summarize(
        experiment="thirds",
        evaluator={"name": "exact"},
        setups=[("base", True, rows("base", base)), ("m", False, rows("m", setup))],
        item_ids=list("ab"),
        categories={},
        rounds=100,
        samples=3,
    )


def test_a_difference_that_cancels_gets_no_absurd_item_count() -> None:
    """samples: 3, a: 0/3 vs 1/3, b: 3/3 vs 2/3: Δ is 0, so no items-needed figure (it said ~2e33)."""
    m = _means_in_thirds([[0, 0, 0], [1, 1, 1]], [[1, 0, 0], [1, 1, 0]]).setup("m")  # type: ignore[attr-defined]
    assert m.power_n is None
    assert m.power_note == "n=2 items; no difference observed (+0.000), so no sample size can be given"


def test_one_item_is_not_called_no_difference() -> None:
    """One paired item that differs: the power note says one item cannot be told from noise, not that
    no difference was observed."""
    base = _rows("base", [0, 0, 0, 0], [0.01] * 4, [1] * 4)
    good = _rows("good", [1, 1, 1, 1], [0.01] * 4, [1] * 4)
    s = summarize(
        experiment="one",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("good", False, good)],
        item_ids=["1"],
        categories={},
        rounds=100,
    )
    assert (
        s.setup("good").power_note == "n=1 item; a +1.000 difference from one item cannot be told from noise"
    )


def _versus(base_scores: list[float], setup_scores: list[float]) -> object:
    base = _rows("base", base_scores, [0.01] * 4, [1] * 4)
    setup = _rows("m", setup_scores, [0.01] * 4, [1] * 4)
    return summarize(
        experiment="power",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, setup)],
        item_ids=IDS,
        categories={},
        rounds=100,
    ).setup("m")  # type: ignore[attr-defined]


def test_the_power_note_never_calls_too_few_items_for_its_own_test_enough() -> None:
    """Right on all 4 items the baseline got wrong: McNemar's p is 0.125, and the note says 6 items
    are needed (the fewest on which the exact test can reach 0.05), not "~2 items — enough items"."""
    m = _versus([0, 0, 0, 0], [1, 1, 1, 1])
    assert m.p_value == pytest.approx(0.125) and m.power_n == 6
    assert m.power_note == (
        "n=4 items; detecting a +1.000 difference at 80% power needs ~6 items — this result may be noise"
    )


def test_a_difference_with_as_many_items_better_as_worse_gets_no_item_count() -> None:
    """One item far better, one slightly worse: Δ is +0.062 but the sign test sees one win and one
    loss, so no number of items makes it detect the difference; the note says why."""
    m = _versus([0.5, 0.5, 0.5, 0.5], [1.0, 0.25, 0.5, 0.5])
    assert m.test == "sign" and m.power_n is None
    assert m.power_note == (
        "n=4 items; a +0.062 difference, but as many items better as worse, so no number of items makes "
        "the paired test detect it"
    )


def test_line_breaks_from_a_dataset_or_a_provider_stay_inside_their_markdown_cell() -> None:
    """A category holding newlines and pipes, and a provider error over several lines, cannot end a
    row or bullet of report.md and start a heading or table of their own."""
    from moa.experiment.report import markdown_report

    cat = "evil\n\n# Injected heading\n| fake | row |"
    base = _rows("base", [1, 1, 0, 0], [0.01] * 4, [1] * 4)
    bad = {
        i: RunRow(k, "a|b", i, None, "ProviderError: 502\n## <html> body\n- x", 0.01, 1.0, 1, 1, 1)
        for k, i in enumerate(IDS)
    }
    s = summarize(
        experiment="md",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("a|b", False, bad)],
        item_ids=IDS,
        categories={"1": cat, "2": cat},
        rounds=50,
    )
    md = markdown_report(s, png=None)
    lines = md.splitlines()
    assert not any(line.startswith(("# Injected", "## <html>", "| fake")) for line in lines)
    assert "| evil  # Injected heading \\| fake \\| row \\| |" in md
    assert "| Category | base | a\\|b |" in md
    assert "- `a|b` ×4: ProviderError: 502 ## \\<html> body - x" in md


def test_html_from_a_dataset_or_a_provider_is_no_tag_in_report_md() -> None:
    """A category holding a tag (`<img onerror=...>`) and a provider's HTML error page were written
    into report.md as HTML, which renderers passing HTML through lay out or run; a backslash before
    each tag's `<` shows it as text. A `<` opening no tag (`p <1e-300`) is left as it is."""
    from moa.experiment.report import markdown_report

    cat = '<img src=x onerror="alert(1)">'
    base = _rows("base", [1, 1, 0, 0], [0.01] * 4, [1] * 4)
    bad = {
        i: RunRow(
            k, "a", i, None, "ProviderError: <!DOCTYPE html><html><body>502</body></html>", 0.01, 1.0, 1, 1, 1
        )
        for k, i in enumerate(IDS)
    }
    s = summarize(
        experiment="<script>alert(2)</script>",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("a", False, bad)],
        item_ids=IDS,
        categories={"1": cat, "2": cat},
        rounds=50,
    )
    md = markdown_report(s, png=None)
    assert not re.search(r"(?<!\\)<[A-Za-z/!]", md), md
    assert '\\<img src=x onerror="alert(1)">' in md and "# \\<script>alert(2)\\</script>" in md
    assert "\\<!DOCTYPE html>\\<html>\\<body>502\\</body>\\</html>" in md


def test_per_correct_figures_leave_out_runs_not_scored_yet() -> None:
    """Every answer right at $0.01 a run, two of the setup's not scored yet (its judge failed on
    them): $ and tokens per correct answer equal the baseline's, not twice as much."""
    base = _rows("base", [1, 1, 1, 1], [0.01] * 4, [1] * 4)
    pending = _rows("m", [1, 1, None, None], [0.01] * 4, [1] * 4)
    s = summarize(
        experiment="pc",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, pending)],
        item_ids=IDS,
        categories={},
        rounds=50,
    )
    m = s.setup("m")
    assert m.cost_per_correct_usd == pytest.approx(0.01) and m.cost_per_correct_ratio == pytest.approx(1.0)
    assert m.tokens_per_correct == pytest.approx(15.0) and m.cost_usd == pytest.approx(0.04)


def _one_category_per_item(n: int) -> object:
    ids = [f"i{k}" for k in range(n)]
    rows = {
        name: {
            i: RunRow(k, name, i, None, None, 0.01, 1.0, 1, 1, 1, score=float(k % 2))
            for k, i in enumerate(ids)
        }
        for name in ("base", "m")
    }
    return summarize(
        experiment="cats",
        evaluator={"name": "exact"},
        setups=[("base", True, rows["base"]), ("m", False, rows["m"])],
        item_ids=ids,
        categories={i: f"cat {i}" for i in ids},
        rounds=50,
    )


def test_a_category_per_row_leaves_the_breakdown_out_with_a_note() -> None:
    """A dataset whose `category` is unique per row (201 here) gets a note, not a table as long as the
    dataset and a bootstrap per row (quadratic in the items: 100k such rows ran for hours)."""
    from moa.experiment.analysis.summary import MAX_CATEGORIES

    s = _one_category_per_item(MAX_CATEGORIES + 1)
    assert s.setup("m").categories == {}  # type: ignore[attr-defined]
    assert f"the items have {MAX_CATEGORIES + 1} categories, more than {MAX_CATEGORIES}" in " ".join(
        s.notes  # type: ignore[attr-defined]
    )
    kept = _one_category_per_item(MAX_CATEGORIES)
    assert len(kept.setup("m").categories) == MAX_CATEGORIES  # type: ignore[attr-defined]


def test_a_language_per_row_leaves_the_language_breakdown_out_with_a_note(tmp_path: Path) -> None:
    """Items naming 201 languages: the per-language breakdown is left out with a note."""
    from moa.experiment.analysis.languages import add_languages
    from moa.experiment.analysis.summary import MAX_CATEGORIES
    from moa.experiment.store import Store

    n = MAX_CATEGORIES + 1
    ids = [f"i{k}" for k in range(n)]
    s = _one_category_per_item(n)
    store = Store.open(tmp_path)
    try:
        store.put_items((i, "h", None, json.dumps({"language": f"lang{i}"})) for i in ids)
        rows = {
            name: {i: [RunRow(0, name, i, None, None, 0.0, 1.0, 1, 1, 1, score=1.0)] for i in ids}
            for name in ("base", "m")
        }
        add_languages(s, store, {"item_ids": ids}, rows)  # type: ignore[arg-type]
    finally:
        store.close()
    assert s.setup("m").languages == {}  # type: ignore[attr-defined]
    assert f"the items name {n} languages, more than {MAX_CATEGORIES}" in " ".join(s.notes)  # type: ignore[attr-defined]


def _priced(name: str, item: int, sample: int, *, usd: float, seconds: float, tokens: int) -> RunRow:
    return RunRow(item, name, str(item), "x", None, usd, seconds, tokens, 0, 1, sample=sample, score=1.0)


def test_ratios_of_an_interrupted_setup_compare_the_items_both_ran() -> None:
    """A setup at 2x the cost, 3x the latency and the baseline's tokens on every item, interrupted
    after the first (cheapest) half of the items: the table says 2x, 1x and 3x (it said 1.09x,
    0.55x and 1.64x, its cheap half against the baseline's whole dataset)."""
    ids = [str(i) for i in range(1, 11)]
    base = {str(i): _priced("base", i, 0, usd=0.001 * i, seconds=i, tokens=10 * i) for i in range(1, 11)}
    half = {str(i): _priced("m", i, 0, usd=0.002 * i, seconds=3 * i, tokens=10 * i) for i in range(1, 6)}
    s = summarize(
        experiment="cut",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, half)],
        item_ids=ids,
        categories={},
        rounds=50,
    )
    m = s.setup("m")
    assert m.cost_ratio == pytest.approx(2.0) and m.token_ratio == pytest.approx(1.0)
    assert m.latency_ratio == pytest.approx(3.0) and m.latency_p95_ratio == pytest.approx(3.0)
    assert m.cost_per_correct_ratio == pytest.approx(2.0) and m.tokens_per_correct_ratio == pytest.approx(1.0)
    # the setup's own figures stay over its own runs
    assert m.cost_per_item_usd == pytest.approx(0.006) and s.setup("base").cost_ratio == pytest.approx(1.0)


def test_ratios_with_samples_pair_each_sample_with_the_baseline_s_same_sample() -> None:
    """samples: 2, the setup's sample 1 missing on item 2 and the baseline's sample 0 on item 1:
    the ratios count the (item, sample) pairs both stored, where the setup costs 4x each time."""
    usd = {(1, 0): 0.01, (1, 1): 0.02, (2, 0): 0.03, (2, 1): 0.5}
    base = {
        str(i): [
            _priced("base", i, k, usd=usd[i, k], seconds=1, tokens=1) for k in (0, 1) if (i, k) != (1, 0)
        ]
        for i in (1, 2)
    }
    setup = {
        str(i): [
            _priced("m", i, k, usd=4 * usd[i, k], seconds=1, tokens=1) for k in (0, 1) if (i, k) != (2, 1)
        ]
        for i in (1, 2)
    }
    s = summarize(
        experiment="samples",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, setup)],
        item_ids=["1", "2"],
        categories={},
        rounds=50,
        samples=2,
    )
    assert s.setup("m").cost_ratio == pytest.approx(4.0)
    assert s.setup("m").cost_per_correct_ratio == pytest.approx(4.0)


def test_a_setup_sharing_no_run_with_the_baseline_has_no_ratios() -> None:
    """The setup ran items 1-2, the baseline 3-4: nothing to compare, so no ratio (not one from
    disjoint items)."""
    base = {str(i): _priced("base", i, 0, usd=0.01, seconds=1, tokens=5) for i in (3, 4)}
    setup = {str(i): _priced("m", i, 0, usd=0.05, seconds=2, tokens=5) for i in (1, 2)}
    s = summarize(
        experiment="disjoint",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, setup)],
        item_ids=["1", "2", "3", "4"],
        categories={},
        rounds=50,
    )
    m = s.setup("m")
    assert m.cost_ratio is None and m.token_ratio is None and m.latency_ratio is None
    assert m.cost_per_correct_ratio is None and m.delta_vs_baseline is None


def test_a_p_value_below_the_smallest_float_is_not_printed_as_zero() -> None:
    """2,000 items, the setup right on each one the baseline got wrong: the exact p (2^-1999) underflows
    to 0.0 in summary.json, and the table says <1e-300 rather than claiming p = 0."""
    from moa.experiment.report.text import table_rows

    ids = [f"i{k}" for k in range(2000)]
    base = {i: RunRow(0, "base", i, "x", None, 0.01, 1.0, 1, 1, 1, score=0.0) for i in ids}
    good = {i: RunRow(0, "m", i, "x", None, 0.01, 1.0, 1, 1, 1, score=1.0) for i in ids}
    s = summarize(
        experiment="tiny-p",
        evaluator={"name": "exact"},
        setups=[("base", True, base), ("m", False, good)],
        item_ids=ids,
        categories={},
        rounds=50,
    )
    assert s.setup("m").p_value == 0.0
    assert table_rows(s)[1][-1] == "<1e-300 (<1e-300)"


def test_the_table_footer_counts_one_item_in_the_singular(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa compare` over one item printed `t: 1 items, evaluator ...` under its table."""
    from moa.experiment.report.text import print_table

    one = ["1"]
    s = summarize(
        experiment="t",
        evaluator={"name": "x"},
        setups=[("base", True, {"1": _rows("base", [1], [0.01], [1])["1"]})],
        item_ids=one,
        categories={},
    )
    print_table(s)
    assert "\nt: 1 item, evaluator `x`, baseline `base`;" in capsys.readouterr().out
