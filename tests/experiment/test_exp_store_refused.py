"""A reply the experiment's store cannot cache (a full disk, a read-only file) is the store's failure,
not the model's: it passes through the call layer and the engine as ``StoreError``, no quorum or
fallback absorbs it, and the experiment stops at once in one line naming the store and the write."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

from moa import Runner
from moa.errors import StoreError, UserError
from moa.experiment import Experiment
from moa.experiment.store import Store, StoreCache
from moa.testing import FunctionModel
from moa.topology import load

_PRICE = "pricing: {input_per_mtok: 1, output_per_mtok: 1}"
#: the refused model's rows only: every other write (the other replies, the runs) still succeeds
_REFUSE = (
    "CREATE TRIGGER full_disk BEFORE INSERT ON cache WHEN NEW.model = 'sim/refused' "
    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)
_QUORUM = (
    "name: par\nkind: parallel\nworkers: [a, b, c]\naggregator: d\nquorum: 2\non_quorum: wait\nagents:\n"
    f"  a: {{model: sim/a, {_PRICE}}}\n  b: {{model: sim/b, {_PRICE}}}\n"
    f"  c: {{model: sim/refused, fallbacks: [sim/fallback], {_PRICE}}}\n  d: {{model: sim/d, {_PRICE}}}\n"
)


def _refusing_store(out: Path) -> None:
    store = Store.open(out)
    try:
        store.conn.execute(_REFUSE)
        store.commit()
    finally:
        store.close()


def _models() -> dict[str, FunctionModel]:
    return {m: FunctionModel(lambda r: "x") for m in ("sim/refused", "sim/fallback", "sim/*")}


def test_a_reply_the_store_cannot_cache_stops_the_answers_though_a_quorum_would_go_on(
    tmp_path: Path,
) -> None:
    """A proposer's reply the store could not cache failed its node as a provider error, which the
    aggregator's quorum absorbed: the pair was stored as answered, the store's flag was read only
    for a failed pair, and every item paid the proposer for a reply nobody kept. The answer phase
    stops at once, naming the store and the write; the fallback is never called."""
    (tmp_path / "par.yaml").write_text(_QUORUM)
    (tmp_path / "base.yaml").write_text(
        f"name: base\nkind: single\nagent: a\nagents:\n  a: {{model: sim/base, {_PRICE}}}\n"
    )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(40)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: refused\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\n"
        "setups: [par.yaml]\nconcurrency: 2\n"
    )
    out = tmp_path / "out"
    _refusing_store(out)
    models = _models()
    with pytest.raises(UserError) as info:
        Experiment.from_file(exp, out=out, runner=Runner(models=dict(models)), progress=False).run()
    line = str(info.value)
    assert isinstance(info.value, StoreError) and "\n" not in line
    assert line.startswith(f"{out / 'experiment.sqlite'}: the experiment store is damaged or cannot be")
    assert "(SQLite: database or disk is full) while caching a reply of model `sim/refused`" in line
    assert models["sim/fallback"].calls == []
    assert 0 < len(models["sim/refused"].calls) <= 2  # the pairs in flight, not one per item


def test_a_store_failure_leaves_a_run_as_itself_with_its_calls(tmp_path: Path) -> None:
    """Through the engine a store failure is ``StoreError`` (it was a ``ProviderError``: the model's
    failure, which a cascade escalated and the quorum counted), carrying every call the run made."""
    out = tmp_path / "out"
    _refusing_store(out)
    (tmp_path / "par.yaml").write_text(_QUORUM)
    topology = load(tmp_path / "par.yaml")
    store = Store.open(out)
    models = _models()

    async def run() -> None:
        base = Runner(models=dict(models))
        try:
            await base.scoped(cache=StoreCache(store, "s:h", "i1")).run(topology, "q")
        finally:
            await base.aclose()

    try:
        with pytest.raises(
            StoreError, match=r"while caching a reply of model `sim/refused` \(scope `s:h`, item `i1`\)"
        ) as info:
            asyncio.run(run())
    finally:
        store.close()
    calls = info.value.calls
    assert any(c.model == "sim/refused" and c.error is None for c in calls)
    assert all(c.node != "d" for c in calls)  # the aggregator is never called
    assert models["sim/fallback"].calls == []


def test_a_cached_reply_the_store_cannot_claim_is_no_reason_to_call_the_fallback(tmp_path: Path) -> None:
    """Reading a reply cached before keys held the item claims it for the item (a write): refused,
    the store's error was a ``ProviderError`` of the call, so the agent's fallback was called and
    paid for a reply already paid once. It is ``StoreError`` now, and no model is called."""
    (tmp_path / "one.yaml").write_text(
        "name: one\nkind: single\nagent: a\nagents:\n"
        f"  a: {{model: sim/refused, fallbacks: [sim/fallback], {_PRICE}}}\n"
    )
    topology = load(tmp_path / "one.yaml")
    store = Store.open(tmp_path / "out")
    models = _models()

    async def run(item: str | None) -> None:
        base = Runner(models=dict(models))
        try:
            await base.scoped(cache=StoreCache(store, "s:h", item)).run(topology, "q")
        finally:
            await base.aclose()

    try:
        asyncio.run(run(None))  # a reply cached for no item, as before keys held it
        store.conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON cache_items "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        store.commit()
        with pytest.raises(
            StoreError, match=r"while reading cached reply [0-9a-f]{16} \(scope `s:h`, item `i1`\)"
        ):
            asyncio.run(run("i1"))
    finally:
        store.close()
    assert (len(models["sim/refused"].calls), models["sim/fallback"].calls) == (1, [])
