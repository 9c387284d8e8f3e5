"""Resume and the call cache: what a replayed call reports, what a resumed experiment counts, and
the store's schema for them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.errors import UserError
from moa.experiment import Experiment, Store, rebuild_report
from moa.experiment.store.schema import SCHEMA_VERSION
from moa.testing import FunctionModel


def test_a_version_5_store_gains_the_cache_times_as_unknown(tmp_path: Path) -> None:
    """Upgrading a v5 store: the cache gains `latency_s` and `queued_s`, NULL (unknown) for the
    replies cached before, which are kept."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        ALTER TABLE cache DROP COLUMN latency_s;
        ALTER TABLE cache DROP COLUMN queued_s;
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO cache(key, text, model, reply_model, finish_reason, prompt_tokens, completion_tokens,
          cost_usd) VALUES ('k', 'hello', 'm', 'm', 'stop', 3, 2, 0.5);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        row = store.conn.execute("SELECT text, cost_usd, latency_s, queued_s FROM cache").fetchone()
        assert row == ("hello", 0.5, None, None)
    finally:
        store.close()


def _experiment(tmp: Path, n: int = 3, extra: str = "") -> Path:
    price = "pricing: {input_per_mtok: 1, output_per_mtok: 1}"
    (tmp / "base.yaml").write_text(
        f"name: base\nkind: single\nagent: a\nagents:\n  a: {{model: sim/base, {price}}}\n"
    )
    (tmp / "par.yaml").write_text(
        "name: par\nkind: parallel\nworkers: [a, b]\naggregator: c\nagents:\n"
        f"  a: {{model: sim/a, {price}}}\n  b: {{model: sim/b, {price}}}\n  c: {{model: sim/c, {price}}}\n"
    )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(n)]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: resume\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\nsetups: [par.yaml]\n"
        f"concurrency: 2\n{extra}"
    )
    return tmp / "exp.yaml"


def _forget_runs(out: Path) -> None:
    """What a kill leaves when the pairs' cached replies were committed (with a neighbour's run)
    but their own runs were not."""
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript("DELETE FROM calls; DELETE FROM scores; DELETE FROM runs;")
    conn.commit()
    conn.close()


def test_a_run_replayed_from_the_cache_keeps_its_calls_latency(tmp_path: Path) -> None:
    """A resumed pair whose calls all come from the cache is stored with the calls' original
    latency (each 0.2 s, two in a chain), not the ~0 s its replay took, and the report's median
    reads the same."""
    exp = _experiment(tmp_path)
    out = tmp_path / "out"
    slow = FunctionModel(lambda r: "x", delay_s=0.2)
    Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": slow}), progress=False).run()
    _forget_runs(out)
    again = FunctionModel(lambda r: "x")
    summary = Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": again}), progress=False).run()
    assert again.calls == []  # everything came from the cache
    store = Store.open(out, create=False)
    try:
        calls = store.conn.execute("SELECT cached, latency_s FROM calls").fetchall()
        runs = dict(store.conn.execute("SELECT setup, MIN(latency_s) FROM runs GROUP BY setup").fetchall())
    finally:
        store.close()
    assert len(calls) == 3 * 4 and all(cached == 1 and lat >= 0.2 for cached, lat in calls)
    assert runs["base"] >= 0.2 and runs["par"] >= 0.4
    assert summary.setup("par").latency_p50_s >= 0.4
    assert summary.setup("base").latency_p50_s >= 0.2


def test_items_with_the_same_prompt_are_separate_requests(tmp_path: Path) -> None:
    """Rows with different ids and the same prompt each send their own request (at temperature
    0.9, four rows of one question are four samples), and each run's cost is a call made: they
    had shared one cached reply, stored four times, cost included."""
    exp = _experiment(tmp_path, n=4)
    data = tmp_path / "data.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**r, "input": "flip a coin"}) + "\n" for r in rows))
    replies = iter(range(1000))
    model = FunctionModel(lambda r: f"side {next(replies)}")
    Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
    ).run()
    store = Store.open(tmp_path / "out", create=False)
    try:
        cached = store.conn.execute("SELECT COUNT(*) FROM calls WHERE cached=1").fetchone()[0]
        answers = [a for (a,) in store.conn.execute("SELECT answer FROM runs WHERE setup='base'")]
    finally:
        store.close()
    assert len(model.calls) == 4 * (1 + 3) and cached == 0
    assert len(set(answers)) == 4


