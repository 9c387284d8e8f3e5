"""The declarative format: every validation problem is one line naming its culprit, all at once."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

import moa
from moa.errors import TopologyError, UserError
from moa.topology.loader import load, load_data

AGENTS = {"a": {"model": "openai/gpt-4o-mini"}, "b": {"model": "anthropic/claude-haiku-4-5"}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_data(data, source="t.yaml")
    return info.value.problems


def dag(nodes: list[dict[str, Any]], output: str | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "t", "agents": AGENTS, "nodes": nodes, **extra}
    if output:
        d["output"] = output
    return d


def test_valid_dag_loads() -> None:
    """A well-formed DAG validates and finds its single sink."""
    t = load_data(dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "b", "inputs": ["x"]}]))
    assert t.graph.output == "y"
    assert t.graph.order == ("x", "y")


def test_cycle_names_a_node_on_it() -> None:
    """A cycle is reported with the nodes on it."""
    p = problems(
        dag(
            [
                {"id": "x", "agent": "a", "inputs": ["z"]},
                {"id": "y", "agent": "a", "inputs": ["x"]},
                {"id": "z", "agent": "a", "inputs": ["y"]},
                {"id": "out", "agent": "a", "inputs": ["z"]},
            ],
            output="out",
        )
    )
    assert any(line.startswith("nodes form a cycle:") and "x" in line and "y" in line for line in p)


def test_self_loop() -> None:
    """A node reading itself is named."""
    p = problems(dag([{"id": "x", "agent": "a", "inputs": ["x"]}]))
    assert any("node `x`" in line and "reads itself" in line for line in p)


def test_unknown_input() -> None:
    """An input that is not a node is named with the node that reads it."""
    p = problems(dag([{"id": "l2a", "agent": "a", "inputs": ["l1d"]}]))
    assert any("node `l2a`" in line and "reads `l1d`, which is not defined" in line for line in p)


def test_unknown_agent() -> None:
    """An unknown agent lists the defined ones."""
    p = problems(dag([{"id": "x", "agent": "zz"}]))
    assert p == ["node `x` (nodes[0]): agent `zz` is not defined (agents: a, b)"]


def test_unknown_prompt_template() -> None:
    """A misspelt template name is refused with the known names."""
    p = problems(
        dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "a", "inputs": ["x"], "prompt": "agregate"}])
    )
    assert any("prompt template `agregate` is not known" in line and "aggregate" in line for line in p)


def test_template_without_references_is_refused_when_node_reads_inputs() -> None:
    """A custom template on a node with inputs must place {references}."""
    p = problems(
        dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "a", "inputs": ["x"], "prompt": "Say {prompt}"}])
    )
    assert any("no {references}" in line for line in p)


def test_duplicate_ids() -> None:
    """A node id defined twice names both positions."""
    p = problems(dag([{"id": "x", "agent": "a"}, {"id": "x", "agent": "b"}], output="x"))
    assert any("node `x` is defined twice (nodes[0] and nodes[1])" in line for line in p)


def test_output_not_a_node() -> None:
    """An output naming no node is refused."""
    p = problems(dag([{"id": "x", "agent": "a"}], output="final"))
    assert "output `final` is not a node" in p


def test_node_not_reaching_output() -> None:
    """A dangling node that does not feed the output is named."""
    p = problems(dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "a"}], output="x"))
    assert "node `y` does not lead to the output `x`" in p


def test_two_sinks_without_output() -> None:
    """With two sinks and no output, the user is told to name one."""
    p = problems(dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "a"}]))
    assert any("name the answer with `output`" in line for line in p)


def test_quorum_larger_than_workers_shorthand() -> None:
    """A quorum above the worker count is refused."""
    p = problems(
        {
            "name": "t",
            "kind": "parallel",
            "workers": ["a", "b"],
            "aggregator": "a",
            "quorum": 3,
            "agents": AGENTS,
        }
    )
    assert "quorum 3 is larger than the 2 workers" in p


def test_quorum_larger_than_inputs_node() -> None:
    """A node's quorum above its inputs is refused."""
    p = problems(dag([{"id": "x", "agent": "a"}, {"id": "y", "agent": "a", "inputs": ["x"], "quorum": 2}]))
    assert any("quorum 2 is larger than its 1 inputs" in line for line in p)


