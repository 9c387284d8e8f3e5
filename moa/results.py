"""What a run leaves behind: ``Usage`` (addable), one ``CallRecord`` per model call, ``NodeResult``
per node and the ``RunResult`` of the whole run. The field names of ``RunResult.to_dict()`` are the
stable ``--json`` output of ``moa run``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "Attempt",
    "AttemptStatus",
    "CallRecord",
    "CostShare",
    "Done",
    "NodeResult",
    "RunInput",
    "RunResult",
    "Token",
    "Usage",
    "new_run_id",
]

#: a prompt, or a chat whose last message is the user's turn
RunInput = str | Sequence[Mapping[str, str]]

#: how one attempt ended: ``ok``, ``error`` (the provider answered with an error, or the reply was
#: unreadable), ``timeout`` or ``cancelled``
AttemptStatus = Literal["ok", "error", "timeout", "cancelled"]


def draft_class(cls: type) -> type:
    """A plain class with the slots of the frozen dataclass ``cls``, to build a ``cls`` fast: an
    instance of it has its fields set as any object's, then ``cls`` as its ``__class__`` (the same
    slots, so CPython allows it), and is from then on an ordinary, frozen ``cls``.

    Why: a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which
    costs about 1,300 instructions a field where a plain slot costs about 100. A direct call builds
    a ``ModelRequest``, a ``ModelReply``, a ``Usage`` and an ``Attempt``: about 60k instructions,
    8% of the call, went to those ``__setattr__`` calls. Users keep the classes' own constructors;
    the per-call paths use the ``build_*`` functions beside each class."""
    slots = cls.__dict__["__slots__"]
    return type(f"{cls.__name__}Draft", (), {"__slots__": slots, "__module__": cls.__module__})


def new_run_id() -> str:
    """A run's id (16 hex digits): every run, a cascade's included, gets one of this shape."""
    return os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; ``Usage + Usage`` adds them.

    ``cached_tokens`` and ``cache_write_tokens`` are parts of ``prompt_tokens``: the prompt tokens
    the provider read from its prompt cache (billed at its cache-read price, a tenth to a half of
    the input price) and those it wrote to it (Anthropic: billed above the input price), as the
    provider reported them. ``cache_write_1h_tokens`` is the part of the writes kept for an hour
    (Anthropic's ``ttl: "1h"``, billed at twice the input price where a 5-minute write is 1.25 x)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        # a call's record starts at zero and adds its reply's usage: no new object then (a frozen
        # dataclass sets each field through object.__setattr__, a cost paid per call)
        if not (
            other.prompt_tokens
            or other.completion_tokens
            or other.cached_tokens
            or other.cache_write_tokens
            or other.cache_write_1h_tokens
        ):
            return self
        if not (
            self.prompt_tokens
            or self.completion_tokens
            or self.cached_tokens
            or self.cache_write_tokens
            or self.cache_write_1h_tokens
        ):
            return other
        return build_usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's shape: the cache counts, when there are any, under ``prompt_tokens_details``
        (``cache_creation_tokens`` and ``cache_creation_token_details`` are litellm's names for the
        writes and their lifetimes)."""
        d: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            d["prompt_tokens_details"] = {
                "cached_tokens": self.cached_tokens,
                "cache_creation_tokens": self.cache_write_tokens,
            }
            if self.cache_write_1h_tokens:
                d["prompt_tokens_details"]["cache_creation_token_details"] = {
                    "ephemeral_1h_input_tokens": self.cache_write_1h_tokens
                }
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        details = d.get("prompt_tokens_details") or {}
        lifetimes = details.get("cache_creation_token_details") or {}
        return cls(
            int(d.get("prompt_tokens", 0)),
            int(d.get("completion_tokens", 0)),
            int(details.get("cached_tokens", 0)),
            int(details.get("cache_creation_tokens", 0)),
            int(lifetimes.get("ephemeral_1h_input_tokens", 0)),
        )


_UsageDraft = draft_class(Usage)