def test_a_reply_cached_under_the_old_key_serves_its_own_item_only(tmp_path: Path) -> None:
    """A store whose replies were keyed without the item (before schema 6) still replays a reply to
    the item that made it (a resume after the upgrade pays nothing twice), never to another item
    with the same request."""
    from moa.calls.call import CachedReply
    from moa.experiment.store.cache import StoreCache, cache_key
    from moa.models.base import ModelReply, ModelRequest
    from moa.results import Usage

    store = Store.open(tmp_path / "out")
    try:
        request = ModelRequest(model="m", messages=[{"role": "user", "content": "same"}])
        old_key = cache_key("s:h", "n", request)
        maker = StoreCache(store, "s:h", "i1")
        maker.put(old_key, CachedReply(ModelReply("kept", Usage(1, 1), "m"), "m", 0.25))
        mine, other = StoreCache(store, "s:h", "i1"), StoreCache(store, "s:h", "i2")
        hit = mine.get(mine.key("n", request))
        assert hit is not None and hit.reply.text == "kept" and hit.cost_usd == 0.25
        assert other.get(other.key("n", request)) is None
    finally:
        store.close()


def test_a_reply_cached_for_no_item_serves_the_first_item_that_finds_it_only(tmp_path: Path) -> None:
    """A judge reply cached before judged pairs had keys (no item noted) is replayed to the first
    pair that asks for it (a resume after the upgrade pays nothing twice), then belongs to it: a
    second pair with the same request gets its own call, as one paid reply is one judgment."""
    from moa.calls.call import CachedReply
    from moa.experiment.store.cache import StoreCache, cache_key
    from moa.models.base import ModelReply, ModelRequest
    from moa.results import Usage

    store = Store.open(tmp_path / "out")
    try:
        request = ModelRequest(model="m", messages=[{"role": "user", "content": "same"}])
        StoreCache(store, "judge:e").put(
            cache_key("judge:e", "n", request),
            CachedReply(ModelReply("[[A=B]]", Usage(1, 1), "m"), "m", 0.25),
        )
        first, second = StoreCache(store, "judge:e", "pair1"), StoreCache(store, "judge:e", "pair2")
        hit = first.get(first.key("n", request))
        assert hit is not None and hit.reply.text == "[[A=B]]" and hit.cost_usd == 0.25
        # the claim is committed with the read: no write lock held across the pair's next call
        assert not store.conn.in_transaction
        assert second.get(second.key("n", request)) is None
        store.commit()
        again = StoreCache(store, "judge:e", "pair1")
        assert again.get(again.key("n", request)) is not None
    finally:
        store.close()


def _singles(tmp: Path, setups: str, extra: str = "") -> Path:
    price = "max_tokens: 5, pricing: {input_per_mtok: 1, output_per_mtok: 1000}"
    for name in ("base", "one", "two"):
        (tmp / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, {price}}}\n"
        )
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": "x"} for k in range(10)]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: ledger\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\n"
        f"setups: [{setups}]\nconcurrency: 1\n{extra}"
    )
    return tmp / "exp.yaml"


def test_a_resumed_budget_counts_replies_paid_for_pairs_a_kill_left_unstored(tmp_path: Path) -> None:
    """Replies cached for pairs whose runs a kill left unstored were paid: a resumed budget counts
    them (it counted stored runs only, replayed them free, and let the experiment spend past its
    cap by as much)."""
    out = tmp_path / "out"
    first = FunctionModel(lambda r: "x")
    Experiment.from_file(
        _singles(tmp_path, "one.yaml"), out=out, runner=Runner(models={"sim/*": first}), progress=False
    ).run()
    store = Store.open(out, create=False)
    paid = store.spent_usd()
    store.close()
    per_call = paid / len(first.calls)
    _forget_runs(out)
    budget = paid * 1.2
    more = FunctionModel(lambda r: "x")
    e = Experiment.from_file(
        _singles(tmp_path, "one.yaml, two.yaml", f"budget_usd: {budget}\n"),
        out=out,
        runner=Runner(models={"sim/*": more}),
        progress=False,
    )
    e.run()
    assert e.stopped is not None and f"spent ${paid:.6f}" in e.stopped
    assert (len(first.calls) + len(more.calls)) * per_call <= budget


