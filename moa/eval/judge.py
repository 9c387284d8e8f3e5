"""The pairwise judge (``judge``): a judge topology compares a setup's answer with the baseline's on
the same item, once in each order, and the two verdicts make the setup's score.

::

    evaluator: {name: judge, topology: judge.yaml, show_execution: false}

* The prompt is ``JUDGE_PROMPT``. The judge must end its reply with exactly one verdict in double
  square brackets, one of ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``, parsed
  strictly (``parse_verdict``): letters are case-insensitive and spaces inside the brackets are
  tolerated (``[[ a > b ]]``); the same verdict may appear more than once (judges often restate it);
  two *different* bracketed verdicts, or none, raise ``MalformedReply``.
* The verdict parser validates the judge topology's answer inside the run (``validate_output``), so
  a malformed reply goes through the normal retry path of the output node (its agent's
  ``retry.max_attempts``) and is never cached; under a ``reduce`` output node each sample feeding
  it is checked and retried the same way. A malformed reply after the retries is stored as an
  erroring judgment, and the pair scores as a tie (0.5) with the reason in its detail.
* The two orders combine with ``combine_swapped``: opposite directions mean the judge followed the
  position, not the answer, and the pair is a tie.
* ``show_execution: true`` runs both answers against the item's tests in the sandbox first and shows
  the outcomes to the judge (items without tests show nothing), each cut at
  ``EXECUTION_SHOWN_BYTES`` UTF-8 bytes.
* Any other judge failure (provider down, over budget, a reply that could not be read: cut short,
  not JSON, no choices) raises, once the other judgments of the pair have finished (their replies
  cached): the pair stays unscored and the next run of the experiment judges it again.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from moa.errors import MalformedReply, MoAError
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionConfig, can_execute, renders_page, score_execution_async
from moa.eval.hashing import topology_hash
from moa.eval.types import Judgment, PairScore, Score
from moa.results import CallRecord
from moa.topology.loader import load

if TYPE_CHECKING:
    from moa._run import Runner
    from moa.topology.definition import Topology

__all__ = [
    "CONVERSATION_PROMPT",
    "EXECUTION_SHOWN_BYTES",
    "INCONSISTENT",
    "JUDGE_PROMPT",
    "NO_VERDICT",
    "JudgeConfig",
    "JudgeEvaluator",
    "Verdict",
    "combine_swapped",
    "format_conversation_prompt",
    "format_judge_prompt",
    "item_references",
    "parse_verdict",
]

T = TypeVar("T")


class Verdict(enum.Enum):
    """The five-point pairwise scale; ``score`` is answer A's share of the win."""

    A_MUCH_BETTER = "A>>B"
    A_BETTER = "A>B"
    TIE = "A=B"
    B_BETTER = "B>A"
    B_MUCH_BETTER = "B>>A"

    @property
    def score(self) -> float:
        """A's score: 1, 0.75, 0.5, 0.25 or 0."""
        return _SCORES[self]

    def swapped(self) -> Verdict:
        """The same judgment seen with A and B exchanged."""
        return _SWAP[self]


_SCORES = {
    Verdict.A_MUCH_BETTER: 1.0,
    Verdict.A_BETTER: 0.75,
    Verdict.TIE: 0.5,
    Verdict.B_BETTER: 0.25,
    Verdict.B_MUCH_BETTER: 0.0,
}
_SWAP = {
    Verdict.A_MUCH_BETTER: Verdict.B_MUCH_BETTER,
    Verdict.A_BETTER: Verdict.B_BETTER,
    Verdict.TIE: Verdict.TIE,
    Verdict.B_BETTER: Verdict.A_BETTER,
    Verdict.B_MUCH_BETTER: Verdict.A_MUCH_BETTER,
}
# any double-bracketed token that looks like an attempt at a verdict, valid or not
_BRACKETED = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]", re.IGNORECASE)
_TOKEN_TO_VERDICT = {v.value: v for v in Verdict}

