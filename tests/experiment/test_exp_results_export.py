"""``results.jsonl`` exports the runs the summary counts: the experiment's items and its first
``samples`` samples, not every run the store still holds."""

from __future__ import annotations

import json
from pathlib import Path

from moa.errors import ProviderError
from moa.experiment.report import write_results
from moa.experiment.store import Store


def test_results_jsonl_leaves_out_samples_past_the_experiments(tmp_path: Path) -> None:
    """A store holding samples 0-2 of an experiment now at samples: 2 exports samples 0 and 1 only."""
    store = Store.open(tmp_path)
    try:
        for item in ("a", "b"):
            for k in range(3):
                store.record_run("s", "h", item, "ih", None, ProviderError("down"), sample=k)
        store.commit()
        manifest = {
            "item_ids": ["a", "b"],
            "setups": [{"name": "s", "hash": "h"}],
            "evaluator_id": "e",
            "samples": 2,
        }
        write_results(store, manifest, tmp_path / "results.jsonl")
    finally:
        store.close()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((r["item_id"], r["sample"]) for r in rows) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