def test_empty_workers() -> None:
    """An empty worker list is refused."""
    p = problems({"name": "t", "kind": "parallel", "workers": [], "aggregator": "a", "agents": AGENTS})
    assert any("`workers` is empty" in line for line in p)


def test_unknown_kind() -> None:
    """An unknown kind lists the kinds."""
    p = problems({"name": "t", "kind": "paralel", "agents": AGENTS})
    assert any(line.startswith("kind: unknown kind `paralel`") and "parallel" in line for line in p)


def test_unknown_field_anywhere() -> None:
    """A misspelt field is refused with its full location."""
    p = problems(dag([{"id": "x", "agent": "a"}], agents={"a": {"model": "m", "tempreature": 0.5}}))
    assert "agents.a.tempreature: unknown field; did you mean `temperature`?" in p


def test_wrong_type_and_out_of_range() -> None:
    """Wrong types and out-of-range values name the field and the value."""
    data = dag([{"id": "x", "agent": "a"}])
    data["agents"] = {
        "a": {"model": "m", "temperature": -1, "max_tokens": 0},
        "b": {"model": "m", "top_p": "high"},
    }
    p = problems(data)
    assert any(line.startswith("agents.a.temperature:") and "-1" in line for line in p)
    assert any(line.startswith("agents.a.max_tokens:") and "0" in line for line in p)
    assert any(line.startswith("agents.b.top_p:") and "'high'" in line for line in p)


def test_empty_model() -> None:
    """An empty model string is refused."""
    p = problems(dag([{"id": "x", "agent": "a"}], agents={"a": {"model": "  "}}))
    assert any(line.startswith("agents.a.model:") and "empty" in line for line in p)


def test_inline_api_key_refused() -> None:
    """An inline api_key points to api_key_env."""
    p = problems(dag([{"id": "x", "agent": "a"}], agents={"a": {"model": "m", "api_key": "sk-xxxxxxxxxxxx"}}))
    assert any("api_key" in line and "api_key_env" in line for line in p)
    assert not any("sk-xxxxxxxxxxxx" in line for line in p)


def test_all_problems_reported_together() -> None:
    """Schema problems and graph problems of one file come out in one error."""
    data = dag(
        [{"id": "x", "agent": "a", "inputs": ["nope"]}, {"id": "y", "agent": "a", "bogus": 1}],
        output="x",
        agents={"a": {"model": "m", "temperature": -2}},
    )
    p = problems(data)
    assert any("temperature" in line for line in p)
    assert any("bogus: unknown field" in line for line in p)
    assert any("reads `nope`" in line for line in p)


def test_node_location_names_node_id() -> None:
    """Errors inside a node name its index and id."""
    p = problems(dag([{"id": "x", "agent": "a", "quorum": 0}]))
    assert any(line.startswith("nodes[0] (`x`).quorum:") for line in p)


def test_shorthand_fields_of_another_kind() -> None:
    """A shorthand field the kind does not use is named."""
    p = problems({"name": "t", "kind": "single", "agent": "a", "workers": ["a"], "agents": AGENTS})
    assert "`workers` is not used by `kind: single`" in p


