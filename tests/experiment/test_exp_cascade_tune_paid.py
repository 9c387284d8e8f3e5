"""What tuning a cascade pays, and what it does not pay again (``tune:`` / ``moa compare
--tune-cascade``), on the loopback simulator with the models of ``test_exp_cascade_tune``:
``paid_usd`` and its bound ``paid_usd_max``, the failed calls of the stored cascade runs read back
rather than sent again, and the books kept when the tuning is cancelled."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import math
import sqlite3
from pathlib import Path

import pytest
from exp_helpers import answers_of
from test_exp_cascade import OneWrong, P, Q, _write, cheap_and_strong
from test_exp_cascade_tune import Counted, _judged_cascade, _paid, _rows

from moa.errors import UserError
from moa.experiment import Experiment
from moa.experiment.report.tune import format_tune_table
from moa.testing.sim import SimModel, SimServer


def _one_wrong_each(rows: list[dict[str, object]]) -> tuple[Counted, dict[str, SimModel]]:
    """The cheap and the strong model each wrong on one item (the strong one counting its
    requests), as the comparison of ``_write`` expects them."""
    answers = answers_of(rows)
    strong = Counted(OneWrong(Q, answers))
    return strong, {"cheap-m": SimModel(answer=OneWrong(P, answers)), "strong-m": SimModel(answer=strong)}


def test_what_the_tuning_paid_is_reported(tmp_path: Path) -> None:
    """The calls the tuning makes (the later stages of the items the cascade accepted) are paid:
    tune.json, the report and the table say what they cost, on a re-run too (its calls are read
    back free); they were in the ledger and in no figure."""
    rows = _rows(40)
    strong, models = _one_wrong_each(rows)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        compared, sent = _paid(tmp_path / "out"), strong.calls
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.run()
        tuned = _paid(tmp_path / "out")
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        again.run()
    t = run.tuned
    assert t is not None and strong.calls > sent  # the tuning sent calls of its own
    assert t.paid_usd > 0 and math.isclose(t.paid_usd, tuned - compared, rel_tol=1e-9)
    assert (
        again.tuned is not None and again.tuned.paid_usd == t.paid_usd
    )  # nothing paid twice, nothing forgotten
    assert _paid(tmp_path / "out") == tuned
    assert f"cost ${t.paid_usd:.6f}" in (tmp_path / "out" / "report.md").read_text()
    assert f"its own calls cost ${t.paid_usd:.6f}" in format_tune_table(t)


def _unreadable_rater(rows: list[dict[str, object]]) -> tuple[Counted, Counted, dict[str, SimModel]]:
    """A rater whose replies never read (every judge call of the cascade fails, paid) beside a
    strong model wrong on one item, each counting its requests."""
    answers = answers_of(rows)
    rater, strong = Counted(lambda req: "I could not say."), Counted(OneWrong(Q, answers))
    models = {
        **cheap_and_strong(answers),
        "strong-m": SimModel(answer=strong),
        "rater-m": SimModel(answer=rater),
    }
    return rater, strong, models


def _rater_cascade(tmp_path: Path, base_url: str, rows: list[dict[str, object]]) -> Path:
    pricing = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}, retry: {max_attempts: 1}"
    return _judged_cascade(tmp_path / "e", base_url, rows, f"api_base: {json.dumps(base_url)}, {pricing}")


@pytest.mark.parametrize("store_text", [True, False])
def test_a_raters_failed_calls_in_the_stored_runs_are_read_back_not_paid_again(
    tmp_path: Path, store_text: bool
) -> None:
    """A rater whose replies never read fails every judge call of the comparison's cascade runs, and
    each was paid. The first tuning run asked it all again (a failed call was cached nowhere) and
    paid again; it reads them back from the stored runs: no request is sent, `paid_usd` is $0,
    and the setting as written is the stored cascade, cost included. Without the messages stored
    (`store_text: false`) a failure is matched by its node and model."""
    rows = _rows(40)
    rater, strong, models = _unreadable_rater(rows)
    with SimServer(models) as srv:
        exp = _rater_cascade(tmp_path, srv.base_url, rows)
        exp.write_text(exp.read_text() + f"store_text: {str(store_text).lower()}\n")
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        compared, asked, sent = _paid(tmp_path / "out"), rater.calls, strong.calls
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.run()
    t = run.tuned
    assert t is not None and asked == len(rows)
    assert (rater.calls, strong.calls) == (asked, sent)  # every item escalated: all of it is stored
    assert t.paid_usd == 0 and _paid(tmp_path / "out") == compared
    written = next(s for s in t.settings if s.current)
    c = summary.setup("cascade")
    assert c.cost_per_item_usd is not None and c.quality is not None
    pooled = (written.dev.cost_usd * t.dev_items + written.test.cost_usd * t.test_items) / len(rows)
    assert math.isclose(pooled, c.cost_per_item_usd, rel_tol=1e-9), (pooled, c.cost_per_item_usd)


def test_a_failed_first_stage_call_is_read_back_so_the_written_setting_is_the_stored_cascade(
    tmp_path: Path,
) -> None:
    """Stage 1 calls that failed in the comparison (a 500) were sent again by the first tuning run:
    they could answer and agree, and the setting as written then accepted items the stored cascade
    had escalated. Read back, no stage-1 request is sent and the setting as written is the stored
    cascade item for item."""
    rows = _rows(40)
    answers = answers_of(rows)
    mini = Counted(OneWrong(P, answers))
    with SimServer({**cheap_and_strong(answers), "mini-m": SimModel(answer=mini)}) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        cascade = tmp_path / "e" / "cascade.yaml"
        cascade.write_text(
            cascade.read_text().replace("mini: {model: openai/cheap-m", "mini: {model: openai/mini-m")
        )
        srv.script("mini-m", ["500"] * 12)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        sent = mini.calls
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.run()
    t = run.tuned
    c = summary.setup("cascade")
    assert t is not None and c.errors == 0 and c.escalation_rate is not None and c.quality is not None
    assert mini.calls == sent  # 12 failed (the 500s, not served by the model) and the rest cached
    written = next(s for s in t.settings if s.current)

    def pooled(stat: str) -> float:
        return (getattr(written.dev, stat) * t.dev_items + getattr(written.test, stat) * t.test_items) / len(
            rows
        )

    assert math.isclose(pooled("escalation_rate"), c.escalation_rate, abs_tol=1e-9)
    assert math.isclose(pooled("quality"), c.quality, abs_tol=1e-9)


def test_the_tunings_own_failed_calls_are_in_what_it_paid(tmp_path: Path) -> None:
    """A judge the comparison's runs never reached (stage 2's, on items stage 1 accepted) is asked by
    the tuning; its unreadable replies fail and were paid: `paid_usd` and the ledger hold them
    beside the replies it cached, and a re-run sends nothing and pays nothing."""
    rows = _rows(40)
    answers = answers_of(rows)
    rater = Counted(lambda req: "I could not say.")
    with SimServer(cheap_and_strong(answers, {"rater-m": SimModel(answer=rater)})) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        common = f"api_base: {json.dumps(srv.base_url)}, retry: {{max_attempts: 1}}"
        price = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"
        (tmp_path / "e" / "cascade.yaml").write_text(
            "name: cascade\nkind: cascade\nstages:\n"
            "  - {agent: mini, samples: 2, accept: {agree: 2, vote_on: last_number}}\n"
            "  - {agent: mid, reuse: true, accept: {judge: {agent: rater, threshold: 0.5}}}\n"
            "  - {topology: mixture.yaml, reuse: true}\n"
            f"agents:\n  mini: {{model: openai/cheap-m, temperature: 0.7, {common}, {price}}}\n"
            f"  mid: {{model: openai/strong-m, {common}, {price}}}\n"
            f"  rater: {{model: openai/rater-m, {common}, {price}}}\n"
        )
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        compared, asked, cached = _paid(tmp_path / "out"), rater.calls, _cached_usd(tmp_path / "out")
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.run()
        tuned, replies = _paid(tmp_path / "out"), _cached_usd(tmp_path / "out") - cached
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        again.run()
    t = run.tuned
    assert t is not None and rater.calls > asked  # the items stage 1 accepted: their judge is new
    assert math.isclose(t.paid_usd, tuned - compared, rel_tol=1e-9)
    assert t.paid_usd > replies * (1 + 1e-9)  # the failed judge calls, beside the replies cached
    assert again.tuned == t and _paid(tmp_path / "out") == tuned


def _cached_usd(out: Path) -> float:
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        return float(conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM cache").fetchone()[0])
    finally:
        conn.close()


def test_what_the_tuning_paid_has_a_bound_for_calls_cut_off_in_flight(tmp_path: Path) -> None:
    """A tuning call dropped after it was sent (usage unknown, maybe billed) cost nothing in
    `paid_usd` and had no bound anywhere: tune.json's `paid_usd_max` adds its worst case, as a
    run's `cost_usd_max` does, and the report and the table say "up to"; a re-run keeps it."""
    rows = _rows(40)
    answers = answers_of(rows)
    with SimServer(cheap_and_strong(answers)) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        srv.script("strong-m", ["reset", "reset"])  # two of the tuning's own calls are cut off
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.run()
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False, retry_errors=False)
        again.run()
    t = run.tuned
    assert t is not None and t.paid_usd > 0
    # each dropped call's worst case holds at least its max_tokens (4096) at $2 per million
    assert t.paid_usd_max is not None and t.paid_usd_max >= t.paid_usd + 2 * 4096 * 2.0 / 1e6
    assert f"(up to ${t.paid_usd_max:.6f})" in (tmp_path / "out" / "report.md").read_text()
    assert f"(up to ${t.paid_usd_max:.6f})" in format_tune_table(t)
    assert again.tuned is not None and again.tuned.paid_usd_max == t.paid_usd_max


