"""``Topology``: a validated topology you can run. It is the declarative spec (its
``model_json_schema()`` is one half of the file schema; ``moa.topology.schema`` adds cascades) plus
its checked graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Self

from pydantic import BaseModel, PrivateAttr, model_validator

from moa._run import Runner, default_runner, refuse_in_running_loop
from moa.calls.budget import Budget
from moa.errors import TopologyError
from moa.results import Done, RunInput, RunResult, Token
from moa.topology.graph import Graph, check_nodes
from moa.topology.shorthand import expand
from moa.topology.spec import TopologySpec

__all__ = ["Topology"]


class Topology(TopologySpec):
    """A topology whose graph has been validated; build one with ``moa.load``, ``moa.build`` or
    ``Topology.model_validate(data)``. Invalid structure raises ``TopologyError`` listing every problem."""

    _graph: Graph = PrivateAttr()

    @model_validator(mode="after")
    def _check_graph(self) -> Topology:
        nodes, output, problems = expand(self)
        graph, more = check_nodes(nodes, output, self.agents, build=not problems)
        if self.kind is not None and output is None:
            # the shorthand could not build its answer node (said above): asking for `output`,
            # which a shorthand refuses, would send the user the wrong way
            more = [m for m in more if not m.startswith("no `output`")]
        problems += more
        if problems or graph is None:
            raise TopologyError(problems or ["the topology has no nodes"], source=self.name)
        self._graph = graph
        return self

    @property
    def graph(self) -> Graph:
        """The validated graph (nodes in topological order, the output node, critical path helpers)."""
        # straight from pydantic's private store: ``self._graph`` first fails the normal lookup
        # (~1.3 µs, on every run given a Topology)
        private = self.__pydantic_private__
        return private["_graph"] if private is not None and "_graph" in private else self._graph

    def to_mermaid(self) -> str:
        return self._graph.to_mermaid()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with ``update``, validated again like a new topology. pydantic's copy does not
        validate: it kept the old graph under the new fields, so the copy ran one topology while its
        dump (which keys an experiment's stored runs) described another."""
        if not update:
            return super().model_copy(deep=deep)
        data = {name: getattr(self, name) for name in self.model_fields_set}
        return self.model_validate({**data, **update})

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
    ) -> RunResult:
        """Run on one prompt (or chat). Raises a ``moa.MoAError`` whose ``calls`` hold every call made.

        ``validate_output(answer)`` may raise ``moa.MalformedReply`` to have the output node retried.
        ``output_type`` (a pydantic model or a JSON Schema): the output node answers in JSON matching
        it, retried until it does, and ``result.parsed`` holds the value."""
        # the runner's checks, then its run awaited here: no level of the runner's between
        return await (runner or default_runner()).run(
            self.graph,
            prompt,
            name=self.name,
            budget=budget,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            validate_output=validate_output,
            output_type=output_type,
        )

    def run_sync(self, prompt: RunInput, **kwargs: Any) -> RunResult:
        """``run`` for code without an event loop (a fresh loop per call). Without a ``runner``, the
        clients it opens are closed before the loop ends."""
        refuse_in_running_loop(f"`{self.name}`: run_sync()", "await topology.run(...)")
        if kwargs.get("runner") is not None:
            return asyncio.run(self.run(prompt, **kwargs))

        async def once() -> RunResult:
            async with Runner() as runner:
                return await self.run(prompt, runner=runner, **kwargs)

        return asyncio.run(once())

    def stream(
        self,
        prompt: RunInput,
        *,
        runner: Runner | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[Token | Done]:
        """Yield the output node's tokens as they decode (after the nodes it reads have finished),
        then ``Done(result)``. Errors are raised from the iterator; closing it cancels the run."""
        return (runner or default_runner()).stream(
            self.graph, prompt, name=self.name, budget=budget, budget_usd=budget_usd, deadline_s=deadline_s
        )
