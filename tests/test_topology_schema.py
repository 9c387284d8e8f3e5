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
from moa.topology.spec import MAX_GRAPH, MAX_LAYERS, MAX_LIST

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((Path(moa.__file__).parent / "topology.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SHIPPED)
EXAMPLE_TOPOLOGIES = sorted((ROOT / "examples" / "topologies").glob("*.yaml"))

A = {"a": {"model": "openai/gpt-4o-mini"}}


def schema_ok(data: Any) -> bool:
    return bool(VALIDATOR.is_valid(data))


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


def _seq(n: int) -> dict[str, Any]:
    return {"name": "t", "agents": A, "kind": "sequential", "steps": ["a"] * n}


def _par(n: int) -> dict[str, Any]:
    return {"name": "t", "agents": A, "kind": "parallel", "workers": ["a"] * n, "aggregator": "a"}


def _layered(layers: Any, proposers: int = 1) -> dict[str, Any]:
    data = {"name": "t", "agents": A, "kind": "layered", "layers": layers, "aggregator": "a"}
    # layers as lists name their agents: `proposers` belongs to a number of layers
    return data if isinstance(layers, list) else {**data, "proposers": ["a"] * proposers}


def _stages(n: int) -> dict[str, Any]:
    first = {"agent": "a", "accept": "tests"}
    return {**cascade(), "stages": [*[first] * (n - 1), {"agent": "a"}]}


def _nodes(**node: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "agents": A,
        "nodes": [{"id": "x", "agent": "a"}, {"id": "y", **node}],
        "output": "y",
    }


# each limit the loader enforces, at the limit (both accept) and past it (both refuse), built
# from the loader's own constants so that the schema cannot drift from them
AT_LIMITS = {
    "steps": _seq(MAX_LIST),
    "workers": _par(MAX_LIST),
    "proposers": _layered(1, MAX_LIST),
    "layers as a number": _layered(MAX_LAYERS),
    "layers as lists": _layered([["a"]] * MAX_LAYERS),
    "agents of a layer": _layered([["a"] * MAX_LIST]),
    "stages": _stages(MAX_LIST),
    "a model string with spaces around it": single(model=" openai/gpt-4o-mini "),
    "a name with a non-ASCII letter": {**single(), "name": "café"},
}
PAST_LIMITS = {
    "steps": _seq(MAX_LIST + 1),
    "workers": _par(MAX_LIST + 1),
    "proposers": _layered(1, MAX_LIST + 1),
    "layers as a number": _layered(MAX_LAYERS + 1),
    "no layers": _layered(0),
    "layers as lists": _layered([["a"]] * (MAX_LAYERS + 1)),
    "agents of a layer": _layered([["a"] * (MAX_LIST + 1)]),
    "stages": _stages(MAX_LIST + 1),
    "nodes": {
        "name": "t",
        "agents": A,
        "nodes": [{"id": f"n{i}", "agent": "a"} for i in range(MAX_GRAPH + 1)],
    },
    "inline nodes of a stage": {
        **cascade(),
        "stages": [{"nodes": [{"id": f"n{i}", "agent": "a"} for i in range(MAX_GRAPH + 1)]}],
    },
    "a name ending in a newline": {**single(), "name": "t\n"},
    "an agent name with a bell": {"name": "t", "kind": "single", "agents": {"a\x07": A["a"]}},
    "a model string with an escape": single(model="openai/gpt\x1b[2J"),
    "a model string with C1 control": single(model="openai/gpt\x85"),
    "a blank model string": single(model="   "),
    "a provider without a model": single(model="openai/ "),
    "a blank fallback": single(fallbacks=[" "]),
    "a fallback with a newline": single(fallbacks=["openai/gpt-4o\n"]),
    "an api_base with a newline": single(api_base="http://127.0.0.1:1/v1\n"),
    "a step with a tab": {**_seq(1), "steps": ["a\t"]},
    "an aggregator with a NUL": {**_par(1), "aggregator": "a\x00"},
    "a layer's agent with a newline": _layered([["a\n"]]),
    "a node's agent with a newline": _nodes(agent="a\n", inputs=["x"]),
    "a node's input with an escape": _nodes(agent="a", inputs=["x\x1b"]),
    "an output with a newline": {**_nodes(agent="a", inputs=["x"]), "output": "y\n"},
    "a stage's agent with a bell": _stage(agent="a\x07", accept="tests"),
    "a stage's topology with a newline": {
        **cascade(),
        "stages": [{"topology": "parallel-3\n", "accept": "tests"}, {"agent": "a"}],
    },
}


@pytest.mark.parametrize("data", AT_LIMITS.values(), ids=list(AT_LIMITS))
def test_schema_and_loader_accept_a_file_at_each_limit(data: dict[str, Any]) -> None:
    """A file at a limit of the loader (256 steps, 64 layers, 256 stages) passes the schema too."""
    assert (schema_ok(data), loader_ok(data)) == (True, True)


@pytest.mark.parametrize("data", PAST_LIMITS.values(), ids=list(PAST_LIMITS))
def test_schema_and_loader_refuse_a_file_past_each_limit(data: dict[str, Any]) -> None:
    """A file past a limit of the loader (a list too long, a control character in a name or model
    string) fails the schema too: the schema passed 257 stages, which the loader refuses."""
    assert (schema_ok(data), loader_ok(data)) == (False, False)
