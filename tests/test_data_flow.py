"""What each node of a run sees and returns: fan-in order, votes, quorum gaps, hostile replies and
inputs, typed replies."""

from __future__ import annotations

import json
from typing import Any

import pytest

import moa
from moa import build
from moa._run.reducers import normalise
from moa.eval.datasets import Item
from moa.experiment.conversation import run_item
from moa.models.base import ModelRequest
from moa.testing import FunctionModel
from moa.topology.prompts import boundary_tag


async def test_a_majority_tie_goes_to_input_order_not_completion_order() -> None:
    """A 1-1 vote goes to the first declared worker even when it answers last."""
    models = {
        "fake/a": FunctionModel(lambda r: "Paris", delay_s=0.2),
        "fake/b": FunctionModel(lambda r: "Lyon"),
    }
    t = build.parallel(["fake/a", "fake/b"], reduce="majority")
    r = await t.run("q", runner=moa.Runner(models=models))
    assert r.output == "Paris"


def test_last_number_votes_read_numbers_as_the_evaluator_does() -> None:
    """A range's hyphen is no minus sign, a Unicode minus is one, and `1,2,3` is not 123."""

    def key(text: str) -> str:
        return normalise(text, "last_number")

    assert key("pages 12-15") == key("15")
    assert key("it is −7") == key("-7") != key("7")
    assert key("1,2,3") == key("3")
    assert key("$1,000.00") == key("1000")
    assert key("x " + "9" * 5000) == ""  # more digits than are read: no vote


async def test_an_aggregator_under_quorum_is_told_who_did_not_answer() -> None:
    """A quorum fan-in's prompt says how many answered and names the missing worker; a full one adds nothing."""
    seen: list[str] = []

    def agg(r: ModelRequest) -> str:
        seen.append(r.messages[-1]["content"])
        return "final"

    models = {
        "fake/b": FunctionModel(lambda r: moa.RequestRejected("bad request", status_code=400)),
        "fake/agg": FunctionModel(agg),
        "fake/*": FunctionModel(lambda r: f"from {r.model}"),
    }
    t = build.parallel(["fake/a", "fake/b", "fake/c"], aggregator="fake/agg", quorum=2)
    await t.run("q", runner=moa.Runner(models=models))
    tag = boundary_tag(["a", "from fake/a", "c", "from fake/c"])
    assert (
        f"2. [c] <<{tag}>>\nfrom fake/c\n<<end {tag}>>\n\n(2 of the 3 responses asked for are above; none from: b.)"
        in seen[0]
    )
    full = build.parallel(["fake/a", "fake/c"], aggregator="fake/agg", quorum=1, on_quorum="wait")
    await full.run("q", runner=moa.Runner(models=models))
    assert "responses asked for" not in seen[1]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("  \n", "prompt: empty (every agent would be paid to answer nothing)"),
        (
            "bad \ud800 text",
            "prompt: holds a lone UTF-16 surrogate ('\\ud800' at character 4), which is not text",
        ),
        ([{"role": "user", "content": None}], "prompt: message 0 (user) has content NoneType, not text"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "prompt: message 0 (user) has content list, not text",
        ),
        (
            [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "q2"},
            ],
            "prompt: message 1 (assistant) has content NoneType, not text",
        ),
        (
            [{"role": "usr", "content": "q"}],
            "prompt: message 0 has role 'usr', not one of system, developer, user, assistant",
        ),
        (
            [{"role": "user", "content": " "}],
            "prompt: message 0 (user) is empty (every agent would be paid to answer nothing)",
        ),
        (
            {"role": "user", "content": "q"},
            "prompt: is one message: pass a list of messages (or the prompt as a string)",
        ),
        (["q"], "prompt: message 0 is a str, not a mapping of `role` and `content`"),
        (None, "prompt: must be a string or a list of messages, not NoneType"),
        (b"q", "prompt: must be a string or a list of messages, not bytes"),
    ],
    ids=[
        "blank",
        "surrogate",
        "none",
        "parts",
        "assistant-none",
        "role",
        "blank-turn",
        "one-message",
        "str-message",
        "no-prompt",
        "bytes",
    ],
)
async def test_a_prompt_that_is_not_text_is_refused_before_any_call(prompt: Any, message: str) -> None:
    """Bad run input is one RequestRefused naming the message, not a provider error of the first node."""
    fm = FunctionModel(lambda r: "answer")
    t = build.parallel(["fake/a", "fake/b"], aggregator="fake/agg")
    with pytest.raises(moa.RequestRefused) as info:
        await t.run(prompt, runner=moa.Runner(models={"fake/*": fm}))
    assert str(info.value) == message
    assert fm.calls == []


