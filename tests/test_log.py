"""Logging: events for runs and calls, only when asked, with secrets redacted."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

import moa
from moa import build, log
from moa.log import redact
from moa.models.base import ModelRequest
from moa.testing import FunctionModel, ScriptedModel, capture_events
from tests.dict_cache import DictCache
from tests.raising_logger import RaisingLogger


async def test_events_for_run_and_calls() -> None:
    """A run logs run.start, one call event per call, and run.end."""
    with capture_events() as events:
        await build.parallel(["fake/a", "fake/b"], reduce="first").run(
            "q", runner=moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")})
        )
    names = [e["event"] for e in events]
    assert names[0] == "run.start" and names[-1] == "run.end"
    calls = [e for e in events if e["event"] == "call"]
    assert len(calls) == 2 and {"node", "model", "prompt_tokens", "cost_usd", "latency_s", "attempts"} <= set(
        calls[0]
    )


async def test_no_logging_unless_configured(capsys: object) -> None:
    """Without configure_logging nothing is printed."""
    await build.single("fake/a").run("q", runner=moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")}))
    out = capsys.readouterr()  # type: ignore[attr-defined]
    assert out.out == "" and out.err == ""


def test_redacts_keys_and_bearer_tokens() -> None:
    """API keys and bearer tokens are masked wherever they appear."""
    event = {
        "event": "call failed: Incorrect API key provided: sk-proj-abcdefghijklmnop",
        "headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwx"},
        "api_key": "whatever-value",
        "prompt_tokens": 12,
    }
    out = redact(event)
    assert "abcdefghijklmnop" not in str(out)
    assert out["api_key"] == "***" and out["prompt_tokens"] == 12


async def test_logged_error_with_key_is_redacted() -> None:
    """A provider error echoing a key is redacted in the log event."""
    boom = FunctionModel(
        lambda r: moa.RequestRejected("invalid key sk-live-1234567890abcdef", status_code=401)
    )
    with capture_events() as events, contextlib.suppress(moa.RequestRejected):
        await build.single("fake/a").run("q", runner=moa.Runner(models={"fake/a": boom}))
    failed = [e for e in events if e["event"] == "run.failed"]
    assert failed and "sk-live-1234567890abcdef" not in failed[0]["error"]


async def test_every_event_of_a_run_carries_its_run_id() -> None:
    """run.start, each call and run.end carry the run's id, which the RunResult (and a failed run's
    error) carries too; two runs get two ids."""
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")})
    topo = build.parallel(["fake/a", "fake/b"], reduce="first")
    with capture_events() as events:
        first = await topo.run("q", runner=runner)
        second = await topo.run("q", runner=runner)
    assert first.run_id and first.run_id != second.run_id
    assert {e["run_id"] for e in events} == {first.run_id, second.run_id}
    assert sum(1 for e in events if e["run_id"] == first.run_id and e["event"] == "call") == 2


async def test_warnings_only_logs_retries_with_their_run_id() -> None:
    """With the level at WARNING a run logs no info event, and its retry warning still carries the
    run's id (the logger is bound to it only when an event is emitted)."""
    flaky = ScriptedModel([moa.RateLimited("slow down"), "fine"])
    a = build.agent("fake/a", retry={"max_attempts": 2, "backoff_base_s": 0.001})
    buf, previous = io.StringIO(), log.logger()
    log.configure_logging("json", level="WARNING", stream=buf)
    try:
        r = await build.single(a).run("q", runner=moa.Runner(models={"fake/a": flaky}))
    finally:
        log.use_logger(previous)
    events = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    assert [(e["event"], e["run_id"]) for e in events] == [("retry", r.run_id)]


