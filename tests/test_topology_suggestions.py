"""An unknown field gets a suggestion from the object it was written in, never itself; a field that
belongs to another object says which."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moa.errors import TopologyError
from moa.experiment.config import load_spec
from moa.topology.loader import load_data

A = {"a": {"model": "openai/gpt-4o-mini"}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_data({"name": "t", "agents": A, **data})
    return info.value.problems


def test_an_agent_field_on_a_node_says_where_it_belongs() -> None:
    """`temperature` on a node: it belongs to an agent (not "did you mean `temperature`")."""
    p = problems({"nodes": [{"id": "n", "agent": "a", "temperature": 0.5}]})
    assert p == ["nodes[0] (`n`).temperature: unknown field: `temperature` belongs to an agent, not a node"]


def test_a_node_field_on_an_agent_says_where_it_belongs() -> None:
    """`inputs` on an agent: it belongs to a node."""
    p = problems({"kind": "single", "agents": {"a": {"model": "openai/gpt-4o", "inputs": ["b"]}}})
    assert p == ["agents.a.inputs: unknown field: `inputs` belongs to a node, not an agent"]


def test_suggestions_come_from_the_object_written_in() -> None:
    """`sample` on an agent is not offered the topology's `samples`: agents have no such field."""
    p = problems({"kind": "single", "agents": {"a": {"model": "m", "sample": 2}}})
    assert p == ["agents.a.sample: unknown field"]


def test_experiment_field_misspelt_as_a_nested_field_suggests_the_top_level_one(tmp_path: Path) -> None:
    """`setup:` in an experiment suggests `setups`, not `setup` itself."""
    f = tmp_path / "e.yaml"
    f.write_text("name: e\ndataset: d.jsonl\nevaluator: contains\nbaseline: single\nsetup: [parallel-3]\n")
    with pytest.raises(TopologyError) as info:
        load_spec(f)
    assert "setup: unknown field; did you mean `setups`?" in info.value.problems


def test_a_misspelt_cascade_kind_is_suggested() -> None:
    """`kind: cascde` suggests `cascade`, which the list of kinds now names."""
    p = problems({"kind": "cascde"})
    assert (
        "kind: unknown kind `cascde`; did you mean `cascade`? (kinds: single, sequential, parallel, "
        "hierarchical, layered, self_moa, cascade)"
    ) in p


def test_a_field_written_short_is_suggested_its_whole_name() -> None:
    """`pricing: {input: 1}` had no suggestion: `input` is too far from `input_per_mtok` for a
    spelling match, and the one field it begins is what was meant."""
    data = {
        "name": "t",
        "kind": "single",
        "agent": "a",
        "agents": {"a": {"model": "openai/x", "pricing": {"input": 1.0, "output": 2.0}}},
    }
    with pytest.raises(TopologyError) as info:
        load_data(data)
    problems = info.value.problems
    assert "agents.a.pricing.input: unknown field; did you mean `input_per_mtok`?" in problems
    assert "agents.a.pricing.output: unknown field; did you mean `output_per_mtok`?" in problems