def build_usage(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> Usage:
    """``Usage(...)`` at a third of the cost (see ``draft_class``), for the per-call paths."""
    u: Any = _UsageDraft()
    u.prompt_tokens = prompt_tokens
    u.completion_tokens = completion_tokens
    u.cached_tokens = cached_tokens
    u.cache_write_tokens = cache_write_tokens
    u.cache_write_1h_tokens = cache_write_1h_tokens
    u.__class__ = Usage
    return u  # type: ignore[no-any-return]


#: the usage of a call before any reply: shared, as a ``Usage`` never changes
_NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at one model: how it ended, how long it took once sent, what it consumed.

    ``usage`` is None when it cannot be known: the request reached the provider but no readable
    reply came back (a timeout, a cancellation after sending, a dropped connection, an unreadable
    reply). The provider may still bill such an attempt, so budgets keep its worst case."""

    status: AttemptStatus
    latency_s: float = 0.0
    usage: Usage | None = _NO_USAGE
    error: str | None = None
    #: the worst case of this attempt in USD (prompt bound + max_tokens at the model's price), kept
    #: when its usage is unknown or moa's estimate (the provider reported none); 0 when known
    worst_case_usd: float = 0.0
    #: what this attempt was billed, in USD, at its own reply's tier (0 when its usage is unknown,
    #: moa's count when estimated: ``worst_case_usd`` bounds both); the record's ``cost_usd`` is
    #: the sum over its attempts
    cost_usd: float = 0.0
    #: the service tier this attempt's reply said it was served at (as ``CallRecord.service_tier``),
    #: None when it got no reply or the reply said none: a call retried from a ``flex`` reply to a
    #: ``default`` one shows each attempt's tier and price
    service_tier: str | None = None

    @property
    def usage_unknown(self) -> bool:
        return self.usage is None

    @property
    def worst_above_cost_usd(self) -> float:
        """What the provider may bill for this attempt beyond its ``cost_usd``: the worst case when
        its usage is unknown, the room between moa's estimate and the worst case when estimated."""
        if self.usage is None:
            return self.worst_case_usd
        return max(0.0, self.worst_case_usd - self.cost_usd)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "latency_s": self.latency_s,
            "usage": None if self.usage is None else self.usage.to_dict(),
            "error": self.error,
            "cost_usd": self.cost_usd,
            "service_tier": self.service_tier,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], worst_case_usd: float = 0.0) -> Attempt:
        """An entry of ``to_dict``; one written before attempts kept their cost and tier (an older
        store or trace) reads with cost 0 and no tier."""
        u = d.get("usage")
        usage = None if u is None else Usage.from_dict(u)
        tier = d.get("service_tier")
        return cls(
            d["status"],
            float(d.get("latency_s", 0.0)),
            usage,
            d.get("error"),
            worst_case_usd,
            float(d.get("cost_usd") or 0.0),
            tier if isinstance(tier, str) else None,
        )


_AttemptDraft = draft_class(Attempt)


def build_attempt(
    status: AttemptStatus,
    latency_s: float,
    usage: Usage | None,
    error: str | None,
    worst_case_usd: float,
    cost_usd: float,
    service_tier: str | None,
) -> Attempt:
    """``Attempt(...)`` with every field given, at a fifth of the cost (see ``draft_class``)."""
    a: Any = _AttemptDraft()
    a.status = status
    a.latency_s = latency_s
    a.usage = usage
    a.error = error
    a.worst_case_usd = worst_case_usd
    a.cost_usd = cost_usd
    a.service_tier = service_tier
    a.__class__ = Attempt
    return a  # type: ignore[no-any-return]


@dataclass(slots=True)
class CostShare:
    """What one node or one model of a run consumed: dollars, tokens and calls."""

    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    #: ``cost_usd`` plus the worst case of every attempt whose usage is unknown, as
    #: ``RunResult.cost_usd_max``: a stage whose calls were cut off in flight is not free
    cost_usd_max: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": self.cost_usd,
            "cost_usd_max": self.cost_usd_max,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
        }


def _shares(calls: Sequence[CallRecord], key: Callable[[CallRecord], str]) -> dict[str, CostShare]:
    out: dict[str, CostShare] = {}
    for c in calls:
        share = out.setdefault(key(c), CostShare())
        share.cost_usd += c.cost_usd
        share.cost_usd_max += c.cost_usd_max
        share.prompt_tokens += c.usage.prompt_tokens
        share.completion_tokens += c.usage.completion_tokens
        share.calls += 1
    return out


