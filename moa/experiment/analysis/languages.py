"""Per-language results (BigCodeArena's "same language" mode): for experiments whose items name a
``language`` (MultiPL-E rows, generic rows with ``language``), each setup's quality, difference from
the baseline with its paired CI, pass@k and, under a pairwise judge, Bradley–Terry rating, computed
on that language's items only, next to the overall figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from moa.eval import stats
from moa.experiment.analysis.extras import (
    bt_ratings,
    item_scores,
    pass_at_k,
    scorer,
)
from moa.experiment.analysis.summary import MAX_CATEGORIES, LanguageSummary, Summary
from moa.experiment.store.database import RunRow, Store

__all__ = ["add_languages", "item_languages"]


def item_languages(store: Store) -> dict[str, str]:
    """Item id -> its language, for the items that name one."""
    rows = store.conn.execute(
        "SELECT item_id, json_extract(data, '$.language') FROM items WHERE json_extract(data, '$.language') IS NOT NULL"
    )
    return {str(i): str(lang) for i, lang in rows}


def add_languages(
    summary: Summary,
    store: Store,
    manifest: dict[str, Any],
    rows: Mapping[str, Mapping[str, Sequence[RunRow]]],
) -> None:
    """Fill ``SetupSummary.languages`` when the items name languages (nothing otherwise), from the
    setups' stored rows the summary already read (setup name -> item id -> runs)."""
    languages = item_languages(store)
    if not languages:
        return
    samples = int(manifest.get("samples", 1))
    rounds = int(manifest.get("bootstrap_rounds", 2000))
    seed = int(manifest.get("seed", 0))
    item_ids = [i for i in manifest["item_ids"] if i in languages]
    runs_by_setup = {
        name: {i: [r for r in runs if r.sample < samples] for i, runs in by_item.items() if i in languages}
        for name, by_item in rows.items()
    }
    pairwise = bool(manifest.get("pairwise", False))
    by_lang: dict[str, list[str]] = {}
    for i in item_ids:
        by_lang.setdefault(languages[i], []).append(i)
    if len(by_lang) > MAX_CATEGORIES:
        summary.notes.append(
            f"the items name {len(by_lang)} languages, more than {MAX_CATEGORIES}: the per-language "
            "breakdown is left out"
        )
        return
    for lang in sorted(by_lang):
        ids = by_lang[lang]
        in_lang = {name: {i: runs[i] for i in ids if i in runs} for name, runs in runs_by_setup.items()}
        base_runs = in_lang[summary.baseline]
        ratings = bt_ratings(in_lang, baseline=summary.baseline, rounds=rounds, seed=seed) if pairwise else {}
        base = item_scores(base_runs, scorer(pairwise))
        for s in summary.setups:
            mine = item_scores(in_lang.get(s.name, {}), scorer(pairwise))
            ls = LanguageSummary(n=len(mine), quality=math.fsum(mine.values()) / len(mine) if mine else None)
            if not s.is_baseline:
                common = [i for i in ids if i in mine and i in base]
                if common:
                    ci = stats.paired_bootstrap_ci(
                        [mine[i] for i in common], [base[i] for i in common], rounds=rounds, seed=seed
                    )
                    ls.delta_vs_baseline, ls.delta_ci95 = ci.estimate, [ci.low, ci.high]
            if not pairwise:
                ls.pass_at_k = pass_at_k(in_lang.get(s.name, {}), samples)
            fit = ratings.get(s.name)
            if fit is not None:
                ls.bt_rating, ls.bt_ci95 = fit
            s.languages[lang] = ls