def test_self_moa_needs_temperature() -> None:
    """Self-MoA at temperature 0 would sample one answer N times: refused."""
    p = problems(
        {"name": "t", "kind": "self_moa", "agent": "a", "samples": 3, "agents": {"a": {"model": "m"}}}
    )
    assert any("temperature must be > 0" in line for line in p)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and line."""
    f = tmp_path / "bad.yaml"
    f.write_text("name: t\nagents:\n  a: {model: m\nnodes: []\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: invalid YAML"):
        load(f)


def test_json_file_loads(tmp_path: Path) -> None:
    """JSON topology files load like YAML ones."""
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"name": "j", "kind": "single", "agent": "a", "agents": AGENTS}))
    assert load(f).graph.output == "answer"


def test_missing_file_and_unknown_preset() -> None:
    """A missing file or unknown preset is one line."""
    with pytest.raises(UserError, match="no such file"):
        load("nope/nothere.yaml")
    with pytest.raises(UserError, match=r"unknown topology `nothere`.*presets:"):
        load("nothere")


def test_error_lines_carry_source(tmp_path: Path) -> None:
    """TopologyError.lines() prefixes each problem with the file."""
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nagents: {a: {model: m}}\nnodes: [{id: x, agent: q}]\n")
    with pytest.raises(TopologyError) as info:
        load(f)
    assert info.value.lines() == [f"{f}: node `x` (nodes[0]): agent `q` is not defined (agents: a)"]


def test_json_schema_file_is_current() -> None:
    """The shipped JSON Schema is what `moa schema` writes today (topologies and cascades)."""
    from moa.topology.schema import topology_file_schema

    shipped = Path(moa.__file__).parent / "topology.schema.json"
    assert json.loads(shipped.read_text()) == topology_file_schema()


def test_stop_string_becomes_list() -> None:
    """`stop: "###"` is accepted as a one-item list."""
    t = load_data(dag([{"id": "x", "agent": "a"}], agents={"a": {"model": "m", "stop": "###"}}))
    assert t.agents["a"].stop == ["###"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "single"}, "`kind: single` needs `agent`"),
        ({"kind": "sequential"}, "`kind: sequential` needs `steps`"),
        ({"kind": "hierarchical", "workers": ["a"]}, "`kind: hierarchical` needs `manager`"),
        ({"kind": "hierarchical", "manager": "a", "workers": []}, "`workers` is empty"),
        ({"kind": "layered", "layers": 2}, "`kind: layered` needs `proposers`"),
        ({"kind": "layered", "aggregator": "a"}, "`kind: layered` needs `layers`"),
        ({"kind": "layered", "layers": [["a"], []], "aggregator": "a"}, "layer 2 has no proposers"),
        (
            {"kind": "layered", "layers": [["a"]], "proposers": ["a"], "aggregator": "a"},
            "`proposers` is not used",
        ),
        (
            {"kind": "layered", "layers": 0, "proposers": ["a"], "aggregator": "a"},
            "layers must be at least 1",
        ),
        ({"kind": "parallel", "workers": ["a"], "aggregator": "a", "reduce": "majority"}, "both set"),
        ({"kind": "parallel", "workers": ["a"]}, "needs `aggregator` (or `reduce: majority | first`)"),
        ({"kind": "single", "agent": "a", "nodes": [{"id": "x", "agent": "a"}]}, "`nodes` are both set"),
        ({"kind": "single", "agent": "a", "output": "answer"}, "`output` is set by `kind: single` itself"),
        (
            {"workers": ["a"], "nodes": [{"id": "x", "agent": "a"}]},
            "`workers` is a shorthand field but no `kind`",
        ),
        ({}, "no `nodes` and no `kind`"),
    ],
)
def test_shorthand_problems(data: dict[str, Any], expected: str) -> None:
    """Each misuse of a shorthand is named in one line."""
    p = problems({"name": "t", "agents": AGENTS, **data})
    assert any(expected in line for line in p), p


def test_layered_with_explicit_layers() -> None:
    """`layers: [[...], [...]]` gives each layer its own agents, each reading the layer before."""
    t = load_data(
        {"name": "t", "kind": "layered", "layers": [["a", "b"], ["a"]], "aggregator": "b", "agents": AGENTS}
    )
    assert t.graph.nodes["l2_a"].inputs == ("l1_a", "l1_b")
    assert t.graph.nodes["aggregate"].inputs == ("l2_a",)


def test_repeated_agent_gets_numbered_nodes() -> None:
    """A worker agent named twice gives numbered node ids."""
    t = load_data(
        {"name": "t", "kind": "parallel", "workers": ["a", "a", "b"], "reduce": "first", "agents": AGENTS}
    )
    assert t.graph.order[:3] == ("a_1", "a_2", "b")
    assert t.graph.nodes["first"].needed == 1


def test_plan_without_workers_is_refused() -> None:
    """A `plan: true` node nobody reads instructions from is named."""
    p = problems(dag([{"id": "m", "agent": "a", "plan": True}, {"id": "w", "agent": "a", "inputs": ["m"]}]))
    assert any("is a plan but no node takes `instruction_from: m`" in line for line in p)


def test_instruction_from_a_non_plan_node() -> None:
    """instruction_from must name a plan node."""
    p = problems(dag([{"id": "m", "agent": "a"}, {"id": "w", "agent": "a", "instruction_from": "m"}]))
    assert any("instruction_from `m` is not a `plan: true` node" in line for line in p)


def test_load_relative_to_a_folder(tmp_path: Path) -> None:
    """`load(ref, relative_to=dir)` reads a relative file from that folder and still finds presets."""
    (tmp_path / "mine.yaml").write_text("name: mine\nkind: single\nagent: a\nagents: {a: {model: m}}\n")
    assert load("mine.yaml", relative_to=tmp_path).name == "mine"
    assert load("single", relative_to=tmp_path).name == "single"
    with pytest.raises(UserError, match="no such file"):
        load("missing.yaml", relative_to=tmp_path)


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("temperature", "set the agent's `temperature` instead"),
        ("max_tokens", "set the agent's `max_tokens` instead"),
        ("max_completion_tokens", "set the agent's `max_tokens` instead"),
        ("model", "set the agent's `model` instead"),
        ("timeout", "set the agent's `timeout_s` instead"),
        ("stream", "moa sets it itself"),
    ],
)
def test_params_may_not_shadow_an_agent_field(key: str, fix: str) -> None:
    """`temperature: 0` beside `params: {temperature: 0.9}` sent 0 without a word, and a
    `params.max_tokens` went unseen by the budget hold: each such key is one line saying where it goes."""
    agent = {"model": "openai/gpt-4o-mini", "temperature": 0, "params": {key: 1}}
    p = problems({"name": "t", "kind": "single", "agents": {"a": agent}})
    assert p == [
        f"agents.a.params: `params.{key}` is refused: {fix}; a value in params is overridden or "
        "unseen by budgets, limits and checks"
    ]


def test_params_extra_body_may_not_shadow_an_agent_field() -> None:
    """`extra_body` is merged into the request's body: `params.extra_body.max_completion_tokens`
    raised the completion cap past the budget's hold as the same key in params did."""
    params = {"extra_body": {"max_completion_tokens": 100_000}}
    agent = {"model": "openai/gpt-4o-mini", "max_tokens": 10, "params": params}
    p = problems({"name": "t", "kind": "single", "agents": {"a": agent}})
    assert p == [
        "agents.a.params: `params.extra_body.max_completion_tokens` is refused: set the agent's "
        "`max_tokens` instead; a value in params is overridden or unseen by budgets, limits and checks"
    ]