@dataclass(slots=True)
class CallRecord:
    """One model call (after its own retries): who made it, what it cost, how long it took."""

    node: str
    #: the model that answered (a fallback's name when a fallback answered), else the last tried
    model: str
    usage: Usage = _NO_USAGE
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    #: ``None`` on success, else ``"ErrorClass: message"``
    error: str | None = None
    #: the model the agent asked for, before any fallback
    requested_model: str = ""
    #: seconds since the run started when the call began
    started_s: float = 0.0
    #: False when neither litellm's price map nor the agent's ``pricing`` knew the model
    priced: bool = True
    #: True for the embedded model: its cost is a local-compute figure, not a bill
    local: bool = False
    #: True when the reply came from the experiment call cache (no request sent)
    cached: bool = False
    #: one entry per attempt, in order (``attempts`` is their count)
    attempt_log: list[Attempt] = field(default_factory=list)
    #: True when a reply reported usage outside what the request allows (negative, more completion
    #: tokens than ``max_tokens``, a prompt far above its bound): it was charged its worst case
    usage_suspect: bool = False
    #: True when a reply reported no usage (absent, or all zeros) and moa counted the tokens of the
    #: text sent and received instead: a guess, where the rest is the provider's bill
    usage_estimated: bool = False
    #: seconds the call waited inside its backend before a request left (a connection slot, a free
    #: sequence of the embedded model or its loading), apart from ``latency_s``: the queue the
    #: critical path does not count
    queued_s: float = 0.0
    #: the service tier the provider said it served the call's last reply at (OpenAI's
    #: ``service_tier``: it sets that reply's price, and a project's default may be priority); None
    #: when that reply said none. Each attempt is billed at the tier its own reply names
    service_tier: str | None = None
    #: why the answer ended, as its reply said: ``stop``, or ``length`` when it was cut at
    #: ``max_tokens`` (or the context window) and its text is incomplete; None when none said
    finish_reason: str | None = None
    #: the messages sent (the node's template filled in): the trace, shown by ``to_dict(trace=True)``
    messages: Sequence[Mapping[str, str]] | None = None
    #: the reply's text when the call answered (the trace)
    reply: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unknown_usage_attempts(self) -> int:
        """Attempts that reached the provider but whose usage cannot be known."""
        return sum(1 for a in self.attempt_log if a.usage is None)

    @property
    def cost_usd_max(self) -> float:
        """The known cost plus the worst case of every attempt whose usage is unknown, and of every
        attempt whose usage is moa's estimate (its worst case, not the estimate)."""
        return self.cost_usd + sum(a.worst_above_cost_usd for a in self.attempt_log)

    def to_dict(self, *, trace: bool = False) -> dict[str, Any]:
        """The record as JSON; ``trace`` adds the messages sent and the reply's text."""
        # ``unknown_usage_attempts`` and ``cost_usd_max`` in one loop over the attempts: their two
        # generator expressions cost ``moa serve`` about 6k instructions a reply (sums as theirs)
        unknown = 0
        above: float = 0  # from 0 as sum() starts
        for a in self.attempt_log:
            if a.usage is None:
                unknown += 1
            above += a.worst_above_cost_usd
        d = {
            "node": self.node,
            "model": self.model,
            "requested_model": self.requested_model or self.model,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "queued_s": self.queued_s,
            "attempts": self.attempts,
            "error": self.error,
            "started_s": self.started_s,
            "priced": self.priced,
            "local": self.local,
            "cached": self.cached,
            "attempt_log": [a.to_dict() for a in self.attempt_log],
            "unknown_usage_attempts": unknown,
            "cost_usd_max": self.cost_usd + above,
            "usage_suspect": self.usage_suspect,
            "usage_estimated": self.usage_estimated,
            "service_tier": self.service_tier,
            "finish_reason": self.finish_reason,
        }
        if trace:
            d["messages"] = None if self.messages is None else [dict(m) for m in self.messages]
            d["reply"] = self.reply
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallRecord:
        u = d.get("usage") or {}
        return cls(
            node=d["node"],
            model=d["model"],
            usage=Usage.from_dict(u),
            cost_usd=float(d.get("cost_usd", 0.0)),
            latency_s=float(d.get("latency_s", 0.0)),
            queued_s=float(d.get("queued_s", 0.0)),
            attempts=int(d.get("attempts", 1)),
            error=d.get("error"),
            requested_model=d.get("requested_model", d["model"]),
            started_s=float(d.get("started_s", 0.0)),
            priced=bool(d.get("priced", True)),
            local=bool(d.get("local", False)),
            cached=bool(d.get("cached", False)),
            attempt_log=_attempts_from(d),
            usage_suspect=bool(d.get("usage_suspect", False)),
            usage_estimated=bool(d.get("usage_estimated", False)),
            service_tier=d.get("service_tier"),
            finish_reason=d.get("finish_reason"),
            messages=d.get("messages"),
            reply=d.get("reply"),
        )


