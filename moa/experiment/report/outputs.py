"""The files of an experiment folder: ``summary.json``, ``results.jsonl``, ``report.md``, ``report.html``
and ``pareto.png``, each written from the summary and the store alone (so ``moa report`` rewrites them
without a model call); ``report.md`` keeps the section of an earlier cascade tuning (``tune.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moa.errors import UserError
from moa.experiment.analysis.extras import scorer
from moa.experiment.analysis.summary import Summary
from moa.experiment.report.files import replacing
from moa.experiment.report.plots import pareto_png
from moa.experiment.report.text import html_report, markdown_report
from moa.experiment.report.tune import add_tune_section, read_tune
from moa.experiment.store.database import Store

__all__ = ["write_outputs", "write_results"]


def write_results(store: Store, manifest: dict[str, Any], path: Path) -> None:
    """``results.jsonl``: one row per stored run (setup, item, sample) among the experiment's items
    and its first ``samples`` samples, the runs the summary counts, read lazily from the store."""
    items = set(manifest["item_ids"])
    # a store filled under a larger ``samples`` keeps the extra runs; the summary leaves them out
    samples = int(manifest.get("samples", 1))
    ev_id = manifest["evaluator_id"]
    score = scorer(bool(manifest.get("pairwise")))
    with replacing(path) as f:
        for s in manifest["setups"]:
            for r in store.iter_runs(s["name"], s["hash"], ev_id):
                if r.item_id not in items or r.sample >= samples:
                    continue
                row = {
                    "setup": r.setup,
                    "item_id": r.item_id,
                    "sample": r.sample,
                    "answer": r.answer,
                    "score": score(r),
                    "score_detail": r.detail,
                    "cost_usd": r.cost_usd,
                    "cost_usd_max": r.cost_usd_max,
                    "unknown_usage_attempts": r.unknown_usage_attempts,
                    "latency_s": r.latency_s,
                    "tokens": r.tokens,
                    "calls": r.n_calls,
                    "error": r.error,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_outputs(out: Path, summary: Summary, store: Store, manifest: dict[str, Any]) -> list[str]:
    """Write every output file; returns the notes it added to ``summary.notes`` (e.g. no matplotlib).
    A file that cannot be written (a full disk, a read-only file) is ``UserError`` naming it: the
    runs, paid for, are all in the store, and ``moa report`` writes the files again from it."""
    try:
        return _write_outputs(out, summary, store, manifest)
    except OSError as e:
        # a rename names its source first: the file that could not be replaced is the second
        where = e.filename2 or e.filename or out
        raise UserError(
            f"{where}: cannot write the report ({e.strerror or e}); every run is kept in the store: "
            f"make room or fix that file, then run `moa report {out}`"
        ) from None


def _write_outputs(out: Path, summary: Summary, store: Store, manifest: dict[str, Any]) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    png_path = out / "pareto.png"
    note = pareto_png(summary, png_path)
    added = [note] if note else []
    summary.notes.extend(added)
    png = png_path.read_bytes() if note is None and png_path.exists() else None
    write_results(store, manifest, out / "results.jsonl")
    with replacing(out / "summary.json") as f:
        f.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    with replacing(out / "report.md") as f:
        f.write(markdown_report(summary, png="pareto.png" if png else None))
    tuned = read_tune(out, manifest)
    if tuned is not None:  # an earlier `--tune-cascade` of a setup still here: keep its section
        add_tune_section(out / "report.md", tuned)
    with replacing(out / "report.html") as f:
        f.write(html_report(summary, png))
    return added
