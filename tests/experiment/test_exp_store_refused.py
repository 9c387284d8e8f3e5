"""A reply the experiment's store cannot cache (a full disk, a read-only file) is the store's failure,
not the model's: it passes through the call layer and the engine as ``StoreError``, no quorum or
fallback absorbs it, and the experiment stops at once in one line naming the store and the write."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

from moa import Runner
from moa.errors import StoreError, UserError
from moa.experiment import Experiment
from moa.experiment.store import Store, StoreCache
from moa.models.base import ModelReply, ModelRequest
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


class _Paced(FunctionModel):
    """A judge's first step that answers the pair of `question 0` at once and the others later, so
    the store fails (on `question 0`'s second step) while the other pairs are in flight."""

    async def complete(self, request: ModelRequest, on_token: Any = None) -> ModelReply:
        if "question 0" not in str(request.messages):
            await asyncio.sleep(1.5)
        return await super().complete(request, on_token)


def test_a_judged_pair_in_flight_starts_no_call_after_a_store_failure(tmp_path: Path) -> None:
    """The store fails to keep a judge reply (a full disk on the judge's second step): no pair
    started after it, but the pairs in flight went on to their second step, each paying for
    replies the store could no longer keep. They start no call now; what they were paid for
    already is kept (their first step's replies are cached, and replayed free by the re-run)."""
    price = "pricing: {input_per_mtok: 1, output_per_mtok: 1}"
    for name in ("base", "good"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, {price}}}\n"
        )
    (tmp_path / "judge.yaml").write_text(
        "name: judge\nkind: sequential\nagents:\n"
        f"  draft: {{model: sim/draft, {price}}}\n  final: {{model: sim/final, {price}}}\nsteps: [draft, final]\n"
    )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: judged\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
        "baseline: base.yaml\nsetups: [good.yaml]\nconcurrency: 8\n"
    )
    out = tmp_path / "out"
    store = Store.open(out)
    try:
        store.conn.execute(
            "CREATE TRIGGER final_full BEFORE INSERT ON cache WHEN NEW.model = 'sim/final' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        store.commit()
    finally:
        store.close()

    def runner(draft: FunctionModel, final: FunctionModel) -> Runner:
        base, good = FunctionModel(lambda r: "base answer"), FunctionModel(lambda r: "good answer")
        return Runner(models={"sim/draft": draft, "sim/final": final, "sim/base": base, "sim/good": good})

    draft, final = _Paced(lambda r: "thinking"), FunctionModel(lambda r: "[[A=B]]")
    with pytest.raises(StoreError, match=r"while caching a reply of model `sim/final`"):
        Experiment.from_file(exp, out=out, runner=runner(draft, final), progress=False).run()
    assert len(draft.calls) == 2 * 8  # every pair in flight: both orders' first step, paid and kept
    assert len(final.calls) <= 2  # `question 0`'s pair only: the others started no second step
    store = Store.open(out)
    try:
        store.conn.execute("DROP TRIGGER final_full")
        store.commit()
    finally:
        store.close()
    draft, final = _Paced(lambda r: "thinking"), FunctionModel(lambda r: "[[A=B]]")
    Experiment.from_file(exp, out=out, runner=runner(draft, final), progress=False).run()
    assert (len(draft.calls), len(final.calls)) == (0, 2 * 8)  # the first steps replayed, free
