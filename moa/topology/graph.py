"""Spec -> validated graph: references exist, no cycle, everything reaches the output. networkx checks
the structure; the result is a plain, immutable ``Graph`` the runner walks without networkx.

Every problem is one line naming the culprit; all problems of a topology are returned together. The
networkx graph is built in one pass, and each check on it (acyclic, reachability) is linear in nodes
+ edges (the definition-ordered topological sort: n log n), so validation time per node stays flat
as graphs grow: thousands of nodes cost about what a few do, per node.
"""

from __future__ import annotations

import difflib
import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

import networkx as nx

from moa.topology.prompts import TEMPLATES, Template, looks_like_name, placeholder_mistakes
from moa.topology.spec import AgentSpec, NodeSpec

__all__ = ["Graph", "GraphNode", "check_nodes", "did_you_mean"]


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One node, resolved: its agent, its compiled template, who reads it."""

    id: str
    spec: NodeSpec
    agent: AgentSpec | None
    #: every node this one waits for: ``inputs`` plus ``instruction_from``
    deps: tuple[str, ...]
    #: the nodes whose outputs are rendered as references (``inputs``)
    inputs: tuple[str, ...]
    consumers: tuple[str, ...]
    template: Template | None
    #: how many inputs must answer before this node runs
    needed: int
    #: for a ``plan`` node: the workers, in order, one instruction each
    plan_workers: tuple[str, ...] = ()
    #: for a worker: its position in its plan
    instruction_index: int | None = None


@dataclass(frozen=True, slots=True)
class Graph:
    """A validated DAG with a single sink, in topological order."""

    nodes: Mapping[str, GraphNode]
    order: tuple[str, ...]
    output: str

    def critical_path_s(self, durations: Mapping[str, float], used: Mapping[str, Sequence[str]]) -> float:
        """The longest chain of node durations ending at the output, following the inputs each node
        actually used (quorum survivors), so cancelled stragglers do not count.

        Durations are service times (the engine sums its calls' ``latency_s``, which starts when a
        request leaves): a wait for a connection slot or for the embedded model is the call's
        ``queued_s`` and stays out, so calls a backend serialises show as wall / critical path > 1."""
        best: dict[str, float] = {}
        for nid in self.order:
            ins = used.get(nid, ())
            best[nid] = durations.get(nid, 0.0) + max((best.get(u, 0.0) for u in ins), default=0.0)
        return best.get(self.output, 0.0)

    def to_mermaid(self, prefix: str = "n") -> str:
        """A mermaid flowchart of the graph, for docs and debugging.

        Mermaid ids are ``{prefix}0``, ``{prefix}1``, ... with the node id in the label: a node id
        may be a word mermaid reserves (``end`` closed the chart) or hold a ``.``/``-`` it reads
        as syntax, and a cascade draws several graphs in one chart under distinct prefixes."""
        ids = {nid: f"{prefix}{i}" for i, nid in enumerate(self.order)}
        lines = ["flowchart LR"]
        for nid in self.order:
            n = self.nodes[nid]
            label = n.spec.reduce if n.agent is None else f"{n.spec.agent}: {n.agent.model}"
            lines.append(f'  {ids[nid]}["{mermaid_text(nid)}<br/>{mermaid_text(str(label))}"]')
        for nid in self.order:
            for d in self.nodes[nid].deps:
                lines.append(f"  {ids[d]} --> {ids[nid]}")
        return "\n".join(lines)


# agent names and model strings are free text: a `"` closed the label and the rest became mermaid
# (`click x call alert(1)`), a `<img onerror=...>` became HTML; mermaid reads `#NN;` as a character
_MERMAID_ESCAPES = str.maketrans({c: f"#{ord(c)};" for c in '#"<>&`'})


def mermaid_text(text: str) -> str:
    return text.translate(_MERMAID_ESCAPES)


#: names a problem line lists before it stops: one line must stay readable whatever the graph
_LISTED = 10


def _known_templates() -> str:
    return ", ".join(sorted(k for k in TEMPLATES if k != "default"))


def folded(name: str) -> str:
    """``name`` as a reader sees it: Unicode form (NFKC) and case aside."""
    return unicodedata.normalize("NFKC", name).casefold()


#: names a near-miss search compares with at most: past that, only case and Unicode form count
_FUZZY = 2_000


def did_you_mean(name: str, known: Set[str], by_fold: Mapping[str, str] | None = None) -> str:
    """``; did you mean `x`?`` for a near miss of a known name, else nothing."""
    if by_fold is None:
        by_fold = {folded(k): k for k in known}
    same = by_fold.get(folded(name))
    if same is not None and same != name:
        return f"; did you mean `{same}`? (they differ in case or Unicode form only)"
    if len(known) <= _FUZZY:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        if close:
            return f"; did you mean `{close[0]}`?"
    return ""


class _AgentNames:
    """The agents a node may name, as a set for the lookups and one sorted line for the messages,
    built once per topology rather than once per node."""

    def __init__(self, agents: Mapping[str, AgentSpec] | Iterable[str]) -> None:
        self.names: Set[str] = frozenset(agents)
        self.by_fold = {folded(a): a for a in self.names}
        self._listing: str | None = None

    def listing(self) -> str:
        if self._listing is None:
            self._listing = ", ".join(sorted(self.names))
        return self._listing


def _node_problems(
    node: NodeSpec, where: str, agents: _AgentNames, ids: Set[str], id_folds: Mapping[str, str]
) -> list[str]:
    p: list[str] = []
    if node.agent is None and node.reduce is None:
        p.append(f"{where}: needs an `agent` (or a `reduce` for a non-LLM fan-in)")
    if node.agent is not None and node.reduce is not None:
        p.append(f"{where}: has both `agent` and `reduce`; a reduce node calls no model")
    if node.agent is not None and node.agent not in agents.names:
        hint = did_you_mean(node.agent, agents.names, agents.by_fold)
        p.append(f"{where}: agent `{node.agent}` is not defined{hint} (agents: {agents.listing()})")
    for inp in node.inputs:
        if inp == node.id:
            p.append(f"{where} reads itself (a self-loop)")
        elif inp not in ids:
            p.append(f"{where} reads `{inp}`, which is not defined{did_you_mean(inp, ids, id_folds)}")
    if len(set(node.inputs)) < len(node.inputs):
        for inp, k in Counter(node.inputs).items():
            if k > 1:
                p.append(f"{where} reads `{inp}` {k} times")
    if node.reduce is not None and not node.inputs:
        p.append(f"{where}: `reduce: {node.reduce}` needs `inputs`")
    if node.quorum is not None:
        if not node.inputs:
            p.append(f"{where}: has a quorum but no inputs")
        elif node.quorum > len(node.inputs):
            p.append(f"{where}: quorum {node.quorum} is larger than its {len(node.inputs)} inputs")
    p += _fan_in_problems(node, where)
    if node.agent is None:
        p += _reduce_problems(node, where)
    elif node.prompt is not None and looks_like_name(node.prompt) and node.prompt not in TEMPLATES:
        p.append(
            f"{where}: prompt template `{node.prompt}` is not known (known: {_known_templates()}; "
            "or write a template using {prompt} and {references})"
        )
    else:
        p += _wiring_problems(node, where)
    if node.instruction_from is not None:
        if node.instruction_from not in ids:
            hint = did_you_mean(node.instruction_from, ids, id_folds)
            p.append(f"{where}: instruction_from `{node.instruction_from}` is not defined{hint}")
        elif node.instruction_from == node.id:
            p.append(f"{where}: instruction_from names itself")
    return p


def _fan_in_problems(node: NodeSpec, where: str) -> list[str]:
    """Fan-in settings that would be silently ignored by this node."""
    p = []
    if node.vote_on != "text" and node.reduce != "majority":
        p.append(f"{where}: `vote_on: {node.vote_on}` is read by `reduce: majority` only")
    if node.on_quorum != "cancel" and node.quorum is None:
        p.append(
            f"{where}: `on_quorum: {node.on_quorum}` needs a `quorum` (without one every input is awaited)"
        )
    return p


def _reduce_problems(node: NodeSpec, where: str) -> list[str]:
    """What a node without a model cannot do: it writes no plan and reads no prompt or instruction."""
    p = []
    if node.plan:
        p.append(f"{where}: `plan: true` needs an `agent`: a plan is a model's reply")
    if node.instruction_from is not None:
        p.append(f"{where}: `instruction_from` needs an `agent`: a `reduce` node reads no instruction")
    if node.prompt is not None:
        p.append(f"{where}: `prompt` needs an `agent`: a `reduce` node sends no prompt")
    return p


def _template_name(node: NodeSpec) -> str | None:
    """The named template an agent node uses (``None`` for template text): its own ``prompt``, or
    the one its wiring calls for."""
    if node.prompt is not None:
        return node.prompt if looks_like_name(node.prompt) else None
    if node.plan:
        return "plan"  # a manager must be asked for one JSON instruction per worker
    if node.instruction_from is not None:
        return "worker"
    return "aggregate" if node.inputs else "default"


def _wiring_problems(node: NodeSpec, where: str) -> list[str]:
    """The template's placeholders against the node's wiring, for named and written templates alike:
    an input, instruction or question with no placeholder is silently never sent, and a placeholder
    with nothing wired to it is sent empty."""
    name = _template_name(node)
    has = set(_compiled(TEMPLATES[name] if name is not None else node.prompt or "").names)
    what = f"its prompt template `{name}`" if name is not None else "its prompt template"
    p = []
    if name is None and node.prompt is not None:
        p += [f"{where}: its prompt template has {m}" for m in placeholder_mistakes(node.prompt)]
    if node.inputs and "references" not in has:
        p.append(f"{where}: reads inputs but {what} has no {{references}}, so they would never be sent")
    if not node.inputs and "references" in has:
        p.append(f"{where}: {what} uses {{references}} but the node has no `inputs`")
    if node.instruction_from is not None and "instruction" not in has:
        p.append(
            f"{where}: takes `instruction_from` but {what} has no {{instruction}}, so the plan's "
            "instruction would never be sent"
        )
    if node.instruction_from is None and "instruction" in has:
        p.append(f"{where}: {what} uses {{instruction}} but the node has no `instruction_from`")
    if not node.plan and "workers" in has:
        p.append(f"{where}: {what} uses {{workers}} but the node is not `plan: true`")
    if node.plan and name is not None and name != "plan":
        p.append(f"{where}: is a plan, so its prompt template is `plan` or one of its own, not `{name}`")
    if not node.inputs and node.instruction_from is None and "prompt" not in has:
        p.append(f"{where}: {what} has no {{prompt}}, so the user's question would never be sent")
    return p


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> Template:
    # a graph of thousands of aggregators shares a handful of templates: split each text once
    return Template.compile(text)


def _template_for(node: NodeSpec) -> Template | None:
    if node.agent is None:
        return None
    name = _template_name(node)
    return _compiled(TEMPLATES[name] if name is not None else node.prompt or "")


def _digraph(nodes: Sequence[NodeSpec], ids: Set[str]) -> nx.DiGraph[str]:
    """The dependency edges (``inputs`` and ``instruction_from``) among defined nodes; self-loops and
    unknown names are left out (they are reported per node). Built in one pass: O(nodes + edges)."""
    g: nx.DiGraph[str] = nx.DiGraph()
    g.add_nodes_from(ids)
    g.add_edges_from(
        (d, n.id)
        for n in nodes
        for d in (n.inputs if n.instruction_from is None else [*n.inputs, n.instruction_from])
        if d in ids and d != n.id
    )
    return g


def _one_cycle(g: nx.DiGraph[str], first_at: Mapping[str, int]) -> list[str]:
    """A cycle of ``g`` starting at its earliest-defined node (the same line whatever set order)."""
    cycle = [u for u, _ in nx.find_cycle(g)]
    start = cycle.index(min(cycle, key=first_at.__getitem__))
    return cycle[start:] + cycle[:start]


def check_nodes(
    nodes: Sequence[NodeSpec],
    output: str | None,
    agents: Mapping[str, AgentSpec] | Iterable[str],
    *,
    build: bool = True,
) -> tuple[Graph | None, list[str]]:
    """Check the structure; return the ``Graph`` (when ``build`` and no problems) and the problems."""
    problems: list[str] = []
    first_at: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if n.id in first_at:
            problems.append(f"node `{n.id}` is defined twice (nodes[{first_at[n.id]}] and nodes[{i}])")
        else:
            first_at[n.id] = i
    ids = first_at.keys()
    # ids that differ in case only read as one node in a log, a report or a case-blind file system
    id_folds: dict[str, str] = {}
    for nid, i in first_at.items():
        other = id_folds.setdefault(folded(nid), nid)
        if other != nid:
            problems.append(
                f"node `{nid}` (nodes[{i}]) and node `{other}` (nodes[{first_at[other]}]) differ in "
                "case only: rename one"
            )
    by_id = {n.id: n for n in nodes}
    agent_names = _AgentNames(agents)
    for i, n in enumerate(nodes):
        problems += _node_problems(n, f"node `{n.id}` (nodes[{i}])", agent_names, ids, id_folds)

    plan_workers: dict[str, list[str]] = {}
    for n in nodes:
        src = n.instruction_from
        if src is not None and src in by_id:
            if not by_id[src].plan:
                problems.append(f"node `{n.id}`: instruction_from `{src}` is not a `plan: true` node")
            plan_workers.setdefault(src, []).append(n.id)
    for n in nodes:
        if n.plan and not plan_workers.get(n.id):
            problems.append(f"node `{n.id}` is a plan but no node takes `instruction_from: {n.id}`")

    g = _digraph(nodes, ids)
    # networkx checks the structure, each call linear in nodes + edges (the order: n log n)
    acyclic = nx.is_directed_acyclic_graph(g)
    order: list[str] = []
    if acyclic:
        order = list(nx.lexicographical_topological_sort(g, key=first_at.__getitem__))
    else:
        cycle = _one_cycle(g, first_at)
        problems.append(f"nodes form a cycle: {' → '.join([*cycle, cycle[0]])}")

    if output is None:
        sinks = sorted(nid for nid in g if g.out_degree(nid) == 0)
        if len(sinks) == 1:
            output = sinks[0]
        elif sinks:
            shown = ", ".join(sinks[:_LISTED]) + (", …" if len(sinks) > _LISTED else "")
            problems.append(
                f"no `output` and {len(sinks)} nodes end the graph ({shown}): name the answer with `output`"
            )
        elif ids:
            problems.append("no `output`, and no node ends the graph")
    elif output not in ids:
        problems.append(f"output `{output}` is not a node")

    if output is not None and output in ids and acyclic:
        reach = nx.ancestors(g, output) | {output}
        for n in nodes:
            if n.id not in reach:
                problems.append(f"node `{n.id}` does not lead to the output `{output}`")

    if problems or not build or output is None:
        return None, problems

    agent_map = agents if isinstance(agents, Mapping) else {}
    index = {wid: k for workers in plan_workers.values() for k, wid in enumerate(workers)}
    built: dict[str, GraphNode] = {}
    for nid in order:
        n = by_id[nid]
        deps = tuple(n.inputs) + ((n.instruction_from,) if n.instruction_from else ())
        built[nid] = GraphNode(
            id=nid,
            spec=n,
            agent=agent_map.get(n.agent) if n.agent else None,
            deps=deps,
            inputs=tuple(n.inputs),
            consumers=tuple(sorted(g.successors(nid), key=first_at.__getitem__)),
            template=_template_for(n),
            # `first` is the first answer to arrive: one is enough, the rest are cancelled
            needed=n.quorum if n.quorum is not None else 1 if n.reduce == "first" else len(n.inputs),
            plan_workers=tuple(plan_workers.get(nid, ())),
            instruction_index=index.get(nid) if n.instruction_from is not None else None,
        )
    return Graph(nodes=built, order=tuple(order), output=output), []
