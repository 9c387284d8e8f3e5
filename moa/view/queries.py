"""What the viewer's pages read from an experiment store, as JSON-able dicts: costs per node and per
model of each setup, one item with every setup's run, score, calls and judge verdicts, and the live
tally of people's votes. Each is a few indexed queries; nothing here loads the whole experiment."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from moa.errors import UserError
from moa.experiment.analysis.votes import evaluator_scores, human_summaries
from moa.experiment.store.checks import bad_call_sql
from moa.experiment.store.database import Store
from moa.experiment.store.schema import JUDGE_FAILURES_UNSTORED, has_table
from moa.experiment.store.votes import iter_votes

__all__ = [
    "check_costs",
    "is_code",
    "item_detail",
    "judge_costs",
    "setup_costs",
    "stored_item",
    "vote_tally",
]


def check_costs(store: Store, setup: str, topo_hash: str) -> None:
    """``UserError`` naming the first call of the setup (its runs' or its judge's) whose counts or
    amounts are not numbers, before ``setup_costs`` and ``judge_costs`` sum them: SQLite sums a text
    as 0 and skips a NULL, so the table was silently wrong."""
    row = store.conn.execute(
        "SELECT c.run_id, c.judgment_id FROM calls c LEFT JOIN judgments j ON j.judgment_id = c.judgment_id "
        "JOIN runs r ON r.run_id = COALESCE(c.run_id, j.run_id) WHERE r.setup = ? AND r.topo_hash = ? "
        f"AND ({bad_call_sql('c')}) LIMIT 1",
        (setup, topo_hash),
    ).fetchone()
    if row is not None:  # ``calls_of`` names the call and its field
        if row[0] is not None:
            store.calls_of(run_id=row[0], shown=True)
        else:
            store.calls_of(judgment_id=row[1], shown=True)


def setup_costs(conn: sqlite3.Connection, setup: str, topo_hash: str) -> dict[str, Any]:
    """A setup's calls summed by node (with its models) and by model: calls, USD, tokens, latency."""
    rows = conn.execute(
        "SELECT c.node, c.model, COUNT(*), COALESCE(SUM(c.cost_usd), 0), COALESCE(SUM(c.prompt_tokens), 0), "
        "COALESCE(SUM(c.completion_tokens), 0), COALESCE(SUM(c.latency_s), 0), "
        "SUM(c.error IS NOT NULL), SUM(c.cached), MIN(c.seq) "
        "FROM calls c JOIN runs r ON r.run_id = c.run_id WHERE r.setup = ? AND r.topo_hash = ? "
        "GROUP BY c.node, c.model ORDER BY MIN(c.seq), c.node",
        (setup, topo_hash),
    ).fetchall()
    nodes: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    for node, model, n, cost, pt, ct, lat, errors, cached, _ in rows:
        for key, table in ((node, nodes), (model, models)):
            row = table.setdefault(
                key,
                {
                    "name": key,
                    "models": [],
                    "calls": 0,
                    "cost_usd": 0.0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "latency_s": 0.0,
                    "errors": 0,
                    "cached": 0,
                },
            )
            row["calls"] += int(n)
            row["cost_usd"] += float(cost)
            row["prompt_tokens"] += int(pt)
            row["completion_tokens"] += int(ct)
            row["latency_s"] += float(lat)
            row["errors"] += int(errors or 0)
            row["cached"] += int(cached or 0)
        nodes[node]["models"].append(model)
    for table in (nodes, models):
        for row in table.values():
            row["mean_latency_s"] = row["latency_s"] / row["calls"] if row["calls"] else None
    by_cost = sorted(models.values(), key=lambda r: -float(r["cost_usd"]))
    for row in by_cost:
        del row["models"]
    return {"nodes": list(nodes.values()), "models": by_cost}


def judge_costs(
    conn: sqlite3.Connection, evaluator_id: str, setup: str, topo_hash: str
) -> list[dict[str, Any]]:
    """The judge's calls on a setup's answers, by model: those of its stored verdicts, and those of
    its pairs' attempts that raised, as the setup's ``judge_cost_usd`` counts them."""
    found: dict[str, list[float]] = {}
    rows = conn.execute(
        "SELECT c.model, COUNT(*), COALESCE(SUM(c.cost_usd), 0), COALESCE(SUM(c.prompt_tokens), 0), "
        "COALESCE(SUM(c.completion_tokens), 0) FROM calls c "
        "JOIN judgments j ON j.judgment_id = c.judgment_id JOIN runs r ON r.run_id = j.run_id "
        "WHERE j.evaluator_id = ? AND r.setup = ? AND r.topo_hash = ? GROUP BY c.model",
        (evaluator_id, setup, topo_hash),
    ).fetchall()
    if has_table(conn, "judge_failures"):
        rows += conn.execute(
            "SELECT f.model, SUM(f.calls), SUM(f.cost_usd), SUM(f.prompt_tokens), SUM(f.completion_tokens) "
            "FROM judge_failures f WHERE f.evaluator_id = ? AND f.setup = ? AND f.topo_hash = ? "
            f"AND {JUDGE_FAILURES_UNSTORED} GROUP BY f.model",
            (evaluator_id, setup, topo_hash),
        ).fetchall()
    for m, n, c, p, t in rows:
        acc = found.setdefault(m, [0, 0.0, 0, 0])
        acc[0] += n
        acc[1] += c
        acc[2] += p
        acc[3] += t
    return [
        {
            "model": m,
            "calls": int(n),
            "cost_usd": float(c),
            "prompt_tokens": int(p),
            "completion_tokens": int(t),
        }
        for m, (n, c, p, t) in found.items()
    ]


