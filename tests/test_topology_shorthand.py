"""A ``kind:`` shorthand names its nodes after the agents; the user wrote no node ids, so any agent
name (free text) must expand to a valid graph, and every problem must be about what was written."""

from __future__ import annotations

from typing import Any

import pytest

from moa.errors import TopologyError
from moa.topology.loader import load_data

M = {"model": "openai/gpt-4o-mini"}


def topo(**fields: Any) -> dict[str, Any]:
    return {"name": "t", **fields}


@pytest.mark.parametrize(
    ("data", "order"),
    [
        # agent names that are no valid node id: a space, a slash (both were an unlocated
        # "id: String should match pattern" line about an id nobody wrote)
        (
            topo(kind="parallel", workers=["my agent", "b"], aggregator="b", agents={"my agent": M, "b": M}),
            ("my-agent", "b", "aggregate"),
        ),
        (
            topo(kind="sequential", steps=["gpt/4", "b"], agents={"gpt/4": M, "b": M}),
            ("step1_gpt-4", "step2_b"),
        ),
        (topo(kind="layered", layers=[["a b"], ["a b"]], aggregator="a b", agents={"a b": M}), None),
        # agent names equal to the ids a shorthand fixes (were "defined twice" / "reads itself")
        (
            topo(
                kind="parallel", workers=["aggregate", "b"], aggregator="b", agents={"aggregate": M, "b": M}
            ),
            ("aggregate_2", "b", "aggregate"),
        ),
        (
            topo(
                kind="parallel", workers=["majority", "b"], reduce="majority", agents={"majority": M, "b": M}
            ),
            ("majority_2", "b", "majority"),
        ),
        (
            topo(kind="hierarchical", manager="m", workers=["plan", "b"], agents={"plan": M, "b": M, "m": M}),
            ("plan", "plan_2", "b", "aggregate"),
        ),
        # an agent named like another's numbered repeat
        (
            topo(kind="parallel", workers=["a_2", "a", "a"], aggregator="a", agents={"a_2": M, "a": M}),
            ("a_2", "a_1", "a_2_2", "aggregate"),
        ),
    ],
)
def test_any_agent_name_expands_to_a_valid_graph(data: dict[str, Any], order: tuple[str, ...] | None) -> None:
    t = load_data(data)
    if order is not None:
        assert t.graph.order == order
    # each node still calls the agent it was named after
    for node in t.graph.nodes.values():
        assert node.spec.agent is None or node.spec.agent in data["agents"]


def test_worker_ids_are_unique_case_aside() -> None:
    """Agent `A_1` beside a repeated `a` (numbered `a_1`, `a_2`) stays a node whose id differs in
    more than case."""
    t = load_data(topo(kind="parallel", workers=["a", "a", "A_1"], aggregator="a", agents={"a": M, "A_1": M}))
    ids = [nid.casefold() for nid in t.graph.order]
    assert len(set(ids)) == len(ids)


def test_self_moa_refuses_a_fixed_seed() -> None:
    """A fixed seed makes every sample the same answer, so Self-MoA would aggregate one answer."""
    agent = {"model": "local/smollm2-135m", "temperature": 0.7, "params": {"seed": 42}}
    with pytest.raises(TopologyError) as info:
        load_data(topo(kind="self_moa", agent="s", samples=3, agents={"s": agent}))
    assert info.value.problems == [
        "agent `s`: self_moa samples one model several times, so it takes no fixed `params.seed` "
        "(got 42); remove it so the samples can differ"
    ]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"kind": "parallel", "workers": ["a", "b"], "aggregator": "a", "vote_on": "last_number"},
            "`vote_on: last_number` is read by `reduce: majority` only",
        ),
        (
            {"kind": "parallel", "workers": ["a", "b"], "aggregator": "a", "on_quorum": "wait"},
            "`on_quorum: wait` needs a `quorum` (without one every input is awaited)",
        ),
        ({"kind": "single", "agent": "a", "vote_on": "last_line"}, "`vote_on` is not used by `kind: single`"),
        (
            {
                "nodes": [
                    {"id": "x", "agent": "a"},
                    {"id": "y", "agent": "a", "inputs": ["x"], "vote_on": "last_line"},
                ]
            },
            "node `y` (nodes[1]): `vote_on: last_line` is read by `reduce: majority` only",
        ),
        (
            {
                "nodes": [
                    {"id": "x", "agent": "a"},
                    {"id": "z", "agent": "b"},
                    {"id": "y", "reduce": "first", "inputs": ["x", "z"], "on_quorum": "wait"},
                ]
            },
            "node `y` (nodes[2]): `on_quorum: wait` needs a `quorum` (without one every input is awaited)",
        ),
    ],
)
def test_a_fan_in_setting_that_would_change_nothing_is_refused(fields: dict[str, Any], line: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_data(topo(agents={"a": M, "b": M}, **fields))
    assert info.value.problems == [line]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"kind": "parallel", "workers": ["a", "b"], "aggregator": "a", "quorum": 3},
            "quorum 3 is larger than the 2 workers",
        ),
        (
            {"kind": "self_moa", "agent": "s", "samples": 2, "reduce": "majority", "quorum": 3},
            "quorum 3 is larger than the 2 samples",
        ),
        (
            {"kind": "layered", "layers": [["a", "b"], ["a", "b"]], "aggregator": "a", "quorum": 3},
            "quorum 3 is larger than layer 1's 2 proposers, which layer 2 reads",
        ),
        (
            {"kind": "layered", "layers": [["a", "b", "s"], ["a"]], "aggregator": "a", "quorum": 2},
            "quorum 2 is larger than layer 2's 1 proposer, which the aggregator reads",
        ),
    ],
)
def test_a_shorthand_quorum_too_large_is_one_line(fields: dict[str, Any], line: str) -> None:
    """It was also one line per node the shorthand wrote (`node l2_a: quorum 3 is larger than its
    2 inputs`, again for l2_b and the aggregator), about nodes the user never named."""
    agents = {"a": M, "b": M, "s": {"model": "openai/gpt-4o-mini", "temperature": 0.7}}
    with pytest.raises(TopologyError) as info:
        load_data(topo(agents=agents, **fields))
    assert info.value.problems == [line]


@pytest.mark.parametrize(
    ("fields", "lines"),
    [
        (
            {"kind": "self_moa", "agent": "smapler", "samples": 4},
            ["`agent`: agent `smapler` is not defined; did you mean `sampler`? (agents: b, gpt, sampler)"],
        ),
        (
            {"kind": "parallel", "workers": ["gtp", "gtp", "b"], "aggregator": "b"},
            ["`workers`: agent `gtp` is not defined; did you mean `gpt`? (agents: b, gpt, sampler)"],
        ),
        (
            {"kind": "layered", "layers": 3, "proposers": ["gtp", "b"], "aggregator": "x"},
            [
                "`proposers`: agent `gtp` is not defined; did you mean `gpt`? (agents: b, gpt, sampler)",
                "`aggregator`: agent `x` is not defined (agents: b, gpt, sampler)",
            ],
        ),
    ],
)
def test_an_unknown_agent_in_a_shorthand_is_one_line_naming_the_field(
    fields: dict[str, Any], lines: list[str]
) -> None:
    """It was one line per node the shorthand wrote with it (four samples and the aggregator:
    five lines), naming those nodes rather than the field, and `gtp` suggested nothing."""
    agents = {"gpt": M, "b": M, "sampler": {"model": "openai/gpt-4o-mini", "temperature": 0.7}}
    with pytest.raises(TopologyError) as info:
        load_data(topo(agents=agents, **fields))
    assert info.value.problems == lines
