"""Validating a 4,096-node graph in one pass: the same order and the same problems as before."""

from __future__ import annotations

import itertools
from typing import Any

import networkx as nx
import pytest

from moa.errors import TopologyError
from moa.topology.loader import load_data

N = 4096


def window(n: int = N, reads: int = 4) -> dict[str, Any]:
    """n nodes, each reading the ``reads`` defined before it; one agent per node."""
    ids = [f"n{i:05d}" for i in range(n)]
    agents = {f"a{i:05d}": {"model": f"openai/m{i:05d}"} for i in range(n)}
    nodes = [
        {"id": nid, "agent": f"a{i:05d}", "inputs": ids[max(0, i - reads) : i]} for i, nid in enumerate(ids)
    ]
    return {"name": "window", "agents": agents, "nodes": nodes}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_data(data)
    return info.value.problems


def test_order_and_consumers_match_networkx() -> None:
    """The order is networkx's lexicographical topological sort by definition order, as before."""
    data = window()
    # shuffle the definition order a little: every fourth node listed last
    data["nodes"] = [n for i, n in enumerate(data["nodes"]) if i % 4] + data["nodes"][::4]
    g = load_data(data).graph
    dg: nx.DiGraph = nx.DiGraph()
    first_at = {n["id"]: i for i, n in enumerate(data["nodes"])}
    dg.add_nodes_from(first_at)
    dg.add_edges_from((i, n["id"]) for n in data["nodes"] for i in n["inputs"])
    assert g.order == tuple(nx.lexicographical_topological_sort(dg, key=first_at.__getitem__))
    assert g.output == "n04095"
    assert g.nodes["n00100"].consumers == ("n00101", "n00102", "n00103", "n00104")


def test_every_kind_of_problem_is_reported_in_the_same_lines() -> None:
    """Duplicates, unknown agents and inputs, self-loops, quorums, repeats and dead ends: one line each, in
    definition order, the same lines the networkx checks gave."""
    data = window()
    nodes = data["nodes"]
    nodes[10]["agent"] = "nobody"
    nodes[700]["inputs"] = [*nodes[700]["inputs"], "n00700"]
    nodes[1500]["quorum"] = 9
    nodes[2000]["inputs"] = [*nodes[2000]["inputs"], "ghost"]
    nodes[3000]["inputs"] = [nodes[3000]["inputs"][0], *nodes[3000]["inputs"]]
    nodes.append({"id": "n00005", "agent": "a00000"})
    nodes.append({"id": "orphan", "agent": "a00001", "inputs": ["n00050"]})
    data["output"] = "n04095"
    agents = ", ".join(sorted(data["agents"]))
    assert problems(data) == [
        "node `n00005` is defined twice (nodes[5] and nodes[4096])",
        f"node `n00010` (nodes[10]): agent `nobody` is not defined (agents: {agents})",
        "node `n00700` (nodes[700]) reads itself (a self-loop)",
        "node `n01500` (nodes[1500]): quorum 9 is larger than its 4 inputs",
        "node `n02000` (nodes[2000]) reads `ghost`, which is not defined",
        "node `n03000` (nodes[3000]) reads `n02996` 2 times",
        "node `orphan` does not lead to the output `n04095`",
    ]


def test_a_long_cycle_is_reported_as_one_real_cycle() -> None:
    """A back edge across 2,900 nodes: one line, a path along real edges that closes on itself."""
    data = window()
    nodes = data["nodes"]
    nodes[100]["inputs"] = [*nodes[100]["inputs"], "n03000"]
    (line,) = problems(data)
    assert line.startswith("nodes form a cycle: ")
    path = line.removeprefix("nodes form a cycle: ").split(" → ")
    assert path[0] == path[-1] and len(set(path)) == len(path) - 1
    reads = {n["id"]: set(n["inputs"]) for n in nodes}
    assert all(a in reads[b] for a, b in itertools.pairwise(path))
    assert "n03000" in path and "n00100" in path
    assert problems(data) == [line]  # the same cycle every time


def test_no_output_and_several_sinks() -> None:
    """Without ``output``, two sinks among 4,097 nodes are both named."""
    data = window()
    data["nodes"].append({"id": "orphan", "agent": "a00001", "inputs": ["n00050"]})
    assert problems(data) == [
        "no `output` and 2 nodes end the graph (n04095, orphan): name the answer with `output`"
    ]
