"""Typed output on a cascade: every stage is told the schema and checked as a plain topology's output
node is, `agree` compares parsed values, the answering stage's value is `result.parsed`, and a stage
that never matches escalates; over real HTTP against a loopback simulator, from Python, `moa run
--output-schema` and `moa serve`."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import moa
from moa._run.typed import answer_key
from moa.cascade import Cascade, CascadeContext
from moa.cascade.rules import Agree
from moa.serve import create_app
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text
from moa.topology import load_data
from tests.dict_cache import DictCache
from tests.serving import serving
from tests.test_cli import moa_cli

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
SCHEMA_SAID = "JSON Schema"


class Capital(BaseModel):
    country: str
    capital: str


PARIS = '{"country": "France", "capital": "Paris"}'
# the same value written another way: keys swapped, no spaces, in a fence
PARIS_AGAIN = '```json\n{"capital":"Paris","country":"France"}\n```'
LYON = '{"country": "France", "capital": "Lyon"}'

Answer = Callable[[SimRequest], str]


def _agent(srv: SimServer, model: str, **kw: Any) -> dict[str, Any]:
    retry = {"max_attempts": 2, "backoff_base_s": 0.001}
    return {
        "model": f"openai/{model}",
        "api_base": srv.base_url,
        "temperature": 0.7,
        "pricing": PRICE,
        "retry": retry,
        **kw,
    }


def _cascade(srv: SimServer, stages: list[dict[str, Any]], *models: str) -> Cascade:
    agents = {m: _agent(srv, m) for m in models}
    c = load_data({"name": "c", "kind": "cascade", "stages": stages, "agents": agents})
    assert isinstance(c, Cascade)
    return c


def _samples(n: int = 2, **accept: Any) -> dict[str, Any]:
    return {"agent": "mini", "samples": n, "accept": accept or {"agree": 2}}


def _script(*replies: str) -> Answer:
    """Each request gets the next reply in turn (the last one repeated)."""
    it = iter(replies)
    last = [replies[-1]]

    def answer(req: SimRequest) -> str:
        last[0] = next(it, last[0])
        return last[0]

    return answer


def _run(c: moa.Topology, output_type: Any, **kw: Any) -> moa.RunResult:
    async def go() -> moa.RunResult:
        async with moa.Runner(**kw) as runner:
            return await c.run("The capital of France?", runner=runner, output_type=output_type)

    return asyncio.run(go())


def _server(**answers: Answer) -> SimServer:
    return SimServer(models={name: SimModel(answer=fn) for name, fn in answers.items()})


def _texts(seen: list[tuple[str, str]], model: str) -> list[str]:
    return [t for m, t in seen if m == model]


def _recording(seen: list[tuple[str, str]], name: str, fn: Answer) -> Answer:
    def answer(req: SimRequest) -> str:
        seen.append((name, last_user_text(req.messages)))
        return fn(req)

    return answer


def test_agreeing_samples_written_differently_answer_with_the_parsed_value() -> None:
    """Every sample is told the schema; two JSON answers differing in key order, spacing and a fence
    agree, the cheap stage answers, and `result.parsed` is the instance (a cascade was refused)."""
    seen: list[tuple[str, str]] = []
    mini = _recording(seen, "mini", _script(PARIS, PARIS_AGAIN))
    big = _recording(seen, "big", lambda r: PARIS)
    with _server(mini=mini, big=big) as srv:
        c = _cascade(srv, [_samples(), {"agent": "big", "reuse": True}], "mini", "big")
        result = _run(c, Capital)
    assert result.stage == 1 and result.stages_run == 1
    assert isinstance(result.parsed, Capital) and result.parsed.capital == "Paris"
    minis = _texts(seen, "mini")
    assert len(minis) == 2 and all(SCHEMA_SAID in t and '"capital"' in t for t in minis)
    assert _texts(seen, "big") == []
    assert list(result.by_stage) == [1] and result.by_stage[1].calls == 2
    assert result.to_dict()["parsed"] == {"country": "France", "capital": "Paris"}


def test_the_stage_vote_picks_a_sample_of_the_agreeing_value() -> None:
    """Of three samples, the first a lone `Lyon` and two `Paris` written differently, `agree: 2`
    holds and the stage answers `Paris`: the vote compares parsed values as the rule does (by text
    each `Paris` was a vote of its own, and the tie went to the first sample)."""
    with _server(mini=_script(LYON, PARIS, PARIS_AGAIN), big=lambda r: LYON) as srv:
        c = _cascade(srv, [_samples(3), {"agent": "big"}], "mini", "big")
        result = _run(c, Capital)
    assert result.stage == 1
    assert result.parsed.capital == "Paris"
    assert result.nodes["s1.vote"].output in (PARIS, PARIS_AGAIN)


def test_json_schema_numbers_agree_whatever_their_spelling() -> None:
    """Against a JSON Schema, `{"n": 2}` and `{"n": 2.0}` are one value: the samples agree."""
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}}
    with _server(mini=_script('{"n": 2}', '{"n": 2.0}'), big=lambda r: '{"n": 3}') as srv:
        c = _cascade(srv, [_samples(), {"agent": "big"}], "mini", "big")
        result = _run(c, schema)
    assert result.stage == 1 and result.parsed["n"] == 2


def test_different_values_do_not_agree_and_the_next_stage_answers_typed() -> None:
    """Two samples with different values escalate; the last stage is told the schema too, and its
    instance is `result.parsed`; every stage's calls are on the record, per stage."""
    seen: list[tuple[str, str]] = []
    with _server(
        mini=_recording(seen, "mini", _script(PARIS, LYON)),
        big=_recording(seen, "big", lambda r: "Sure! " + PARIS),
    ) as srv:
        c = _cascade(srv, [_samples(), {"agent": "big", "reuse": True}], "mini", "big")
        result = _run(c, Capital)
    assert result.stage == 2 and result.parsed == Capital(country="France", capital="Paris")
    (big,) = _texts(seen, "big")
    assert SCHEMA_SAID in big and "Lyon" in big  # the earlier answers, reused, and the schema
    assert sorted(result.by_stage) == [1, 2]
    assert result.by_stage[1].calls == 2 and result.by_stage[2].calls == 1
    assert result.cost_usd == pytest.approx(sum(c.cost_usd for c in result.calls))


