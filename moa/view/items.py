"""The items table behind the viewer's list: one row per item with each setup's score, built once per
store version with one indexed query per setup, then filtered, sorted and paged in memory (10,000
items filter and sort in milliseconds; a page never sends more than ``limit`` rows).

An item's score for a setup is the mean over its samples, a failed run counting 0 (the summary's
rule). Against the baseline an item is a win, a loss or a tie: under a pairwise judge by the setup's
judge score (above 0.5 wins), otherwise by the two scores compared. Setups *disagree* on an item when
they do not all score it the same.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from moa.experiment.store.database import Store

__all__ = ["OUTCOMES", "SORTS", "ItemIndex", "ItemQuery", "ItemRow"]

Outcome = Literal["all", "win", "loss", "tie", "disagree", "error"]
OUTCOMES: tuple[str, ...] = ("all", "win", "loss", "tie", "disagree", "error")
SORTS: tuple[str, ...] = ("order", "id", "category", "delta", "score", "cost", "latency")
_EPS = 1e-9
PREVIEW_CHARS = 240


@dataclass(slots=True)
class ItemRow:
    item_id: str
    order: int
    category: str | None
    preview: str
    #: what the text search looks in: the input (every turn), lower-cased
    search: str
    #: per setup, in the manifest's order: mean score (None: no scored run), any failed run, mean cost
    scores: tuple[float | None, ...]
    errors: tuple[bool, ...]
    costs: tuple[float | None, ...]
    latencies: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class ItemQuery:
    """One request's filter, sort and page (validated by the app)."""

    setup: int
    outcome: Outcome = "all"
    category: str | None = None
    text: str = ""
    sort: str = "order"
    descending: bool = False
    offset: int = 0
    limit: int = 50


#: one setup on one item: mean score (a run's stored score; a failed run without one 0; None when
#: unscored), any run failed, mean cost, mean latency. Under a pairwise judge a failed run has a stored
#: score (0.5 for the baseline, 0 or 0.5 for a setup), the one the summary counts
_Cell = tuple[float | None, bool, float | None, float | None]


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _setup_cells(
    store: Store, evaluator_id: str, setup: str, topo_hash: str, samples: int
) -> dict[str, _Cell]:
    """Item id -> the setup's numbers on it, from one indexed query."""
    cur = store.conn.execute(
        "SELECT r.item_id, r.error IS NOT NULL, s.value, r.cost_usd, r.latency_s FROM runs r "
        "LEFT JOIN scores s ON s.run_id = r.run_id AND s.evaluator_id = ? "
        "WHERE r.setup = ? AND r.topo_hash = ? AND r.sample < ?",
        (evaluator_id, setup, topo_hash, samples),
    )
    if samples == 1:
        # one run per item: its numbers are the item's
        return {i: (0.0 if e and v is None else v, bool(e), c, lat) for i, e, v, c, lat in cur}
    acc: dict[str, tuple[list[float], list[bool], list[float], list[float]]] = {}
    for item_id, error, score, cost, latency in cur:
        a = acc.get(item_id)
        if a is None:
            a = acc[item_id] = ([], [], [], [])
        if score is not None:
            a[0].append(float(score))
        elif error:
            a[0].append(0.0)
        a[1].append(bool(error))
        a[2].append(float(cost))
        a[3].append(float(latency))
    return {k: (_mean(v[0]), any(v[1]), _mean(v[2]), _mean(v[3])) for k, v in acc.items()}


def _with_nul(category: str | None, text: Any, turns: Any, raw: str | None) -> tuple[str | None, Any, Any]:
    """An item's category, input and turns (as JSON text); from ``raw`` when it holds an escaped NUL."""
    if raw is None:
        return category, text, turns
    try:
        data = json.loads(raw)
    except ValueError:
        return category, text, turns
    if not isinstance(data, dict):
        return category, text, turns
    got = data.get("turns")
    return category, data.get("input"), None if got is None else json.dumps(got)


