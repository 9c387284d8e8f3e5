"""The summary under a pairwise judge: the baseline is 0.5 on every run, failed or not, so its failure
counts once (in the setup's score), and every figure (Δ, judge, Bradley–Terry, categories, languages,
$ per correct) reads the pair's one stored score (the scoring phase stores it, failed runs' too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.eval.judge import INCONSISTENT, NO_VERDICT
from moa.experiment.analysis import Summary, summarize
from moa.experiment.analysis.languages import add_languages
from moa.experiment.report import html_report, markdown_report, quality_notes
from moa.experiment.store import RunRow, Store

IDS = [f"i{k}" for k in range(10)]


def _run(
    setup: str,
    item: str,
    score: float | None,
    *,
    failed: bool = False,
    sample: int = 0,
    detail: str | None = None,
) -> RunRow:
    err = "ProviderError: boom" if failed else None
    return RunRow(0, setup, item, None, err, 0.01, 1.0, 10, 10, 1, sample=sample, score=score, detail=detail)


def _base_fails_on_two() -> tuple[dict[str, list[RunRow]], dict[str, list[RunRow]]]:
    """The baseline failed on i0 and i1 (the setup wins them, 1.0); the judge ties the other 8. Each
    run carries the score the scoring phase stores: 0.5 on the baseline's failed runs too."""
    base = {i: [_run("single", i, 0.5, failed=k < 2)] for k, i in enumerate(IDS)}
    moa = {i: [_run("moa", i, 1.0 if k < 2 else 0.5)] for k, i in enumerate(IDS)}
    return base, moa


def _judged(
    base: dict[str, list[RunRow]],
    moa: dict[str, list[RunRow]],
    *,
    item_ids: list[str] = IDS,
    rounds: int = 300,
    **kw: object,
) -> Summary:
    return summarize(
        experiment="j",
        evaluator={"name": "judge"},
        setups=[("single", True, base), ("moa", False, moa)],
        item_ids=item_ids,
        rounds=rounds,
        pairwise=True,
        **kw,  # type: ignore[arg-type]
    )


def test_a_baseline_failure_counts_once_in_delta() -> None:
    """Baseline failed on 2 of 10 items, ties on 8: judge score 0.6, Δ +0.100, baseline quality 0.5."""
    s = _judged(*_base_fails_on_two(), categories={})
    base, moa = s.setup("single"), s.setup("moa")
    assert moa.judge is not None and moa.judge.score == pytest.approx(0.6)
    assert base.quality == pytest.approx(0.5) and base.quality_ci95 == [0.5, 0.5]
    assert moa.delta_vs_baseline == pytest.approx(0.1)
    assert moa.delta_ci95 is not None and moa.delta_ci95[1] <= 0.25 + 1e-9
    assert moa.test == "sign" and moa.p_value == pytest.approx(0.5)  # 2 positive, 0 negative


def test_power_uses_the_judge_score_minus_one_half() -> None:
    """The power figure is computed from the differences judge score − 0.5 (0.5 on 2 items, 0 on 8)."""
    s = _judged(*_base_fails_on_two(), categories={})
    assert s.setup("moa").power_note is not None and "+0.100 difference" in str(s.setup("moa").power_note)


def test_cost_per_correct_counts_the_baseline_as_half_on_every_run() -> None:
    """$ per correct under the judge: the baseline's 10 runs are half a correct answer each."""
    s = _judged(*_base_fails_on_two(), categories={})
    base, moa = s.setup("single"), s.setup("moa")
    assert base.cost_per_correct_usd == pytest.approx(0.10 / 5)
    assert moa.cost_per_correct_usd == pytest.approx(0.10 / 6)
    assert moa.cost_per_correct_ratio == pytest.approx(5 / 6)


def test_category_delta_is_judge_score_minus_one_half() -> None:
    """A category holding both baseline failures: Δ +0.500 there, not +1.000."""
    cats: dict[str, str | None] = {i: ("hard" if k < 4 else "easy") for k, i in enumerate(IDS)}
    s = _judged(*_base_fails_on_two(), categories=cats)
    hard = s.setup("moa").categories["hard"]
    assert hard.quality == pytest.approx(0.75)
    assert hard.delta_vs_baseline == pytest.approx(0.25)
    assert s.setup("single").categories["hard"].quality == pytest.approx(0.5)


def test_both_failed_ties_and_setup_failed_loses_alike_everywhere() -> None:
    """Neither answered (i0-i4): a tie; only the setup failed (i5-i9): a loss; in Δ, judge and BT alike."""
    base = {i: [_run("single", i, 0.5, failed=k < 5)] for k, i in enumerate(IDS)}
    moa = {i: [_run("moa", i, 0.5 if k < 5 else 0.0, failed=True)] for k, i in enumerate(IDS)}
    m = _judged(base, moa, categories={}).setup("moa")
    assert m.quality == pytest.approx(0.25) and m.delta_vs_baseline == pytest.approx(-0.25)
    assert m.judge is not None and (m.judge.wins, m.judge.ties, m.judge.losses) == (0, 5, 5)
    assert m.judge.score == pytest.approx(0.25)
    assert m.bt_rating is not None and m.bt_rating < 1000.0


