"""What a node does once its inputs are in, by kind: an agent call, a manager's plan (an agent call
whose reply must parse into one instruction per worker), or a fan-in reducer (a plain function)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from moa._run.plans import parse_plan
from moa._run.reducers import BY_ARRIVAL, REDUCERS, majority
from moa.calls.call import call_agent
from moa.errors import MalformedReply, UserError
from moa.models.base import Message
from moa.topology.graph import GraphNode
from moa.topology.prompts import format_references, quote_instruction, text_problem

if TYPE_CHECKING:
    from moa._run.engine import Execution, Refs

__all__ = ["NodeKind", "chat_messages", "kind_of", "text_problem"]


class NodeKind(Protocol):
    def execute(
        self, ex: Execution, gn: GraphNode, refs: Refs, arrival: Refs, instruction: str | None
    ) -> Awaitable[str]: ...


class Reduce:
    """A fan-in without a model: ``first`` over the inputs in arrival order, ``majority`` over them
    in input order (a tie broken by completion order would go another way on the next run)."""

    async def execute(
        self, ex: Execution, gn: GraphNode, refs: Refs, arrival: Refs, instruction: str | None
    ) -> str:
        name = gn.spec.reduce or "first"
        if name == "majority" and gn.spec.vote_on == "text" and _votes_on_typed(ex, gn):
            # JSON answers that differ in key order, whitespace or a fence are one vote
            output = majority(refs, key=ex.vote_key)
        else:
            output = REDUCERS[name](arrival if name in BY_ARRIVAL else refs, gn.spec.vote_on)
        if gn.id == ex.graph.output:
            if ex.validate_output is not None:
                # the replies it chose from were checked in their calls (``answers``): this one
                # fails only on a check that is not a function of the text alone
                ex.validate_output(output)
            if ex.on_token is not None:
                try:
                    ex.on_token(output)  # a reduce output decodes nothing: stream it whole
                except Exception as e:
                    # the caller's failure, as in a call (``CallPlan.consumer_failed``): not a
                    # model's, which a cascade would escalate and pay a later stage for
                    raise UserError(
                        f"node `{gn.id}`: the on_token callback raised {type(e).__name__}: {e}"
                    ) from e
        return output


def _votes_on_typed(ex: Execution, gn: GraphNode) -> bool:
    """Under typed output, a reduce whose inputs' replies were all checked against the schema: the
    output, or one fed only by nodes whose reply can become the output."""
    if ex.vote_key is None:
        return False
    return gn.id == ex.graph.output or all(i in ex.answers for i in gn.inputs)


class AgentCall:
    """A model call: the node's template filled with the prompt, the references and any instruction."""

    def execute(
        self, ex: Execution, gn: GraphNode, refs: Refs, arrival: Refs, instruction: str | None
    ) -> Awaitable[str]:
        """The call, to await: built here, with no coroutine level of its own between the node and
        the call (one more object per run in flight, passed by each wake-up)."""
        assert gn.agent is not None and gn.template is not None  # graph invariant for agent nodes
        # every input answered (no quorum gap): the references alone, no call to say none is missing
        references = format_references(refs) if len(refs) == len(gn.inputs) else _references(gn, refs)
        values = {"prompt": ex.prompt, "references": references}
        if instruction is not None:
            values["instruction"] = quote_instruction(instruction)
        if gn.plan_workers:
            values["workers"] = str(len(gn.plan_workers))
        content = gn.template.render(values)
        if ex.output_instruction and gn.id in ex.answers:
            content = f"{content}\n\n{ex.output_instruction}"
        return call_agent(
            ex.ctx,
            ex.runner.runtime(gn.agent),
            gn.id,
            chat_messages(gn.agent.system, ex.history, content),
            on_token=ex.on_token if gn.id == ex.graph.output else None,
            validate=self.validator(ex, gn),
        )

    def validator(self, ex: Execution, gn: GraphNode) -> Callable[[str], None] | None:
        model = gn.agent.model if gn.agent is not None else ""
        return _AnswerCheck(model, gn.id, ex.validate_output if gn.id in ex.answers else None)


