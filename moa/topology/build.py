"""Python builders for the topology kinds. Each returns the same validated ``Topology`` as the
matching YAML shorthand (it builds that shorthand), so files and code always agree.

>>> from moa import build
>>> t = build.parallel(["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"], aggregator="openai/gpt-4o")
>>> t.graph.output
'aggregate'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from moa.errors import TopologyError
from moa.topology.definition import Topology
from moa.topology.loader import format_validation_error, validate_topology
from moa.topology.spec import AgentSpec, NodeSpec

__all__ = ["agent", "dag", "hierarchical", "layered", "parallel", "self_moa", "sequential", "single"]

AgentLike = AgentSpec | str


def agent(model: str, **settings: Any) -> AgentSpec:
    """An agent: a model string plus any agent field (``temperature=0.7``, ``max_tokens=256``...).
    A bad field is a ``TopologyError``, one line each, as in a file."""
    data = {"model": model, **settings}
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as err:
        raise TopologyError(
            format_validation_error(err, data, model=AgentSpec), source=f"agent `{model}`"
        ) from None


class _Agents:
    """Names agents after their models (``gpt-4o-mini``), numbering repeats of distinct settings."""

    def __init__(self) -> None:
        self.by_name: dict[str, AgentSpec] = {}
        self._folded: dict[str, str] = {}

    def add(self, a: AgentLike) -> str:
        if not isinstance(a, str | AgentSpec):
            raise TopologyError([f"an agent is a model string or build.agent(...), not {a!r}"])
        spec = agent(a) if isinstance(a, str) else a
        base = re.sub(r"[^A-Za-z0-9_\-]+", "-", spec.model.rsplit("/", 1)[-1]).strip("-") or "agent"
        name, n = base, 1
        # `GPT-4o` beside `gpt-4o` would be agents differing in case only, which a topology refuses
        while (taken := self._folded.get(name.casefold())) is not None and self.by_name[taken] != spec:
            n += 1
            name = f"{base}-{n}"
        name = self._folded.setdefault(name.casefold(), name)
        self.by_name[name] = spec
        return name

    def data(self) -> dict[str, Any]:
        return {k: v.model_dump(exclude_defaults=True) for k, v in self.by_name.items()}


def _make(kind: str, name: str, description: str, agents: _Agents, **fields: Any) -> Topology:
    data = {
        "name": name,
        "description": description,
        "kind": kind,
        **{k: v for k, v in fields.items() if v is not None},
    }
    data["agents"] = agents.data()
    return validate_topology(data, source=name)


def single(model: AgentLike, *, name: str = "single", description: str = "") -> Topology:
    """One model, one call: the baseline every setup is compared with."""
    a = _Agents()
    return _make("single", name, description, a, agent=a.add(model))


def sequential(*steps: AgentLike, name: str = "sequential", description: str = "") -> Topology:
    """Draft -> critique -> revise: each step reads the ones before it."""
    a = _Agents()
    return _make("sequential", name, description, a, steps=[a.add(s) for s in steps])


def parallel(
    workers: Sequence[AgentLike],
    aggregator: AgentLike | None = None,
    *,
    reduce: str | None = None,
    vote_on: str | None = None,
    quorum: int | None = None,
    on_quorum: str | None = None,
    name: str = "parallel",
    description: str = "",
) -> Topology:
    """N proposers answer at once; an aggregator (or ``reduce="majority"``/``"first"``) combines them."""
    a = _Agents()
    return _make(
        "parallel",
        name,
        description,
        a,
        workers=[a.add(w) for w in workers],
        aggregator=a.add(aggregator) if aggregator is not None else None,
        reduce=reduce,
        vote_on=vote_on,
        quorum=quorum,
        on_quorum=on_quorum,
    )


def hierarchical(
    manager: AgentLike,
    workers: Sequence[AgentLike],
    aggregator: AgentLike | None = None,
    *,
    quorum: int | None = None,
    on_quorum: str | None = None,
    name: str = "hierarchical",
    description: str = "",
) -> Topology:
    """A manager writes one instruction per worker, the workers answer, an aggregator (default:
    the manager) writes the answer."""
    a = _Agents()
    return _make(
        "hierarchical",
        name,
        description,
        a,
        manager=a.add(manager),
        workers=[a.add(w) for w in workers],
        aggregator=a.add(aggregator) if aggregator is not None else None,
        quorum=quorum,
        on_quorum=on_quorum,
    )


def layered(
    layers: int | Sequence[Sequence[AgentLike]],
    aggregator: AgentLike,
    *,
    proposers: Sequence[AgentLike] | None = None,
    quorum: int | None = None,
    on_quorum: str | None = None,
    name: str = "layered",
    description: str = "",
) -> Topology:
    """Together-style MoA: L layers of proposers, each reading all outputs of the layer before."""
    a = _Agents()
    if isinstance(layers, int):
        return _make(
            "layered",
            name,
            description,
            a,
            layers=layers,
            proposers=[a.add(p) for p in proposers or []],
            aggregator=a.add(aggregator),
            quorum=quorum,
            on_quorum=on_quorum,
        )
    return _make(
        "layered",
        name,
        description,
        a,
        layers=[[a.add(p) for p in layer] for layer in layers],
        aggregator=a.add(aggregator),
        quorum=quorum,
        on_quorum=on_quorum,
    )


def self_moa(
    model: AgentLike,
    samples: int = 4,
    aggregator: AgentLike | None = None,
    *,
    reduce: str | None = None,
    vote_on: str | None = None,
    quorum: int | None = None,
    on_quorum: str | None = None,
    name: str = "self-moa",
    description: str = "",
) -> Topology:
    """Self-MoA: one model sampled ``samples`` times at temperature > 0, then aggregated."""
    a = _Agents()
    return _make(
        "self_moa",
        name,
        description,
        a,
        agent=a.add(model),
        samples=samples,
        aggregator=a.add(aggregator) if aggregator is not None else None,
        reduce=reduce,
        vote_on=vote_on,
        quorum=quorum,
        on_quorum=on_quorum,
    )


def dag(
    agents: Mapping[str, AgentSpec],
    nodes: Sequence[NodeSpec | Mapping[str, Any]],
    output: str | None = None,
    *,
    name: str = "dag",
    description: str = "",
) -> Topology:
    """Any DAG: named agents and explicit nodes."""
    return validate_topology(
        {
            "name": name,
            "description": description,
            "agents": dict(agents),
            "nodes": [n if isinstance(n, NodeSpec) else dict(n) for n in nodes],
            "output": output,
        },
        source=name,
    )