def test_the_pairwise_footer_states_the_rule() -> None:
    """summary.json's scoring rule under the judge says the baseline is 0.5 and a double failure ties."""
    rule = _judged(*_base_fails_on_two(), categories={}).scoring_rule
    assert "baseline scores 0.5" in rule and "0.5 against one that failed too" in rule


def test_per_language_delta_under_the_judge(tmp_path: Path) -> None:
    """The per-language Δ and rating score the pair like the overall figures: Δ = judge score − 0.5."""
    store = Store.open(tmp_path)
    try:
        lang = {i: ("c" if k < 4 else "python") for k, i in enumerate(IDS)}
        store.put_items((i, "h", None, json.dumps({"language": lang[i]})) for i in IDS)
        base, moa = _base_fails_on_two()
        s = _judged(base, moa, categories={})
        manifest = {"item_ids": IDS, "samples": 1, "bootstrap_rounds": 300, "pairwise": True}
        add_languages(s, store, manifest, {"single": base, "moa": moa})
    finally:
        store.close()
    c = s.setup("moa").languages["c"]
    assert c.quality == pytest.approx(0.75) and c.delta_vs_baseline == pytest.approx(0.25)
    assert s.setup("single").languages["c"].quality == pytest.approx(0.5)
    assert s.setup("moa").languages["python"].delta_vs_baseline == pytest.approx(0.0)


def test_forced_ties_are_counted_in_runs_and_said_to_be_runs() -> None:
    """samples: 2, each item won on one sample and forced to a tie on the other (no verdict on i0,
    orders that disagree on i1): 2 items won, the forced ties named as judged runs, not as item ties."""
    ids = ["i0", "i1"]
    base = {i: [_run("single", i, 0.5, sample=k) for k in range(2)] for i in ids}
    forced = {"i0": f"{NO_VERDICT} (setup first): MalformedReply: x", "i1": f"tie: {INCONSISTENT}"}
    moa = {i: [_run("moa", i, 0.5, detail=forced[i]), _run("moa", i, 1.0, sample=1)] for i in ids}
    s = _judged(base, moa, item_ids=ids, rounds=100, categories={}, samples=2)
    j = s.setup("moa").judge
    assert j is not None and (j.wins, j.ties, j.losses, j.no_verdict, j.inconsistent) == (2, 0, 0, 1, 1)
    line = next(n for n in quality_notes(s) if n.startswith("moa vs single"))
    assert "2 wins, 0 ties, 0 losses over items (each the mean of its 2 samples)" in line
    assert line.endswith("1 judged run without a verdict, 1 with orders that disagree (each scored a tie)")
    report = markdown_report(s, png=None)
    assert "| moa | 2 | 0 | 0 |" in report
    assert (
        "- `moa`: 1 judged run without a verdict, 1 with orders that disagree (each scored a tie)" in report
    )
    assert "Wins, ties and losses count items, each scored by the mean over its samples." in report


def test_the_runs_forced_to_a_tie_are_named_under_the_main_table() -> None:
    """report.md and report.html name a setup's judged runs without a verdict right under the table
    holding its quality Δ, which counts them as parity (they were only in the Judge section)."""
    ids = ["i0", "i1", "i2"]
    base = {i: [_run("single", i, 0.5)] for i in ids}
    detail = f"{NO_VERDICT} (setup second): MalformedReply: x"
    moa = {i: [_run("moa", i, 0.5, detail=detail if i != "i2" else None)] for i in ids}
    s = _judged(base, moa, item_ids=ids, rounds=100, categories={})
    line = "`moa`: quality Δ counts 2 judged runs without a verdict (each scored a tie)"
    report = markdown_report(s, png=None)
    assert f"- {line}" in report.split("## Details")[0]
    assert line.replace("`moa`", "<li>`moa`") in html_report(s, None).split("<h2>Details</h2>")[0]


def test_what_a_judge_paid_shows_when_none_of_its_pairs_has_a_verdict() -> None:
    """Every pair of `moa` failed (the judge answered one order, then the budget ran out): no win,
    tie or loss, but report.md still shows its judge cost (the Judge section, the only place it
    is, was left out, and a setup without a judge summary showed — for it)."""
    ids = ["i0", "i1"]
    base = {i: [_run("single", i, 0.5)] for i in ids}
    moa = {i: [_run("moa", i, None)] for i in ids}
    s = _judged(base, moa, item_ids=ids, rounds=100, categories={}, judge_costs={"moa": 0.0345})
    assert s.setup("moa").judge is None
    assert "| moa | — | — | — | — | — | — | 0.034500 |" in markdown_report(s, png=None)