class ItemIndex:
    """Every item of the manifest with its per-setup numbers."""

    def __init__(self, setups: list[str], baseline: int, pairwise: bool, rows: list[ItemRow]) -> None:
        self.setups = setups
        self.baseline = baseline
        self.pairwise = pairwise
        self.rows = rows
        self.position = {r.item_id: i for i, r in enumerate(rows)}
        self.categories = sorted({r.category for r in rows if r.category is not None})

    @classmethod
    def build(cls, store: Store, manifest: Mapping[str, Any]) -> ItemIndex:
        samples = int(manifest.get("samples", 1))
        setups = [s["name"] for s in manifest["setups"]]
        baseline = next(i for i, s in enumerate(manifest["setups"]) if s["is_baseline"])
        per_setup = [
            _setup_cells(store, manifest["evaluator_id"], s["name"], s["hash"], samples)
            for s in manifest["setups"]
        ]
        # the input and turns straight from SQLite: parsing 10,000 items' JSON here would double the time;
        # but json_extract ends a text at a NUL, so an item holding one comes whole and is parsed here
        items = {
            item_id: _with_nul(category, text, turns, raw)
            for item_id, category, text, turns, raw in store.conn.execute(
                "SELECT item_id, category, CASE WHEN json_valid(data) THEN json_extract(data, '$.input') END, "
                "CASE WHEN json_valid(data) THEN json_extract(data, '$.turns') END, "
                "CASE WHEN instr(data, '\\u0000') THEN data END FROM items"
            )
        }
        rows = []
        missing: _Cell = (None, False, None, None)
        for order, item_id in enumerate(manifest["item_ids"]):
            category, text, turns = items.get(item_id, (None, "", None))
            if turns is not None:
                with contextlib.suppress(ValueError, TypeError):
                    text = "\n".join(str(t) for t in json.loads(turns))
            text = str(text or "")
            scores, errors, costs, latencies = zip(*(p.get(item_id, missing) for p in per_setup), strict=True)
            rows.append(
                ItemRow(
                    item_id,
                    order,
                    category,
                    text[:PREVIEW_CHARS],
                    text.lower(),
                    scores,
                    errors,
                    costs,
                    latencies,
                )
            )
        return cls(setups, baseline, bool(manifest.get("pairwise")), rows)

    # -- one item against the baseline -------------------------------------------------------------

    def delta(self, row: ItemRow, k: int) -> float | None:
        """Setup ``k``'s score minus the baseline's (minus parity, 0.5, under a pairwise judge)."""
        mine = row.scores[k]
        if mine is None or k == self.baseline:
            return None
        if self.pairwise:
            return mine - 0.5
        base = row.scores[self.baseline]
        return None if base is None else mine - base

    def outcome(self, row: ItemRow, k: int) -> str | None:
        d = self.delta(row, k)
        if d is None:
            return None
        return "win" if d > _EPS else "loss" if d < -_EPS else "tie"

    def disagree(self, row: ItemRow) -> bool:
        if self.pairwise:
            return any(self.outcome(row, k) in ("win", "loss") for k in range(len(self.setups)))
        known = [v for v in row.scores if v is not None]
        return bool(known) and max(known) - min(known) > _EPS

    # -- a page ------------------------------------------------------------------------------------

    def _keep(self, q: ItemQuery, *, outcome: bool = True) -> Callable[[ItemRow], bool]:
        text = q.text.strip().lower()

        def keep(r: ItemRow) -> bool:
            if q.category is not None and r.category != q.category:
                return False
            if text and text not in r.search and text not in r.item_id.lower():
                return False
            if not outcome or q.outcome == "all":
                return True
            if q.outcome == "disagree":
                return self.disagree(r)
            if q.outcome == "error":
                return any(r.errors)
            return self.outcome(r, q.setup) == q.outcome

        return keep

    def _sort_key(self, q: ItemQuery) -> Callable[[ItemRow], Any]:
        k = q.setup
        if q.sort == "id":
            return lambda r: r.item_id
        if q.sort == "category":
            return lambda r: (r.category or "", r.order)
        value: Callable[[ItemRow], float | None] = {
            "delta": lambda r: self.delta(r, k),
            "score": lambda r: r.scores[k],
            "cost": lambda r: r.costs[k],
            "latency": lambda r: r.latencies[k],
        }.get(q.sort, lambda r: float(r.order))
        return value

    def filtered(self, q: ItemQuery) -> list[ItemRow]:
        keep = self._keep(q)
        rows = [r for r in self.rows if keep(r)]
        key = self._sort_key(q)
        if q.sort in ("id", "category", "order"):
            rows.sort(key=key, reverse=q.descending)
            return rows
        # rows without the value go last whichever the direction
        known = [r for r in rows if key(r) is not None]
        known.sort(key=lambda r: (key(r), r.order), reverse=q.descending)
        return known + [r for r in rows if key(r) is None]

    def counts(self, q: ItemQuery) -> dict[str, int]:
        """How many items each outcome filter keeps, under the query's other filters."""
        keep = self._keep(q, outcome=False)
        base = [r for r in self.rows if keep(r)]
        out = {"all": len(base), "win": 0, "loss": 0, "tie": 0}
        for r in base:
            o = self.outcome(r, q.setup)
            if o is not None:
                out[o] += 1
        out["disagree"] = sum(1 for r in base if self.disagree(r))
        out["error"] = sum(1 for r in base if any(r.errors))
        return out

    def row_json(self, r: ItemRow) -> dict[str, Any]:
        return {
            "id": r.item_id,
            "category": r.category,
            "preview": r.preview,
            "cells": [
                {
                    "setup": name,
                    "score": r.scores[k],
                    "error": r.errors[k],
                    "delta": self.delta(r, k),
                    "outcome": self.outcome(r, k),
                    "cost_usd": r.costs[k],
                }
                for k, name in enumerate(self.setups)
            ],
            "disagree": self.disagree(r),
        }

    def page(self, q: ItemQuery) -> dict[str, Any]:
        rows = self.filtered(q)
        return {
            "total": len(rows),
            "offset": q.offset,
            "limit": q.limit,
            "counts": self.counts(q),
            "rows": [self.row_json(r) for r in rows[q.offset : q.offset + q.limit]],
        }

    def neighbours(self, item_id: str, q: ItemQuery) -> dict[str, Any]:
        """The items before and after ``item_id`` in the query's list (j/k on the item page)."""
        ids = [r.item_id for r in self.filtered(q)]
        try:
            i = ids.index(item_id)
        except ValueError:
            # an item outside the filter (opened by its link): step through the whole list instead
            ids = [r.item_id for r in self.rows]
            i = self.position.get(item_id, -1)
            if i < 0:
                return {"prev": None, "next": None, "position": None, "total": len(ids), "filtered": False}
            return {
                "prev": ids[i - 1] if i > 0 else None,
                "next": ids[i + 1] if i + 1 < len(ids) else None,
                "position": i + 1,
                "total": len(ids),
                "filtered": False,
            }
        return {
            "prev": ids[i - 1] if i > 0 else None,
            "next": ids[i + 1] if i + 1 < len(ids) else None,
            "position": i + 1,
            "total": len(ids),
            "filtered": True,
        }
