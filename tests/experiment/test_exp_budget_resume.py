"""A resumed experiment's budget starts from what the store may have paid: calls of unknown usage
(sent, then cut off in flight) at their worst case, as the live run's budget counted them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from moa._run import Runner
from moa.experiment import Experiment, Store
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.testing import FunctionModel

_PRICE = "max_tokens: 5, pricing: {input_per_mtok: 1, output_per_mtok: 1000}"
#: an agent whose every call is cut off in flight: its model answers after 30 s, the call times out
#: long before (the test's outcome does not depend on how long it waits)
_CUT = "timeout_s: 0.05, retry: {max_attempts: 1}, "


def _write(tmp: Path, setups: str, extra: str = "") -> Path:
    for name, agent in (("base", ""), ("cut", _CUT), ("two", "")):
        (tmp / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, {agent}{_PRICE}}}\n"
        )
    (tmp / "par.yaml").write_text(
        "name: par\nkind: parallel\nworkers: [a, b]\naggregator: c\nquorum: 1\non_quorum: wait\nagents:\n"
        f"  a: {{model: sim/cut, {_CUT}{_PRICE}}}\n  b: {{model: sim/b, {_PRICE}}}\n"
        "  c: {model: sim/c, max_tokens: 1000000, pricing: {input_per_mtok: 1, output_per_mtok: 1000}}\n"
    )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(4)]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: worst\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\n"
        f"setups: [{setups}]\nconcurrency: 1\nretry_errors: false\n{extra}"
    )
    return tmp / "exp.yaml"


def _models() -> dict[str, FunctionModel]:
    return {"sim/cut": FunctionModel(lambda r: "x", delay_s=30), "sim/*": FunctionModel(lambda r: "x")}


def _ledger(out: Path) -> tuple[float, float]:
    store = Store.open(out, create=False)
    try:
        return store.spent_usd(), store.spent_usd_max()
    finally:
        store.close()


def test_a_resumed_budget_counts_calls_of_unknown_usage_at_their_worst_case(tmp_path: Path) -> None:
    """A first run whose calls were cut off in flight may have spent past the budget: the resume
    sends nothing (it counted those calls at $0, and spent past the cap the first run kept to)."""
    out = tmp_path / "out"
    first = Experiment.from_file(
        _write(tmp_path, "cut.yaml"), out=out, runner=Runner(models=_models()), progress=False
    ).run()
    known = sum(s.cost_usd for s in first.setups)
    worst = sum(s.cost_usd_max for s in first.setups)
    assert worst > 2 * known
    assert _ledger(out) == pytest.approx((known, worst))
    more = FunctionModel(lambda r: "x")
    e = Experiment.from_file(
        _write(tmp_path, "cut.yaml, two.yaml", f"budget_usd: {(known + worst) / 2}\n"),
        out=out,
        runner=Runner(models={"sim/*": more}),
        progress=False,
    )
    lines = e.plan().lines()
    assert any(f"spent already (up to ${worst:.6f}" in line and "$0.000000 left" in line for line in lines)
    e.run()
    assert e.stopped is not None and f"spent ${worst:.6f}" in e.stopped
    assert more.calls == []


def test_a_budget_stopped_pair_keeps_its_cut_off_calls_on_the_books(tmp_path: Path) -> None:
    """A pair the budget stopped is not stored, but the worker cut off in flight before the refused
    call stays in what the store may have paid: the resume's budget starts where the live one
    stopped (it lost that worker's worst case)."""
    out = tmp_path / "out"
    e = Experiment.from_file(
        _write(tmp_path, "par.yaml", "budget_usd: 0.5\n"),
        out=out,
        runner=Runner(models=_models()),
        progress=False,
    )
    e.run()
    known, worst = _ledger(out)
    assert e.stopped is not None and f"spent ${worst:.6f}" in e.stopped
    assert worst > known > 0


def test_a_store_without_the_worst_case_ledger_counts_its_stored_calls(tmp_path: Path) -> None:
    """A store written before the ledger of unknown usage existed starts it from its stored calls'
    worst cases, so its first resume under a budget counts them too."""
    out = tmp_path / "out"
    Experiment.from_file(
        _write(tmp_path, "cut.yaml"), out=out, runner=Runner(models=_models()), progress=False
    ).run()
    known, worst = _ledger(out)
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.execute("DELETE FROM meta WHERE key = 'unknown_usd'")
    conn.commit()
    conn.close()
    assert _ledger(out) == pytest.approx((known, worst))


async def test_calls_cut_off_by_a_ctrl_c_stay_on_the_books(tmp_path: Path) -> None:
    """An experiment cancelled (Ctrl-C) while a call is in flight stores nothing of that pair, but
    the call may be billed: its worst case stays in what the store may have paid, as the live
    budget counted it (the resume's budget started without it)."""
    out = tmp_path / "out"
    hang = FunctionModel(lambda r: "x", delay_s=60)
    models = {"sim/two": hang, "sim/*": FunctionModel(lambda r: "x")}
    e = Experiment.from_file(
        _write(tmp_path, "two.yaml"), out=out, runner=Runner(models=models), progress=False
    )
    task = asyncio.ensure_future(e.arun())
    async with asyncio.timeout(30):  # a hang guard: the first pair of `two` starts in milliseconds
        while hang.in_flight == 0:
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    known, worst = _ledger(out)
    assert worst > known > 0


class _FollowUpHangs(FunctionModel):
    """Answers a conversation's first turn at once and hangs on its follow-up."""

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        if "follow-up" in str(request.messages[-1]["content"]):
            self.hanging += 1
            await asyncio.sleep(60)
        return await super().complete(request, on_token)

    hanging = 0


async def test_a_conversations_turn_cut_off_by_a_ctrl_c_stays_on_the_books(tmp_path: Path) -> None:
    """A Ctrl-C during a multi-turn item's second turn books that turn's call cut off in flight,
    not the first turn's (the watch followed the first run of the item only)."""
    for name in ("base", "two", "judge"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, {_PRICE}}}\n"
        )
    rows = [{"question_id": k, "category": "math", "turns": [f"q {k}", f"follow-up {k}"]} for k in range(2)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "exp.yaml").write_text(
        "name: mt\ndataset: q.jsonl\nevaluator: {name: judge, topology: judge.yaml}\nbaseline: base.yaml\n"
        "setups: [two.yaml]\nconcurrency: 1\n"
    )
    out = tmp_path / "out"
    hang = _FollowUpHangs(lambda r: "x")
    models = {"sim/base": hang, "sim/*": FunctionModel(lambda r: "x")}
    e = Experiment.from_file(tmp_path / "exp.yaml", out=out, runner=Runner(models=models), progress=False)
    task = asyncio.ensure_future(e.arun())
    async with asyncio.timeout(30):  # a hang guard: the second turn starts in milliseconds
        while hang.hanging == 0:
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    known, worst = _ledger(out)
    assert worst > known > 0


def test_a_resumed_budget_counts_estimated_replies_at_their_worst_case(tmp_path: Path) -> None:
    """Replies whose provider reported no usage are booked at moa's estimate, which may be below
    the bill: the store's ledger keeps their worst case as the live budget did, so a resume starts
    from it. Before, the ledger counted the estimate and a resume had the room above it again."""
    from moa.results import Usage

    out = tmp_path / "out"
    estimated = FunctionModel(lambda r: ModelReply("x", Usage(1, 1), r.model, "stop", usage_estimated=True))
    first = Experiment.from_file(
        _write(tmp_path, "two.yaml"),
        out=out,
        runner=Runner(models={"sim/two": estimated, "sim/*": FunctionModel(lambda r: "x")}),
        progress=False,
    ).run()
    known = sum(s.cost_usd for s in first.setups)
    worst = sum(s.cost_usd_max for s in first.setups)
    assert worst > 2 * known
    assert _ledger(out) == pytest.approx((known, worst))