def test_a_stored_failure_replays_once_and_only_for_the_request_it_failed_on(tmp_path: Path) -> None:
    """The tuning's cache reads a stored failure back for the same node, model and messages only,
    once, with its account (cached, its cost and its attempts); another request is sent. A call
    cancelled in the stored run (its sibling sample failed first) is read back as a failure too: it
    was sent again whenever it went out before the replayed failure ended its stage (a race: one run
    in ten paid one call more), for the same outcome."""
    from moa.calls.call import CachedFailure
    from moa.errors import MalformedReply
    from moa.experiment import Store
    from moa.experiment.store.cache import StoreCache
    from moa.experiment.tune import _WithFailures
    from moa.models.base import ModelRequest
    from moa.results import Attempt, CallRecord, Usage

    asked = [{"role": "user", "content": "rate this"}]
    failed = CallRecord(
        "s1.judge.rate",
        "openai/rater-m",
        Usage(10, 3),
        cost_usd=0.5,
        error="MalformedReply: confidence is not a number",
        attempt_log=[Attempt("error", 0.1, Usage(10, 3), "unreadable", cost_usd=0.5)],
        messages=asked,
    )
    cut = CallRecord("s1.sample1", "openai/cheap-m", error="cancelled", messages=asked)
    store = Store.open(tmp_path)
    try:
        cache = _WithFailures(StoreCache(store, "cascade:h", "q1"), [failed, cut])
        other = cache.key("s1.judge.rate", ModelRequest("openai/rater-m", [{"role": "user", "content": "x"}]))
        assert cache.get(other) is None
        key = cache.key("s1.judge.rate", ModelRequest("openai/rater-m", asked))
        hit = cache.get(key)
        assert isinstance(hit, CachedFailure) and isinstance(hit.error, MalformedReply)
        assert hit.record is failed and hit.error.node == "s1.judge.rate"
        assert cache.get(cache.key("s1.judge.rate", ModelRequest("openai/rater-m", asked))) is None
        hit = cache.get(cache.key("s1.sample1", ModelRequest("openai/cheap-m", asked)))
        assert isinstance(hit, CachedFailure) and hit.record is cut and "cancelled" in str(hit.error)
        assert cache.get(cache.key("s1.sample1", ModelRequest("openai/cheap-m", asked))) is None
    finally:
        store.close()


