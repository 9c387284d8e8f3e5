"""Typed output: every topology kind's output node answers in JSON matching a pydantic model (or a JSON
Schema), a reply that does not match is retried like a malformed plan, and `result.parsed` holds the
value; `moa run --output-schema FILE` does the same from the command line."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

import moa
from moa._run.typed import TypedOutput
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimServer, last_user_text
from moa.topology.loader import load_data
from tests.test_cli import moa_cli


class Capital(BaseModel):
    country: str
    capital: str
    population_millions: float


GOOD = '```json\n{"country": "France", "capital": "Paris", "population_millions": 2.1}\n```'

KINDS: dict[str, dict[str, Any]] = {
    "single": {"kind": "single", "agent": "a"},
    "sequential": {"kind": "sequential", "steps": ["a", "a"]},
    "parallel": {"kind": "parallel", "workers": ["a", "a"], "aggregator": "a"},
    "layered": {"kind": "layered", "layers": [["a", "a"], ["a", "a"]], "aggregator": "a"},
    "self_moa": {"kind": "self_moa", "agent": "a", "samples": 2},
    "hierarchical": {"kind": "hierarchical", "manager": "a", "workers": ["a", "a"]},
}


def _topology(kind: str) -> moa.Topology:
    spec = {"name": f"typed-{kind}", **KINDS[kind], "agents": {"a": {"model": "fake/m", "temperature": 0.5}}}
    return load_data(spec)


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_every_kind_answers_a_pydantic_model(kind: str) -> None:
    seen: list[str] = []

    def answer(req: Any) -> str:
        text = str(req.messages[-1]["content"])
        seen.append(text)
        if '"instructions"' in text and "JSON Schema" not in text:  # a manager asked for its plan
            return json.dumps({"instructions": ["find the country", "find the capital"]})
        return GOOD

    runner = moa.Runner(models={"fake/*": FunctionModel(answer)})
    result = await _topology(kind).run("The capital of France?", runner=runner, output_type=Capital)
    assert isinstance(result.parsed, Capital) and result.parsed.capital == "Paris"
    # only the output node is told the schema
    told = [s for s in seen if "JSON Schema" in s and "population_millions" in s]
    assert len(told) == 1 and seen[-1] in told


async def test_a_reply_that_does_not_match_is_retried() -> None:
    replies = iter(["Paris, obviously.", '{"country": "France", "capital": "Paris"}', GOOD])
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: next(replies))})
    topo = load_data(
        {
            "name": "t",
            "kind": "single",
            "agent": "a",
            "agents": {"a": {"model": "fake/m", "retry": {"max_attempts": 3, "backoff_base_s": 0.001}}},
        }
    )
    result = await topo.run("q", runner=runner, output_type=Capital)
    assert result.parsed.population_millions == 2.1
    assert result.calls[0].attempts == 3
    assert [a.status for a in result.calls[0].attempt_log] == ["error", "error", "ok"]
    assert "typed output" in (result.calls[0].attempt_log[1].error or "")


async def test_no_matching_reply_fails_naming_the_field() -> None:
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: '{"country": "France"}')})
    topo = load_data(
        {
            "name": "t",
            "kind": "single",
            "agent": "a",
            "agents": {"a": {"model": "fake/m", "retry": {"max_attempts": 2, "backoff_base_s": 0.001}}},
        }
    )
    with pytest.raises(moa.MalformedReply, match="typed output: capital: Field required"):
        await topo.run("q", runner=runner, output_type=Capital)


def test_cli_output_schema(tmp_path: Path) -> None:
    schema = tmp_path / "capital.json"
    schema.write_text(json.dumps(Capital.model_json_schema()))

    def answer(req: Any) -> str:
        return GOOD if "JSON Schema" in last_user_text(req.messages) else "free text"

    with SimServer(models={"sim": SimModel(answer=answer)}) as srv:
        topo = tmp_path / "t.yaml"
        topo.write_text(
            "name: t\nkind: parallel\nworkers: [a, a]\naggregator: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", retry: {{max_attempts: 1}}}}\n'
        )
        plain = moa_cli("run", str(topo), "--prompt", "France?", "--output-schema", str(schema))
        js = moa_cli("run", str(topo), "--prompt", "France?", "--output-schema", str(schema), "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == {"country": "France", "capital": "Paris", "population_millions": 2.1}
    assert json.loads(js.stdout)["parsed"]["capital"] == "Paris"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    p = moa_cli("run", str(topo), "--prompt", "x", "--output-schema", str(bad))
    assert p.returncode == 2 and "a JSON Schema must be an object" in p.stderr


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "bogus"}, "output schema: `type` 'bogus' is not a JSON type"),
        (
            {"type": "object", "properties": {"n": {"type": "int"}}},
            "`properties.n.type` 'int' is not a JSON type",
        ),
        ({"type": "object", "required": "n"}, "`required` must be a list of property names"),
    ],
)
def test_a_schema_the_answer_check_cannot_read_is_refused_before_any_call(
    tmp_path: Path, schema: dict[str, Any], says: str
) -> None:
    """An unknown `type` matched any answer (the check let it through), so a typo in a schema made
    every answer pass: refused in one line before the output node is paid for, from Python and from
    `moa run --output-schema`."""
    calls: list[Any] = []
    topo = moa.build.single("fake/m")
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: calls.append(r) or "{}")})
    with pytest.raises(moa.UserError, match=re.escape(says)):
        asyncio.run(topo.run("q", runner=runner, output_type=schema))
    assert calls == []
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    topo_file = tmp_path / "t.yaml"
    # refused before anything is sent: no server needs to answer at this loopback address
    agent = '{model: openai/m, api_base: "http://127.0.0.1:9/v1"}'
    topo_file.write_text(f"name: t\nkind: single\nagent: a\nagents:\n  a: {agent}\n")
    p = moa_cli("run", str(topo_file), "--prompt", "x", "--output-schema", str(path))
    assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1


class Strict(BaseModel):
    answer: str

    @field_validator("answer")
    @classmethod
    def _lookup(cls, v: str) -> str:
        return {"known": v}[v]  # a user's bug: a KeyError for any other answer


async def test_an_output_type_whose_validator_crashes_is_a_user_error_not_retried() -> None:
    """A pydantic model's own validator raising a KeyError is a UserError naming the model and the
    node, raised at the first reply (no retry pays for it again), the reply's usage on the record."""
    fm = FunctionModel(lambda r: '{"answer": "other"}')
    topo = load_data(
        {
            "name": "t",
            "kind": "single",
            "agent": "a",
            "agents": {"a": {"model": "fake/m", "retry": {"max_attempts": 3, "backoff_base_s": 0.001}}},
        }
    )
    with pytest.raises(moa.UserError, match="node `answer`: output_type `Strict` raised KeyError") as info:
        await topo.run("q", runner=moa.Runner(models={"fake/*": fm}), output_type=Strict)
    assert len(fm.calls) == 1
    assert info.value.calls[0].usage.completion_tokens > 0