def test_a_failed_call_stays_paid_when_its_run_is_retried(tmp_path: Path) -> None:
    """A billed failed call (a reply rejected) stays in what the store counts as spent when the
    failed run is replaced by its retry (deleting the run dropped it)."""
    from moa.errors import ProviderError
    from moa.results import CallRecord, RunResult, Usage

    store = Store.open(tmp_path / "out")
    try:
        rejected = CallRecord(node="agg", model="m", cost_usd=0.5, error="RequestRejected: not JSON")
        error = ProviderError("agg failed")
        error.calls = [rejected]
        store.record_run("s", "h", "i1", "x", None, error)
        answered = CallRecord(node="agg", model="m", cost_usd=0.25, cached=True)
        result = RunResult(
            output="4",
            topology="t",
            usage=Usage(),
            cost_usd=0.25,
            latency_s=1.0,
            critical_path_s=1.0,
            calls=[answered],
            nodes={},
        )
        store.record_run("s", "h", "i1", "x", result)
        assert store.spent_usd() == 0.5  # the answered call was booked with its cached reply
    finally:
        store.close()


def test_a_corrected_target_rescores_the_stored_answers(tmp_path: Path) -> None:
    """Fixing an item's target (same input) scores its stored answers again, without a model call,
    and says so; a changed category keeps the scores (the stale scores were reused silently)."""
    exp = _experiment(tmp_path, n=3)
    data = tmp_path / "data.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    out = tmp_path / "out"
    model = FunctionModel(lambda r: "4")
    first = Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert first.setup("par").quality == 0.0
    calls = len(model.calls)
    data.write_text("".join(json.dumps({**r, "target": "4"}) + "\n" for r in rows))
    fixed = Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert fixed.setup("par").quality == 1.0 and fixed.setup("base").quality == 1.0
    assert len(model.calls) == calls
    assert any("3 items changed what they are scored against" in n for n in fixed.notes)
    data.write_text("".join(json.dumps({**r, "target": "4", "category": "c"}) + "\n" for r in rows))
    again = Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert again.setup("par").quality == 1.0
    assert not any("scored against" in n for n in again.notes)


async def test_a_pairs_answered_calls_are_committed_before_the_pair_ends(tmp_path: Path) -> None:
    """While a pair's aggregator is in flight, its workers' replies are already committed (another
    connection sees them), so a kill there does not make the resume pay for them again; they were
    committed only with the next finished pair."""
    exp = _experiment(tmp_path, n=1, extra="")
    (tmp_path / "exp.yaml").write_text(
        (tmp_path / "exp.yaml").read_text().replace("concurrency: 2", "concurrency: 1")
    )
    seen: list[int] = []
    gate = asyncio.Event()

    class Held(FunctionModel):
        async def complete(self, request: Any, on_token: Any = None) -> Any:
            if request.model == "sim/c":
                conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
                seen.append(conn.execute("SELECT COUNT(*) FROM cache").fetchone()[0])
                conn.close()
                gate.set()
                await asyncio.sleep(60)
            return await super().complete(request, on_token)

    e = Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": Held(lambda r: "x")}), progress=False
    )
    task = asyncio.create_task(e.arun())
    await asyncio.wait_for(gate.wait(), 30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen and seen[0] >= 2  # the baseline's reply (if it ran first) and both workers'
    again = FunctionModel(lambda r: "x")
    await Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": again}), progress=False
    ).arun()
    assert sorted(r.model for r in again.calls if r.model != "sim/base") == ["sim/c"]


