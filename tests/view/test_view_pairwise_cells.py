"""The viewer's per-item scores under a pairwise judge are the stored ones the summary counts: a
failed baseline run is 0.5 and a failed setup run 0.5 when the baseline's run failed too (the viewer
had counted every failed run 0, so its item scores disagreed with report.md)."""

from __future__ import annotations

from pathlib import Path

from moa.errors import ProviderError
from moa.experiment.store import Store
from moa.results import RunResult, Usage
from moa.view.items import ItemIndex


def _index(tmp_path: Path, pairwise: bool, samples: int) -> ItemIndex:
    store = Store.open(tmp_path)
    try:
        for k in range(samples):
            b = store.record_run("base", "h0", "i", "x", None, ProviderError("down"), sample=k)
            m = store.record_run("moa", "h1", "i", "x", None, ProviderError("down"), sample=k)
            ok = store.record_run("moa", "h1", "j", "x", RunResult("y", "t", Usage(), 0.0, 1.0, 1.0, [], {}))
            if pairwise:
                store.put_score(b, "e", 0.5, "baseline")
                store.put_score(m, "e", 0.5, "both failed on this item", baseline_run_id=b)
        if not pairwise:
            store.put_score(ok, "e", 1.0, "match")
        manifest = {
            "evaluator_id": "e",
            "pairwise": pairwise,
            "samples": samples,
            "item_ids": ["i"],
            "setups": [
                {"name": "base", "hash": "h0", "is_baseline": True},
                {"name": "moa", "hash": "h1", "is_baseline": False},
            ],
        }
        return ItemIndex.build(store, manifest)
    finally:
        store.close()


def test_failed_runs_show_their_stored_pairwise_score(tmp_path: Path) -> None:
    """Both failed on the item under a judge: the viewer shows 0.5 for each, a tie, as the summary."""
    for samples in (1, 2):
        idx = _index(tmp_path / str(samples), pairwise=True, samples=samples)
        row = idx.rows[0]
        assert row.scores == (0.5, 0.5) and row.errors == (True, True)
        assert idx.outcome(row, 1) == "tie"


def test_failed_runs_score_zero_without_a_judge(tmp_path: Path) -> None:
    """Under a reference evaluator a failed run has no stored score and still counts 0."""
    for samples in (1, 2):
        row = _index(tmp_path / str(samples), pairwise=False, samples=samples).rows[0]
        assert row.scores == (0.0, 0.0)