async def test_a_reply_nested_too_deeply_for_a_json_schema_is_a_malformed_reply() -> None:
    """A hostile reply nested past Python's recursion limit, against a JSON Schema, is a
    MalformedReply retried like any bad reply: not a crash of the answer's check blamed on the user."""
    deep = "[" * 200_000 + "]" * 200_000
    fm = FunctionModel(lambda r: deep)
    topo = load_data(
        {
            "name": "t",
            "kind": "single",
            "agent": "a",
            "agents": {"a": {"model": "fake/m", "retry": {"max_attempts": 2, "backoff_base_s": 0.001}}},
        }
    )
    with pytest.raises(moa.MalformedReply, match="nested too deeply"):
        await topo.run("q", runner=moa.Runner(models={"fake/*": fm}), output_type={"type": "object"})
    assert len(fm.calls) == 2


class Count(BaseModel):
    answer: int
    sure: bool = False


def test_a_pydantic_output_type_reads_the_reply_strictly() -> None:
    """`"3"` is no int and `"yes"` no bool, as against a JSON Schema; a model that sets `strict` keeps its own."""
    typed = TypedOutput(Count)
    with pytest.raises(moa.MalformedReply, match="typed output: answer: Input should be a valid integer"):
        typed.parse('{"answer": "3"}')
    with pytest.raises(moa.MalformedReply, match="typed output: sure: Input should be a valid boolean"):
        typed.parse('{"answer": 3, "sure": "yes"}')
    assert typed.parse('{"answer": 3, "sure": true}') == Count(answer=3, sure=True)

    class Lax(BaseModel):
        model_config = ConfigDict(strict=False)
        answer: int

    assert TypedOutput(Lax).parse('{"answer": "3"}') == Lax(answer=3)