def stored_item(store: Store, item_id: str) -> dict[str, Any] | None:
    """The item as stored, None when the store has no such item; ``UserError`` naming it when its
    stored data is not a JSON object (a broken or edited store)."""
    row = store.conn.execute("SELECT data FROM items WHERE item_id = ?", (item_id,)).fetchone()
    if row is None:
        return None
    try:
        data = json.loads(row[0])
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise UserError(f"item `{item_id}`: its stored data is not a JSON object (a broken store)")
    return data


def is_code(item: Mapping[str, Any], evaluator: Mapping[str, Any]) -> bool:
    """Whether an item is a programming task (its score detail is an execution result)."""
    return bool(item.get("tests") or item.get("test")) or evaluator.get("name") == "execution"


def _score(conn: sqlite3.Connection, run_id: int, evaluator_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT value, detail, turn_scores FROM scores WHERE run_id = ? AND evaluator_id = ?",
        (run_id, evaluator_id),
    ).fetchone()
    if row is None:
        return None
    return {"value": row[0], "detail": row[1], "turn_scores": json.loads(row[2]) if row[2] else None}


def _judgments(store: Store, run_id: int, evaluator_id: str) -> list[dict[str, Any]]:
    cur = store.conn.execute(
        "SELECT judgment_id, turn, position, verdict, value, detail, error, cost_usd FROM judgments "
        "WHERE run_id = ? AND evaluator_id = ? ORDER BY turn, position",
        (run_id, evaluator_id),
    )
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        j = dict(zip(names, row, strict=True))
        j["calls"] = store.calls_of(judgment_id=int(j["judgment_id"]), shown=True)
        out.append(j)
    return out


def _run(
    store: Store, setup: Mapping[str, Any], item_id: str, sample: int, evaluator_id: str
) -> dict[str, Any] | None:
    r = store.run_for(setup["name"], setup["hash"], item_id, sample)
    if r is None:
        return None
    return {
        "run_id": r.run_id,
        "answer": r.answer,
        "turns": r.turn_answers,
        "error": r.error,
        "cost_usd": r.cost_usd,
        "cost_usd_max": r.cost_usd_max,
        "latency_s": r.latency_s,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "n_calls": r.n_calls,
        "score": _score(store.conn, r.run_id, evaluator_id),
        "calls": store.calls_of(run_id=r.run_id, shown=True),
        "judgments": _judgments(store, r.run_id, evaluator_id),
    }


def item_detail(
    store: Store, manifest: Mapping[str, Any], item_id: str, sample: int
) -> dict[str, Any] | None:
    """The item (input, turns, target, tests) and each setup's run of ``sample`` with its score,
    calls and the judge's verdicts on it; None when the store has no such item."""
    data = stored_item(store, item_id)
    if data is None:
        return None
    ev_id = manifest["evaluator_id"]
    # a store filled under a larger `samples` keeps the extra runs: the summary leaves them out, and
    # the page asks only for the experiment's samples
    samples = [
        int(s)
        for (s,) in store.conn.execute(
            "SELECT DISTINCT sample FROM runs WHERE item_id = ? AND sample < ? ORDER BY sample",
            (item_id, int(manifest.get("samples", 1))),
        )
    ]
    runs = [
        {
            "setup": s["name"],
            "is_baseline": bool(s["is_baseline"]),
            "run": _run(store, s, item_id, sample, ev_id),
        }
        for s in manifest["setups"]
    ]
    return {
        "item": data,
        "code": is_code(data, manifest["evaluator"]),
        "sample": sample,
        "samples": samples or [0],
        "runs": runs,
    }


def vote_tally(
    store: Store, manifest: Mapping[str, Any], setups: Sequence[str], baseline: str
) -> dict[str, Any]:
    """People's votes so far, live (the report's section shows them as of its last writing)."""
    items = set(manifest["item_ids"])
    votes = [v for v in iter_votes(store) if v.item_id in items]
    if not votes:
        return {"votes": 0, "voters": 0, "setups": {}}
    found = human_summaries(
        votes,
        setups=setups,
        baseline=baseline,
        evaluator=evaluator_scores(store, manifest),
        rounds=min(int(manifest.get("bootstrap_rounds", 2000)), 200),
        seed=int(manifest.get("seed", 0)),
    )
    return {
        "votes": len(votes),
        "voters": len({v.voter for v in votes}),
        "setups": {k: v.model_dump() for k, v in found.items()},
    }