def test_a_stage_that_never_matches_is_retried_then_escalates_with_its_calls() -> None:
    """A cheap reply that is not the schema's JSON is retried under the agent's retry budget; a
    stage that never matches escalates (as a stage failing for a model's reasons does), its calls
    paid and kept; no reply that failed the check is cached."""
    cache = DictCache()
    with _server(mini=lambda r: "Paris, of course.", big=_script("no JSON here", PARIS)) as srv:
        c = _cascade(srv, [_samples(), {"agent": "big"}], "mini", "big")
        result = _run(c, Capital, cache=cache)
    assert result.stage == 2 and result.parsed.capital == "Paris"
    # the sample that failed first ends its stage; its sibling may be cut off in flight
    stage1 = [r for r in result.calls if r.node.startswith("s1.")]
    assert any(r.attempts == 2 and "typed output" in (r.error or "") for r in stage1)
    (final,) = [r for r in result.calls if r.node.startswith("s2.")]
    assert final.attempts == 2 and final.error is None
    assert sorted(result.by_stage) == [1, 2] and result.by_stage[1].cost_usd > 0
    assert [v.reply.text for v in cache.replies.values()] == [PARIS]  # type: ignore[attr-defined]


def test_a_last_stage_that_never_matches_fails_with_every_call() -> None:
    """The last stage failing its check ends the run with its `MalformedReply`, carrying the earlier
    stages' calls too."""
    with _server(mini=_script(PARIS, LYON), big=lambda r: '{"country": "France"}') as srv:
        c = _cascade(srv, [_samples(), {"agent": "big"}], "mini", "big")
        with pytest.raises(moa.MalformedReply, match="typed output: capital: Field required") as info:
            _run(c, Capital)
    nodes = [r.node for r in info.value.calls]
    assert nodes.count("s1.sample1") == 1 and nodes.count("s2.answer") == 1
    assert info.value.run_id is not None


def test_a_judge_is_not_told_the_schema_and_rates_the_json_answer() -> None:
    """A judge's rater reads the stage's JSON answer as its answer and replies with its confidence,
    untold of the schema; its call is costed with the stage it judged."""
    seen: list[tuple[str, str]] = []
    with _server(
        mini=_recording(seen, "mini", lambda r: PARIS),
        rater=_recording(seen, "rater", lambda r: '{"confidence": 0.9}'),
        big=lambda r: LYON,
    ) as srv:
        stage = {"agent": "mini", "accept": {"judge": {"agent": "rater", "threshold": 0.8}}}
        c = _cascade(srv, [stage, {"agent": "big"}], "mini", "rater", "big")
        result = _run(c, Capital)
    assert result.stage == 1 and result.parsed.capital == "Paris"
    (rated,) = _texts(seen, "rater")
    assert SCHEMA_SAID not in rated and '"capital": "Paris"' in rated
    assert result.by_stage[1].calls == 2