@pytest.mark.parametrize("schema", [Count, {"type": "object", "properties": {"answer": {"type": "integer"}}}])
def test_a_key_written_twice_is_a_malformed_reply(schema: Any) -> None:
    """`{"answer": 1, "answer": 2}` names the key, rather than keeping the last value silently."""
    with pytest.raises(moa.MalformedReply, match="typed output: duplicate key `answer`"):
        TypedOutput(schema).parse('```json\n{"answer": 1, "answer": 2}\n```')


@pytest.mark.parametrize("schema", [Count, {"type": "object", "required": ["answer"]}])
def test_json_followed_by_prose_holding_braces_is_read(schema: Any) -> None:
    """The first complete JSON value is found when the prose after it holds braces of its own."""
    value = TypedOutput(schema).parse('Here: {"answer": 3}. Note that {x} is a set.')
    assert value == (Count(answer=3) if schema is Count else {"answer": 3})
    # after an example value, prose and the answer itself
    value = TypedOutput(schema).parse('An empty {} means none, so: {"answer": 3} (see {x}).')
    assert value == (Count(answer=3) if schema is Count else {"answer": 3})


@pytest.mark.parametrize(
    ("schema", "reply"),
    [
        (Count, '[{"answer": 1}, {"answer": 2}]'),
        ({"type": "object", "required": ["answer"]}, '```json\n[{"answer": 1}]\n```'),
        ({"type": "array"}, '{"error": ["not sure"]}'),
    ],
    ids=["list-of-objects", "fenced-list", "object-holding-a-list"],
)
def test_a_piece_of_a_json_value_of_the_wrong_type_is_no_answer(schema: Any, reply: str) -> None:
    """A reply that is one JSON value of the wrong type is a MalformedReply: its first object (or the
    list inside it) was taken as the answer, the first `{`...`}` or `[`...`]` span of the reply."""
    with pytest.raises(moa.MalformedReply, match=r"typed output: .*(object|array)"):
        TypedOutput(schema).parse(reply)


def test_nan_is_not_json() -> None:
    """Python's json reads `NaN`, which JSON has not: against a schema it is a MalformedReply."""
    with pytest.raises(moa.MalformedReply, match="`NaN` is not JSON"):
        TypedOutput({"type": "object"}).parse('{"answer": NaN}')


class Measured(BaseModel):
    answer: str
    confidence: float


@pytest.mark.parametrize(
    "schema", [Measured, {"type": "object", "properties": {"confidence": {"type": "number"}}}]
)
@pytest.mark.parametrize(
    ("number", "problem"),
    [("NaN", "`NaN` is not JSON"), ("-Infinity", "`-Infinity` is not JSON"), ("1e400", "`1e400` is past")],
)
def test_a_number_json_cannot_hold_is_a_malformed_reply(schema: Any, number: str, problem: str) -> None:
    """`NaN`, `Infinity` and `1e400` (read as infinity) are MalformedReplies against a pydantic model
    too: it read them as floats, and `--json` or moa serve printed `NaN`/`Infinity`, which is no JSON."""
    with pytest.raises(
        moa.MalformedReply, match=f"typed output: the answer is not JSON: {re.escape(problem)}"
    ):
        TypedOutput(schema).parse(f'{{"answer": "x", "confidence": {number}}}')


class Scores(BaseModel):
    scores: list[float]
    count: int = 0


def test_an_integer_too_big_for_a_float_field_is_a_malformed_reply() -> None:
    """A JSON integer of 309 digits became `inf` in a `float` field (1e400 was refused already),
    and `--json` printed `Infinity`; it is refused naming the field, while an `int` field keeps it."""
    big = "9" * 309
    with pytest.raises(moa.MalformedReply) as info:
        TypedOutput(Scores).parse(f'{{"scores": [0.5, -{big}]}}')
    assert str(info.value) == "typed output: scores.1: the number is past a float's range"
    assert TypedOutput(Scores).parse(f'{{"scores": [0.5], "count": {big}}}').count == int(big)


