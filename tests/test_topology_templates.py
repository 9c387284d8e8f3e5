"""A node's prompt template is checked against its wiring, named or written: whatever the node is
wired to receive has a placeholder, and no placeholder waits for something never wired."""

from __future__ import annotations

from typing import Any

import pytest

from moa import Runner
from moa.errors import TopologyError
from moa.testing import FunctionModel
from moa.topology.loader import load_data
from moa.topology.prompts import Template

AGENTS = {"a": {"model": "openai/gpt-4o-mini"}}


def problems(nodes: list[dict[str, Any]], output: str | None = None) -> list[str]:
    data: dict[str, Any] = {"name": "t", "agents": AGENTS, "nodes": nodes}
    if output is not None:
        data["output"] = output
    with pytest.raises(TopologyError) as info:
        load_data(data)
    return info.value.problems


def test_plan_on_a_reduce_node_is_refused() -> None:
    """`plan: true` on a `reduce` node is refused before any call (it used to fail mid-run)."""
    p = problems(
        [
            {"id": "n1", "agent": "a"},
            {"id": "p", "reduce": "first", "inputs": ["n1"], "plan": True},
            {"id": "w", "agent": "a", "instruction_from": "p"},
        ],
        output="w",
    )
    assert "node `p` (nodes[1]): `plan: true` needs an `agent`: a plan is a model's reply" in p


def test_named_template_without_references_on_a_node_with_inputs() -> None:
    """`prompt: worker` on a node reading inputs is refused: the inputs would never be sent."""
    p = problems(
        [
            {"id": "d1", "agent": "a"},
            {"id": "d2", "agent": "a"},
            {"id": "final", "agent": "a", "inputs": ["d1", "d2"], "prompt": "worker"},
        ]
    )
    assert p == [
        "node `final` (nodes[2]): reads inputs but its prompt template `worker` has no {references}, "
        "so they would never be sent",
        "node `final` (nodes[2]): its prompt template `worker` uses {instruction} but the node has no "
        "`instruction_from`",
    ]


def test_written_template_without_instruction_on_a_worker() -> None:
    """A worker's own template without {instruction} is refused: the plan's instruction would be lost."""
    p = problems(
        [
            {"id": "p", "agent": "a", "plan": True},
            {"id": "w1", "agent": "a", "instruction_from": "p", "prompt": "Help with: {prompt}"},
        ]
    )
    assert p == [
        "node `w1` (nodes[1]): takes `instruction_from` but its prompt template has no {instruction}, "
        "so the plan's instruction would never be sent"
    ]


def test_plan_template_on_a_node_that_is_not_a_plan() -> None:
    """`prompt: plan` on an ordinary node is refused ({workers} would be empty)."""
    p = problems([{"id": "x", "agent": "a", "prompt": "plan"}])
    assert p == [
        "node `x` (nodes[0]): its prompt template `plan` uses {workers} but the node is not `plan: true`"
    ]


def test_a_plan_node_with_another_named_template_is_refused() -> None:
    """A plan written with `prompt: default` would never ask the manager for JSON."""
    p = problems(
        [
            {"id": "p", "agent": "a", "plan": True, "prompt": "default"},
            {"id": "w", "agent": "a", "instruction_from": "p"},
        ]
    )
    assert p == [
        "node `p` (nodes[0]): is a plan, so its prompt template is `plan` or one of its own, not `default`"
    ]


def test_written_template_without_prompt_on_a_first_node() -> None:
    """A template with no {prompt} on a node with no inputs would never send the user's question."""
    p = problems([{"id": "x", "agent": "a", "prompt": "Say hello."}])
    assert p == [
        "node `x` (nodes[0]): its prompt template has no {prompt}, so the user's question would never be sent"
    ]


def test_aggregate_template_on_a_node_without_inputs() -> None:
    """`prompt: aggregate` on a node with no inputs would send an empty list of responses."""
    p = problems([{"id": "x", "agent": "a", "prompt": "aggregate"}])
    assert p == [
        "node `x` (nodes[0]): its prompt template `aggregate` uses {references} but the node has no `inputs`"
    ]


def test_a_plan_node_without_prompt_asks_the_manager_for_json() -> None:
    """A `plan: true` node without `prompt:` gets the `plan` template, so the manager is asked for JSON."""
    t = load_data(
        {
            "name": "t",
            "agents": AGENTS,
            "nodes": [
                {"id": "p", "agent": "a", "plan": True},
                {"id": "w1", "agent": "a", "instruction_from": "p"},
                {"id": "w2", "agent": "a", "instruction_from": "p"},
                {"id": "agg", "agent": "a", "inputs": ["w1", "w2"]},
            ],
        }
    )
    sent: list[str] = []

    def reply(req: Any) -> str:
        sent.append(req.messages[-1]["content"])
        return '{"instructions": ["do x", "do y"]}'

    t.run_sync("What is 2+2?", runner=Runner(models={"*": FunctionModel(reply)}))
    assert 'Reply with JSON only, in this form: {"instructions": ["...", "..."]}' in sent[0]
    assert "Write exactly 2 instructions" in sent[0]


def test_braces_in_a_written_template_are_left_alone() -> None:
    """`{{` and `}}` are sent as written (nested JSON closes with `}}`); only the placeholders change."""
    t = Template.compile('Answer as {"a": {"b": 1}} or {{x}}: {prompt}')
    assert t.render({"prompt": "Q"}) == 'Answer as {"a": {"b": 1}} or {{x}}: Q'


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("{promt}", "write `{prompt}`"),
        ("{Prompt}", "write `{prompt}`"),
        ("{question}", "write `{prompt}`"),
        ("{{ prompt }}", "write `{prompt}`"),
        ("{{prompt}}", "write `{prompt}`"),
        ("{ prompt }", "write `{prompt}`"),
        ("{{ typo }}", "placeholders: `{prompt}`, `{references}`, `{instruction}`, `{workers}`"),
    ],
)
def test_a_mistyped_placeholder_is_named(written: str, hint: str) -> None:
    """A placeholder typo was sent to the model as written, the question never asked."""
    p = problems(
        [
            {"id": "n1", "agent": "a"},
            {"id": "agg", "agent": "a", "inputs": ["n1"], "prompt": f"{written}\n{{references}}"},
        ]
    )
    assert p == [
        f"node `agg` (nodes[1]): its prompt template has `{written}`, which is not a placeholder ({hint})"
    ]


def test_other_braces_are_no_placeholder_mistake() -> None:
    """JSON, code and unrelated `{name}`s in a template stay allowed and are sent as written."""
    text = 'Reply as {"answer": 1} or f"{value}" with {name}, {x}.\n{references}\n{prompt}'
    t = load_data(
        {
            "name": "t",
            "agents": AGENTS,
            "nodes": [
                {"id": "n1", "agent": "a"},
                {"id": "agg", "agent": "a", "inputs": ["n1"], "prompt": text},
            ],
        }
    )
    assert t.graph.nodes["agg"].template is not None


@pytest.mark.parametrize(
    "text", ["{prompt}", "{references}", " {prompt}", "{prompt}\n", "{prompt}{prompt}", "x"]
)
def test_a_template_renders_as_its_parts_joined(text: str) -> None:
    """A template that is one placeholder alone (the default) renders as any other: its value, or
    "" for a value not given."""
    values = {"prompt": "what is 2+2", "instruction": "i"}
    expected = text.replace("{prompt}", values["prompt"]).replace("{references}", "")
    assert Template.compile(text).render(values) == expected
