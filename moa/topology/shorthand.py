"""Expand the ``kind:`` shorthands into explicit nodes.

The Python builders in ``moa.topology.build`` produce the same ``TopologySpec`` as the YAML shorthands, and
both pass through ``expand`` so they meet in one validated graph.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from moa.topology.graph import did_you_mean
from moa.topology.spec import MAX_GRAPH, NodeSpec, TopologySpec

__all__ = ["expand"]

# which top-level shorthand fields each kind reads; any other one set is a mistake worth naming
_FIELDS: dict[str, set[str]] = {
    "single": {"agent"},
    "sequential": {"steps"},
    "parallel": {"workers", "aggregator", "reduce", "vote_on", "quorum", "on_quorum"},
    "hierarchical": {"manager", "workers", "aggregator", "quorum", "on_quorum"},
    "layered": {"layers", "proposers", "aggregator", "quorum", "on_quorum"},
    "self_moa": {"agent", "samples", "aggregator", "reduce", "vote_on", "quorum", "on_quorum"},
}
_ALL_SHORTHAND = {
    "agent",
    "steps",
    "workers",
    "aggregator",
    "reduce",
    "quorum",
    "manager",
    "layers",
    "proposers",
    "samples",
}


_DEFAULTED = {"vote_on": "text", "on_quorum": "cancel"}


def _ignored(spec: TopologySpec, kind: str) -> list[str]:
    """Fan-in fields a kind reads, set where they would change nothing."""
    p = []
    if "vote_on" in _FIELDS[kind] and spec.vote_on != "text" and spec.reduce != "majority":
        p.append(f"`vote_on: {spec.vote_on}` is read by `reduce: majority` only")
    if (
        "on_quorum" in _FIELDS[kind]
        and spec.on_quorum != "cancel"
        and spec.quorum is None
        and spec.reduce != "first"
    ):
        p.append(f"`on_quorum: {spec.on_quorum}` needs a `quorum` (without one every input is awaited)")
    return p


# what a node id may hold (``NodeSpec.id``); an agent name may hold anything printable
_NOT_ID = re.compile(r"[^A-Za-z0-9_.\-]+")


class _Ids:
    """Node ids named after their agents, numbered where an agent repeats. An agent name is free
    text but an id is not, so other characters become ``-``; and a name may meet a fixed id
    (``aggregate``, ``plan``, ``majority``) or another agent's numbered one, so each id is unique,
    case aside, among all the shorthand builds: the user wrote no ids to fix."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken = {r.casefold() for r in reserved}

    def _take(self, want: str) -> str:
        name, n = want, 1
        while name.casefold() in self._taken:
            n += 1
            name = f"{want}_{n}"
        self._taken.add(name.casefold())
        return name

    def named(self, prefix: str, agents: Sequence[str]) -> list[str]:
        counts = Counter(agents)
        seen: Counter[str] = Counter()
        out = []
        for a in agents:
            seen[a] += 1
            base = prefix + (_NOT_ID.sub("-", a).strip("-") or "agent")
            out.append(self._take(base if counts[a] == 1 else f"{base}_{seen[a]}"))
        return out


def _fan_in_id(spec: TopologySpec) -> str:
    return spec.reduce if spec.reduce is not None else "aggregate"


def expand(spec: TopologySpec) -> tuple[list[NodeSpec], str | None, list[str]]:
    """Return ``(nodes, output, problems)``; problems are one line each."""
    problems: list[str] = []
    if spec.kind is None:
        used = sorted(f for f in _ALL_SHORTHAND if getattr(spec, f) is not None)
        if used:
            problems.append(f"`{used[0]}` is a shorthand field but no `kind` is set")
        if spec.nodes is None:
            problems.append("no `nodes` and no `kind`: write nodes, or a shorthand such as `kind: parallel`")
            return [], None, problems
        return list(spec.nodes), spec.output, problems

    if spec.nodes is not None:
        problems.append(f"`kind: {spec.kind}` and `nodes` are both set: use one or the other")
    stray = sorted(f for f in _ALL_SHORTHAND - _FIELDS[spec.kind] if getattr(spec, f) is not None)
    # these two have defaults, so only another value can be a mistake (a dump writes the default)
    stray += [
        f for f, default in _DEFAULTED.items() if f not in _FIELDS[spec.kind] and getattr(spec, f) != default
    ]
    for f in stray:
        problems.append(f"`{f}` is not used by `kind: {spec.kind}`")
    problems += _ignored(spec, spec.kind)
    if spec.output is not None:
        problems.append(f"`output` is set by `kind: {spec.kind}` itself; remove it")

    # each list is capped in the spec, which keeps every kind but layered far inside the limit:
    # layers multiply (64 layers of 256 proposers read each other 4 million times)
    size = _layered_size(spec) if spec.kind == "layered" else 0
    if size > MAX_GRAPH:
        problems.append(
            f"`layers` × `proposers`: `kind: layered` expands to {size:,} nodes + edges, over the limit "
            f"of {MAX_GRAPH:,}; use fewer layers or proposers"
        )
        return [], None, problems

    unknown = _unknown_agents(spec)
    if unknown:
        # said once per name and field, not once per node the shorthand would write with it
        return [], None, problems + unknown

    builder = {
        "single": _single,
        "sequential": _sequential,
        "parallel": _parallel,
        "hierarchical": _hierarchical,
        "layered": _layered,
        "self_moa": _self_moa,
    }[spec.kind]
    nodes, output = builder(spec, problems)
    return nodes, output, problems