def test_a_damaged_store_is_refused_in_one_line_before_the_run(tmp_path: Path) -> None:
    """A store whose first page is sound but whose other pages are not is refused at open with
    one line naming the file, by `moa compare` and `moa report` (SQLite raised mid-run, a
    traceback, or never noticed)."""
    exp = _experiment(tmp_path)
    out = tmp_path / "out"
    model = FunctionModel(lambda r: "x")
    Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    data = bytearray((out / "experiment.sqlite").read_bytes())
    middle = len(data) // page // 2 * page  # the meta table's page, early in the file, stays sound
    data[middle:] = bytes(len(data) - middle)
    (out / "experiment.sqlite").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"experiment\.sqlite: the experiment store is damaged") as info:
        Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"experiment\.sqlite: the experiment store is damaged"):
        asyncio.run(rebuild_report(out))


def test_the_progress_line_counts_a_replayed_reply_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resumed run's progress starts from what was paid, replies of unstored pairs included,
    and adds nothing for their replay: it ends at what was spent (it counted them twice)."""
    import io
    import sys

    out = tmp_path / "out"
    first = FunctionModel(lambda r: "x")
    exp = _singles(tmp_path, "one.yaml")
    Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": first}), progress=False).run()
    _forget_runs(out)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    Experiment.from_file(
        exp, out=out, runner=Runner(models={"sim/*": FunctionModel(lambda r: "x")}), progress=True
    ).run()
    store = Store.open(out, create=False)
    spent = store.spent_usd()
    store.close()
    runs_line = [line for line in err.getvalue().splitlines() if line.startswith("runs: ")][-1]
    assert f"${spent:.4f}" in runs_line


def test_a_changed_item_with_a_hostile_id_is_named_on_one_line(tmp_path: Path) -> None:
    """The refusal of a changed item names it on one line whatever its id holds (a newline, an
    escape sequence, 100,000 characters): the id went into the message as it was."""
    exp = _experiment(tmp_path, n=1)
    data = tmp_path / "data.jsonl"
    ids = ["a\nb", "\x1b[31mred", "x" * 100_000]
    for k, hostile in enumerate(ids):
        rows = [{"id": hostile, "input": "question", "target": "x"}]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / f"out{k}"
        model = FunctionModel(lambda r: "x")
        Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
        data.write_text(json.dumps({**rows[0], "input": "edited"}) + "\n")
        with pytest.raises(UserError, match="the dataset changed: item ") as info:
            Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
        message = str(info.value)
        assert "\n" not in message and "\x1b" not in message and len(message) < 400


def test_a_row_inserted_into_a_dataset_without_ids_is_refused_with_the_cause(tmp_path: Path) -> None:
    """Rows without an `id` are numbered by their place: a row inserted at the top renumbers the
    rest, and the refusal said only "the dataset changed"; it says why and how to avoid it."""
    exp = _experiment(tmp_path)
    data = tmp_path / "data.jsonl"
    rows = [{"input": f"question {k}", "target": "x"} for k in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    model = FunctionModel(lambda r: "x")
    Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    rows.insert(0, {"input": "a new first question", "target": "x"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as info:
        Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert str(info.value).endswith(
        "; rows without an `id` are numbered by their place in the file, so inserting or removing one "
        "renumbers the rows after it: give each row an `id`, and use another --out, or delete the "
        "folder to start over"
    )


def test_a_changed_row_with_its_own_id_gets_no_numbering_hint(tmp_path: Path) -> None:
    """The hint is for numbered rows only: an edited row with its own `id` is refused as before."""
    exp = _experiment(tmp_path)
    out = tmp_path / "out"
    model = FunctionModel(lambda r: "x")
    Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    data = tmp_path / "data.jsonl"
    data.write_text(data.read_text().replace("question 1", "question one"))
    with pytest.raises(UserError) as info:
        Experiment.from_file(exp, out=out, runner=Runner(models={"sim/*": model}), progress=False).run()
    assert "item `i1` (and 0 more) has a different input" in str(info.value)
    assert "numbered" not in str(info.value)


def test_a_budget_stop_still_stores_the_pairs_already_paid_for(tmp_path: Path) -> None:
    """Past a budget stop, pairs whose replies are all cached (paid before a kill) are still
    replayed and stored, free, so the report has their answers; nothing new is sent (the stop
    ended the feed, and they stayed out of the report for any budget short of the next call)."""
    out = tmp_path / "out"
    first = FunctionModel(lambda r: "x")
    Experiment.from_file(
        _singles(tmp_path, "one.yaml"), out=out, runner=Runner(models={"sim/*": first}), progress=False
    ).run()
    store = Store.open(out, create=False)
    paid = store.spent_usd()
    store.close()
    _forget_runs(out)
    more = FunctionModel(lambda r: "x")
    e = Experiment.from_file(
        _singles(tmp_path, "two.yaml, one.yaml", f"budget_usd: {paid * 1.2}\n"),
        out=out,
        runner=Runner(models={"sim/*": more}),
        progress=False,
    )
    summary = e.run()
    assert e.stopped is not None and more.calls == []
    assert summary.setup("base").n == 10 and summary.setup("one").n == 10


def test_a_store_that_cannot_be_written_mid_run_ends_in_one_line(tmp_path: Path) -> None:
    """A write refused mid-run (here another program holds the file's write lock; a full disk
    alike) stops the experiment with one line naming the store, not a SQLite traceback."""
    exp = _experiment(tmp_path, n=1)
    out = tmp_path / "out"
    holders: list[sqlite3.Connection] = []

    def answer(request: Any) -> str:
        if not holders:
            other = sqlite3.connect(out / "experiment.sqlite", isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            holders.append(other)
        return "x"

    try:
        with pytest.raises(
            UserError,
            match=r"experiment\.sqlite: the experiment store cannot be written: another program holds its write lock",
        ) as info:
            Experiment.from_file(
                exp, out=out, runner=Runner(models={"sim/*": FunctionModel(answer)}), progress=False
            ).run()
        assert "\n" not in str(info.value) and "locked" in str(info.value)
    finally:
        for conn in holders:
            conn.close()


def _run_twice_through_the_cache(store: Store, model: Any, topo: Any) -> tuple[Any, Any]:
    """The topology run twice, each in a loop and a runner of its own, over the store's call cache:
    the first run and its replay."""
    from moa.experiment.store.cache import StoreCache

    async def run_once() -> Any:
        base = Runner(models={"fake/m": model})
        try:
            return await base.scoped(cache=StoreCache(store, "s:h", "i1")).run(topo, "q")
        finally:
            await base.aclose()

    return asyncio.run(run_once()), asyncio.run(run_once())


def test_a_replayed_reply_keeps_its_usage_estimated_flag(tmp_path: Path) -> None:
    """A call whose provider reported no usage is flagged ``usage_estimated``; replayed from the
    call cache (a resumed experiment) it says so again instead of passing moa's count as a bill."""
    from moa.models.base import ModelReply
    from moa.results import Usage
    from moa.topology import build

    model = FunctionModel(lambda r: ModelReply("answer", Usage(3, 1), "m", "stop", usage_estimated=True))
    topo = build.single("fake/m", name="one")
    store = Store.open(tmp_path / "out")
    try:
        first, replay = _run_twice_through_the_cache(store, model, topo)
        assert len(model.calls) == 1 and replay.calls[0].cached
        assert first.calls[0].usage_estimated and replay.calls[0].usage_estimated
        assert replay.usage_estimated_calls == 1
    finally:
        store.close()


