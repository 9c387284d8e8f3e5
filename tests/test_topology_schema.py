"""The shipped JSON Schema and the loader give the same answer: every preset and example topology
passes both, and a set of edge files passes both or fails both (editors use the schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import moa
from moa import cli
from moa.errors import UserError
from moa.topology.loader import load, load_data, presets

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((Path(moa.__file__).parent / "topology.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SHIPPED)
EXAMPLE_TOPOLOGIES = sorted((ROOT / "examples" / "topologies").glob("*.yaml"))

A = {"a": {"model": "openai/gpt-4o-mini"}}


def schema_ok(data: Any) -> bool:
    return not list(VALIDATOR.iter_errors(data))


def loader_ok(data: Any) -> bool:
    try:
        load_data(data)
    except UserError:
        return False
    return True


@pytest.mark.parametrize("path", [*presets().values(), *EXAMPLE_TOPOLOGIES], ids=lambda p: p.name)
def test_every_preset_and_example_passes_schema_and_loader(path: Path) -> None:
    """Presets (cascades included) and example topologies pass the shipped schema and the loader."""
    errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []
    load(path)


def single(**agent: Any) -> dict[str, Any]:
    return {"name": "t", "kind": "single", "agents": {"a": {"model": "openai/gpt-4o-mini", **agent}}}


def cascade(**extra: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "kind": "cascade",
        "agents": {"a": {"model": "openai/gpt-4o-mini", "temperature": 0.7}},
        "stages": [
            {"agent": "a", "samples": 2, "accept": {"agree": 2}},
            {"nodes": [{"id": "x", "agent": "a"}]},
        ],
        **extra,
    }


GOOD = {
    "stop as a string": single(stop="END"),
    "stop as a list": single(stop=["END", "###"]),
    "integer temperature": single(temperature=1),
    "float temperature": single(temperature=0.5),
    "float pricing": single(pricing={"input_per_mtok": 0.15, "output_per_mtok": 1}),
    "explicit nodes": {"name": "t", "agents": A, "nodes": [{"id": "x", "agent": "a", "plan": False}]},
    "layers as a number": {
        "name": "t",
        "agents": A,
        "kind": "layered",
        "layers": 2,
        "proposers": ["a"],
        "aggregator": "a",
    },
    "a cascade": cascade(),
    "a cascade accepting on tests": {
        **cascade(),
        "stages": [{"agent": "a", "accept": "tests"}, {"nodes": [{"id": "x", "agent": "a"}]}],
    },
    "a cascade judge with an integer threshold": {
        **cascade(),
        "stages": [
            {"agent": "a", "accept": {"judge": {"agent": "a", "threshold": 1}}},
            {"nodes": [{"id": "x", "agent": "a"}]},
        ],
    },
}


def _stage(**fields: Any) -> dict[str, Any]:
    return {**cascade(), "stages": [{"agent": "a", **fields}, {"nodes": [{"id": "x", "agent": "a"}]}]}


BAD = {
    "temperature as a string": single(temperature="0.5"),
    "max_tokens as a string": single(max_tokens="512"),
    "max_tokens as a bool": single(max_tokens=True),
    "temperature as a bool": single(temperature=True),
    "retry attempts as a float string": single(retry={"max_attempts": "3"}),
    "layers as a bool": {"name": "t", "agents": A, "kind": "layered", "layers": True, "proposers": ["a"]},
    "plan as a string": {"name": "t", "agents": A, "nodes": [{"id": "x", "agent": "a", "plan": "yes"}]},
    "temperature out of range": single(temperature=3),
    "an unknown field": single(temprature=0.5),
    "an unknown kind": {"name": "t", "agents": A, "kind": "cascde"},
    "stages without kind: cascade": {**cascade(), "kind": "single"},
    "a cascade with nodes": cascade(nodes=[{"id": "x", "agent": "a"}]),
    "a cascade without stages": {"name": "c", "kind": "cascade", "agents": A},
    "no name": {"kind": "single", "agents": A},
    "stage samples as a string": _stage(samples="2", accept={"agree": 2}),
    "stage agree as a bool": _stage(samples=2, accept={"agree": True}),
    "stage reuse as a string": _stage(reuse="yes"),
    "stage tests as a string": _stage(accept={"tests": "yes"}),
    "judge threshold as a string": _stage(accept={"judge": {"agent": "a", "threshold": "0.5"}}),
    "a key in params": single(params={"api_key": "sk-x"}),
    "temperature in params": single(params={"temperature": 0.9}),
    "model in params": single(params={"model": "openai/gpt-4o"}),
    "a key as api_key_env": single(api_key_env="sk-proj-abc123"),
}


@pytest.mark.parametrize("data", GOOD.values(), ids=list(GOOD))
def test_schema_and_loader_both_accept(data: dict[str, Any]) -> None:
    """Files the loader accepts pass the schema too (a string `stop`, an int temperature, cascades)."""
    assert (schema_ok(data), loader_ok(data)) == (True, True)


@pytest.mark.parametrize("data", BAD.values(), ids=list(BAD))
def test_schema_and_loader_both_refuse(data: dict[str, Any]) -> None:
    """Files the schema refuses the loader refuses too (no lax `"0.5"` or `true` for a number)."""
    assert (schema_ok(data), loader_ok(data)) == (False, False)


@pytest.mark.parametrize("out", ["/nonexistent/dir/x.json", "."], ids=["missing folder", "a directory"])
def test_schema_out_to_an_unwritable_path_is_one_line(out: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa schema --out` to a path that cannot be written names it and the reason, exit 2."""
    assert cli.main(["schema", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"moa: {out}: cannot write the schema: ") and len(err.splitlines()) == 1


def test_infinite_times_and_prices_are_refused() -> None:
    """`timeout_s: .inf`, an infinite backoff or price are refused (a YAML float JSON cannot hold)."""
    for agent in (
        {"timeout_s": float("inf")},
        {"retry": {"backoff_max_s": float("inf")}},
        {"pricing": {"input_per_mtok": float("inf"), "output_per_mtok": 1}},
    ):
        assert not loader_ok(single(**agent))


def test_a_provider_without_a_model_is_refused() -> None:
    """`model: openai/` names no model: refused before any call."""
    assert not loader_ok({"name": "t", "kind": "single", "agents": {"a": {"model": "openai/"}}})