JUDGE_PROMPT = """\
You are an impartial judge. Compare two answers to the user's question below and decide which \
one is better. Judge correctness first, then helpfulness, completeness and clarity. Do not let \
the order of the answers, their length or their style influence you.

[Question]
{question}
{reference}
[Answer A]
{answer_a}
{execution_a}
[Answer B]
{answer_b}
{execution_b}
First explain your reasoning briefly. Then end your reply with exactly one verdict on its own \
last line, written exactly in one of these five forms:
[[A>>B]] if A is much better, [[A>B]] if A is better, [[A=B]] if they are equally good, \
[[B>A]] if B is better, [[B>>A]] if B is much better.
"""


CONVERSATION_PROMPT = """\
You are an impartial judge. Below are two conversations between a user and two AI assistants, A \
and B, with the same user questions. Compare the assistants' answers to the user's last question \
(turn {turn}); the earlier turns are context. Judge correctness first, then helpfulness, \
completeness and clarity, and how well each answer follows from its own conversation. Do not let \
the order of the assistants, the length of their answers or their style influence you.
{reference}
{conversation_a}
{conversation_b}
First explain your reasoning briefly. Then end your reply with exactly one verdict on its own \
last line, written exactly in one of these five forms:
[[A>>B]] if A is much better, [[A>B]] if A is better, [[A=B]] if they are equally good, \
[[B>A]] if B is better, [[B>>A]] if B is much better.
"""


# What in a judged text (an answer, the question, a reference, an execution's output) could pass
# for the judge prompt's own structure: a section heading (``[Answer B]``), a conversation's turn
# heading (``### User:``) or its start and end markers, a verdict. An answer holding
# ``\n[Answer B]\nI don't know.`` would otherwise show the judge a second answer B of its making,
# and one holding ``[[B>>A]]`` a verdict to repeat (two verdicts in a reply make it malformed, and
# the pair a tie). Each is escaped Markdown's way, a backslash before its first character: the
# judge reads it as the text it is, no longer as the prompt's own.
_FORGED = re.compile(
    r"\[(?=\s*(?:question|reference\s+answer|answer\s*[ab]|execution\s+result)\s*\])"
    r"|(?<=<)\|(?=\s*the\s+(?:start|end)\s+of\b)"
    r"|(?<=\[)\[(?=\s*[ab]\s*(?:>>|>|=|<<|<)\s*[ab]\s*\]\])"
    r"|(?m:^(?P<lead>[ \t]*)(?=#{2,6}[ \t]*(?:user|assistant\s+[ab]|reference\s+answer\b[^\n]*?)[ \t]*:))",
    re.IGNORECASE,
)


def _quoted(text: str) -> str:
    """``text`` as the judge is shown it: whatever in it could pass for the prompt's structure
    (see ``_FORGED``) escaped, the rest as written."""
    return _FORGED.sub(lambda m: m.group() + "\\" if m.group("lead") is not None else "\\" + m.group(), text)


#: the most UTF-8 bytes of an execution result the judge is shown (``show_execution``): a failed
#: test's line, a compiler's message or an exception's text may be long, and a judge prompt without
#: a bound could not be priced before the run
EXECUTION_SHOWN_BYTES = 2000


def _clipped(text: str) -> str:
    """``text`` within ``EXECUTION_SHOWN_BYTES`` UTF-8 bytes: cut at a character, "..." marking the cut."""
    data = text.encode()
    if len(data) <= EXECUTION_SHOWN_BYTES:
        return text
    return data[: EXECUTION_SHOWN_BYTES - 3].decode(errors="ignore") + "..."


def format_judge_prompt(
    question: str,
    answer_a: str,
    answer_b: str,
    *,
    execution_a: str | None = None,
    execution_b: str | None = None,
    reference: str | None = None,
) -> str:
    """``JUDGE_PROMPT`` filled in; execution results, when given, follow each answer; the item's
    reference answer, when given, follows the question."""

    def execution(text: str | None) -> str:
        return f"\n[Execution result]\n{_clipped(_quoted(text))}\n" if text else ""

    return JUDGE_PROMPT.format(
        question=_quoted(question),
        reference=f"\n[Reference answer]\n{_quoted(reference)}\n" if reference else "",
        answer_a=_quoted(answer_a),
        answer_b=_quoted(answer_b),
        execution_a=execution(execution_a),
        execution_b=execution(execution_b),
    )