def test_the_owner_of_a_cached_reply_is_looked_up_by_index(tmp_path: Path) -> None:
    """Each cache miss asks who owns the reply's old-style key; the primary key (scope, item, key)
    cannot answer that without scanning every item of the scope, so a 10,000-item experiment slowed
    as it went (1,000 items answered in 2.8 s, 10,000 in 103 s). A store opened gets the index, an
    existing one included, and the lookup uses it."""
    store = Store.open(tmp_path)
    try:
        plan = store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT item_id FROM cache_items WHERE scope=? AND key=?", ("s", "k")
        ).fetchall()
    finally:
        store.close()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "cache_items_key" in detail, detail


def _run_twice(tmp_path: Path, reply: Any) -> tuple[Any, Any, list[Any]]:
    """One call made, then replayed from the call cache of the same store; the two stored rows."""
    from moa.experiment.store.calls import call_rows
    from moa.topology import build

    model = FunctionModel(lambda r: reply)
    price = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.3}
    topo = build.single(build.agent("fake/m", pricing=price, max_tokens=100), name="one")
    store = Store.open(tmp_path / "out")
    try:
        first, replay = _run_twice_through_the_cache(store, model, topo)
        assert len(model.calls) == 1 and replay.calls[0].cached
        store.conn.executemany(
            "INSERT INTO calls(run_id, judgment_id, seq, node, model, requested_model, prompt_tokens, "
            "completion_tokens, cost_usd, latency_s, attempts, error, started_s, priced, local, cached, "
            "attempt_log, cost_usd_max, usage_suspect, usage_estimated, cached_tokens, cache_write_tokens, "
            "cache_write_1h_tokens, service_tier, messages, reply) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [*call_rows(first.calls, 1, None), *call_rows(replay.calls, 2, None)],
        )
        rows = [store.calls_of(run_id=1)[0], store.calls_of(run_id=2)[0]]
    finally:
        store.close()
    return first.calls[0], replay.calls[0], rows