def test_node_ids_differing_in_case_only_are_refused() -> None:
    """`X` and `x` were two nodes that read as one in a log, a report or a case-blind file system."""
    p = problems(
        dag(
            [
                {"id": "X", "agent": "a"},
                {"id": "x", "agent": "a"},
                {"id": "y", "agent": "a", "inputs": ["x", "X"]},
            ]
        )
    )
    assert p == ["node `x` (nodes[1]) and node `X` (nodes[0]) differ in case only: rename one"]


def test_agent_names_differing_in_case_or_unicode_form_only_are_refused() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    for a, b in ((nfc, nfd), ("a", "A")):
        p = problems(
            {"name": "t", "kind": "single", "agent": a, "agents": {a: {"model": "m/x"}, b: {"model": "m/x"}}}
        )
        assert p == [f"agents: `{a}` and `{b}` differ in case or Unicode form only: rename one"]


def test_a_near_miss_reference_is_suggested() -> None:
    """An unknown agent, input or plan names the defined one it most likely meant."""
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    p = problems({"name": "t", "kind": "single", "agent": nfd, "agents": {nfc: {"model": "m/x"}}})
    assert p == [
        f"`agent`: agent `{nfd}` is not defined; did you mean `{nfc}`? (they differ in "
        f"case or Unicode form only) (agents: {nfc})"
    ]
    p = problems(
        dag(
            [
                {"id": "draft", "agent": "a"},
                {"id": "plan", "agent": "a", "plan": True},
                {"id": "w", "agent": "a", "instruction_from": "plna"},
                {"id": "y", "agent": "B", "inputs": ["dratf", "w", "plan"]},
            ]
        )
    )
    assert "node `w` (nodes[2]): instruction_from `plna` is not defined; did you mean `plan`?" in p
    assert (
        "node `y` (nodes[3]): agent `B` is not defined; did you mean `b`? (they differ in case or "
        "Unicode form only) (agents: a, b)"
    ) in p
    assert "node `y` (nodes[3]) reads `dratf`, which is not defined; did you mean `draft`?" in p