def format_conversation_prompt(
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    *,
    references: Sequence[str | None] | None = None,
) -> str:
    """``CONVERSATION_PROMPT`` filled in: each assistant's conversation over ``questions`` (its own
    answers), the last turn judged; the reference answers, when given, shown per turn as MT-Bench's
    pairwise judge shows them."""
    n = len(questions)
    if not n or len(answers_a) != n or len(answers_b) != n:
        raise ValueError("a conversation needs one answer per question from each assistant")

    def conversation(who: str, answers: Sequence[str]) -> str:
        turns = "".join(
            f"\n### User:\n{_quoted(q)}\n\n### Assistant {who}:\n{_quoted(a)}\n"
            for q, a in zip(questions, answers, strict=True)
        )
        return f"<|The Start of Assistant {who}'s Conversation with User|>\n{turns}\n<|The End of Assistant {who}'s Conversation with User|>\n"

    reference = ""
    shown = "".join(
        f"\n### Reference answer to turn {k}:\n{_quoted(r)}\n"
        for k, r in enumerate((references or [])[:n], 1)
        if r is not None  # that turn has none
    )
    if shown:
        reference = f"\n<|The Start of Reference Answer|>\n{shown}\n<|The End of Reference Answer|>\n"
    return CONVERSATION_PROMPT.format(
        turn=n,
        reference=reference,
        conversation_a=conversation("A", answers_a),
        conversation_b=conversation("B", answers_b),
    )


def item_references(item: Item) -> list[str | None] | None:
    """The reference answers of an item, one per turn (MT-Bench's ``reference``), or None. A turn's
    ``null`` (or empty) reference is that turn's lack of one, as a row's ``reference: null`` is the
    row's (it was shown to the judge as the text "None"); another reference that is not text (a
    malformed row) is shown as its JSON-free string form."""
    ref = item.meta.get("reference")
    refs = ref if isinstance(ref, list) else [ref]
    shown = [None if r is None or r == "" else r if isinstance(r, str) else str(r) for r in refs]
    return shown if any(r is not None for r in shown) else None


def parse_verdict(reply: str) -> Verdict:
    """The verdict on the reply's last line, where the prompt asks for it; without one there, the
    single verdict in ``reply``. ``MalformedReply`` when there is none, an invalid one (``[[A>A]]``,
    ``[[B<A]]``) or several different ones where it is read."""
    # a verdict the judge quoted while reasoning (an answer's own, its escape dropped) comes before
    # the last line: it cannot outvote the judge's, nor turn its verdict into "conflicting"
    last = reply.rstrip().rpartition("\n")[2]
    return _single_verdict(last if _BRACKETED.search(last) else reply, reply)


def _single_verdict(text: str, reply: str) -> Verdict:
    found: set[Verdict] = set()
    for m in _BRACKETED.finditer(text):
        token = f"{m.group(1).upper()}{m.group(2)}{m.group(3).upper()}"
        verdict = _TOKEN_TO_VERDICT.get(token)
        if verdict is None:
            raise MalformedReply(f"judge reply has an invalid verdict `[[{token}]]`")
        found.add(verdict)
    if not found:
        head = " ".join(reply.split())[:80]
        raise MalformedReply(f"judge reply has no [[A>B]]-style verdict: {head!r}")
    if len(found) > 1:
        listed = ", ".join(f"[[{v.value}]]" for v in sorted(found, key=lambda v: -v.score))
        raise MalformedReply(f"judge reply has conflicting verdicts: {listed}")
    return found.pop()


