"""A file of a few bytes cannot expand into a graph that takes minutes to check: each count a
shorthand multiplies is capped, and so is the whole graph, with one line naming the field and limit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from moa import cli
from moa.errors import TopologyError
from moa.topology.loader import load_data
from moa.topology.spec import MAX_GRAPH, MAX_LAYERS, MAX_LIST

AGENTS = {"a": {"model": "openai/gpt-4o-mini"}}


def problems(**fields: Any) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_data({"name": "t", "agents": AGENTS, **fields})
    return info.value.problems


def test_layers_count_is_capped_before_expanding() -> None:
    """`layers: 100000000` is refused at once, naming the field and the limit."""
    t0 = time.perf_counter()
    p = problems(kind="layered", layers=100_000_000, proposers=["a"], aggregator="a")
    assert p == [f"layers: at most {MAX_LAYERS} layers (got 100,000,000)"]
    assert time.perf_counter() - t0 < 30  # generous: it used to run until memory ran out


def test_listed_layers_are_capped() -> None:
    """Listed layers are capped in number and in width."""
    p = problems(kind="layered", layers=[["a"]] * (MAX_LAYERS + 1), aggregator="a")
    assert p == [f"layers: at most {MAX_LAYERS} layers (got {MAX_LAYERS + 1})"]
    p = problems(kind="layered", layers=[["a"] * (MAX_LIST + 1)], aggregator="a")
    assert p == [f"layers: layer 1: at most {MAX_LIST} agents (got {MAX_LIST + 1})"]


@pytest.mark.parametrize(
    ("field", "extra"),
    [("steps", {"kind": "sequential"}), ("workers", {"kind": "parallel", "aggregator": "a"})],
)
def test_agent_lists_are_capped(field: str, extra: dict[str, Any]) -> None:
    """20,000 `steps` (n² edges) or `workers` are one line, not a hang."""
    assert problems(**extra, **{field: ["a"] * 20_000}) == [
        f"{field}: at most {MAX_LIST} agents (got 20,000)"
    ]


def test_layers_times_proposers_is_capped_as_a_whole() -> None:
    """64 layers of 256 proposers (4 million edges) are refused before any node is built; 64 of 3 pass."""
    p = problems(kind="layered", layers=MAX_LAYERS, proposers=["a"] * MAX_LIST, aggregator="a")
    assert p == [
        f"`layers` × `proposers`: `kind: layered` expands to 4,145,409 nodes + edges, over the limit of "
        f"{MAX_GRAPH:,}; use fewer layers or proposers"
    ]
    ok = {"kind": "layered", "layers": MAX_LAYERS, "proposers": ["a"] * 3, "aggregator": "a"}
    assert len(load_data({"name": "t", "agents": AGENTS, **ok}).graph.order) == 3 * MAX_LAYERS + 1


def test_explicit_nodes_are_capped_and_reported_in_one_line() -> None:
    """Too many explicit nodes give one line (not one listing every sink)."""
    nodes = [{"id": f"n{i}", "agent": "a"} for i in range(MAX_GRAPH + 1)]
    p = problems(nodes=nodes)
    assert p == [
        f"topology: `nodes`: {MAX_GRAPH + 1:,} nodes and 0 inputs, over the limit of {MAX_GRAPH:,} nodes + inputs"
    ]


def test_many_sinks_are_listed_in_a_readable_line() -> None:
    """A graph with many sinks names ten of them, not all."""
    nodes = [{"id": f"n{i:03d}", "agent": "a"} for i in range(500)]
    (line,) = problems(nodes=nodes)
    assert line.startswith("no `output` and 500 nodes end the graph (n000, n001,") and "…" in line
    assert len(line) < 200


def test_validate_command_refuses_a_layer_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa validate` on a 100-byte layer bomb exits 2 with one line."""
    f = tmp_path / "bomb.yaml"
    f.write_text(
        "name: x\nagents: {a: {model: openai/gpt-4o}}\nkind: layered\nlayers: 100000000\nproposers: [a, a, a]\naggregator: a\n"
    )
    assert cli.main(["validate", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"{f}: layers: at most {MAX_LAYERS} layers (got 100,000,000)"