#: a slotted class's own ``__new__``: an instance with no field set yet, for the builders below
_blank = object.__new__


def build_call_record(
    node: str,
    model: str,
    requested_model: str,
    started_s: float,
    priced: bool,
    local: bool,
    messages: Sequence[Mapping[str, str]] | None,
) -> CallRecord:
    """``CallRecord(node=..., model=..., ..., attempts=0)``, as a call opens its record, at a fifth
    of the cost: a dataclass's ``__init__`` matches keywords against 20 parameters and reads
    each default (about 8k instructions); plain slot stores cost about 100 each. Every field is
    set here (``tests/test_frozen_builders.py`` holds this to the constructor)."""
    r = _blank(CallRecord)
    r.node = node
    r.model = model
    r.usage = _NO_USAGE
    r.cost_usd = 0.0
    r.latency_s = 0.0
    r.attempts = 0
    r.error = None
    r.requested_model = requested_model
    r.started_s = started_s
    r.priced = priced
    r.local = local
    r.cached = False
    r.attempt_log = []
    r.usage_suspect = False
    r.usage_estimated = False
    r.queued_s = 0.0
    r.service_tier = None
    r.finish_reason = None
    r.messages = messages
    r.reply = None
    return r


def _attempts_from(d: dict[str, Any]) -> list[Attempt]:
    """The attempt log of a serialised record; the worst case of its unknown attempts is spread
    evenly so ``cost_usd_max`` survives the round trip (with none unknown, it is the last estimated
    reply's: the room above its estimate)."""
    log = [a for a in d.get("attempt_log") or () if isinstance(a, dict)]
    unknown = sum(1 for a in log if a.get("usage") is None)
    extra = float(d.get("cost_usd_max", d.get("cost_usd", 0.0))) - float(d.get("cost_usd", 0.0))
    each = extra / unknown if unknown and extra > 0 else 0.0
    attempts = [Attempt.from_dict(a, each if a.get("usage") is None else 0.0) for a in log]
    if not unknown and extra > 0 and attempts and bool(d.get("usage_estimated")):
        last = attempts[-1]
        attempts[-1] = replace(last, worst_case_usd=last.cost_usd + extra)
    return attempts


@dataclass(slots=True)
class NodeResult:
    """One node of the graph: its output (or error) and timing."""

    id: str
    output: str | None = None
    #: ``ok``, ``failed``, ``cancelled`` (not needed once a quorum answered) or ``skipped``
    status: str = "skipped"
    error: str | None = None
    started_s: float = 0.0
    ended_s: float = 0.0
    #: sum of the latencies of this node's calls (0 for non-LLM fan-in)
    call_latency_s: float = 0.0
    #: the inputs whose outputs this node actually read (survivors of a quorum)
    used_inputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "started_s": self.started_s,
            "ended_s": self.ended_s,
            "call_latency_s": self.call_latency_s,
            "used_inputs": list(self.used_inputs),
        }


def build_node_result(id: str) -> NodeResult:
    """``NodeResult(id)``, as a run opens its nodes, without the constructor's call (see
    ``build_call_record``)."""
    r = _blank(NodeResult)
    r.id = id
    r.output = None
    r.status = "skipped"
    r.error = None
    r.started_s = 0.0
    r.ended_s = 0.0
    r.call_latency_s = 0.0
    r.used_inputs = []
    return r