async def test_a_cancelled_tuning_books_the_calls_it_cut_off_in_flight(tmp_path: Path) -> None:
    """Ctrl-C during the tuning, its calls in flight: each item's recording books its calls when it
    stops. The first item to stop ended the wait for the others, so the tuning's books were closed
    (and then the store) while the rest still unwound: their worst case was lost with a
    "closed database" error, and `tune_unknown_usd` said $0 though every cut-off call may be billed."""
    from moa.experiment import Store
    from moa.experiment.tune import TUNE_UNKNOWN

    rows = _rows(40)
    answers = answers_of(rows)
    async with SimServer(cheap_and_strong(answers)) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        await Experiment.from_file(exp, out=tmp_path / "out", progress=False).arun()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        srv.script("strong-m", ["hang"] * 400)  # every new call of the tuning waits for no reply
        task = asyncio.ensure_future(Experiment.from_file(exp, out=tmp_path / "out", progress=False).arun())
        async with asyncio.timeout(30):  # a hang guard: the requests arrive within milliseconds
            while srv.stats.faults["hang"] < 24:  # concurrency 8: eight items' mixtures of three
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    store = Store.open(tmp_path / "out", create=False)
    try:
        (unknown,) = store.get_meta(TUNE_UNKNOWN).values()
    finally:
        store.close()
    # 24 calls cut off after they were sent, each with its worst case (its 4096 tokens at $2/M)
    assert unknown >= 24 * 4096 * 2.0 / 1e6


