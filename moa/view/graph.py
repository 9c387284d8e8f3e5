"""A run's topology as the item page draws it: nodes in layers and the edges between them.

The store keeps each setup's topology hash, not its file. When the file the manifest names can still
be found (beside the dataset, in the working folder, beside the experiment folder) and hashes to the
stored value, its graph gives the edges (``source: topology``). Otherwise the nodes are the calls'
``node`` names, layered by time (a node starts after the nodes that had finished when it started),
with an edge wherever a node's reply appears in a later node's prompt (``source: inferred``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moa.errors import MoAError
from moa.eval.hashing import topology_hash

__all__ = ["Deps", "layout", "stored_topology"]

#: node id -> the nodes it waits for, in the topology's order
Deps = dict[str, tuple[str, ...]]

_EPS = 1e-6
#: a reply shorter than this says too little to be recognised in another node's prompt
_MIN_ECHO = 2


def stored_topology(setup: Mapping[str, Any], folders: Sequence[Path]) -> tuple[Deps, str] | None:
    """The setup's graph (deps per node, and the output node) when its topology file is found in one
    of ``folders`` (or is a preset) and hashes as stored; None otherwise."""
    from moa.topology.loader import load

    for folder in folders:
        try:
            topo = load(str(setup["source"]), relative_to=folder)
        except (MoAError, OSError, ValueError):
            continue
        if topology_hash(topo.model_dump(mode="json")) != setup["hash"]:
            continue
        g = topo.graph
        return {nid: tuple(g.nodes[nid].deps) for nid in g.order}, g.output
    return None


def _message_text(call: Mapping[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in call.get("messages") or ())


def _inferred(calls: Sequence[Mapping[str, Any]]) -> Deps:
    """Deps from the calls alone: A -> B when A had finished before B started and B's prompt holds
    A's reply."""
    first: dict[str, Mapping[str, Any]] = {}
    for c in calls:
        first.setdefault(str(c["node"]), c)
    deps: Deps = {}
    for node, c in first.items():
        start = float(c["started_s"])
        text = _message_text(c)
        found = []
        for other, o in first.items():
            reply = (o.get("reply") or "").strip()
            ended = float(o["started_s"]) + float(o["latency_s"])
            if other != node and ended <= start + _EPS and len(reply) >= _MIN_ECHO and reply in text:
                found.append(other)
        deps[node] = tuple(found)
    return deps


def _layers(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], after: Mapping[str, set[str]]
) -> dict[str, int]:
    """Layer of each node: one past its deepest dependency (or node that finished before it began)."""
    layer: dict[str, int] = {}
    for node in order:
        before = [layer[d] for d in (*deps.get(node, ()), *after.get(node, ())) if d in layer]
        layer[node] = 1 + max(before) if before else 0
    return layer


def layout(calls: Sequence[Mapping[str, Any]], topology: tuple[Deps, str] | None) -> dict[str, Any]:
    """Nodes (id, layer, indexes of its calls, whether it made none) and edges for one run."""
    by_node: dict[str, list[int]] = {}
    for i, c in enumerate(calls):
        by_node.setdefault(str(c["node"]), []).append(i)
    if topology is not None:
        deps, output = topology
        # nodes that made calls but are not in the file (a renamed node) still show
        order = [*deps, *(n for n in by_node if n not in deps)]
        after: dict[str, set[str]] = {}
        source = "topology"
    else:
        deps = _inferred(calls)
        order = list(by_node)
        output = order[-1] if order else ""
        # without the file, time orders the layers: a node comes after those that had finished
        ends = {
            n: float(calls[ix[0]]["started_s"]) + float(calls[ix[0]]["latency_s"])
            for n, ix in by_node.items()
        }
        starts = {n: float(calls[ix[0]]["started_s"]) for n, ix in by_node.items()}
        after = {n: {o for o in order if o != n and ends[o] <= starts[n] + _EPS} for n in order}
        order.sort(key=lambda n: starts[n])
        source = "inferred"
    layer = _layers(order, deps, after)
    nodes = [{"id": n, "layer": layer[n], "calls": by_node.get(n, []), "output": n == output} for n in order]
    edges = [{"from": d, "to": n} for n in order for d in deps.get(n, ()) if d in layer]
    return {"source": source, "nodes": nodes, "edges": edges}