def test_a_replayed_call_keeps_its_cache_counts_cost_and_tier(tmp_path: Path) -> None:
    """A call whose provider read and wrote its prompt cache, served at the priority tier, replays
    from the call cache with the same usage (every cache count), cost, tier and flags, and both
    stored rows hold the cache counts (a replay's attempt log, where they were, is empty)."""
    from moa.models.base import ModelReply
    from moa.results import Usage

    usage = Usage(1000, 10, 600, 300, 100)
    reply = ModelReply("answer", usage, "m", "stop", service_tier="priority")
    first, replay, rows = _run_twice(tmp_path, reply)
    assert first.usage == replay.usage == usage
    assert replay.cost_usd == pytest.approx(first.cost_usd) and first.cost_usd > 0
    assert first.service_tier == replay.service_tier == "priority"
    assert replay.attempt_log == first.attempt_log and replay.attempts == first.attempts == 1
    assert (first.usage_suspect, first.usage_estimated) == (replay.usage_suspect, replay.usage_estimated)
    assert replay.to_dict()["usage"] == first.to_dict()["usage"]
    for row in rows:
        assert (row["cached_tokens"], row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (
            600,
            300,
            100,
        )
        assert row["service_tier"] == "priority"


def test_a_replayed_suspect_call_replays_its_booked_usage_and_flag(tmp_path: Path) -> None:
    """A reply claiming more prompt tokens than its request can have is clamped and flagged
    ``usage_suspect``; its replay reports the clamped usage and the flag, not the raw claim."""
    from moa.models.base import ModelReply
    from moa.results import Usage

    reply = ModelReply("answer", Usage(100_000, 10, 0, 500, 0), "m", "stop")
    first, replay, rows = _run_twice(tmp_path, reply)
    assert first.usage_suspect and replay.usage_suspect
    assert replay.usage == first.usage and first.usage.prompt_tokens < 100_000
    assert replay.cost_usd == pytest.approx(first.cost_usd)
    assert [r["usage_suspect"] for r in rows] == [True, True]


def _v6_store(out: Path, log: str) -> None:
    """A store as moa wrote it at schema version 6, holding one call (of run 1) whose attempt log is
    ``log`` and one cached reply."""
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    drop = "".join(
        f"ALTER TABLE {t} DROP COLUMN {c};"
        for t, cols in (
            ("calls", ("cached_tokens", "cache_write_tokens", "cache_write_1h_tokens", "service_tier")),
            (
                "cache",
                (
                    "cached_tokens",
                    "cache_write_tokens",
                    "cache_write_1h_tokens",
                    "usage_suspect",
                    "service_tier",
                    "attempt_log",
                ),
            ),
        )
        for c in cols
    )
    conn.executescript(drop + "UPDATE meta SET value = '6' WHERE key = 'schema_version';")
    conn.execute(
        "INSERT INTO calls(run_id, seq, node, model, requested_model, prompt_tokens, completion_tokens, cost_usd, "
        "latency_s, attempts, started_s, priced, local, cached, attempt_log) VALUES (1,0,'n','m','m',50,2,0.1,0.2,2,0,1,0,0,?)",
        (log,),
    )
    conn.execute(
        "INSERT INTO cache(key, text, model, reply_model, finish_reason, prompt_tokens, completion_tokens, cost_usd) "
        "VALUES ('k', 'hello', 'm', 'm', 'stop', 3, 2, 0.5)"
    )
    conn.commit()
    conn.close()


def test_a_version_6_store_gains_the_cache_counts_of_its_calls(tmp_path: Path) -> None:
    """Upgrading a v6 store: a stored call's cache counts, kept in its attempt log only, are summed
    into the new columns; a reply cached before keeps 0 (unknown) and is still replayed."""
    out = tmp_path / "out"
    log = json.dumps(
        [
            {"status": "error", "latency_s": 0.1, "usage": None, "error": "TimedOut"},
            {
                "status": "ok",
                "latency_s": 0.1,
                "usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {
                        "cached_tokens": 30,
                        "cache_creation_tokens": 10,
                        "cache_creation_token_details": {"ephemeral_1h_input_tokens": 4},
                    },
                },
                "error": None,
            },
        ]
    )
    _v6_store(out, log)
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        row = store.calls_of(run_id=1)[0]
        assert (row["cached_tokens"], row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (30, 10, 4)
        from moa.experiment.store.cache import StoreCache

        hit = StoreCache(store, "s").get("k")
        assert hit is not None and hit.reply.text == "hello" and hit.reply.usage.cached_tokens == 0
        assert not hit.usage_suspect and hit.reply.service_tier is None and hit.attempt_log == ()
    finally:
        store.close()


def test_a_version_6_call_whose_attempt_log_holds_an_infinite_count_is_named_not_a_traceback(
    tmp_path: Path,
) -> None:
    """Upgrading a v6 store whose call's attempt log holds an infinite cache count (a damaged or
    edited store): the upgrade ended in an OverflowError traceback; the store opens, and reading
    the call names it and the field in one line."""
    out = tmp_path / "out"
    usage = {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1e999}}
    _v6_store(out, json.dumps([{"status": "ok", "usage": usage}]))
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        with pytest.raises(
            UserError, match=r"experiment\.sqlite: call \d+ \(run 1\): `attempt_log\[0\]\.usage\."
        ):
            store.calls_of(run_id=1)
    finally:
        store.close()


