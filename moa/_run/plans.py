"""A manager's plan in a hierarchical topology: its reply read as exactly one instruction per worker
(validated structured output). A reply that does not parse is a ``MalformedReply``, which the
runner retries like any other malformed reply, its tokens still on the record."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa._run.json_reply import DuplicateKey, NotText, json_candidates, loads_unique
from moa.errors import MalformedReply

__all__ = ["parse_plan"]


class _Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")
    instructions: list[str] = Field(min_length=1)


def parse_plan(text: str, n: int, *, node: str, model: str) -> list[str]:
    """A manager's reply as exactly ``n`` instructions, or ``MalformedReply`` (which is retried)."""
    for c in json_candidates(text):
        try:
            data = loads_unique(c)
            if isinstance(data, list):
                data = {"instructions": data}
            plan = _Plan.model_validate(data)
        except (DuplicateKey, NotText) as e:
            # two `instructions` (which plan was meant is unknown), or an instruction no worker's
            # request could carry
            raise MalformedReply(f"plan: {e}", model=model, node=node) from None
        except (ValueError, RecursionError, ValidationError):
            # not JSON, or hostile JSON: an integer past Python's digit limit, nesting past its stack
            continue
        items = [s.strip() for s in plan.instructions]
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
    snippet = " ".join(text.split())[:80]
    raise MalformedReply(
        f'plan is not JSON of the form {{"instructions": [...]}}: "{snippet}"', model=model, node=node
    )
