"""What an accept rule sees besides the answer: the prompt, the dataset item being answered (for the
``tests`` rule), the stage and its samples. The item reaches a cascade run through ``item_scope``,
which an experiment opens around each run, because ``Runner.run`` carries prompts, not items."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moa.results import RunInput, RunResult

if TYPE_CHECKING:
    from moa.eval.datasets import Item

__all__ = ["CascadeContext", "current_item", "item_scope"]

_ITEM: ContextVar[Item | None] = ContextVar("moa_cascade_item", default=None)


@contextmanager
def item_scope(item: Item | None) -> Iterator[None]:
    """Cascade runs inside this block (in this task and the tasks it starts) see ``item``."""
    token = _ITEM.set(item)
    try:
        yield
    finally:
        _ITEM.reset(token)


def current_item() -> Item | None:
    return _ITEM.get()


@dataclass(frozen=True, slots=True)
class CascadeContext:
    """The second argument of an accept rule."""

    #: the prompt (or chat) the cascade answers
    prompt: RunInput
    #: the dataset item, inside an experiment (or ``Cascade.run(..., item=...)``); else None
    item: Item | None
    #: the stage whose answer is judged, 1-based
    stage: int
    #: an agent stage's samples, in node order (the ones that answered); empty for a topology stage
    samples: tuple[str, ...] = ()
    #: the stage's own run (with ``output_type``, ``result.parsed`` is its answer parsed)
    result: RunResult | None = field(default=None, repr=False)
    #: with ``output_type``: ``samples`` parsed, in the same order; else empty
    parsed_samples: tuple[Any, ...] = field(default=(), repr=False)