def test_a_reply_replayed_from_the_store_is_the_answer_its_first_call_returned(tmp_path: Path) -> None:
    """A reply the store cached with its reasoning taken out replays as is, in a later run with
    its own cache over the store (a resume): an answer holding a `</think>` of its own was cut
    again, so the resumed run scored another answer."""
    from moa.experiment.store.cache import StoreCache
    from moa.topology.loader import load_data

    fake = FunctionModel(lambda _r: "<think>a</think>\n\nx </think>\n\ny")
    topology = load_data({"name": "s", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}})
    store = Store.open(tmp_path / "out")

    async def run() -> Any:
        async with Runner(models={"fake/*": fake}, cache=StoreCache(store, "s:h", "i1")) as rt:
            return await rt.run(topology, "hi")

    try:
        first, again = asyncio.run(run()), asyncio.run(run())
    finally:
        store.close()
    assert first.output == again.output == "\n\nx </think>\n\ny"
    assert again.calls[0].cached and len(fake.calls) == 1


def test_a_version_7_store_replays_its_replies_without_their_reasoning(tmp_path: Path) -> None:
    """Upgrading a v7 store: its cache gains `answer_only`, NULL for the replies cached before,
    which may still begin with their reasoning and are read as such (taken out on replay)."""
    from moa.experiment.store.cache import StoreCache

    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        ALTER TABLE cache DROP COLUMN answer_only;
        UPDATE meta SET value = '7' WHERE key = 'schema_version';
        INSERT INTO cache(key, text, model, reply_model, finish_reason, prompt_tokens, completion_tokens,
          cost_usd) VALUES ('k', '<think>r</think>42', 'm', 'm', 'stop', 3, 2, 0.5);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        assert store.conn.execute("SELECT answer_only FROM cache").fetchone() == (None,)
        hit = StoreCache(store, "s").get("k")
        assert hit is not None and hit.reply.text == "<think>r</think>42" and not hit.answer_only
    finally:
        store.close()
