"""``results.jsonl`` exports the runs the summary counts, scored as the summary scores them: the
experiment's items and its first ``samples`` samples, and under a pairwise judge each pair's score."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from moa.errors import ProviderError
from moa.eval.datasets import Item
from moa.eval.types import PairScore
from moa.experiment.config import Setup
from moa.experiment.report import write_results
from moa.experiment.score_answers import score_all
from moa.experiment.store import Store
from moa.results import RunResult, Usage


def _answer(text: str) -> RunResult:
    return RunResult(text, "t", Usage(), 0.0, 1.0, 1.0, [], {})


class _NeverCalled:
    """A pairwise evaluator for pairs that need no judge call (a side failed)."""

    name = "never"

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Any) -> PairScore:
        raise AssertionError("no pair here needs a judge")


def _export(
    tmp_path: Path, manifest: dict[str, Any], runs: list[tuple[str, str, int, bool]], *, judged: bool = False
) -> list[Any]:
    """Store ``runs`` (setup, item, sample, failed), score them under a pairwise judge if ``judged``
    (as `moa compare` does), export them, read results.jsonl back."""
    store = Store.open(tmp_path)
    try:
        for setup, item, k, failed in runs:
            if failed:
                store.record_run(setup, "h", item, "ih", None, ProviderError("down"), sample=k)
            else:
                store.record_run(setup, "h", item, "ih", _answer("x"), sample=k)
        store.commit()
        if judged:
            no_topology: Any = None
            setups = [
                Setup(s["name"], no_topology, s["name"], s["hash"], s["is_baseline"])
                for s in manifest["setups"]
            ]
            asyncio.run(
                score_all(
                    store,
                    setups,
                    _NeverCalled(),
                    manifest["evaluator_id"],
                    lambda i: Item(id=i, input="q"),
                    asyncio.Semaphore(2),
                )
            )
        write_results(store, manifest, tmp_path / "results.jsonl")
    finally:
        store.close()
    return [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]


def test_results_jsonl_leaves_out_samples_past_the_experiments(tmp_path: Path) -> None:
    """A store holding samples 0-2 of an experiment now at samples: 2 exports samples 0 and 1 only."""
    manifest = {
        "item_ids": ["a", "b"],
        "setups": [{"name": "s", "hash": "h", "is_baseline": True}],
        "evaluator_id": "e",
        "samples": 2,
    }
    rows = _export(tmp_path, manifest, [("s", i, k, True) for i in ("a", "b") for k in range(3)])
    assert sorted((r["item_id"], r["sample"]) for r in rows) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_results_jsonl_scores_judged_pairs_as_the_summary_does(tmp_path: Path) -> None:
    """Under a judge: the baseline 0.5 on every run, failed or not; a failed setup run 0.5 where the
    baseline failed too, 0 where it answered."""
    manifest = {
        "item_ids": ["a", "b"],
        "setups": [
            {"name": "base", "hash": "h", "is_baseline": True},
            {"name": "moa", "hash": "h", "is_baseline": False},
        ],
        "evaluator_id": "e",
        "pairwise": True,
    }
    runs = [("base", "a", 0, True), ("base", "b", 0, False), ("moa", "a", 0, True), ("moa", "b", 0, True)]
    scores = {(r["setup"], r["item_id"]): r["score"] for r in _export(tmp_path, manifest, runs, judged=True)}
    assert scores == {("base", "a"): 0.5, ("base", "b"): 0.5, ("moa", "a"): 0.5, ("moa", "b"): 0.0}
