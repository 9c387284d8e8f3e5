"""Cascade stages resolved into runnable parts, and every problem found on the way.

Each stage becomes an ordinary validated ``Topology`` whose node ids carry the stage's prefix
(``s1.sample1``, ``s2.final``), so the cascade's calls say which stage made them and two stages
never share an experiment's call-cache entry. Topology files and presets are read through the
``load`` function the loader hands in: this package never imports the loader (it imports us)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moa._run.runner import Composite
from moa.cascade.rules import Agree, Custom, Judge, Rule, Tests
from moa.cascade.spec import AcceptSpec, JudgeSpec, StageSpec
from moa.errors import TopologyError, UserError
from moa.topology.definition import Topology
from moa.topology.graph import Graph
from moa.topology.spec import MAX_GRAPH, MAX_LIST, AgentSpec, NodeSpec

__all__ = ["Loader", "Stage", "prefixed", "resolve_stages"]

#: reads a topology file or preset by name
Loader = Callable[[str | Mapping[str, Any]], Topology]


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage, ready to run."""

    #: 1-based, as ``RunResult.stage`` reports it
    number: int
    topology: Topology
    #: an agent stage's sample nodes (what ``agree`` compares); empty for a topology stage
    samples: tuple[str, ...]
    #: None for the last stage, which always answers
    rule: Rule | None
    reuse: bool
    #: ``agent `mini` x2``, ``topology `parallel-3```: for messages and reports
    what: str
    #: the topology a file or preset reference was read into (before prefixing), else None
    loaded: Topology | None = None
    #: the file or preset name the stage's ``topology:`` was written as, else None
    ref: str | None = None


def prefixed(topology: Topology, prefix: str, name: str) -> Topology:
    """``topology`` as explicit nodes whose ids (and references to them) start with ``prefix``."""
    g = topology.graph

    def p(node_id: str) -> str:
        return prefix + node_id

    nodes = []
    for nid in g.order:
        spec = g.nodes[nid].spec
        src = spec.instruction_from
        nodes.append(
            spec.model_copy(
                update={
                    "id": p(nid),
                    "inputs": [p(i) for i in spec.inputs],
                    "instruction_from": None if src is None else p(src),
                }
            )
        )
    return Topology(
        name=name, description=topology.description, agents=topology.agents, nodes=nodes, output=p(g.output)
    )


