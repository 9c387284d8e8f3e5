"""A manager's reply read as one instruction per worker."""

from __future__ import annotations

import pytest

import moa
from moa._run.plans import parse_plan
from moa.errors import MalformedReply
from moa.models.base import ModelRequest
from moa.testing import FunctionModel
from moa.topology.loader import load_data


def test_fenced_json() -> None:
    """A plan inside a ```json fence with chatter around it parses."""
    text = 'Here it is:\n```json\n{"instructions": ["a", "b"]}\n```\nGood luck.'
    assert parse_plan(text, 2, node="plan", model="m") == ["a", "b"]


def test_bare_list_and_extra_items() -> None:
    """A bare JSON list works; extra instructions beyond the workers are dropped."""
    assert parse_plan('["x", "y", "z"]', 2, node="plan", model="m") == ["x", "y"]


def test_too_few_instructions() -> None:
    """Fewer instructions than workers is a MalformedReply naming both counts."""
    with pytest.raises(MalformedReply, match="plan has 1 instructions but there are 3 workers"):
        parse_plan('{"instructions": ["only"]}', 3, node="plan", model="m")


def test_not_json_quotes_the_reply() -> None:
    """A reply with no plan is a MalformedReply quoting its start."""
    with pytest.raises(MalformedReply, match=r'plan is not JSON.*"I will not plan"') as info:
        parse_plan("I will not plan", 2, node="plan", model="m")
    assert info.value.node == "plan" and info.value.retryable


def test_a_blank_instruction_is_malformed_not_skipped() -> None:
    """A blank instruction is a MalformedReply naming its position: skipping it handed every later
    worker the instruction written for the one after it."""
    with pytest.raises(MalformedReply, match=r"plan's instruction 1 \(of 2, one per worker\) is empty"):
        parse_plan('{"instructions": ["  ", "research b", "write c"]}', 2, node="plan", model="m")
    assert parse_plan('["a", "b", ""]', 2, node="plan", model="m") == ["a", "b"]


def test_a_plan_followed_by_prose_holding_braces_parses() -> None:
    """The plan is found when the prose after it holds braces and brackets of its own."""
    text = '{"instructions": ["a", "b"]}\nEach worker fills in {name} [sic].'
    assert parse_plan(text, 2, node="plan", model="m") == ["a", "b"]


def test_instructions_written_twice_is_malformed() -> None:
    """Two `instructions` keys: which plan was meant is unknown, so the reply is malformed."""
    with pytest.raises(MalformedReply, match="plan: duplicate key `instructions`"):
        parse_plan('{"instructions": ["a", "b"], "instructions": ["c", "d"]}', 2, node="plan", model="m")


def test_a_corrected_plan_after_a_draft_is_the_one_run() -> None:
    """A draft plan followed by a corrected one runs the correction, fenced draft or not: the first
    plan of the reply was taken, so the draft the model withdrew was carried out."""
    draft, final = '{"instructions": ["a", "b"]}', '{"instructions": ["c", "d"]}'
    for text in (
        f"Draft: {draft}\nActually, here is the final plan: {final}",
        f"```json\n{draft}\n```\nActually, here is the final plan: {final}",
        f'Draft: {draft}\nFinal: {final}\nWorkers: ["alice", "bob"]',
    ):
        assert parse_plan(text, 2, node="plan", model="m") == ["c", "d"], text


def test_the_form_echoed_before_the_plan_is_not_the_plan() -> None:
    """The form the plan prompt shows, echoed before the plan, is not handed to the workers."""
    text = 'You asked for {"instructions": ["...", "..."]}. Here: {"instructions": ["c", "d"]}'
    assert parse_plan(text, 2, node="plan", model="m") == ["c", "d"]


def test_the_form_echoed_after_the_plan_is_not_the_plan() -> None:
    """The prompt's example echoed after the plan is no plan: read as the last one, its workers
    were sent "..." to do; alone in the reply, it is malformed (retried)."""
    text = '{"instructions": ["c", "d"]}\n(in the form {"instructions": ["...", "..."]})'
    assert parse_plan(text, 2, node="plan", model="m") == ["c", "d"]
    with pytest.raises(MalformedReply, match="plan is not JSON of the form"):
        parse_plan('{"instructions": ["...", "..."]}', 2, node="plan", model="m")


def test_a_correction_that_falls_short_is_malformed() -> None:
    """A last plan with too few instructions is malformed (retried), not a fall back to the draft."""
    text = '{"instructions": ["a", "b"]} Hmm, better: {"instructions": ["c"]}'
    with pytest.raises(MalformedReply, match="plan has 1 instructions but there are 2 workers"):
        parse_plan(text, 2, node="plan", model="m")


