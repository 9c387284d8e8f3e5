"""Every call's evidence kept in the experiment store: the messages sent (templates filled in), the
reply, the judge's full replies in both orders; capped per text with the cut marked, scrubbed of keys,
and left out with ``store_text: false``."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import sqlite3
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from moa.experiment import Experiment, Store
from moa.experiment.store.calls import cut_text
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text
from tests.loopback_http import completion, send_body, threaded_server

ROWS = [{"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": str(2 * i)} for i in range(4)]
PRICE = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"
FAKE_KEY = "sk-proj-TRACEtestKEY0123456789abcdefghijklmnop"


def _write(folder: Path, base_url: str, *, evaluator: str = "exact", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    agent = f"api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}, {PRICE}"
    (folder / "single.yaml").write_text(
        f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/single-m, {agent}}}\n"
    )
    (folder / "moa.yaml").write_text(
        "name: moa\nkind: parallel\nworkers: [w1, w2]\naggregator: agg\nagents:\n"
        f"  w1: {{model: openai/w-m, {agent}}}\n  w2: {{model: openai/w-m, {agent}}}\n"
        f"  agg: {{model: openai/agg-m, {agent}}}\n"
    )
    (folder / "judge.yaml").write_text(
        f"name: judge\nkind: single\nagent: j\nagents:\n  j: {{model: openai/judge-m, {agent}}}\n"
    )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "exp.yaml").write_text(
        f"name: traced\ndataset: data.jsonl\nevaluator: {evaluator}\nbaseline: single.yaml\n"
        f"setups: [moa.yaml]\nconcurrency: 4\nbootstrap_rounds: 200\n{extra}"
    )
    return folder / "exp.yaml"


def _worker(req: SimRequest) -> str:
    return f"worker says {last_user_text(req.messages).split()[2]}"


def _models(**over: SimModel) -> dict[str, SimModel]:
    return {
        "single-m": SimModel(answer="4"),
        "w-m": SimModel(answer=_worker),
        "agg-m": SimModel(answer="aggregated"),
        "judge-m": SimModel(
            answer=lambda r: f"My reasoning about: {last_user_text(r.messages)[-40:]}\n[[A=B]]"
        ),
        **over,
    }


def _calls(out: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY call_id")]
    conn.close()
    return rows


def test_every_call_keeps_its_filled_in_messages_and_reply(tmp_path: Path) -> None:
    with SimServer(_models()) as srv:
        exp = _write(tmp_path / "e", srv.base_url, evaluator="{name: judge, topology: judge.yaml}")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    calls = _calls(tmp_path / "out")
    run_calls = [c for c in calls if c["run_id"] is not None]
    assert run_calls and all(c["messages"] and c["reply"] for c in run_calls)
    agg = [c for c in run_calls if c["node"] == "aggregate" or "agg" in str(c["model"])]
    assert agg
    for c in agg:
        sent = json.loads(str(c["messages"]))[-1]["content"]
        # the aggregator's template was filled in with what the workers answered
        assert "worker says" in sent and c["reply"] == "aggregated"
    judge_calls = [c for c in calls if c["judgment_id"] is not None]
    assert len(judge_calls) == 2 * len(ROWS)  # both orders, per item
    assert all("[[A=B]]" in str(c["reply"]) and "My reasoning" in str(c["reply"]) for c in judge_calls), [
        c["reply"] for c in judge_calls
    ]
    store = Store.open(tmp_path / "out")
    try:
        first_run = next(int(str(c["run_id"])) for c in run_calls)
        read = store.calls_of(run_id=first_run)
        assert read and read[0]["messages"][-1]["role"] == "user" and read[0]["reply"]
        with pytest.raises(ValueError):
            store.calls_of()
    finally:
        store.close()


def test_store_text_false_keeps_numbers_only(tmp_path: Path) -> None:
    with SimServer(_models()) as srv:
        exp = _write(tmp_path / "e", srv.base_url, extra="store_text: false\n")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    calls = _calls(tmp_path / "out")
    assert calls and all(c["messages"] is None and c["reply"] is None for c in calls)
    assert all(int(str(c["completion_tokens"])) > 0 for c in calls)


def test_long_texts_are_cut_with_a_mark_and_keys_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACE_TEST_API_KEY", FAKE_KEY)
    huge = f"leaked {FAKE_KEY} " + "y" * 10000
    with SimServer(_models(**{"single-m": SimModel(answer=huge)})) as srv:
        exp = _write(tmp_path / "e", srv.base_url, extra="max_text_kb: 1\n")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    single = [c for c in _calls(tmp_path / "out") if c["model"] == "openai/single-m"]
    assert single
    for c in single:
        reply = str(c["reply"])
        assert len(reply.encode()) < 1200 and "[... cut by moa:" in reply
    texts = [str(c[k]) for c in _calls(tmp_path / "out") for k in ("messages", "reply")]
    assert all(FAKE_KEY not in t for t in texts) and any("***" in t for t in texts)


def test_cut_text_masks_keys_and_counts_what_was_cut() -> None:
    text = f"key {FAKE_KEY} then " + "é" * 3000
    out = cut_text(text, 100)
    assert FAKE_KEY not in out and out.startswith("key ") and "more bytes]" in out
    assert cut_text("short", 100) == "short"


def test_a_reply_the_judges_validation_rejects_is_kept_in_the_trace(tmp_path: Path) -> None:
    """A judge reply without a verdict ties the pair, and its text is still stored for inspection."""
    with SimServer(_models(**{"judge-m": SimModel(answer="I refuse to pick one.")})) as srv:
        exp = _write(tmp_path / "e", srv.base_url, evaluator="{name: judge, topology: judge.yaml}")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    judge_calls = [c for c in _calls(tmp_path / "out") if c["judgment_id"] is not None]
    assert judge_calls and all(c["reply"] == "I refuse to pick one." and c["error"] for c in judge_calls)


def test_a_reply_refused_for_a_lone_surrogate_is_stored_escaped(tmp_path: Path) -> None:
    """A reply holding `\\ud800` is refused (not text), yet kept on its call's record: storing it
    raised UnicodeEncodeError out of `moa compare`, losing the experiment; it is stored escaped."""
    with SimServer(_models(**{"agg-m": SimModel(answer="aggregated \ud800")})) as srv:
        exp = _write(tmp_path / "e", srv.base_url)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.setup("moa").errors == len(ROWS)
    agg = [c for c in _calls(tmp_path / "out") if c["model"] == "openai/agg-m"]
    assert agg and all(c["reply"] == "aggregated \\ud800" and "surrogate" in str(c["error"]) for c in agg)


class _RefusesTheAggregator(BaseHTTPRequestHandler):
    """Answers `4`, except to the aggregator's model: a 400 whose message holds `\\ud800`."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["model"] == "agg-m":
            send_body(
                self, 400, b'{"error": {"message": "bad \\ud800 input", "type": "invalid_request_error"}}'
            )
        else:
            send_body(self, 200, completion("4"))

    def log_message(self, *args: object) -> None:
        pass


def test_a_provider_error_holding_a_lone_surrogate_is_stored(tmp_path: Path) -> None:
    """A hostile endpoint's error message decoding to a lone surrogate is stored escaped: the run's
    error row raised UnicodeEncodeError out of `moa compare`, losing the experiment."""
    with threaded_server(_RefusesTheAggregator) as url:
        exp = _write(tmp_path / "e", f"{url}/v1")
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.setup("moa").errors == len(ROWS)
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    errors = [e for (e,) in conn.execute("SELECT error FROM runs WHERE setup='moa'")]
    conn.close()
    assert len(errors) == len(ROWS) and all("bad \\ud800 input" in e for e in errors)
