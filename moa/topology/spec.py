"""The declarative topology format: agents, nodes, ``output``, and the ``kind:`` shorthands.

Everything here is a frozen pydantic model with ``extra="forbid"``, so an unknown or misspelt field
is an error rather than a silently ignored line. Shorthands expand to nodes in ``moa.topology.shorthand``; the
graph checks (cycles, unknown references, reachability) live in ``moa.topology.graph``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moa.topology.prompts import text_problem

__all__ = [
    "MAX_GRAPH",
    "MAX_LAYERS",
    "MAX_LIST",
    "AgentSpec",
    "NodeSpec",
    "PricingSpec",
    "RateLimitSpec",
    "RetrySpec",
    "TopologySpec",
    "raw_graph_size",
    "require_printable",
    "require_text",
]

KINDS = ("single", "sequential", "parallel", "hierarchical", "layered", "self_moa")
Kind = Literal["single", "sequential", "parallel", "hierarchical", "layered", "self_moa"]
Reduce = Literal["majority", "first"]
VoteOn = Literal["text", "last_number", "last_line"]
OnQuorum = Literal["cancel", "wait"]
Transport = Literal["auto", "litellm", "openai-http"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

# Numbers and booleans are strict, as the shipped JSON Schema is: lax pydantic took `"0.5"`,
# `max_tokens: true` or `plan: "yes"`, which the schema (and so every editor using it) refuses.
# StrictFloat still takes an int (YAML reads `1` as one); times and prices refuse YAML's `.inf`.

# A file of a few bytes must not expand into a graph that takes minutes to check
# (`layers: 100000000`, 20,000 `steps` each reading every earlier step): each count a shorthand
# multiplies is capped, and so is the whole graph, before any node is built.
#: layers of a `layered` topology
MAX_LAYERS = 64
#: agents in `steps`, `workers`, `proposers` or one layer
MAX_LIST = 256
#: nodes plus `inputs` of one graph, shorthand or explicit
MAX_GRAPH = 100_000


def require_printable(value: Any, what: str) -> Any:
    """Refuse control characters (NUL, newline, escape...) in a name or model string, nested lists
    included: they pass YAML and JSON, then cut error lines in two, hide in logs or break a request."""
    if isinstance(value, list):
        for v in value:
            require_printable(v, what)
    elif isinstance(value, str):
        bad = next((c for c in value if ord(c) < 32 or 127 <= ord(c) < 160), None)
        if bad is not None:
            raise ValueError(f"{what} {value!r} holds the control character {bad!r}")
    return value


def require_text(value: Any) -> Any:
    """Refuse a lone UTF-16 surrogate (a JSON or YAML ``"\\ud800"`` escape) in what is sent to a
    model, nested lists included: the topology validated, then every call failed to encode its
    request, as a provider error."""
    if isinstance(value, list):
        for v in value:
            require_text(v)
    elif isinstance(value, str) and not value.isascii() and (problem := text_problem(value)):
        raise ValueError(problem)
    return value


def raw_graph_size(nodes: Any) -> tuple[int, int]:
    """Nodes and inputs of ``nodes`` as read from a file (dicts) or built in Python (NodeSpecs)."""
    if not isinstance(nodes, list):
        return 0, 0
    edges = 0
    for node in nodes:
        inputs = node.get("inputs") if isinstance(node, dict) else getattr(node, "inputs", None)
        edges += len(inputs) if isinstance(inputs, list) else 0
    return len(nodes), edges


class RetrySpec(BaseModel):
    """How often and how patiently a failed call is tried again (per model, before fallbacks)."""

    model_config = _FROZEN

    max_attempts: StrictInt = Field(3, ge=1, le=20, description="Attempts per model, the first included.")
    backoff_base_s: StrictFloat = Field(
        0.5, ge=0, allow_inf_nan=False, description="First backoff ceiling; doubles each attempt."
    )
    backoff_max_s: StrictFloat = Field(
        30.0, ge=0, allow_inf_nan=False, description="Cap on one backoff (full jitter below it)."
    )
    max_retry_after_s: StrictFloat = Field(
        120.0,
        ge=0,
        allow_inf_nan=False,
        description="A provider's Retry-After longer than this is not waited for: the error is raised.",
    )


class RateLimitSpec(BaseModel):
    """Limits shared by every run in the process, keyed by ``api_base`` (or the model when none;
    ``per: model``: by the model behind the ``api_base``)."""

    model_config = _FROZEN

    rpm: StrictFloat | None = Field(None, gt=0, allow_inf_nan=False, description="Requests per minute.")
    max_concurrent: StrictInt | None = Field(None, ge=1, description="Requests in flight at once.")
    tpm: StrictInt | None = Field(None, ge=1, description="Tokens per minute (prompt + max_tokens).")
    per: Literal["endpoint", "model"] = Field(
        "endpoint",
        description="Whose limit it is behind an `api_base`: the server's, shared by all its models "
        "(`endpoint`), or each model's own, as a gateway counts (`model`).",
    )


class PricingSpec(BaseModel):
    """USD per million tokens, for models litellm's price map lacks (or to override it)."""

    model_config = _FROZEN

    input_per_mtok: StrictFloat = Field(
        ..., ge=0, allow_inf_nan=False, description="USD per million prompt tokens."
    )
    output_per_mtok: StrictFloat = Field(
        ..., ge=0, allow_inf_nan=False, description="USD per million completion tokens."
    )
    cached_input_per_mtok: StrictFloat | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="USD per million prompt tokens read from the provider's prompt cache (default: as input).",
    )
    cache_write_per_mtok: StrictFloat | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="USD per million prompt tokens written to the provider's prompt cache (default: as input).",
    )
    cache_write_1h_per_mtok: StrictFloat | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "USD per million prompt tokens written to the prompt cache for an hour (Anthropic's"
            " 1h lifetime; default: as other cache writes)."
        ),
    )