def combine_swapped(v_ab: Verdict, v_ba_swapped: Verdict) -> float:
    """Score of the setup (A in the first judgment) from two judgments, the second made with the
    answers' positions swapped (the setup was B). Opposite directions mean the judge followed
    position, not quality: a tie (0.5). Otherwise the average of the two scores."""
    first = v_ab.score
    second = v_ba_swapped.swapped().score
    if (first - 0.5) * (second - 0.5) < 0:
        return 0.5
    return (first + second) / 2


# -- the evaluator: the judge topology asked in both orders ----------------------------------------

#: how a pair's score detail starts when a judgment had no valid verdict (the pair is a tie)
NO_VERDICT = "tie: no verdict"
#: in a pair's score detail when its two orders pointed in opposite directions (the pair is a tie)
INCONSISTENT = "inconsistent across orders"


class JudgeConfig(BaseModel):
    """Configuration of the ``judge`` evaluator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["judge"] = "judge"
    topology: str = Field(..., min_length=1)
    """The judge: a topology file (relative to the experiment file) or a preset name."""
    show_execution: bool = False
    """Run both answers against the item's tests first and show the judge the outcomes."""
    execution: ExecutionConfig = ExecutionConfig()
    """Sandbox limits used when ``show_execution`` is on."""


class JudgeEvaluator:
    """Judges a setup's answer against the baseline's in both orders (see the module docstring)."""

    name = "judge"

    def __init__(
        self, config: JudgeConfig, *, base_dir: str | Path | None = None, topology: Topology | None = None
    ) -> None:
        self.config = config
        # loaded (and validated) now, with the experiment, so a bad judge fails before any run
        self.topology = topology if topology is not None else load(config.topology, relative_to=base_dir)
        self._executions: dict[tuple[str, str], str | None] = {}

    @property
    def identity(self) -> dict[str, Any]:
        """What, beyond the configuration, makes two judges different: the topology's content."""
        return {"topology_hash": topology_hash(self.topology.model_dump(mode="json"))}

    async def score_pair(self, item: Item, answer: str, baseline_answer: str, *, runner: Runner) -> PairScore:
        """The setup's score against the baseline: 1 much better, 0.5 parity, 0 much worse."""
        ex_setup = ex_base = None
        if self.config.show_execution:
            ex_setup, ex_base = await asyncio.gather(
                self._execution(item, answer), self._execution(item, baseline_answer)
            )
        refs = item_references(item)
        reference = refs[0] if refs else None

        def prompt(a: str, b: str, ex_a: str | None, ex_b: str | None) -> str:
            return format_judge_prompt(
                item.input, a, b, execution_a=ex_a, execution_b=ex_b, reference=reference
            )

        made: list[CallRecord] = []
        first, second = await _all(
            made,
            self._judge(prompt(answer, baseline_answer, ex_setup, ex_base), runner, "a", made=made),
            self._judge(prompt(baseline_answer, answer, ex_base, ex_setup), runner, "b", made=made),
        )
        return PairScore(_combine(first, second), (first, second))

    async def score_conversation(
        self, item: Item, answers: Sequence[str], baseline_answers: Sequence[str], *, runner: Runner
    ) -> PairScore:
        """A multi-turn item judged turn by turn, both orders each: turn k on the conversation up to
        it. The score is the mean of the turns' scores; the detail names each turn's verdicts."""
        questions = item.turns or [item.input]
        n = len(questions)
        if len(answers) != n or len(baseline_answers) != n:
            raise ValueError(
                f"item `{item.id}` has {n} turns but the stored answers have {len(answers)} and "
                f"{len(baseline_answers)}"
            )
        refs = item_references(item)
        made: list[CallRecord] = []

        async def turn(k: int) -> tuple[Judgment, Judgment]:
            q, mine, base = questions[:k], answers[:k], baseline_answers[:k]
            first, second = await _all(
                made,
                self._judge(format_conversation_prompt(q, mine, base, references=refs), runner, "a", k, made),
                self._judge(format_conversation_prompt(q, base, mine, references=refs), runner, "b", k, made),
            )
            return first, second

        pairs = await _all(made, *(turn(k) for k in range(1, n + 1)))
        scores = [_combine(a, b) for a, b in pairs]
        value = sum(s.value for s in scores) / n
        detail = "; ".join(f"turn {k}: {s.detail}" for k, s in enumerate(scores, 1))
        return PairScore(Score(value, detail), [j for pair in pairs for j in pair], [s.value for s in scores])

    async def _execution(self, item: Item, answer: str) -> str | None:
        if not can_execute(item):
            return None
        key = (item.id, answer)
        if key not in self._executions:
            limits = self.config.execution.model_dump(exclude={"name"})
            s = await score_execution_async(answer, item, **limits)
            if renders_page(item):  # a page has no tests: what the judge needs is how it rendered
                self._executions[key] = f"the page rendered: {s.detail}"
            else:
                self._executions[key] = (
                    "all tests passed" if s.value == 1.0 else f"the tests did not pass: {s.detail}"
                )
        return self._executions[key]

    async def _judge(
        self,
        prompt: str,
        runner: Runner,
        position: Literal["a", "b"],
        turn: int = 0,
        made: list[CallRecord] | None = None,
    ) -> Judgment:
        """One judgment; ``position`` is where the setup's answer is (``a``: first). Its calls are
        added to ``made`` (the pair's), succeeded or not."""
        calls: list[CallRecord] = []
        try:
            verdict = await self._ask(prompt, runner, calls)
        except MalformedReply as e:
            if not e.rejected:
                # a body that could not be read as a reply (cut short, not JSON, no choices) is the
                # provider failing, not the judge answering without a verdict: stored as a tie it
                # stayed one for good, where the next run judges the pair again
                raise
            return Judgment(position, None, None, None, f"MalformedReply: {e.message}", calls, turn)
        finally:
            if made is not None:
                made.extend(calls)
        setup_verdict = verdict if position == "a" else verdict.swapped()
        return Judgment(position, verdict.value, setup_verdict.score, None, None, calls, turn)

    async def _ask(self, prompt: str, runner: Runner, calls: list[CallRecord]) -> Verdict:
        # the parser validates the judge's answer inside the run, so a reply without a verdict is
        # retried like any malformed reply (and never cached), whatever the judge topology's shape
        try:
            result = await runner.run(self.topology, prompt, validate_output=_validate)
        except MoAError as e:
            calls.extend(e.calls)
            raise
        calls.extend(result.calls)
        return parse_verdict(result.output)