def chat_messages(system: str | None, history: Sequence[Message], content: str) -> list[Message]:
    """The messages of an agent's call: one system message first (the agent's ``system``, then the
    conversation's system and ``developer`` turns, joined by a blank line), the conversation's user
    and assistant turns with consecutive turns of one role joined by a blank line, and the node's
    own prompt as the last user turn (joined to a user turn the history ends with).

    The chat templates of Llama 3, Mistral, Gemma and Qwen (vLLM, llama-server, Ollama) refuse two
    system messages, a system message after the first turn, an unknown ``developer`` role or two
    user turns in a row with an HTTP 400; the agent's system plus a chat's own made two."""
    if not history:  # a plain prompt: nothing to fold
        if not system:
            return [{"role": "user", "content": content}]
        return [{"role": "system", "content": system}, {"role": "user", "content": content}]
    systems = [system] if system else []
    turns: list[dict[str, str]] = []
    for m in history:
        role, text = m["role"], m["content"]
        if role in ("system", "developer"):
            if text.strip():
                systems.append(text)
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _joined(turns[-1]["content"], text)
        else:
            turns.append({"role": role, "content": text})
    if turns and turns[-1]["role"] == "user":
        turns[-1]["content"] = _joined(turns[-1]["content"], content)
    else:
        turns.append({"role": "user", "content": content})
    head: list[Message] = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
    return head + turns


def _joined(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first.strip() and second.strip() else first + second


def _references(gn: GraphNode, refs: Refs) -> str:
    """The node's references, numbered; under a quorum that went on without some inputs, a last
    line says how many answered and which did not, so the model reads the gap as a gap (not as
    an answer it missed) and knows how much agreement it is looking at."""
    text = format_references(refs)
    if len(refs) < len(gn.inputs):
        present = {i for i, _ in refs}
        missing = ", ".join(i for i in gn.inputs if i not in present)
        text += (
            f"\n\n({len(refs)} of the {len(gn.inputs)} responses asked for are above; none from: {missing}.)"
        )
    return text


class _AnswerCheck:
    """An answer's check: not empty, then the run's own check if the reply can be the output. One
    object, where a closure is a function, a tuple and a cell per name, alive as long as the call."""

    __slots__ = ("check", "model", "node")

    def __init__(self, model: str, node: str, check: Callable[[str], None] | None) -> None:
        self.model, self.node, self.check = model, node, check

    def __call__(self, text: str) -> None:
        # an empty reply answers nothing: as an answer it would win a `first` fan-in, count
        # toward a quorum, or be the run's output; retried like any malformed reply instead
        if not text.strip():
            raise MalformedReply("the reply is empty", model=self.model, node=self.node)
        # the next node's request, the store and `--json` could not encode it: retried like any
        # malformed reply, blamed on the node that wrote it
        # ASCII holds no surrogate: the common reply skips the search (a call per reply)
        if not text.isascii() and (problem := text_problem(text)):
            raise MalformedReply(f"the reply {problem}", model=self.model, node=self.node)
        if self.check is not None:
            self.check(text)


class Plan(AgentCall):
    """A manager's call whose reply is read as one instruction per worker (a reply that does not
    parse is a ``MalformedReply``, retried like any other). Plans feed workers, so they are never
    the output."""

    def validator(self, ex: Execution, gn: GraphNode) -> Callable[[str], None] | None:
        n, model = len(gn.plan_workers), gn.agent.model if gn.agent is not None else ""

        def validate(text: str) -> None:
            ex.plans[gn.id] = parse_plan(text, n, node=gn.id, model=model)

        # a lone surrogate in the prose around the plan reaches the store and `--json` all the same
        return _AnswerCheck(model, gn.id, validate)


_REDUCE, _CALL, _PLAN = Reduce(), AgentCall(), Plan()


def kind_of(gn: GraphNode) -> NodeKind:
    if gn.agent is None:
        return _REDUCE
    return _PLAN if gn.plan_workers else _CALL
