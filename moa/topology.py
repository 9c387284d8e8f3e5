"""``Topology``: a validated topology you can run. It is the declarative spec (so
``moa.Topology.model_json_schema()`` is the schema of topology files) plus its checked graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr, model_validator

from moa.errors import TopologyError
from moa.graph import Graph, check_nodes
from moa.shorthand import expand
from moa.spec import TopologySpec

if TYPE_CHECKING:
    from moa.budget import Budget
    from moa.engine import RunInput, Runner
    from moa.results import RunResult

__all__ = ["Done", "Token", "Topology"]


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of the answer as the output node decodes it."""

    node: str
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a stream: the full ``RunResult``."""

    result: RunResult


class Topology(TopologySpec):
    """A topology whose graph has been validated; build one with ``moa.load``, ``moa.build`` or
    ``Topology.model_validate(data)``. Invalid structure raises ``TopologyError`` listing every problem."""

    _graph: Graph = PrivateAttr()

    @model_validator(mode="after")
    def _check_graph(self) -> Topology:
        nodes, output, problems = expand(self)
        graph, more = check_nodes(nodes, output, self.agents, build=not problems)
        problems += more
        if problems or graph is None:
            raise TopologyError(problems or ["the topology has no nodes"], source=self.name)
        self._graph = graph
        return self

    @property
    def graph(self) -> Graph:
        """The validated graph (nodes in topological order, the output node, critical path helpers)."""
        return self._graph

    def to_mermaid(self) -> str:
        return self._graph.to_mermaid()

    async def run(
        self,
        prompt: RunInput,
        *,
        runner: Runner | None = None,
        budget: Budget | None = None,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
        validate_output: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Run on one prompt (or chat). Raises a ``moa.MoAError`` whose ``calls`` hold every call made.

        ``validate_output(answer)`` may raise ``moa.MalformedReply`` to have the output node retried."""
        from moa.engine import default_runner

        r = runner or default_runner()
        return await r.run(
            self,
            prompt,
            budget=budget,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            validate_output=validate_output,
        )

    def run_sync(self, prompt: RunInput, **kwargs: Any) -> RunResult:
        """``run`` for code without an event loop (a fresh loop per call). Without a ``runner``, the
        clients it opens are closed before the loop ends."""
        if kwargs.get("runner") is not None:
            return asyncio.run(self.run(prompt, **kwargs))

        async def once() -> RunResult:
            from moa.engine import Runner

            async with Runner() as runner:
                return await self.run(prompt, runner=runner, **kwargs)

        return asyncio.run(once())

    async def stream(
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
        from moa.engine import default_runner

        r = runner or default_runner()
        queue: asyncio.Queue[Token | None] = asyncio.Queue()
        output = self._graph.output

        def on_token(text: str) -> None:
            queue.put_nowait(Token(output, text))

        task = asyncio.create_task(
            r.run(
                self, prompt, budget=budget, budget_usd=budget_usd, deadline_s=deadline_s, on_token=on_token
            )
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
            yield Done(await task)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