def test_a_custom_rule_sees_the_text_and_the_parsed_values() -> None:
    """A Python rule gets the stage's answer as text, as without a schema, and its context the
    samples parsed and the stage's parsed answer."""
    seen: list[tuple[str, CascadeContext]] = []

    def rule(answer: str, ctx: CascadeContext) -> bool:
        seen.append((answer, ctx))
        return False

    with _server(mini=_script(PARIS, PARIS_AGAIN), big=lambda r: PARIS) as srv:
        agents = {m: _agent(srv, m) for m in ("mini", "big")}
        stages = [{"agent": "mini", "samples": 2, "accept": rule}, {"agent": "big"}]
        c = Cascade.model_validate({"name": "c", "stages": stages, "agents": agents})
        result = _run(c, Capital)
    assert result.stage == 2
    ((answer, ctx),) = seen
    # the samples in node order, whichever request each was; one value, so the vote took the first
    assert sorted(ctx.samples) == sorted([PARIS, PARIS_AGAIN]) and answer == ctx.samples[0]
    assert ctx.parsed_samples == (Capital(country="France", capital="Paris"),) * 2
    assert ctx.result is not None and ctx.result.parsed == ctx.parsed_samples[0]


def _yaml(srv: SimServer, tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    agents = {m: _agent(srv, m) for m in ("mini", "big")}
    stages = [_samples(), {"agent": "big", "reuse": True}]
    path.write_text(json.dumps({"name": "c", "kind": "cascade", "stages": stages, "agents": agents}))
    return path


def test_cli_output_schema_on_a_cascade(tmp_path: Path) -> None:
    """`moa run cascade.yaml --output-schema s.json` prints the answering stage's JSON; `--json`
    adds `parsed` and the stage that answered."""
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(Capital.model_json_schema()))

    def mini(req: SimRequest) -> str:
        return PARIS if SCHEMA_SAID in last_user_text(req.messages) else "Paris"

    with _server(mini=mini, big=lambda r: LYON) as srv:
        path = _yaml(srv, tmp_path)
        plain = moa_cli("run", str(path), "--prompt", "France?", "--output-schema", str(schema))
        js = moa_cli("run", str(path), "--prompt", "France?", "--output-schema", str(schema), "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == {"country": "France", "capital": "Paris"}
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert data["parsed"] == {"country": "France", "capital": "Paris"} and data["stage"] == 1


def test_serve_honours_response_format_on_a_cascade() -> None:
    """Over `moa serve`, `response_format` on a cascade asks every stage for JSON (it was a 400):
    the reply's content is the JSON value alone, and the `moa` object names the answering stage's
    calls."""
    seen: list[tuple[str, str]] = []
    with _server(mini=_recording(seen, "mini", _script(PARIS, PARIS_AGAIN)), big=lambda r: LYON) as srv:
        c = _cascade(srv, [_samples(), {"agent": "big"}], "mini", "big")
        runner = moa.Runner()
        with serving(create_app([c], runner=runner)) as base:
            r = _ask(base)
        asyncio.run(runner.aclose())
    assert r.status_code == 200, r.text
    data = r.json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {"country": "France", "capital": "Paris"}
    assert {c["node"] for c in data["moa"]["calls"]} == {"s1.sample1", "s1.sample2"}
    minis = _texts(seen, "mini")
    assert len(minis) == 2 and all(SCHEMA_SAID in t for t in minis)


def _ask(base: str) -> httpx.Response:
    fmt = {"type": "json_schema", "json_schema": {"name": "capital", "schema": Capital.model_json_schema()}}
    body = {"model": "c", "messages": [{"role": "user", "content": "France?"}], "response_format": fmt}
    return httpx.post(f"{base}/chat/completions", json=body, timeout=30)


def test_a_value_nested_too_deeply_to_write_again_agrees_with_nothing() -> None:
    """A hostile answer that its call's check could just read may be too deep to write again on the
    rule's deeper stack: it is no vote (the stage escalates), not a `UserError` blaming `agree`."""
    deep: list[Any] = []
    for _ in range(5 * sys.getrecursionlimit()):
        deep = [deep]
    assert answer_key(deep) == ""
    assert Agree(2).agreeing(["[[...]]", "[[...]]"], [deep, deep]) == 0
    assert Agree(2).agreeing([PARIS, PARIS_AGAIN], [json.loads(PARIS)] * 2) == 2