def _unknown_agents(spec: TopologySpec) -> list[str]:
    """One line per agent a shorthand field names that ``agents`` does not define."""
    known = frozenset(spec.agents)
    listing = ", ".join(sorted(known))
    lines: list[str] = []
    for field in ("agent", "steps", "workers", "manager", "proposers", "layers", "aggregator"):
        value = getattr(spec, field)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        flat = [n for item in names for n in (item if isinstance(item, list) else [item])]
        for name in dict.fromkeys(flat):
            if name not in known:
                hint = did_you_mean(name, known)
                lines.append(f"`{field}`: agent `{name}` is not defined{hint} (agents: {listing})")
    return lines


def _layered_size(spec: TopologySpec) -> int:
    """Nodes + edges a layered shorthand would build, counted before building any."""
    if isinstance(spec.layers, int):
        widths = [len(spec.proposers or [])] * spec.layers
    else:
        widths = [len(layer) for layer in spec.layers or []]
    edges = sum(a * b for a, b in itertools.pairwise(widths))
    return sum(widths) + edges + 1 + (widths[-1] if widths else 0)


def _need(spec: TopologySpec, field: str, problems: list[str]) -> None:
    problems.append(f"`kind: {spec.kind}` needs `{field}`")


def _the_agent(spec: TopologySpec, problems: list[str]) -> str | None:
    if spec.agent is not None:
        return spec.agent
    if len(spec.agents) == 1:
        return next(iter(spec.agents))
    _need(spec, "agent", problems)
    return None