def test_a_stored_failed_call_of_the_wrong_shape_is_one_line_not_paid_again(tmp_path: Path) -> None:
    """A stored run's failed call whose attempt log is not JSON (a damaged or edited store): tuning
    read it as no failures and sent every such call again, paying for it silently; it stops in one
    line naming the store, the call and the field, before any request."""
    rows = _rows(40)
    rater, strong, models = _unreadable_rater(rows)
    with SimServer(models) as srv:
        exp = _rater_cascade(tmp_path, srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        asked, sent = rater.calls, strong.calls
        conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
        conn.execute("UPDATE calls SET attempt_log = 'nope' WHERE error IS NOT NULL")
        conn.commit()
        conn.close()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        with pytest.raises(
            UserError, match=r"experiment\.sqlite: call \d+ \(run \d+\): `attempt_log` is not JSON"
        ):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert (rater.calls, strong.calls) == (asked, sent)


def test_a_tuning_reply_the_store_cannot_cache_stops_the_tuning_at_once(tmp_path: Path) -> None:
    """A reply of the tuning's own calls whose caching fails (a full disk; a trigger refuses new
    cache rows here, every other write still succeeds) failed its item as a provider error, the item
    was dropped, and the tuning went on paying for every call it could not keep. It stops in the one
    line naming the store; only the calls in flight are paid."""
    rows = _rows(40)
    strong, models = _one_wrong_each(rows)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        sent = strong.calls
        conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON cache "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        conn.close()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        with pytest.raises(UserError, match=r"experiment\.sqlite: .*\(SQLite: database or disk is full\)"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    # the items in flight (8), each to its last stage (3 strong samples): 66 went unkept before
    assert 0 < strong.calls - sent <= 8 * 3, strong.calls - sent


def test_a_tuning_whose_books_the_store_cannot_write_names_the_write(tmp_path: Path) -> None:
    """What the tuning paid, written to a full disk (a trigger refuses that meta row here): the line
    named the store only ("damaged or cannot be written"), not what it was writing; it names the
    write and the setup now."""
    rows = _rows(40)
    _, models = _one_wrong_each(rows)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON meta WHEN NEW.key = 'tune_paid_usd' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        conn.close()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        with pytest.raises(UserError) as info:
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    line = str(info.value)
    assert "\n" not in line and "(SQLite: database or disk is full)" in line
    assert "while storing what tuning setup `cascade` paid" in line, line