async def test_a_reply_holding_a_lone_surrogate_is_blamed_on_its_writer_and_retried() -> None:
    """A `\\ud800` in a proposer's reply is a MalformedReply of that proposer, retried; the
    aggregator never receives it."""
    replies = iter(["bad \ud800 reply", "good reply"])
    seen: list[str] = []

    def fn(r: ModelRequest) -> str:
        if r.model == "fake/agg":
            seen.append(r.messages[-1]["content"])
            return "final"
        return next(replies) if r.model == "fake/a" else "b says"

    agent = build.agent("fake/a", retry={"max_attempts": 2, "backoff_base_s": 0.001})
    t = build.parallel([agent, "fake/b"], aggregator="fake/agg")
    r = await t.run("q", runner=moa.Runner(models={"fake/*": FunctionModel(fn)}))
    assert r.output == "final" and "1. [a] <<" in seen[0] and ">>\ngood reply\n<<end " in seen[0]
    log = next(c for c in r.calls if c.node == "a").attempt_log
    assert [a.status for a in log] == ["error", "ok"]
    assert "the reply holds a lone UTF-16 surrogate ('\\ud800' at character 4)" in (log[0].error or "")


async def test_template_syntax_in_prompts_answers_and_instructions_is_sent_literally() -> None:
    """`{references}`, `{prompt}`, `{{ x }}`, `${x}`, `{0.__class__}` and Jinja blocks written by a
    user, a proposer or a manager reach the next node as written, never expanded again."""
    hostile = (
        "{prompt} {references} {instruction} {workers} {{ input }} ${x} {0.__class__} {% if 1 %}x{% endif %}"
    )
    seen: list[str] = []

    def fn(r: ModelRequest) -> str:
        text = r.messages[-1]["content"]
        seen.append(text)
        if '"instructions"' in text:
            return json.dumps({"instructions": [f"do {hostile}", "b"]})
        return f"ans {hostile}"

    runner = moa.Runner(models={"fake/*": FunctionModel(fn)})
    await build.sequential("fake/a", "fake/b", "fake/c").run(f"Q {hostile}", runner=runner)
    # the refine step: the prompt once, each earlier step's answer once, nothing expanded
    assert seen[-1].count(hostile) == 3 and f"User query: Q {hostile}" in seen[-1]
    seen.clear()
    await build.hierarchical("fake/m", ["fake/w1", "fake/w2"]).run("Q", runner=runner)
    assert any(f"instruction to you:\ndo {hostile}\n" in s for s in seen)


def test_text_votes_ignore_emphasis_quotes_and_closing_punctuation() -> None:
    """`**Paris**`, `“Paris”`, `Paris,` and ` paris ` are one answer; `Lyon` is another."""
    keys = {normalise(t) for t in ["**Paris**", "“Paris”", "Paris,", " paris ", "_Paris_?"]}
    assert keys == {"paris"} and normalise("Lyon") not in keys
    assert normalise("the answer is\n\n**Paris**", "last_line") == "paris"


async def test_every_node_of_a_second_turn_sees_the_first_turn_and_its_final_answer() -> None:
    """MT-Bench's turn 2: each node gets its own system prompt once, turn 1's question, the
    topology's final answer of turn 1 (not a proposer's draft), then its turn-2 prompt."""
    calls: list[tuple[str, list[tuple[str, str]]]] = []

    def fn(r: ModelRequest) -> str:
        calls.append((r.model, [(m["role"], m["content"]) for m in r.messages]))
        return "FINAL-1" if r.model == "fake/agg" and len(calls) <= 3 else f"draft of {r.model}"

    t = build.parallel(
        [build.agent("fake/a", system="SYS-A"), "fake/b"],
        aggregator=build.agent("fake/agg", system="SYS-AGG"),
    )
    item = Item(id="1", input="turn one?", turns=["turn one?", "turn two?"])
    _, turns = await run_item(moa.Runner(models={"fake/*": FunctionModel(fn)}), t, item)
    assert turns is not None and turns[0] == "FINAL-1"
    second = calls[3:]
    assert len(second) == 3
    for model, messages in second:
        systems = [c for role, c in messages if role == "system"]
        assert systems == ({"fake/a": ["SYS-A"], "fake/agg": ["SYS-AGG"]}.get(model, []))
        rest = [m for m in messages if m[0] != "system"]
        assert rest[:2] == [("user", "turn one?"), ("assistant", "FINAL-1")]
        assert rest[2][0] == "user" and "turn two?" in rest[2][1] and len(rest) == 3
