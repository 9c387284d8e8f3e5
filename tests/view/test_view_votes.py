"""People's votes in the store and in the numbers: the votes table in a version-4 store, one vote per
voter and pair, Cohen's kappa, people's wins and Bradley–Terry ratings, their agreement with the
judge, and the report's "Human votes" section after ``moa report``."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from moa.errors import UserError
from moa.experiment import Store, rebuild_report
from moa.experiment.analysis.votes import cohen_kappa, direction, human_summaries
from moa.experiment.store.schema import SCHEMA_VERSION
from moa.experiment.store.votes import Vote, add_vote, delete_vote, iter_votes, vote_count, voted_pairs


def _vote(item: str, setup: str, other: str, value: float, voter: str = "ann") -> Vote:
    token = {1.0: "A>>B", 0.75: "A>B", 0.5: "A=B", 0.25: "B>A", 0.0: "B>>A"}[value]
    return Vote(0, item, 0, setup, other, setup, token, voter, 0.0)


def test_a_version_4_store_without_the_votes_table_gets_it_on_open(tmp_path: Path) -> None:
    """A store written before votes existed (version 4, without them) opens with an empty votes
    table, upgraded to the current version."""
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "experiment.sqlite")
    conn.executescript(
        "DROP TABLE votes; DROP INDEX scores_baseline; ALTER TABLE scores DROP COLUMN baseline_run_id;"
        "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
    )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        assert vote_count(store) == (0, 0)
    finally:
        store.close()


def test_one_vote_per_voter_and_pair_from_either_side(tmp_path: Path) -> None:
    """Voting again on a pair replaces the voter's vote; the value is the setup's whichever side it
    was shown on; another voter's vote on the same pair is kept beside it; undo deletes one's own."""
    store = Store.open(tmp_path)
    try:
        first = add_vote(
            store,
            item_id="q1",
            sample=0,
            setup="moa",
            other_setup="single",
            left_setup="moa",
            verdict="A>B",
            voter="ann",
        )
        assert next(iter_votes(store)).value == 0.75
        add_vote(
            store,
            item_id="q1",
            sample=0,
            setup="moa",
            other_setup="single",
            left_setup="single",
            verdict="A>B",
            voter="ann",
        )
        bob = add_vote(
            store,
            item_id="q1",
            sample=0,
            setup="moa",
            other_setup="single",
            left_setup="moa",
            verdict="A=B",
            voter="bob",
        )
        votes = {v.voter: v for v in iter_votes(store)}
        assert votes["ann"].value == 0.25 and votes["bob"].value == 0.5
        assert vote_count(store) == (2, 2)
        assert voted_pairs(store, "ann") == {("q1", 0, "moa", "single")}
        assert delete_vote(store, first, voter="ann") is None  # replaced already
        assert delete_vote(store, bob, voter="ann") is None  # not ann's
        assert delete_vote(store, bob, voter="bob") is not None
        assert vote_count(store) == (1, 1)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"verdict": "A>>>B"}, "'A>>>B'"),
        ({"left_setup": "self"}, "left_setup `self`"),
        ({"other_setup": "moa"}, "`moa` against itself"),
        ({"voter": "  "}, "voter"),
    ],
)
def test_a_malformed_vote_is_refused_by_name(tmp_path: Path, kw: dict[str, str], named: str) -> None:
    """A vote that is not one names what is wrong and stores nothing."""
    fields = {
        "item_id": "q1",
        "sample": 0,
        "setup": "moa",
        "other_setup": "single",
        "left_setup": "moa",
        "verdict": "A>B",
        "voter": "ann",
        **kw,
    }
    store = Store.open(tmp_path)
    try:
        with pytest.raises(UserError, match=named.replace("(", r"\(")):
            add_vote(store, **fields)  # type: ignore[arg-type]
        assert vote_count(store) == (0, 0)
    finally:
        store.close()


def test_cohen_kappa_by_hand() -> None:
    """κ = (po - pe) / (1 - pe): 1 for perfect agreement, 0 at chance, undefined in one class."""
    assert cohen_kappa([1, 0, -1, 1], [1, 0, -1, 1]) == pytest.approx(1.0)
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # 7 of 10 agree (po = 0.7); a says 1 half the time, b 6 times in 10: pe = 0.5*0.6 + 0.5*0.4
    a = [1] * 5 + [0] * 5
    b = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    assert cohen_kappa(a, b) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert cohen_kappa([1, 1], [1, 1]) is None and cohen_kappa([], []) is None
    assert [direction(v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)] == [-1, -1, 0, 1, 1]


def test_people_ratings_and_agreement_with_the_judge() -> None:
    """Votes where `good` mostly beats the baseline and `bad` mostly loses: wins counted from each
    side, BT orders good > baseline (1000) > bad, and agreement/kappa against the judge's
    directions on the same pairs as computed by hand."""
    votes = [_vote(f"q{i}", "good", "base", 1.0 if i < 8 else 0.5) for i in range(10)]
    votes += [_vote(f"q{i}", "bad", "base", 0.0 if i < 7 else 0.75) for i in range(10)]
    judge = {(f"q{i}", 0, "good"): 0.75 if i < 6 else 0.5 for i in range(10)}
    judge |= {(f"q{i}", 0, "bad"): 0.25 for i in range(10)}
    found = human_summaries(
        votes, setups=["base", "good", "bad"], baseline="base", evaluator=judge, rounds=200
    )
    good, bad, base = found["good"], found["bad"], found["base"]
    assert (good.wins, good.ties, good.losses, good.votes) == (8, 2, 0, 10)
    assert (bad.wins, bad.ties, bad.losses) == (3, 0, 7)
    assert base.votes == 20 and (base.wins, base.ties, base.losses) == (7, 2, 11)
    assert base.bt_rating == pytest.approx(1000.0)
    assert good.bt_rating is not None and bad.bt_rating is not None
    assert good.bt_rating > 1000 > bad.bt_rating
    assert good.bt_ci95 is not None and good.bt_ci95[0] <= good.bt_rating <= good.bt_ci95[1]
    # good: people say better on q0..q7, tie on q8, q9; the judge better on q0..q5, tie after
    assert good.agreement == pytest.approx(8 / 10) and good.agreement_n == 10
    people = [1] * 8 + [0] * 2
    machine = [1] * 6 + [0] * 4
    assert good.kappa == pytest.approx(cohen_kappa(people, machine))
    # bad: the judge always says worse, people say worse 7 times
    assert bad.agreement == pytest.approx(0.7) and bad.kappa is not None and bad.kappa == pytest.approx(0.0)
    assert base.agreement is None


def test_votes_between_two_setups_rate_both_but_agree_only_against_the_baseline() -> None:
    """A vote between two setups moves their ratings; agreement counts only baseline pairs."""
    votes = [_vote(f"q{i}", "b", "a", 1.0) for i in range(6)] + [_vote("q0", "a", "base", 0.5)]
    found = human_summaries(votes, setups=["base", "a", "b"], baseline="base", evaluator={}, rounds=100)
    assert found["b"].bt_rating is not None and found["a"].bt_rating is not None
    assert found["b"].bt_rating > found["a"].bt_rating
    assert found["b"].agreement is None and found["b"].agreement_n == 0
    assert human_summaries([], setups=["base"], baseline="base", evaluator={}) == {}


def test_the_report_gives_people_ratings_next_to_the_judge(experiments: Path, tmp_path: Path) -> None:
    """After votes, `moa report` writes a Human votes section (people's BT beside the judge's, the
    agreement and kappa) into report.md and report.html, and `human` into summary.json."""
    folder = tmp_path / "judged"
    shutil.copytree(experiments / "judged", folder)
    store = Store.open(folder)
    try:
        for i in range(6):
            add_vote(
                store,
                item_id=f"q{i}",
                sample=0,
                setup="moa",
                other_setup="single",
                left_setup="single",
                verdict="B>A",
                voter="ann",
            )
    finally:
        store.close()
    summary = asyncio.run(rebuild_report(folder))
    moa = summary.setup("moa")
    assert moa.human is not None and moa.human.votes == 6 and moa.human.wins == 6
    # q0's `moa` run failed: the judge never saw it, so that vote has no verdict to agree with
    assert moa.human.agreement is not None and moa.human.agreement_n == 5
    assert summary.setup("self").human is None
    report = (folder / "report.md").read_text()
    assert "## Human votes" in report and "people's BT [95% CI]" in report and "judge's BT" in report
    assert "agreement with judge" in report and "Cohen's κ" in report
    assert "Human votes" in (folder / "report.html").read_text()
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["setups"][1]["human"]["votes"] == 6


def test_a_queue_follows_the_store_keeping_its_order() -> None:
    """Refreshed with the store's pairs, a voter's queue keeps its order, puts new pairs at the end
    and drops the pairs whose answers are gone (skipped ones too)."""
    from moa.view.voting import Pair, VoteQueue

    old = [Pair(f"q{i}", 0, "moa", "single") for i in range(6)]
    q = VoteQueue("ann", old, seed="x", secret="s")
    before = list(q.order)
    q.skip(old[0])
    q.skip(old[1])
    new = [Pair(f"n{i}", 0, "moa", "single") for i in range(3)]
    q.refresh([*old[1:], *new])
    assert q.order[:5] == [p for p in before if p != old[0]]
    assert set(q.order[5:]) == set(new) and len(q.order) == 8
    assert q.skipped == [old[1]]