class _Resolver:
    """Walks the stages once, collecting the resolved stages and one line per problem."""

    def __init__(self, name: str, agents: Mapping[str, AgentSpec], load: Loader | None) -> None:
        self.name, self.agents, self.load = name, agents, load
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")

    def agent(self, where: str, name: str) -> AgentSpec | None:
        spec = self.agents.get(name)
        if spec is None:
            known = ", ".join(f"`{a}`" for a in self.agents) or "none"
            self.problem(where, f"unknown agent `{name}` (agents: {known})")
        return spec

    def topology(self, where: str, ref: str | Mapping[str, Any] | Topology) -> Topology | None:
        shown = f"`{ref}`" if isinstance(ref, str) else "written inline"
        if isinstance(ref, Topology):
            topo: Topology = ref
        elif self.load is None:
            self.problem(where, f"topology {shown} cannot be read here: load the cascade with `moa.load`")
            return None
        else:
            try:
                topo = self.load(ref)
            except TopologyError as e:
                for line in e.problems:
                    self.problem(where, f"topology {shown}: {line}")
                return None
            except UserError as e:
                self.problem(where, str(e))
                return None
        if isinstance(topo, Composite):
            self.problem(where, f"topology `{topo.name}` is itself a cascade; a stage runs one topology")
            return None
        return topo

    def agent_stage(
        self, where: str, k: int, st: StageSpec, vote_on: str
    ) -> tuple[Topology, tuple[str, ...]] | None:
        assert st.agent is not None
        spec = self.agent(where, st.agent)
        n = st.samples or 1
        if spec is None:
            return None
        if n > 1 and not (spec.temperature or 0) > 0:
            self.problem(where, f"agent `{st.agent}` is sampled {n} times, so its temperature must be > 0")
        pre = f"s{k}."
        if n == 1:
            nodes = [NodeSpec(id=f"{pre}answer", agent=st.agent)]
            ids: tuple[str, ...] = (f"{pre}answer",)
            out = ids[0]
        else:
            ids = tuple(f"{pre}sample{i}" for i in range(1, n + 1))
            vote = NodeSpec(id=f"{pre}vote", reduce="majority", vote_on=vote_on, inputs=list(ids))
            nodes = [*(NodeSpec(id=i, agent=st.agent) for i in ids), vote]
            out = vote.id
        topo = Topology(name=f"{self.name}/stage{k}", agents={st.agent: spec}, nodes=nodes, output=out)
        return topo, ids

    def inline_stage(self, where: str, k: int, st: StageSpec) -> Topology | None:
        try:
            topo = Topology(
                name=f"{self.name}/stage{k}", agents=dict(self.agents), nodes=st.nodes, output=st.output
            )
        except TopologyError as e:
            for line in e.problems:
                self.problem(where, line)
            return None
        return prefixed(topo, f"s{k}.", topo.name)

    def judge(self, where: str, k: int, spec: JudgeSpec) -> Judge | None:
        rater: Topology | None
        if spec.agent is not None:
            a = self.agent(f"{where}.judge", spec.agent)
            if a is None:
                return None
            rater = Topology(
                name=f"{self.name}/judge{k}",
                agents={spec.agent: a},
                nodes=[NodeSpec(id="rate", agent=spec.agent)],
                output="rate",
            )
        else:
            assert spec.topology is not None
            rater = self.topology(f"{where}.judge", spec.topology)
            if rater is None:
                return None
        label = f"stage {k} judge"
        return Judge(prefixed(rater, f"s{k}.judge.", f"{self.name}/judge{k}"), spec.threshold, label)

    def rule(self, where: str, k: int, st: StageSpec, accept: AcceptSpec) -> Rule | None:
        if accept.agree is not None:
            n = st.samples or 1
            if st.agent is None:
                self.problem(where, "`agree` compares samples: use it on an agent stage with `samples`")
            elif accept.agree > n:
                self.problem(
                    where, f"`agree: {accept.agree}` needs at least {accept.agree} samples (has {n})"
                )
            return Agree(accept.agree, accept.vote_on)
        if accept.judge is not None:
            return self.judge(where + ".accept", k, accept.judge)
        if accept.custom is not None:
            return Custom(accept.custom)
        return Tests()

    def stage(self, i: int, st: StageSpec, last: bool) -> Stage | None:
        where, k = f"stages[{i}]", i + 1
        forms = [
            f
            for f, v in (("agent", st.agent), ("topology", st.topology), ("nodes", st.nodes))
            if v is not None
        ]
        if len(forms) != 1:
            got = ", ".join(f"`{f}`" for f in forms) or "none"
            self.problem(where, f"a stage is exactly one of `agent`, `topology` or `nodes` (got {got})")
            return None
        if st.samples is not None and st.agent is None:
            self.problem(where, "`samples` belongs to an agent stage")
        if st.output is not None and st.nodes is None:
            self.problem(where, "`output` belongs to inline `nodes`")
        if st.reuse and i == 0:
            self.problem(where, "`reuse` hands on earlier stages' answers, and the first stage has none")
        if last and st.accept is not None:
            self.problem(where, "the last stage always answers: remove its `accept` rule")
        if not last and st.accept is None:
            self.problem(
                where, f"no `accept` rule, so this stage always answers and stages[{i + 1}] never runs"
            )
        if not last and st.accept is not None and st.accept.agree == 1:
            self.problem(where, f"`agree: 1` holds for any answer, so stages[{i + 1}] never runs")
        rule = None if st.accept is None or last else self.rule(where, k, st, st.accept)
        samples: tuple[str, ...] = ()
        if st.agent is not None:
            vote_on = st.accept.vote_on if st.accept is not None else "text"
            built = self.agent_stage(where, k, st, vote_on)
            if built is None:
                return None
            topo, samples = built
            what = f"agent `{st.agent}` x{st.samples or 1}"
        elif st.nodes is not None:
            inline = self.inline_stage(where, k, st)
            if inline is None:
                return None
            topo, what = inline, "inline nodes"
        else:
            assert st.topology is not None
            loaded = self.topology(where, st.topology)
            if loaded is None:
                return None
            topo = prefixed(loaded, f"s{k}.", f"{self.name}/stage{k}")
            ref = st.topology if isinstance(st.topology, str) else None
            return Stage(k, topo, samples, rule, st.reuse, f"topology `{loaded.name}`", loaded, ref)
        return Stage(k, topo, samples, rule, st.reuse, what)


def resolve_stages(
    name: str, stages: Sequence[StageSpec], agents: Mapping[str, AgentSpec], load: Loader | None
) -> tuple[list[Stage], list[str]]:
    """The stages ready to run, and one line per problem (all of them, before any call)."""
    # as a topology's shorthands are capped before they expand: a few kilobytes of YAML aliases
    # (`stages: [&s {agent: a, samples: 64, ...}, *s, *s, ...]`) took minutes to check
    if len(stages) > MAX_LIST:
        return [], [f"stages: at most {MAX_LIST} stages (got {len(stages):,})"]
    r = _Resolver(name, agents, load)
    out: list[Stage] = []
    size = 0
    for i, st in enumerate(stages):
        s = r.stage(i, st, i == len(stages) - 1)
        if s is None:
            continue
        out.append(s)
        graphs = [s.topology.graph, *(g for _, g in (s.rule.graphs() if s.rule is not None else ()))]
        size += sum(_size(g) for g in graphs)
        if size > MAX_GRAPH:
            r.problem(
                f"stages[{i}]",
                f"the stages so far hold {size:,} nodes and inputs, over the limit of {MAX_GRAPH:,} "
                "for a whole cascade",
            )
            break
    return out, r.problems


def _size(graph: Graph) -> int:
    return len(graph.order) + sum(len(n.inputs) for n in graph.nodes.values())