class _GoneReader(io.StringIO):
    """stderr piped to a reader that went away (``moa --log json run ... 2>&1 | head``)."""

    def write(self, _text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_logger_that_raises_loses_its_events_not_the_run() -> None:
    """A paid result, and a failed run's error with its calls, reach the caller whatever the
    logger does: a host's raising handler, or moa's own lines to a closed pipe."""
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")})
    refused = moa.Runner(
        models={"fake/*": FunctionModel(lambda r: moa.RequestRejected("no", status_code=400))}
    )
    previous = log.logger()
    for install in (
        lambda: log.use_logger(RaisingLogger()),
        lambda: log.configure_logging("json", stream=_GoneReader()),
    ):
        install()
        try:
            result = await build.parallel(["fake/a", "fake/b"], reduce="first").run("q", runner=runner)
            assert result.output == "x" and len(result.calls) == 2
            try:
                await build.single("fake/a").run("q", runner=refused)
            except moa.RequestRejected as e:
                assert len(e.calls) == 1
            else:
                raise AssertionError("the refused run returned")
        finally:
            log.use_logger(previous)


async def test_a_call_event_for_every_call_the_run_counts() -> None:
    """A call that failed (its fallback answered) and a reply replayed from the cache log their
    `call` events too, so a run's events add up to the cost and call count of its `run.end`."""

    def answer(request: ModelRequest) -> object:
        if request.model == "openai/gpt-4o":
            return moa.RequestRejected("this model is not enabled for you", status_code=403)
        return "an answer"

    runner = moa.Runner(models={"*": FunctionModel(answer)}, cache=DictCache())
    topo = build.single(build.agent("openai/gpt-4o", fallbacks=["openai/gpt-4o-mini"]))
    with capture_events() as events:
        first = await topo.run("q", runner=runner)
        replayed = await topo.run("q", runner=runner)
    for result in (first, replayed):
        mine = [e for e in events if e["run_id"] == result.run_id]
        calls = [e for e in mine if e["event"] == "call"]
        end = next(e for e in mine if e["event"] == "run.end")
        assert [(c["model"], "error" in c) for c in calls] == [
            ("openai/gpt-4o", True),
            ("openai/gpt-4o-mini", False),
        ]
        assert len(calls) == end["calls"] == len(result.calls)
        assert sum(c["cost_usd"] for c in calls) == pytest.approx(end["cost_usd"]) and end["cost_usd"] > 0
        assert "403" in calls[0]["error"] or "not enabled" in calls[0]["error"]
    assert [c.get("cached", False) for c in events if c["event"] == "call"] == [False, False, False, True]


def test_an_unknown_format_or_level_is_one_line_naming_it() -> None:
    """`configure_logging("jsno")` gave console lines without a word; `level="verbose"` a bare
    KeyError. Both are a UserError naming the value, and logging stays as it was."""
    previous = log.logger()
    for kw in ({"fmt": "jsno"}, {"level": "verbose"}):
        with pytest.raises(moa.UserError) as raised:
            log.configure_logging(**kw)
        assert repr(next(iter(kw.values()))) in str(raised.value) and "\n" not in str(raised.value)
        assert log.logger() is previous


async def test_run_end_says_what_calls_cut_off_in_flight_may_cost() -> None:
    """A straggler cancelled once the first answer is in (``reduce: first``) was sent and may be
    billed: `run.end` carries the run's `cost_usd_max`, as `run.failed` and `run.cancelled` do."""
    fast, slow = FunctionModel(lambda r: "fast"), FunctionModel(lambda r: "slow", delay_s=30)
    priced = {"pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}, "max_tokens": 100}
    topo = build.parallel(
        [build.agent("fake/fast", **priced), build.agent("fake/slow", **priced)], reduce="first"
    )
    with capture_events() as events:
        result = await topo.run("q", runner=moa.Runner(models={"fake/fast": fast, "fake/slow": slow}))
    end = next(e for e in events if e["event"] == "run.end")
    assert result.cost_usd_max > result.cost_usd
    assert end["cost_usd_max"] == pytest.approx(result.cost_usd_max)


class _Recording:
    """A host's structlog-like logger that keeps what it is given, unprocessed."""

    def __init__(self, into: list[dict[str, Any]], context: dict[str, Any] | None = None) -> None:
        self.into, self.context = into, context or {}

    def bind(self, **kw: Any) -> _Recording:
        return _Recording(self.into, {**self.context, **kw})

    def info(self, event: str, **kw: Any) -> None:
        self.into.append({"event": event, **self.context, **kw})

    warning = error = info


def test_a_logger_of_your_own_gets_moas_events_redacted() -> None:
    """`use_logger(host_logger)` bypassed the redaction processor `configure_logging` installs: a
    key shape in an event's text, or a key-named field, reached the host's log as it was."""
    got: list[dict[str, Any]] = []
    previous = log.logger()
    log.use_logger(_Recording(got))
    try:
        log.logger().error("serve.error", error="RuntimeError: refused sk-proj-abcdefghijklmnop")
        run = log.for_run("r1")
        assert run is not None
        run.error("run.failed", error="Authorization: Bearer abcdefghijklmnopqrstuvwx", api_key="hunter22x")
    finally:
        log.use_logger(previous)
    assert len(got) == 2 and got[1]["run_id"] == "r1" and got[1]["api_key"] == "***"
    assert "abcdefghijklmnop" not in str(got)


def test_logger_hands_back_what_use_logger_restores() -> None:
    """`previous = log.logger()` then `use_logger(previous)` puts the same logger back, level and all."""
    previous = log.logger()
    log.configure_logging("json", level="WARNING", stream=io.StringIO())
    mine = log.logger()
    try:
        log.use_logger(None)
        log.use_logger(mine)
        assert log.logger() is mine and log.info_logger() is None
    finally:
        log.use_logger(previous)
