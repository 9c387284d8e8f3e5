"""What the failure counts are out of: stored runs (every sample, failed or not, scored or not), not
scored items, so an interrupted or half-scored experiment says how many of its runs failed."""

from __future__ import annotations

import json

from moa.experiment.analysis import Summary, baseline_problem, summarize
from moa.experiment.report import print_notes
from moa.experiment.store import RunRow

IDS = ["i0", "i1", "i2", "i3"]


def _run(setup: str, item: str, score: float | None, *, failed: bool = False, sample: int = 0) -> RunRow:
    err = "ProviderError: down" if failed else None
    return RunRow(0, setup, item, None, err, 0.01, 1.0, 10, 10, 1, sample=sample, score=score)


def _summary(base: dict[str, list[RunRow]], samples: int = 1) -> Summary:
    moa = {i: [_run("moa", i, 1.0, sample=k) for k in range(samples)] for i in base}
    return summarize(
        experiment="c",
        evaluator={"name": "exact"},
        setups=[("single", True, base), ("moa", False, moa)],
        item_ids=IDS,
        categories={},
        rounds=200,
        samples=samples,
    )


def test_interrupted_samples_count_the_stored_runs() -> None:
    """samples: 3, only sample 0 stored and failed: 4 of 4 runs failed, and the baseline has no quality."""
    s = _summary({i: [_run("single", i, None, failed=True)] for i in IDS}, samples=3)
    notes = print_notes(s)
    assert "single: 4 of 4 runs failed; most frequent: ProviderError: down" in notes
    assert s.setup("single").runs == 4 and s.setup("moa").runs == 12
    problem = baseline_problem(s)
    assert problem is not None and "all 4 of its stored runs failed" in problem


def test_failed_runs_are_counted_out_of_unscored_ones_too() -> None:
    """3 runs failed and 2 answered but are not scored yet: 3 of 5 failed, which is not all of them."""
    base = {i: [_run("single", i, None, failed=True)] for i in IDS[:3]}
    base["i3"] = [_run("single", "i3", None), _run("single", "i3", None, sample=1)]
    s = _summary(base, samples=2)
    assert "single: 3 of 5 runs failed; most frequent: ProviderError: down" in print_notes(s)
    assert baseline_problem(s) is None


def test_stored_but_unscored_is_not_called_unstored() -> None:
    """Every baseline run stored, none scored yet: the note says so, not that none is stored."""
    s = _summary({i: [_run("single", i, None)] for i in IDS})
    assert baseline_problem(s) == "baseline `single` has no quality: none of its 4 stored runs is scored yet"
    empty = _summary({})
    assert baseline_problem(empty) == "baseline `single` has no quality: none of its runs is stored"


def test_missing_runs_with_samples_are_called_runs() -> None:
    """With samples, the not-run-yet note counts (setup, item, sample) runs, which is what it counts;
    it says which runs the table compares until the experiment is complete."""
    s = _summary({i: [_run("single", i, 1.0)] for i in IDS}, samples=3)
    assert "8 (setup, item, sample) runs have not been run yet" in " ".join(s.notes)
    assert "compare only the runs every setup stored, covering 4 of the 4 items" in " ".join(s.notes)


def test_an_older_summary_json_gets_its_run_count_back() -> None:
    """A summary.json without `runs` reads back with the stored runs counted from items, samples, missing."""
    s = _summary({i: [_run("single", i, None, failed=True)] for i in IDS}, samples=3)
    data = json.loads(json.dumps(s.to_dict()))
    for d in data["setups"]:
        del d["runs"]
    again = Summary.from_dict(data)
    assert [x.runs for x in again.setups] == [4, 12]
    assert "single: 4 of 4 runs failed; most frequent: ProviderError: down" in print_notes(again)


def test_the_run_count_is_derived_and_cannot_disagree_with_missing() -> None:
    """`runs` is items × samples − missing: a summary.json whose `runs` says otherwise reads back derived,
    and the all-failed rule (Pareto, notes) reads the derived count."""
    s = _summary({i: [_run("single", i, None, failed=True)] for i in IDS}, samples=3)
    data = json.loads(json.dumps(s.to_dict()))
    data["setups"][0]["runs"] = 999
    again = Summary.from_dict(data)
    assert again.setup("single").runs == 4 and again.setup("single").missing == 8
    assert "single: 4 of 4 runs failed" in " ".join(print_notes(again))