def test_a_string_holding_a_lone_surrogate_is_a_malformed_reply() -> None:
    """A JSON Schema answer whose string holds `\\ud800` could not be printed as JSON: a MalformedReply."""
    with pytest.raises(moa.MalformedReply, match="typed output: a string holds a lone UTF-16 surrogate"):
        TypedOutput({"type": "object"}).parse('{"answer": "a\\ud800b"}')


@pytest.mark.parametrize("reduce", ["majority", "first"])
async def test_a_reduce_output_has_its_workers_answer_in_the_schema(reduce: str) -> None:
    """Under a reduce output the workers' replies become the answer: each is told the schema and a
    reply that does not match is retried, so the vote is over matching answers."""
    seen: list[str] = []
    replies = iter(["Four.", '{"answer": 4}'])

    def answer(req: Any) -> str:
        text = str(req.messages[-1]["content"])
        seen.append(text)
        return next(replies) if req.model == "fake/a" else '{"answer": 4}'

    agent = {"model": "fake/a", "retry": {"max_attempts": 2, "backoff_base_s": 0.001}}
    topo = load_data(
        {
            "name": "vote",
            "kind": "parallel",
            "workers": ["a", "b"],
            "reduce": reduce,
            "agents": {"a": agent, "b": {"model": "fake/b"}},
        }
    )
    result = await topo.run(
        "2 + 2?", runner=moa.Runner(models={"fake/*": FunctionModel(answer)}), output_type=Count
    )
    assert result.parsed == Count(answer=4)
    assert all("JSON Schema" in s for s in seen)
    if reduce == "majority":
        assert next(c for c in result.calls if c.node == "a").attempts == 2


def test_a_half_right_reply_names_every_field_at_fault() -> None:
    """A reply missing two fields and mistyping a third names all three, not the first alone."""
    with pytest.raises(moa.MalformedReply) as info:
        TypedOutput(Capital).parse('{"population_millions": "many"}')
    assert str(info.value) == (
        "typed output: country: Field required; capital: Field required; population_millions: Input "
        "should be a valid number (3 problem(s) against `Capital`)"
    )


def test_a_majority_output_votes_on_parsed_values() -> None:
    """A `majority` output under typed output counts one value written two ways (keys swapped, no
    spaces, a fence) as one vote: a lone other answer before them does not win the tie that three
    different texts made."""
    lyon = '{"country": "France", "capital": "Lyon", "population_millions": 0.5}'
    paris = '{"country": "France", "capital": "Paris", "population_millions": 2.1}'
    paris_again = '```json\n{"population_millions":2.1,"capital":"Paris","country":"France"}\n```'
    models = {"lyon": lyon, "paris": paris, "paris2": paris_again}
    with SimServer(models={m: SimModel(answer=text) for m, text in models.items()}) as srv:
        agents = {
            m: {"model": f"openai/{m}", "api_base": srv.base_url, "retry": {"max_attempts": 1}}
            for m in models
        }
        # input order lyon, paris, paris2: by text, three votes of one, the tie to `lyon`
        topo = load_data(
            {"name": "v", "kind": "parallel", "workers": list(models), "reduce": "majority", "agents": agents}
        )

        async def go() -> moa.RunResult:
            async with moa.Runner() as runner:
                return await topo.run("France?", runner=runner, output_type=Capital)

        result = asyncio.run(go())
    assert result.parsed.capital == "Paris"


@pytest.mark.parametrize("reply", ['{"answer": 2.0}', '{"answer": 2e0}', '{"answer": -0.0}'])
def test_a_json_schema_integer_accepts_a_number_with_no_fraction(reply: str) -> None:
    """JSON Schema counts 2.0 as an integer (draft 6 on): a model writing `2.0` answered one, and
    refusing it retried and paid for a right answer."""
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    assert TypedOutput(schema).parse(reply)["answer"] == int(json.loads(reply)["answer"])


@pytest.mark.parametrize("reply", ['{"answer": 2.5}', '{"answer": true}', '{"answer": "2"}'])
def test_a_json_schema_integer_still_refuses_what_is_no_integer(reply: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    with pytest.raises(moa.MalformedReply, match="`answer` should be a JSON integer"):
        TypedOutput(schema).parse(reply)