#: request fields moa sets from the agent (or itself): in ``params`` they were silently overridden
#: (``temperature: 0`` beside ``params: {temperature: 0.9}`` sent 0) or sent behind the back of
#: the budget hold and rate limiter, which read the agent's own fields
_SHADOWED = {
    "model": "model",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    # moa sends max_tokens under this name to a server that asks for it; in params it raised the
    # cap past the one the budget held for (vLLM reads it over max_tokens)
    "max_completion_tokens": "max_tokens",
    "top_p": "top_p",
    "stop": "stop",
    "api_base": "api_base",
    "base_url": "api_base",
    "timeout": "timeout_s",
    "messages": "",
    "stream": "",
    "stream_options": "",
}

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: the schema's half of the refusal (``api_key`` included), so editors flag these keys too
_NOT_IN_PARAMS: list[JsonValue] = [*sorted(["api_key", *_SHADOWED])]


class AgentSpec(BaseModel):
    """One model with its settings; nodes refer to agents by name."""

    model_config = _FROZEN

    model: str = Field(..., description="A litellm model string (`openai/gpt-4o-mini`) or `local/<name>`.")
    system: str | None = Field(None, description="System prompt sent before every message of this agent.")
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    max_tokens: StrictInt | None = Field(None, gt=0)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    stop: list[str] | None = None
    api_base: str | None = Field(None, description="Endpoint URL, e.g. an OpenAI-compatible server.")
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the key.",
        json_schema_extra={"pattern": _ENV_NAME},
    )
    timeout_s: StrictFloat | None = Field(
        None, gt=0, allow_inf_nan=False, description="Per-attempt time limit in seconds."
    )
    retry: RetrySpec = Field(default_factory=RetrySpec)
    rate_limit: RateLimitSpec | None = None
    fallbacks: list[str] = Field(default_factory=list, description="Models tried in order when this fails.")
    pricing: PricingSpec | None = None
    transport: Transport = Field(
        "auto",
        description="`litellm`, `openai-http` (direct pooled httpx) or `auto` (direct for OpenAI-compatible api_base).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other completion argument.",
        json_schema_extra={"propertyNames": {"not": {"enum": _NOT_IN_PARAMS}}},
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError(
                "inline `api_key` is refused: put the key in an environment variable and name it "
                "with `api_key_env`"
            )
        return data

    @field_validator("model", "fallbacks", "api_base", "api_key_env")
    @classmethod
    def _no_control_characters(cls, v: Any, info: ValidationInfo) -> Any:
        return require_printable(v, "model string" if info.field_name in ("model", "fallbacks") else "value")

    @field_validator("system", "stop")
    @classmethod
    def _sent_as_text(cls, v: Any) -> Any:
        return require_text(v)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        # a key pasted here instead of a variable's name was printed by every "is not set" line;
        # the value is never repeated
        if v is not None and not re.fullmatch(_ENV_NAME, v):
            raise ValueError(
                "is not the name of an environment variable (letters, digits and `_`, such as "
                "`OPENAI_API_KEY`); if it is the key itself, put it in a variable and name that here "
                "(the value is not shown)"
            )
        return v

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model is empty: give a litellm model string such as `openai/gpt-4o-mini`")
        if v.strip().endswith("/"):
            raise ValueError(f"model `{v.strip()}` names a provider but no model, e.g. `openai/gpt-4o-mini`")
        return v.strip()

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks_not_empty(cls, v: list[str]) -> list[str]:
        for m in v:
            if not m.strip():
                raise ValueError("a fallback model string is empty")
        return [m.strip() for m in v]

    # the schema says what the file may hold (a string or a list); the model always holds a list
    @field_validator("stop", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _stop_as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("params")
    @classmethod
    def _params_hold_no_key(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "api_key" in v:
            raise ValueError(
                "inline `api_key` in params is refused: name an environment variable with `api_key_env`"
            )
        # extra_body is merged into the request's body: a field there is sent as one in params
        extra = v.get("extra_body")
        inner = extra if isinstance(extra, dict) else {}
        for key, field in _SHADOWED.items():
            where = f"params.{key}" if key in v else f"params.extra_body.{key}" if key in inner else None
            if where is not None:
                raise ValueError(
                    f"`{where}` is refused: "
                    + (f"set the agent's `{field}` instead" if field else "moa sets it itself")
                    + "; a value in params is overridden or unseen by budgets, limits and checks"
                )
        return v


class NodeSpec(BaseModel):
    """One step of the graph: an agent call, or a non-LLM fan-in (``reduce``)."""

    model_config = _FROZEN

    id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    agent: str | None = Field(None, description="The agent that answers; omit for a `reduce` node.")
    inputs: list[str] = Field(default_factory=list, description="Nodes whose outputs this node reads.")
    prompt: str | None = Field(
        None,
        description="A template name (aggregate, refine, critique, plan, worker) or a template "
        "string using {prompt}, {references}, {instruction} and {workers}.",
    )
    reduce: Reduce | None = Field(None, description="Non-LLM fan-in: `majority` vote or `first` answer.")
    vote_on: VoteOn = Field(
        "text", description="What `majority` compares: the normalised text, last number or last line."
    )
    quorum: StrictInt | None = Field(None, ge=1, description="Go on once this many inputs answered.")
    on_quorum: OnQuorum = Field(
        "cancel", description="Once the quorum answered: `cancel` the rest, or `wait` for them."
    )
    plan: StrictBool = Field(
        False, description="This node writes one instruction per worker (structured output)."
    )
    instruction_from: str | None = Field(
        None, description="A `plan` node whose instruction this worker answers."
    )

    @field_validator("agent", "inputs", "instruction_from")
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        return require_printable(v, "name")

    @field_validator("prompt")
    @classmethod
    def _sent_as_text(cls, v: Any) -> Any:
        return require_text(v)


class TopologySpec(BaseModel):
    """A topology file: agents plus either explicit ``nodes`` or a ``kind`` shorthand."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="moa topology")

    name: str = Field(..., min_length=1)
    description: str = ""
    agents: dict[str, AgentSpec] = Field(..., min_length=1)

    nodes: list[NodeSpec] | None = None
    output: str | None = Field(None, description="The node whose output is the answer (the sink).")

    kind: Kind | None = None
    # shorthand fields; which ones a kind uses is checked in moa.topology.shorthand
    agent: str | None = Field(None, description="single/self_moa: the agent.")
    steps: list[str] | None = Field(
        None, description="sequential: agents in order (draft, critique, revise)."
    )
    workers: list[str] | None = Field(None, description="parallel/hierarchical: worker agents.")
    aggregator: str | None = Field(None, description="The agent that writes the final answer.")
    reduce: Reduce | None = Field(
        None, description="parallel/self_moa: non-LLM fan-in instead of an aggregator."
    )
    vote_on: VoteOn = "text"
    quorum: StrictInt | None = Field(None, ge=1)
    on_quorum: OnQuorum = "cancel"
    manager: str | None = Field(None, description="hierarchical: the agent that plans.")
    layers: StrictInt | list[list[str]] | None = Field(
        None, description="layered: a number of layers of `proposers`, or the agents of each layer."
    )
    proposers: list[str] | None = Field(None, description="layered: the agents of every layer.")
    samples: StrictInt | None = Field(None, ge=1, le=64, description="self_moa: how many samples.")

    @field_validator("agents", mode="before")
    @classmethod
    def _agent_names_printable(cls, v: Any) -> Any:
        if isinstance(v, dict):
            seen: dict[str, str] = {}
            for name in v:
                require_printable(name, "agent name")
                if not isinstance(name, str):
                    continue
                # `café` written twice, composed and decomposed, shows as one agent in every listing
                other = seen.setdefault(unicodedata.normalize("NFKC", name).casefold(), name)
                if other != name:
                    raise ValueError(
                        f"`{other}` and `{name}` differ in case or Unicode form only: rename one"
                    )
        return v

    @field_validator(
        "name", "output", "agent", "steps", "workers", "aggregator", "manager", "layers", "proposers"
    )
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        return require_printable(v, "name")

    @field_validator("layers")
    @classmethod
    def _layers_in_range(cls, v: int | list[list[str]] | None) -> int | list[list[str]] | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("layers must be at least 1")
        count = v if isinstance(v, int) else len(v) if v is not None else 0
        if count > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} layers (got {count:,})")
        for i, layer in enumerate(v if isinstance(v, list) else []):
            if len(layer) > MAX_LIST:
                raise ValueError(f"layer {i + 1}: at most {MAX_LIST} agents (got {len(layer):,})")
        return v

    @field_validator("steps", "workers", "proposers")
    @classmethod
    def _lists_capped(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_LIST:
            raise ValueError(f"at most {MAX_LIST} agents (got {len(v):,})")
        return v

    @model_validator(mode="before")
    @classmethod
    def _explicit_graph_capped(cls, data: Any) -> Any:
        # counted on the raw nodes, before thousands of NodeSpecs are validated for nothing
        nodes = data.get("nodes") if isinstance(data, dict) else None
        n, edges = raw_graph_size(nodes)
        if n + edges > MAX_GRAPH:
            raise ValueError(
                f"`nodes`: {n:,} nodes and {edges:,} inputs, over the limit of {MAX_GRAPH:,} nodes + inputs"
            )
        return data
