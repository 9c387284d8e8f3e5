"""One topology, three spellings: a YAML file, a JSON file and the Python builder give the same
graph and prompts, and what a topology dumps loads back as the same topology."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from moa import build
from moa.cascade import Cascade
from moa.errors import TopologyError
from moa.topology.definition import Topology
from moa.topology.loader import load, load_data, presets, read_document
from moa.topology.schema import topology_file_schema


def shape(t: Topology) -> list[tuple[Any, ...]]:
    """What a run does: each node's call (agent settings, inputs, template, quorum) in order."""
    g = t.graph
    return [
        (nid, n.spec, n.agent, n.deps, n.template, n.needed, n.plan_workers, n.instruction_index)
        for nid, n in g.nodes.items()
    ] + [("output", g.output, g.order)]


TOPOLOGIES = [name for name, path in presets().items() if read_document(path).get("kind") != "cascade"]
SCHEMA = jsonschema.Draft202012Validator(topology_file_schema())
CASCADES = [name for name, path in presets().items() if read_document(path).get("kind") == "cascade"]


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("exclude_defaults", [False, True])
def test_a_preset_dumped_to_yaml_and_json_loads_back_the_same(
    name: str, exclude_defaults: bool, tmp_path: Path
) -> None:
    t = load(name)
    data = t.model_dump(mode="json", exclude_defaults=exclude_defaults)
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    for file in ("t.json", "t.yaml"):
        again = load(tmp_path / file)
        assert again == t
        assert shape(again) == shape(t)


@pytest.mark.parametrize("name", CASCADES)
@pytest.mark.parametrize("dump", [{}, {"exclude_defaults": True}, {"exclude_none": True}])
def test_a_cascade_dumped_loads_back_the_same(name: str, dump: dict[str, bool], tmp_path: Path) -> None:
    """A cascade's dump holds its stages' topologies inline, which the loader refused (a stage's
    `topology` had to be a file or preset name), and a dump leaving defaults out lost `kind`."""
    c = load(name)
    assert isinstance(c, Cascade)
    data = c.model_dump(mode="json", **dump)
    assert [e.message for e in SCHEMA.iter_errors(data)] == []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    again = load(tmp_path / "c.yaml")
    assert isinstance(again, Cascade)
    assert again.model_dump(mode="json") == c.model_dump(mode="json")
    assert [shape(s.topology) for s in again.stage_list] == [shape(s.topology) for s in c.stage_list]


def test_an_inline_stage_topology_is_checked_like_a_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: c\nkind: cascade\nagents:\n  a: {model: fake/a, temperature: 0.5}\nstages:\n"
        "  - {agent: a, samples: 2, accept: {agree: 2}}\n"
        "  - topology: {name: t, kind: single, agent: b, agents: {a: {model: fake/a}}}\n"
    )
    with pytest.raises(
        TopologyError, match=r"stages\[1\].*topology written inline: .*agent `b` is not defined"
    ):
        load(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(
        "name: c\nkind: cascade\nagents:\n  a: {model: fake/a, temperature: 0.5}\nstages:\n"
        "  - {agent: a, samples: 2, accept: {agree: 2}}\n"
        "  - topology: {name: t, kind: cascade, stages: [{agent: a}]}\n"
    )
    with pytest.raises(TopologyError, match="written inline is itself a cascade"):
        load(tmp_path / "c.yaml")


A = build.agent("openai/gpt-4o-mini", temperature=0.7, max_tokens=64)
B = build.agent("anthropic/claude-haiku-4-5", temperature=0.7)
AGG = build.agent("openai/gpt-4o", temperature=0)

BUILT = {
    "single": build.single(AGG),
    "sequential": build.sequential(A, B, AGG),
    "parallel": build.parallel([A, B, A], AGG, quorum=2, on_quorum="wait"),
    "parallel-vote": build.parallel([A, B], reduce="majority", vote_on="last_number"),
    "hierarchical": build.hierarchical(AGG, [A, B], quorum=1, on_quorum="wait"),
    "layered": build.layered(2, AGG, proposers=[A, B], quorum=1, on_quorum="wait"),
    "layered-list": build.layered([[A, B], [B]], AGG),
    "self-moa": build.self_moa(A, 3, AGG, quorum=2, on_quorum="wait"),
    "self-moa-vote": build.self_moa(A, 3, reduce="majority", vote_on="last_line"),
}


@pytest.mark.parametrize("name", list(BUILT))
def test_a_built_topology_dumped_loads_back_the_same(name: str, tmp_path: Path) -> None:
    t = BUILT[name]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(t.model_dump(mode="json", exclude_none=True)))
    again = load(tmp_path / "t.yaml")
    assert again == t
    assert shape(again) == shape(t)


def test_every_shorthand_field_can_be_built_in_python() -> None:
    """The builders take each field their kind reads (quorum and on_quorum were missing on some)."""
    written = load_data(
        yaml.safe_load(
            """
name: self-moa
kind: self_moa
agent: gpt-4o-mini
samples: 3
aggregator: gpt-4o
quorum: 2
on_quorum: wait
agents:
  gpt-4o-mini: {model: openai/gpt-4o-mini, temperature: 0.7, max_tokens: 64}
  gpt-4o: {model: openai/gpt-4o, temperature: 0}
"""
        )
    )
    assert shape(written) == shape(BUILT["self-moa"])
    assert written.graph.nodes["aggregate"].needed == 2
    assert written.graph.nodes["aggregate"].spec.on_quorum == "wait"
    assert BUILT["hierarchical"].graph.nodes["aggregate"].spec.on_quorum == "wait"
    assert BUILT["layered"].graph.nodes["l2_claude-haiku-4-5"].spec.on_quorum == "wait"