def test_the_builder_names_models_differing_in_case_apart() -> None:
    from moa import build

    t = build.parallel(["openai/GPT-4o", "openai/gpt-4o"], aggregator="openai/GPT-4o")
    assert list(t.agents) == ["GPT-4o", "gpt-4o-2"]


def test_a_node_id_with_other_characters_says_what_an_id_may_hold() -> None:
    """It was pydantic's regex: `String should match pattern '^[A-Za-z0-9_.\\-]+$'`."""
    p = problems(dag([{"id": "café au lait", "agent": "a"}]))
    assert p == [
        "nodes[0] (`café au lait`).id: a node id holds only ASCII letters, digits, `_`, `.` and `-` "
        "(got 'café au lait'): it names the node in logs, CSV files and reports"
    ]


def test_a_value_matching_no_branch_of_a_union_is_one_line() -> None:
    """`layers: "2"` was two lines, `layers.int` and `layers.list[list[str]]`, named after
    pydantic's branches; a value that entered a branch keeps that branch's own error."""
    base = {"name": "t", "kind": "layered", "aggregator": "a", "agents": AGENTS}
    assert problems({**base, "layers": "2", "proposers": ["a"]}) == [
        "layers: Input should be a valid integer or a valid list (got '2')"
    ]
    assert problems({**base, "layers": [["a", 1]]}) == [
        "layers[0][1]: Input should be a valid string (got 1)"
    ]


def test_a_node_with_one_bad_field_is_not_also_reported_missing() -> None:
    """A node whose `plan` fails the schema still stands in the graph for the other checks: the
    output naming it was reported as no node, and its readers as reading an undefined node."""
    nodes = [{"id": "w", "agent": "a", "plan": "yes"}, {"id": "x", "agent": "a", "inputs": ["w", "zz"]}]
    with pytest.raises(TopologyError) as info:
        load_data(dag(nodes, output="x"))
    assert info.value.problems == [
        "nodes[0] (`w`).plan: Input should be a valid boolean (got 'yes')",
        "node `x` (nodes[1]) reads `zz`, which is not defined",
    ]


def test_a_shorthand_missing_its_fan_in_is_one_line_not_a_call_for_output() -> None:
    """`kind: parallel` without `aggregator` also said "no `output` ...: name the answer with
    `output`", which a shorthand refuses (`output` is set by the kind itself)."""
    assert problems({"name": "t", "agents": AGENTS, "kind": "parallel", "workers": ["a", "b"]}) == [
        "`kind: parallel` needs `aggregator` (or `reduce: majority | first`)"
    ]


def test_an_agent_written_as_its_model_string_is_told_the_mapping_to_write() -> None:
    """`a: openai/gpt-4o` said "Input should be a valid dictionary or instance of AgentSpec", a
    Python class name the user never wrote; a field that is not a mapping likewise."""
    assert problems({"name": "t", "kind": "single", "agent": "a", "agents": {"a": "openai/gpt-4o"}}) == [
        "agents.a: expected a mapping of fields: write `a: {model: openai/gpt-4o}`"
    ]
    agents = {"a": {"model": "openai/gpt-4o", "pricing": 3}}
    assert problems({"name": "t", "kind": "single", "agent": "a", "agents": agents}) == [
        "agents.a.pricing: expected a mapping of fields (got 3)"
    ]