async def _all(made: list[CallRecord], *judgments: Awaitable[T]) -> list[T]:
    """Every judgment finished before the first error is raised: with ``asyncio.gather`` a failed
    order left the other one running unwatched, past the score phase's concurrency limit and, once
    the phase ended, its reply paid while the experiment closed the store it was to be cached in.
    A ``MoAError`` raised carries every call of the pair (``made``): the other orders' and turns'
    were paid too (a malformed reply is never cached), and the pair stores no judgment to hold them."""
    done = await asyncio.gather(*judgments, return_exceptions=True)
    for result in done:
        if isinstance(result, BaseException):
            if isinstance(result, MoAError):
                result.calls = list(made)
            raise result
    return cast("list[T]", done)


def _validate(text: str) -> None:
    parse_verdict(text)


def _combine(first: Judgment, second: Judgment) -> Score:
    if first.verdict is None or second.verdict is None:
        bad = first if first.verdict is None else second
        order = "setup first" if bad.position == "a" else "setup second"
        return Score(0.5, f"{NO_VERDICT} ({order}): {bad.error}")
    v_ab, v_ba = Verdict(first.verdict), Verdict(second.verdict)
    value = combine_swapped(v_ab, v_ba)
    detail = f"setup first: [[{v_ab.value}]], setup second: [[{v_ba.value}]]"
    if (v_ab.score - 0.5) * (v_ba.swapped().score - 0.5) < 0:
        detail += f" ({INCONSISTENT}: tie)"
    return Score(value, detail)
