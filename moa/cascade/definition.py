"""``Cascade``: stages tried in order, the first whose ``accept`` rule holds answering (the last
always answers), so the mixture runs only where a cheap answer is not good enough.

A ``Cascade`` is a ``Topology`` (so ``moa.load``, experiments, ``moa serve`` and ``moa validate``
take it as they are), whose ``graph`` is its last stage's; the runner sees that it is made of
several graphs (``parts``, ``run_on``: ``moa._run.runner.Composite``) and hands it the run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from moa._run import Runner, default_runner
from moa._run.runner import RunOptions
from moa.calls.budget import Budget
from moa.cascade.context import item_scope
from moa.cascade.execute import run_cascade
from moa.cascade.spec import StageSpec
from moa.cascade.stages import Loader, Stage, resolve_stages
from moa.errors import TopologyError
from moa.results import Done, RunInput, RunResult, Token
from moa.topology.definition import Topology
from moa.topology.graph import Graph, mermaid_text
from moa.topology.spec import AgentSpec

__all__ = ["NOT_IN_CASCADE", "Cascade"]

# the topology fields a cascade does not use: its stages hold nodes and shorthands
_UNUSED = (
    "nodes",
    "output",
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
)
#: every topology field a cascade refuses (the two with defaults included): its schema leaves them out
NOT_IN_CASCADE = frozenset({*_UNUSED, "vote_on", "on_quorum"})


class Cascade(Topology):
    """A cascade file (``kind: cascade``), validated with every stage before any call. Build one
    with ``moa.load``/``moa.load_data`` (which read the stages' topology files and presets) or
    ``Cascade.model_validate(data)`` with ``Topology`` objects as stage topologies."""

    kind: Literal["cascade"] = "cascade"  # type: ignore[assignment]
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    stages: list[StageSpec] = Field(
        ...,
        min_length=1,
        description="Tried in order; the last always answers. Once validated, a stage's topology file or "
        "preset name is replaced by the topology read from it.",
    )

    _stages: tuple[Stage, ...] = PrivateAttr()

    @model_validator(mode="after")
    def _check_graph(self, info: ValidationInfo) -> Cascade:
        problems = [
            f"`{f}` is not used by `kind: cascade`: a stage holds it"
            for f in _UNUSED
            if getattr(self, f) is not None
        ]
        if self.vote_on != "text" or self.on_quorum != "cancel":
            problems.append("`vote_on` and `on_quorum` are not used by `kind: cascade`: a stage holds them")
        load: Loader | None = (info.context or {}).get("load") if info.context is not None else None
        stages, more = resolve_stages(self.name, self.stages, self.agents, load)
        problems += more
        if problems:
            raise TopologyError(problems, source=self.name)
        self._stages = tuple(stages)
        self._graph = stages[-1].topology.graph
        # a stage named by file or preset holds what was read, so the dump (which keys an
        # experiment's stored runs) changes when that file does
        read = [
            st.model_copy(update={"topology": s.loaded}) if s.loaded is not None else st
            for st, s in zip(self.stages, stages, strict=True)
        ]
        self.__dict__["stages"] = read
        return self

    @model_serializer(mode="wrap")
    def _dump_with_kind(self, handler: SerializerFunctionWrapHandler) -> Any:
        # a dump is a cascade file: `kind` says it is one (a dump leaving defaults out lost it and
        # loaded as a topology with an unknown field), and the topology fields a cascade refuses
        # stay out (the schema, which editors check files with, refuses them)
        data = handler(self)
        if not isinstance(data, dict):
            return data
        return {"kind": "cascade", **{k: v for k, v in data.items() if k not in NOT_IN_CASCADE}}

    @property
    def stage_list(self) -> tuple[Stage, ...]:
        """The resolved stages, in order."""
        return self._stages

    def parts(self) -> Sequence[tuple[str, Graph]]:
        out: list[tuple[str, Graph]] = []
        for s in self._stages:
            out.append((f"stage {s.number} ({s.what})", s.topology.graph))
            if s.rule is not None:
                out.extend(s.rule.graphs())
        return out

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for s in self._stages:
            lines.append(f'  subgraph stage{s.number}["stage {s.number}: {mermaid_text(s.what)}"]')
            chart = s.topology.graph.to_mermaid(prefix=f"s{s.number}n")
            lines += ["  " + ln for ln in chart.splitlines()[1:]]
            lines.append("  end")
        for a, b in zip(self._stages, self._stages[1:], strict=False):
            lines.append(f"  stage{a.number} -. escalate .-> stage{b.number}")
        return "\n".join(lines)

    async def run_on(self, runner: Runner, prompt: RunInput, options: RunOptions) -> RunResult:
        """The runner's way in (``Runner.run`` on a cascade lands here)."""
        return await run_cascade(self.name, self._stages, runner, prompt, options)

    async def run(
        self,
        prompt: RunInput,
        *,
        runner: Runner | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
        validate_output: Callable[[str], None] | None = None,
        output_type: type[BaseModel] | Mapping[str, Any] | None = None,
        item: Any = None,
    ) -> RunResult:
        """Run on one prompt; ``item`` (a dataset ``Item``) is what the ``tests`` rule checks against."""
        with item_scope(item) if item is not None else contextlib.nullcontext():
            return await (runner or default_runner()).run(
                self,
                prompt,
                name=self.name,
                budget=budget,
                budget_usd=budget_usd,
                deadline_s=deadline_s,
                validate_output=validate_output,
                output_type=output_type,
            )

    def stream(
        self,
        prompt: RunInput,
        *,
        runner: Runner | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[Token | Done]:
        """The last stage's tokens as they decode, or an earlier stage's accepted answer whole, then
        ``Done(result)``."""
        return (runner or default_runner()).stream(
            self, prompt, name=self.name, budget=budget, budget_usd=budget_usd, deadline_s=deadline_s
        )