def test_a_plan_of_no_instructions_says_so() -> None:
    """`{"instructions": []}` is refused for its count, not as a reply that holds no JSON."""
    with pytest.raises(MalformedReply, match="plan has 0 instructions but there are 2 workers"):
        parse_plan('{"instructions": []}', 2, node="plan", model="m")


@pytest.mark.parametrize(
    "hostile",
    ["[" * 100_000 + "]" * 100_000, '{"instructions": [' + "1" * 5000 + "]}"],
    ids=["deep", "digits"],
)
def test_hostile_json_is_a_malformed_plan_not_a_crash(hostile: str) -> None:
    """Nesting past the stack, or an integer past Python's digit limit, is a MalformedReply."""
    with pytest.raises(MalformedReply, match="plan is not JSON"):
        parse_plan(hostile, 2, node="plan", model="m")


def test_an_instruction_holding_a_lone_surrogate_is_malformed() -> None:
    """`\\ud800` in an instruction would fail the worker's request, blamed on the worker: the plan is malformed."""
    with pytest.raises(MalformedReply, match=r"plan: a string holds a lone UTF-16 surrogate \('\\ud800'\)"):
        parse_plan('{"instructions": ["do \\ud800 this", "b"]}', 2, node="plan", model="m")
    assert (
        parse_plan('{"instructions": ["smile \\ud83d\\ude00", "b"]}', 2, node="plan", model="m")[0]
        == "smile 😀"
    )


def test_a_list_inside_an_object_is_not_read_as_the_plan() -> None:
    """`{"notes": [...], "instructions": "todo"}` is a malformed plan: its `notes` were handed to the
    workers as their instructions, found as the first `[`...`]` span of the reply."""
    with pytest.raises(MalformedReply, match="plan is not JSON of the form"):
        parse_plan('{"notes": ["a", "b"], "instructions": "todo"}', 2, node="plan", model="m")


def test_a_plan_after_prose_full_of_links_and_braces_parses() -> None:
    """Markdown links and braced words written before the plan (40 of each) do not use up the
    openings a JSON value is looked for at."""
    prose = "".join(f"See [doc {i}](https://example.org/{i}) on {{term{i}}}. " for i in range(40))
    assert parse_plan(prose + '{"instructions": ["a", "b"]}', 2, node="plan", model="m") == ["a", "b"]


async def test_a_plan_reply_holding_a_lone_surrogate_is_retried() -> None:
    """A lone surrogate in the prose around a good plan is a MalformedReply retried, as for any
    answer: accepted, it failed the store's (and the call cache's) write of the reply."""
    replies = iter(['{"instructions": ["a", "b"]} \ud800', '{"instructions": ["a", "b"]}'])

    def answer(req: ModelRequest) -> str:
        return next(replies) if "instructions" in str(req.messages[-1]["content"]) else "done"

    topo = load_data(
        {
            "name": "h",
            "kind": "hierarchical",
            "manager": "m",
            "workers": ["m", "m"],
            "agents": {"m": {"model": "fake/m", "retry": {"max_attempts": 2, "backoff_base_s": 0.001}}},
        }
    )
    result = await topo.run("q", runner=moa.Runner(models={"fake/*": FunctionModel(answer)}))
    plan = next(c for c in result.calls if c.node == "plan")
    assert plan.attempts == 2 and plan.reply == '{"instructions": ["a", "b"]}'


async def test_workers_are_sent_the_corrected_plan() -> None:
    """In a hierarchical run, a manager that corrects its draft plan has its workers sent the
    correction's instructions, and the draft's reach no one."""
    reply = 'Draft: {"instructions": ["draft a", "draft b"]}\nActually: {"instructions": ["fix a", "fix b"]}'
    sent: list[str] = []

    def answer(req: ModelRequest) -> str:
        content = str(req.messages[-1]["content"])
        if "splitting a task" in content:
            return reply
        sent.append(content)
        return "done"

    topo = load_data(
        {
            "name": "h",
            "kind": "hierarchical",
            "manager": "m",
            "workers": ["m", "m"],
            "agents": {"m": {"model": "fake/m"}},
        }
    )
    await topo.run("q", runner=moa.Runner(models={"fake/*": FunctionModel(answer)}))
    workers = [s for s in sent if "Your manager's instruction" in s]
    assert len(workers) == 2 and all("fix " in s and "draft" not in s for s in workers), workers