@dataclass(slots=True)
class RunResult:
    """The answer of one run and its full account."""

    output: str
    topology: str
    usage: Usage
    cost_usd: float
    latency_s: float
    #: the longest chain of actual call latencies through the graph
    critical_path_s: float
    calls: list[CallRecord]
    nodes: dict[str, NodeResult]
    #: models with no known price: their calls are counted at 0 USD
    unpriced_models: list[str] = field(default_factory=list)
    #: set when some cost is a local-compute figure rather than a provider bill
    cost_note: str | None = None
    #: the run's id, also on its log events, in ``moa serve``'s reply and on its OpenTelemetry span
    run_id: str = ""
    #: with ``output_type``: the answer parsed (a pydantic model instance, or plain JSON)
    parsed: Any = None
    #: a cascade's run: the stage (1-based) whose answer this is; None for a plain topology
    stage: int | None = None
    #: a cascade's run: how many stages ran (the answering one included)
    stages_run: int | None = None
    #: how the call that wrote the output ended, as its reply said: ``length`` when the answer was
    #: cut at ``max_tokens`` (its text is incomplete); None when the output node made no call (a
    #: ``reduce``) or the reply said nothing
    finish_reason: str | None = None

    @property
    def unknown_usage_attempts(self) -> int:
        """Attempts sent whose usage cannot be known (timeouts, cancellations after sending)."""
        return sum(c.unknown_usage_attempts for c in self.calls)

    @property
    def usage_suspect_calls(self) -> int:
        """Calls whose reply reported usage the request cannot have produced (charged the worst case)."""
        return sum(1 for c in self.calls if c.usage_suspect)

    @property
    def usage_estimated_calls(self) -> int:
        """Calls whose usage moa estimated because the provider reported none."""
        return sum(1 for c in self.calls if c.usage_estimated)

    @property
    def by_node(self) -> dict[str, CostShare]:
        """Cost, tokens and calls per node (the calls of its fallbacks and retries included)."""
        return _shares(self.calls, lambda c: c.node)

    @property
    def by_model(self) -> dict[str, CostShare]:
        """Cost, tokens and calls per model that answered (or was last tried)."""
        return _shares(self.calls, lambda c: c.model)

    @property
    def by_stage(self) -> dict[int, CostShare]:
        """A cascade's run: cost, tokens and calls per stage (1-based), a judge's counted with the
        stage it judged, read from the stage prefix of the node ids (``s2.aggregate``); empty for a
        plain topology."""
        if self.stage is None:
            return {}
        shares = _shares(self.calls, lambda c: c.node.partition(".")[0])
        stages = {int(k[1:]): v for k, v in shares.items() if k[:1] == "s" and k[1:].isdigit()}
        return dict(sorted(stages.items()))

    @property
    def cost_usd_max(self) -> float:
        """``cost_usd`` plus the worst case of every attempt whose usage is unknown."""
        return sum(c.cost_usd_max for c in self.calls)

    def to_dict(self, *, trace: bool = False) -> dict[str, Any]:
        """The stable ``--json`` output; ``trace`` adds each call's messages and reply."""
        return {
            "output": self.output,
            "run_id": self.run_id,
            "parsed": self.parsed.model_dump(mode="json")
            if hasattr(self.parsed, "model_dump")
            else self.parsed,
            "topology": self.topology,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "cost_usd_max": self.cost_usd_max,
            "unknown_usage_attempts": self.unknown_usage_attempts,
            "usage_suspect_calls": self.usage_suspect_calls,
            "usage_estimated_calls": self.usage_estimated_calls,
            "latency_s": self.latency_s,
            "critical_path_s": self.critical_path_s,
            "by_node": {k: v.to_dict() for k, v in self.by_node.items()},
            "by_model": {k: v.to_dict() for k, v in self.by_model.items()},
            "by_stage": {str(k): v.to_dict() for k, v in self.by_stage.items()},
            "calls": [c.to_dict(trace=trace) for c in self.calls],
            "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
            "unpriced_models": list(self.unpriced_models),
            "cost_note": self.cost_note,
            "stage": self.stage,
            "stages_run": self.stages_run,
            "finish_reason": self.finish_reason,
        }


def build_run_result(
    output: str,
    topology: str,
    usage: Usage,
    cost_usd: float,
    latency_s: float,
    critical_path_s: float,
    calls: list[CallRecord],
    nodes: dict[str, NodeResult],
    unpriced_models: list[str],
    cost_note: str | None,
    run_id: str,
    finish_reason: str | None,
) -> RunResult:
    """``RunResult(...)`` by keyword, as a run ends, without the constructor's call (see
    ``build_call_record``)."""
    r = _blank(RunResult)
    r.output = output
    r.topology = topology
    r.usage = usage
    r.cost_usd = cost_usd
    r.latency_s = latency_s
    r.critical_path_s = critical_path_s
    r.calls = calls
    r.nodes = nodes
    r.unpriced_models = unpriced_models
    r.cost_note = cost_note
    r.run_id = run_id
    r.parsed = None
    r.stage = None
    r.stages_run = None
    r.finish_reason = finish_reason
    return r


@dataclass(frozen=True, slots=True)
class Token:
    """A stream event: a piece of the answer as the output node decodes it."""

    node: str
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The last stream event: the full ``RunResult``."""

    result: RunResult