def _single(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    agent = _the_agent(spec, problems)
    if agent is None:
        return [], None
    return [NodeSpec(id="answer", agent=agent)], "answer"


def _sequential(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    steps = spec.steps or []
    if not steps:
        _need(spec, "steps", problems)
        return [], None
    namer = _Ids()
    ids = [namer.named(f"step{i}_", [a])[0] for i, a in enumerate(steps, 1)]
    nodes = [NodeSpec(id=ids[0], agent=steps[0])]
    for i in range(1, len(steps)):
        # middle steps critique, the last one revises; every step reads all earlier ones so a
        # reviser sees both the draft and the critique
        last = i == len(steps) - 1
        nodes.append(
            NodeSpec(id=ids[i], agent=steps[i], inputs=ids[:i], prompt="refine" if last else "critique")
        )
    return nodes, ids[-1]


def _fan_in(
    spec: TopologySpec,
    worker_ids: list[str],
    problems: list[str],
    *,
    default_agent: str | None = None,
    quorum: int | None = None,
) -> tuple[list[NodeSpec], str | None]:
    if quorum is not None and quorum > len(worker_ids):
        n = len(worker_ids)
        noun = "sample" if spec.kind == "self_moa" else "worker"
        problems.append(f"quorum {quorum} is larger than the {n} {noun}{'' if n == 1 else 's'}")
        quorum = None  # said once, here: not again for the node the shorthand wrote
    if spec.reduce is not None:
        if spec.aggregator is not None:
            problems.append("`aggregator` and `reduce` are both set: use one or the other")
        quorum = 1 if spec.reduce == "first" else quorum
        node = NodeSpec(
            id=_fan_in_id(spec),
            reduce=spec.reduce,
            vote_on=spec.vote_on if spec.reduce == "majority" else "text",
            inputs=worker_ids,
            quorum=quorum,
            on_quorum=spec.on_quorum if quorum is not None else "cancel",
        )
        return [node], node.id
    agg = spec.aggregator or default_agent
    if agg is None:
        problems.append(f"`kind: {spec.kind}` needs `aggregator` (or `reduce: majority | first`)")
        return [], None
    node = NodeSpec(
        id=_fan_in_id(spec),
        agent=agg,
        inputs=worker_ids,
        prompt="aggregate",
        quorum=quorum,
        on_quorum=spec.on_quorum if quorum is not None else "cancel",
    )
    return [node], node.id


def _parallel(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    workers = spec.workers or []
    if not workers:
        problems.append("`workers` is empty: a parallel topology needs at least one worker")
        return [], None
    ids = _Ids([_fan_in_id(spec)]).named("", workers)
    nodes = [NodeSpec(id=i, agent=a) for i, a in zip(ids, workers, strict=True)]
    tail, out = _fan_in(spec, ids, problems, quorum=spec.quorum)
    return nodes + tail, out


def _hierarchical(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    workers = spec.workers or []
    if spec.manager is None:
        _need(spec, "manager", problems)
        return [], None
    if not workers:
        problems.append("`workers` is empty: a hierarchical topology needs at least one worker")
        return [], None
    ids = _Ids(["plan", _fan_in_id(spec)]).named("", workers)
    nodes = [NodeSpec(id="plan", agent=spec.manager, prompt="plan", plan=True)]
    nodes += [
        NodeSpec(id=i, agent=a, prompt="worker", instruction_from="plan")
        for i, a in zip(ids, workers, strict=True)
    ]
    tail, out = _fan_in(spec, ids, problems, default_agent=spec.manager, quorum=spec.quorum)
    return nodes + tail, out


def _layered(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    layers: list[list[str]]
    if isinstance(spec.layers, int):
        if not spec.proposers:
            _need(spec, "proposers", problems)
            return [], None
        layers = [list(spec.proposers)] * spec.layers
    elif isinstance(spec.layers, list):
        if spec.proposers is not None:
            problems.append("`proposers` is not used when `layers` lists each layer's agents")
        layers = spec.layers
    else:
        _need(spec, "layers", problems)
        return [], None
    if any(not layer for layer in layers):
        problems.append(f"layer {next(n for n, layer in enumerate(layers, 1) if not layer)} has no proposers")
        return [], None
    quorum = spec.quorum
    # every layer is read with the quorum (by the next layer, the last by the aggregator): the
    # first too narrow is said once, not once per node reading it
    widths = [len(layer) for layer in layers]
    narrow = next((n for n, w in enumerate(widths, 1) if quorum is not None and w < quorum), None)
    if narrow is not None:
        n, width = narrow, widths[narrow - 1]
        reader = f"layer {n + 1}" if n < len(layers) else "the aggregator"
        problems.append(
            f"quorum {quorum} is larger than layer {n}'s {width} proposer{'' if width == 1 else 's'}, which {reader} reads"
        )
        quorum = None
    nodes: list[NodeSpec] = []
    previous: list[str] = []
    namer = _Ids([_fan_in_id(spec)])
    for n, layer in enumerate(layers, 1):
        ids = namer.named(f"l{n}_", layer)
        for i, a in zip(ids, layer, strict=True):
            nodes.append(
                NodeSpec(
                    id=i,
                    agent=a,
                    inputs=previous,
                    prompt="aggregate" if previous else None,
                    quorum=quorum if previous else None,
                    on_quorum=spec.on_quorum if previous and quorum is not None else "cancel",
                )
            )
        previous = ids
    tail, out = _fan_in(spec, previous, problems, quorum=quorum)
    return nodes + tail, out


def _self_moa(spec: TopologySpec, problems: list[str]) -> tuple[list[NodeSpec], str | None]:
    agent = _the_agent(spec, problems)
    if agent is None:
        return [], None
    samples = spec.samples or 4
    a = spec.agents.get(agent)
    if a is not None and not (a.temperature or 0) > 0:
        problems.append(
            f"agent `{agent}`: self_moa samples one model several times, so its temperature must be > 0"
        )
    if a is not None and a.params.get("seed") is not None:
        # a fixed seed at a temperature above 0 still draws the same tokens every time (llama.cpp
        # exactly, OpenAI mostly): the aggregator would read one answer written out N times
        problems.append(
            f"agent `{agent}`: self_moa samples one model several times, so it takes no fixed "
            f"`params.seed` (got {a.params['seed']!r}); remove it so the samples can differ"
        )
    ids = [f"sample{i}" for i in range(1, samples + 1)]
    nodes = [NodeSpec(id=i, agent=agent) for i in ids]
    tail, out = _fan_in(spec, ids, problems, default_agent=agent, quorum=spec.quorum)
    return nodes + tail, out
