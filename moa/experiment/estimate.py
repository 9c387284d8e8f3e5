"""What the runs a dry run counts would cost, as bounds (``moa compare --dry-run``): nothing is sent,
so every number comes from the items' real prompts, the topologies and the prices a run's cost
records use (``moa.calls.pricing``: an agent's ``pricing`` first, then litellm's offline map).

For each call of a run:

* high: what the budget holds for one attempt at it (``held_usd``, the budget's own function), once,
  at the dearest model of the agent's chain (its model, then its ``fallbacks``; ``chain_prices``,
  as a run resolves them): the prompt at the budget's ceiling (``prompt_token_ceiling`` of
  ``prompt_token_bound``: no byte-level tokenizer uses more tokens than UTF-8 bytes, plus the chat
  template's few a message; a provider's count up to twice that plus 1024 is believed and booked),
  each answer it reads (a predecessor's, a manager's instruction, a conversation's earlier answers,
  the answers a judge compares) counted in that bound at that answer's ``max_tokens``, its own
  answer at its ``max_tokens`` (times ``n``), every prompt token at the dearest of the input and
  cache-write rates, at the dearest tier that may serve it. That bounds a run in which no attempt
  fails after it was sent: an HTTP error status is billed nothing, so its retries and fallbacks
  stay within it, and a budget that leaves at least the high refuses no call (one reading answers:
  see below). An agent without
  ``max_tokens`` has no upper bound, except under a budget, where moa sends
  ``BUDGET_DEFAULT_MAX_TOKENS`` for it;
* retried: every attempt failing after it was sent (a timeout, a reply broken or rejected: the
  budget books each at its hold) and retried, ``retry.max_attempts`` at each model of the chain;
* low: the prompt's own text at ``CHARS_PER_TOKEN`` characters a token (OpenAI's documented rule of
  thumb for English), every answer read empty and none written, at the agent's own model's input
  rate with no cache discount: what the prompts alone cost, an estimate of the least rather than a
  proof.

An answer read is counted at its ``max_tokens`` in tokens; a run's hold counts its UTF-8 bytes, which
are unknown before it is written (for English, about 4 a token), so a call reading long answers
holds more than the high counts for it, and books it only when its usage is unknown.

A judge with ``show_execution`` is shown each answer's execution result on an item with tests or a
page: the high counts each at ``EXECUTION_SHOWN_BYTES``, the cap of what the judge is shown (a byte
a token at most), the low counts them empty.

The answers a resume has stored and the judge has still to compare (``StoredPair``, read from the
store by the caller) are priced from the judge prompts they make, their text in them, high and low.

A cascade's low is its first stage alone (it may answer), its high every stage (one that ``reuse``s
reading the earlier stages' answers) and every rater (reading the question and its stage's answer).
The tokenizers are not used: litellm's counter imports litellm (seconds) and may fetch a tokenizer,
and a dry run fetches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from moa._run.nodes import chat_messages
from moa.calls.attempt import BUDGET_DEFAULT_MAX_TOKENS, CallPlan, held_usd, prompt_token_bound
from moa.calls.call import chain_prices, requested_choices
from moa.calls.pricing import Price
from moa.cascade.confidence import confidence_prompt
from moa.cascade.execute import with_earlier
from moa.cascade.rules import Judge
from moa.eval.datasets import Item
from moa.eval.execution import can_execute
from moa.eval.judge import (
    EXECUTION_SHOWN_BYTES,
    format_conversation_prompt,
    format_judge_prompt,
    item_references,
)
from moa.models.base import Message
from moa.results import Usage
from moa.topology.graph import Graph
from moa.topology.prompts import format_references
from moa.topology.spec import AgentSpec

__all__ = [
    "CHARS_PER_TOKEN",
    "ESTIMATE_ITEMS",
    "Cost",
    "Estimator",
    "Priced",
    "StoredPair",
    "price_runs",
    "spaced_indices",
]

_K = TypeVar("_K")

#: the characters a token of English text is, on average (OpenAI's "one token is about 4 characters")
CHARS_PER_TOKEN = 4
#: the distinct items a setup's estimate reads at most; past it, evenly spaced items, scaled
ESTIMATE_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class Cost:
    """USD bounds of some calls: ``high`` each call once, ``retried`` every attempt it may make
    (None: some call has no upper bound); the models priced at 0 because nothing prices them, and
    the agents (by model) that set no ``max_tokens``."""

    low: float = 0.0
    high: float | None = 0.0
    unpriced: frozenset[str] = field(default=frozenset())
    unbounded: frozenset[str] = field(default=frozenset())
    retried: float | None = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.low + other.low,
            _fplus(self.high, other.high),
            self.unpriced | other.unpriced,
            self.unbounded | other.unbounded,
            _fplus(self.retried, other.retried),
        )

    def times(self, k: float) -> Cost:
        return Cost(
            self.low * k,
            None if self.high is None else self.high * k,
            self.unpriced,
            self.unbounded,
            None if self.retried is None else self.retried * k,
        )


def _fplus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


@dataclass(frozen=True, slots=True)
class _Prompt:
    """What a call's user turn is built from: the text, and the tokens of answers it holds at most
    (None: an answer without a bound)."""

    text: str
    extra: int | None = 0


def _plus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _times(k: int, a: int | None) -> int | None:
    return None if a is None else k * a


class Estimator:
    """Prices runs of topologies on items; ``budgeted``: the run has a budget, which sends
    ``BUDGET_DEFAULT_MAX_TOKENS`` for an agent without ``max_tokens``. ``is_local(model)``: the
    run's backend for ``model`` is the embedded one (priced 0, as the run prices it)."""

    def __init__(
        self, *, budgeted: bool, is_local: Callable[[str], bool], shows_execution: bool = False
    ) -> None:
        self.budgeted = budgeted
        self.is_local = is_local
        #: the judge is shown each answer's execution result (``show_execution``)
        self.shows_execution = shows_execution
        self.local: set[str] = set()
        self._prices: dict[int, tuple[AgentSpec, tuple[tuple[Price, tuple[Price, ...]], ...]]] = {}

    def price(self, agent: AgentSpec) -> tuple[tuple[Price, tuple[Price, ...]], ...]:
        """The prices a run's cost records bill each model of ``agent``'s chain at (its model, then
        its fallbacks; ``chain_prices``, as the run resolves them), each with the other tiers a
        reply may be billed at."""
        hit = self._prices.get(id(agent))
        # the agent kept with its prices: an id is reused once its object is gone
        if hit is not None and hit[0] is agent:
            return hit[1]
        local = [self.is_local(m) for m in (agent.model, *agent.fallbacks)]
        self.local.update(m for m, here in zip((agent.model, *agent.fallbacks), local, strict=True) if here)
        prices = chain_prices(agent, local)
        self._prices[id(agent)] = (agent, prices)
        return prices

    def cap(self, agent: AgentSpec) -> int | None:
        """The completion tokens one answer of ``agent`` may take, as a run sends its request."""
        if agent.max_tokens is not None:
            return agent.max_tokens
        return BUDGET_DEFAULT_MAX_TOKENS if self.budgeted else None

    # -- one graph, one prompt ----------------------------------------------------------------

    def graph(
        self, graph: Graph, prompt: _Prompt, history: Sequence[Message] = (), said: int | None = 0
    ) -> tuple[Cost, int | None]:
        """One run of ``graph`` on ``prompt`` after ``history`` (whose answers, read by every call,
        hold at most ``said`` tokens): its cost and the most tokens its answer can be."""
        cost, out = self._graph(graph, prompt, history, said)
        return cost, out[graph.output]

    def _graph(
        self, graph: Graph, prompt: _Prompt, history: Sequence[Message], said: int | None
    ) -> tuple[Cost, dict[str, int | None]]:
        out: dict[str, int | None] = {}
        total = Cost()
        for nid in graph.order:
            gn = graph.nodes[nid]
            if gn.agent is None or gn.template is None:  # a reducer: one of its inputs' answers
                bounds = [out[i] for i in gn.inputs]
                out[nid] = None if None in bounds else max((b or 0 for b in bounds), default=0)
                continue
            names = gn.template.names
            values = {
                "prompt": prompt.text,
                "references": format_references([(i, "") for i in gn.inputs]),
                "workers": str(len(gn.plan_workers)),
            }
            extra = said
            if "prompt" in names:
                extra = _plus(extra, _times(names.count("prompt"), prompt.extra))
            if "references" in names:
                refs: int | None = 0
                for i in gn.inputs:
                    refs = _plus(refs, out[i])
                extra = _plus(extra, _times(names.count("references"), refs))
            src = gn.spec.instruction_from
            if src is not None and "instruction" in names:
                # one instruction of the plan: at most the manager's whole answer
                extra = _plus(extra, _times(names.count("instruction"), out[src]))
            messages = chat_messages(gn.agent.system, history, gn.template.render(values))
            total += self._call(gn.agent, messages, extra)
            out[nid] = self.cap(gn.agent)
        return total, out

    def _call(self, agent: AgentSpec, messages: Sequence[Message], extra: int | None) -> Cost:
        chain = self.price(agent)
        models = (agent.model, *agent.fallbacks)
        unpriced = frozenset(m for m, (p, _) in zip(models, chain, strict=True) if not p.known)
        chars = sum(len(m.get("content", "")) for m in messages)
        low = chain[0][0].cost(Usage(prompt_tokens=-(-chars // CHARS_PER_TOKEN)))
        cap = self.cap(agent)
        if cap is None:
            return Cost(low, None, unpriced, frozenset({agent.model}), None)
        if extra is None:  # it reads an answer without a bound
            return Cost(low, None, unpriced, retried=None)
        # the call as a run plans it: the budget's hold of one attempt at each model of the chain
        # (the prompt's ceiling, every answer at max_tokens, the dearest tier that may serve it)
        plan = CallPlan(
            "",
            messages,
            cap,
            prompt_token_bound(messages) + extra,
            None,
            None,
            requested_choices(agent.params),
        )
        holds = [held_usd(plan, price, others) for price, others in chain]
        # one attempt billed, at the dearest model that may answer it; or every attempt of each
        return Cost(low, max(holds), unpriced, retried=agent.retry.max_attempts * sum(holds))

    def target(
        self, target: Any, prompt: _Prompt, history: Sequence[Message] = (), said: int | None = 0
    ) -> tuple[Cost, int | None]:
        """One run of a topology or a cascade: its cost and its answer's bound."""
        stages = getattr(target, "stage_list", None)
        if stages is None:
            return self.graph(target.graph, prompt, history, said)
        return self._cascade(stages, prompt, history, said)

    def _cascade(
        self, stages: Sequence[Any], prompt: _Prompt, history: Sequence[Message], said: int | None
    ) -> tuple[Cost, int | None]:
        """A cascade's least is its first stage's (it may answer alone), its most every stage's and
        every rater's: a stage that ``reuse``s reads the earlier stages' answers appended to the
        prompt (``with_earlier``), a rater the question and the stage's answer
        (``confidence_prompt``)."""
        total: Cost | None = None
        least = 0.0
        answer: int | None = 0
        earlier: list[int | None] = []  # the answers a stage hands on, by their bounds
        for stage in stages:
            text, extra = prompt.text, prompt.extra
            if stage.reuse and earlier:
                text = str(with_earlier(text, [""] * len(earlier)))
                for bound in earlier:
                    extra = _plus(extra, bound)
            cost, out = self._graph(stage.topology.graph, _Prompt(text, extra), history, said)
            least = cost.low if total is None else least
            total = cost if total is None else total + cost
            output = out[stage.topology.graph.output]
            answer = None if output is None or answer is None else max(answer, output)
            earlier += [out[nid] for nid in stage.samples] if stage.samples else [output]
            if isinstance(stage.rule, Judge):
                rated = _Prompt(confidence_prompt(prompt.text, ""), _plus(prompt.extra, output))
                total += self.graph(stage.rule.topology.graph, rated)[0]
        assert total is not None  # a cascade has a stage
        return Cost(least, total.high, total.unpriced, total.unbounded, total.retried), answer

    # -- a setup's run, and a judge's verdicts -------------------------------------------------

    def run(self, target: Any, item: Item) -> tuple[Cost, int | None]:
        """One run of a setup's ``target`` on ``item`` (every turn of a conversation, each after the
        earlier turns and the setup's own earlier answers): its cost and its answer's bound."""
        turns = item.turns if item.turns and len(item.turns) > 1 else None
        if turns is None:
            return self.target(target, _Prompt(item.input))
        total = Cost()
        history: list[Message] = []
        said: int | None = 0
        best: int | None = 0
        for question in turns:
            cost, answer_ = self.target(target, _Prompt(question), history, said)
            total += cost
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
            said = _plus(said, answer_)
            best = None if answer_ is None or best is None else max(best, answer_)
        return total, best

    def verdicts(self, judge: Any, item: Item, answer: int | None, baseline: int | None) -> Cost:
        """The judge's two verdicts (both orders) on each turn of ``item``: a setup's answer of at
        most ``answer`` tokens against the baseline's of at most ``baseline``."""
        pair = _plus(answer, baseline)
        refs = item_references(item)
        turns = item.turns if item.turns and len(item.turns) > 1 else None
        if turns is None:
            text = format_judge_prompt(item.input, "", "", reference=refs[0] if refs else None)
            return self.target(judge, _Prompt(text, _plus(pair, self._shown(item))))[0].times(2)
        total = Cost()
        for k in range(1, len(turns) + 1):
            text = format_conversation_prompt(turns[:k], [""] * k, [""] * k, references=refs)
            total += self.target(judge, _Prompt(text, _times(k, pair)))[0].times(2)
        return total

    def _shown(self, item: Item) -> int:
        """The tokens the two execution results a judge is shown on ``item`` add at most (high;
        the low counts them empty): each result's block at ``EXECUTION_SHOWN_BYTES``."""
        if not (self.shows_execution and can_execute(item)):
            return 0
        empty = len(format_judge_prompt("", "", "").encode())
        blocks = len(format_judge_prompt("", "", "", execution_a="x", execution_b="x").encode()) - empty
        return blocks - 2 + 2 * EXECUTION_SHOWN_BYTES

    def stored_verdicts(self, judge: Any, pair: StoredPair, baseline: int | None) -> Cost:
        """The judge's two verdicts on each turn of a stored answer, from the prompts it will be
        sent: the stored answers in them, the baseline's at most ``baseline`` tokens when it is
        not stored yet (its run is still to do)."""
        item, answers = pair.item, list(pair.answers)
        base = list(pair.baseline) if pair.baseline is not None else [""] * len(answers)
        extra = 0 if pair.baseline is not None else baseline
        refs = item_references(item)
        if len(answers) < 2:
            text = format_judge_prompt(
                item.input,
                answers[0] if answers else "",
                base[0] if base else "",
                reference=refs[0] if refs else None,
            )
            return self.target(judge, _Prompt(text, _plus(extra, self._shown(item))))[0].times(2)
        turns = item.turns or [item.input]
        total = Cost()
        for k in range(1, len(answers) + 1):
            text = format_conversation_prompt(turns[:k], answers[:k], base[:k], references=refs)
            total += self.target(judge, _Prompt(text, _times(k, extra)))[0].times(2)
        return total


@dataclass(frozen=True, slots=True)
class StoredPair:
    """A stored answer the judge has still to compare with the baseline's: its item, its text (one
    per turn), and the baseline's stored text on the same item and sample (None: not stored yet)."""

    item: Item
    answers: tuple[str, ...]
    baseline: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Priced:
    """The runs to do priced: each setup's by name, the judge's verdicts on them (and on the stored
    answers it has still to judge), and the items read for it: ``read`` of ``of`` (fewer when
    evenly spaced items stood for the rest, scaled)."""

    setups: Mapping[str, Cost]
    judge: Cost
    read: int
    of: int


def price_runs(
    est: Estimator,
    setups: Sequence[tuple[str, Any, bool, Sequence[Item]]],
    *,
    judge: Any | None,
    stored: Sequence[StoredPair] = (),
    stored_turns: int = 0,
    items: Sequence[Item],
    limit: int = ESTIMATE_ITEMS,
) -> Priced:
    """``setups``: (name, topology, is the baseline, the item of each run to do); ``stored``: the
    stored answers the judge has still to compare with the baseline's (at most ``limit``, evenly
    spaced, standing for all ``stored_turns`` of their turns)."""
    bound: dict[str, int | None] = {}
    costs: dict[str, Cost] = {}
    chosen: dict[str, set[str]] = {}
    for name, target, _, runs in setups:
        # each setup's own sample: on a resume, setups may have different items left
        chosen[name] = _spaced(list(dict.fromkeys(i.id for i in runs)), limit)
        costs[name] = _scaled(runs, chosen[name], partial(_run_cost, est, target))
        # an answer's bound depends on the graph alone, not the item
        bound[name] = est.run(target, items[0])[1] if items else 0
    judged = Cost()
    if judge is not None:
        base = next((bound[name] for name, _, is_base, _ in setups if is_base), 0)
        for name, _, is_base, runs in setups:
            if is_base:
                continue
            verdicts = partial(_verdicts, est, judge, answer=bound[name], baseline=base)
            judged += _scaled(runs, chosen[name], verdicts)
        if stored:
            # read from the store (evenly spaced ones when many, scaled to every stored turn)
            cost = Cost()
            for pair in stored:
                cost += est.stored_verdicts(judge, pair, base)
            turns = sum(len(p.answers) or 1 for p in stored)
            judged += cost.times(stored_turns / turns) if turns and stored_turns > turns else cost
    read = set().union(*chosen.values()) if chosen else set()
    return Priced(costs, judged, len(read), len({i.id for _, _, _, runs in setups for i in runs}))


def _run_cost(est: Estimator, target: Any, item: Item) -> Cost:
    return est.run(target, item)[0]


def _verdicts(est: Estimator, judge: Any, item: Item, *, answer: int | None, baseline: int | None) -> Cost:
    return est.verdicts(judge, item, answer, baseline)


def _scaled(runs: Sequence[Item], chosen: set[str], price: Callable[[Item], Cost]) -> Cost:
    """The runs of the ``chosen`` items priced (each item once, however many samples it has), scaled
    up to every run when the others were left out."""
    seen: dict[str, Cost] = {}
    cost, read = Cost(), 0
    for item in runs:
        if item.id in chosen:
            if item.id not in seen:
                seen[item.id] = price(item)
            cost += seen[item.id]
            read += 1
    return cost.times(len(runs) / read) if read and read < len(runs) else cost


def _spaced(keys: Sequence[_K], limit: int) -> set[_K]:
    """``keys`` if ``limit`` or fewer, else ``limit`` of them evenly spaced (the first included)."""
    return {keys[k] for k in spaced_indices(len(keys), limit)}


def spaced_indices(n: int, limit: int) -> set[int]:
    """The indices of ``n`` things if ``limit`` or fewer, else ``limit`` of them evenly spaced (the
    first included)."""
    if n <= limit:
        return set(range(n))
    return {k * n // limit for k in range(limit)}
