"""A manager's plan in a hierarchical topology: its reply read as exactly one instruction per worker
(validated structured output). A reply that does not parse is a ``MalformedReply``, which the
runner retries like any other malformed reply, its tokens still on the record."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from moa._run.json_reply import DuplicateKey, NotText, json_spans, loads_unique
from moa.errors import MalformedReply

__all__ = ["parse_plan"]


class _Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: may be empty: `{"instructions": []}` is a plan of no tasks, refused for its count
    instructions: list[str]


#: what the plan prompt's own example holds (`{"instructions": ["...", "..."]}`)
_PLACEHOLDERS = frozenset({"...", "…"})


def _read(span: str, *, node: str, model: str) -> tuple[bool, list[str]] | None:
    """``span`` as a plan: (whether it is the ``{"instructions": [...]}`` asked for, its
    instructions), or None when it is no plan. The prompt's example, echoed anywhere in the reply,
    is no plan: its workers were sent "..." to do."""
    try:
        data: Any = loads_unique(span)
        if isinstance(data, list):
            # a bare list of strings is a plan too, but an empty one is no plan: prose's `[]`
            plan = (False, _Plan(instructions=data).instructions) if data else None
        else:
            plan = True, _Plan.model_validate(data).instructions
    except (DuplicateKey, NotText) as e:
        # two `instructions` (which plan was meant is unknown), or an instruction no worker's
        # request could carry
        raise MalformedReply(f"plan: {e}", model=model, node=node) from None
    except (ValueError, RecursionError, ValidationError):
        # not JSON, or hostile JSON: an integer past Python's digit limit, nesting past its stack
        return None
    if plan is not None and plan[1] and all(s.strip() in _PLACEHOLDERS for s in plan[1]):
        return None
    return plan


def _last_plan(text: str, *, node: str, model: str) -> list[str] | None:
    """The plan the reply ends on: the last ``{"instructions": [...]}`` in it, or failing any,
    the last bare list of strings. A model that drafts a plan and then corrects it ("Actually, the
    final plan: ...") means the correction, and one that first echoes the form it was asked for
    (`{"instructions": ["...", "..."]}`) means what follows; the first plan ran the draft."""
    read: dict[str, tuple[bool, list[str]] | None] = {}
    best: tuple[bool, int, list[str]] | None = None
    for start, span in json_spans(text):
        if span not in read:
            read[span] = _read(span, node=node, model=model)
        plan = read[span]
        if plan is not None and (best is None or (plan[0], start) > best[:2]):
            best = (plan[0], start, plan[1])
    return None if best is None else best[2]


def parse_plan(text: str, n: int, *, node: str, model: str) -> list[str]:
    """A manager's reply as exactly ``n`` instructions, or ``MalformedReply`` (which is retried)."""
    plan = _last_plan(text, node=node, model=model)
    if plan is None:
        snippet = " ".join(text.split())[:80]
        raise MalformedReply(
            f'plan is not JSON of the form {{"instructions": [...]}}: "{snippet}"', model=model, node=node
        )
    items = [s.strip() for s in plan]
    if len(items) < n:
        raise MalformedReply(
            f"plan has {len(items)} instructions but there are {n} workers", model=model, node=node
        )
    # instruction i is worker i's: dropping a blank one would hand the next worker's task down
    blank = next((i for i, s in enumerate(items[:n], 1) if not s), None)
    if blank is not None:
        raise MalformedReply(
            f"plan's instruction {blank} (of {n}, one per worker) is empty", model=model, node=node
        )
    return items[:n]
