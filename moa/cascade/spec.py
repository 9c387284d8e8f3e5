"""The declarative part of a cascade file: its stages and their ``accept`` rules (pydantic, frozen,
``extra="forbid"``, so a misspelt rule is an error, not an always-escalating stage).

```yaml
stages:
  - {agent: mini, samples: 2, accept: {agree: 2, vote_on: last_number}}
  - {topology: parallel-3, reuse: true}
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from moa.topology.definition import Topology
from moa.topology.spec import NodeSpec, VoteOn, require_printable

if TYPE_CHECKING:
    from moa.cascade.context import CascadeContext

__all__ = ["AcceptFn", "AcceptSpec", "JudgeSpec", "StageSpec"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

#: a rule written in Python: ``(answer, context) -> bool`` (or an awaitable of it)
AcceptFn = Callable[[str, "CascadeContext"], "bool | Awaitable[bool]"]


def _python_name(fn: Any) -> str:
    # a callable has no file form: the dump (and an experiment's setup hash) names it
    return f"<python {getattr(fn, '__qualname__', type(fn).__name__)}>"


_Callable = Annotated[Callable[..., Any], PlainSerializer(_python_name, return_type=str)]


class JudgeSpec(BaseModel):
    """A model rates the answer's confidence from 0 to 1; the answer holds at ``threshold`` or above."""

    model_config = _FROZEN

    topology: str | None = Field(
        None, description="A topology file or preset that rates (its output is read)."
    )
    agent: str | None = Field(None, description="An agent of the cascade that rates, as a single call.")
    threshold: StrictFloat = Field(..., ge=0, le=1, description="The confidence the answer needs.")

    @model_validator(mode="after")
    def _one_rater(self) -> JudgeSpec:
        if (self.topology is None) == (self.agent is None):
            raise ValueError("a judge names exactly one rater: `topology` or `agent`")
        return self


class AcceptSpec(BaseModel):
    """When a stage's answer is final: exactly one rule."""

    model_config = _FROZEN

    agree: StrictInt | None = Field(
        None, ge=1, description="This many of the stage's samples give the same answer."
    )
    vote_on: VoteOn = Field("text", description="What `agree` compares: the text, last number or last line.")
    judge: JudgeSpec | None = Field(
        None, description="A model's confidence in the answer reaches a threshold."
    )
    tests: StrictBool | None = Field(None, description="The answer passes the item's tests in the sandbox.")
    custom: SkipJsonSchema[_Callable | None] = Field(
        None, description="Python only: `(answer, context) -> bool`."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if data == "tests":
            return {"tests": True}
        if callable(data):
            return {"custom": data}
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> AcceptSpec:
        rules = [n for n in ("agree", "judge", "tests", "custom") if getattr(self, n) not in (None, False)]
        if len(rules) != 1:
            got = ", ".join(f"`{r}`" for r in rules) or "none"
            raise ValueError(f"an accept rule is exactly one of `agree`, `judge`, `tests` (got {got})")
        if self.vote_on != "text" and self.agree is None:
            raise ValueError("`vote_on` belongs to an `agree` rule")
        return self


class StageSpec(BaseModel):
    """One stage: an agent sampled ``samples`` times, a topology (file, preset, inline mapping or
    ``Topology``), or inline ``nodes``; its ``accept`` rule; whether it reads the earlier stages' answers (``reuse``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    agent: str | None = Field(None, description="An agent of the cascade, sampled `samples` times.")
    samples: StrictInt | None = Field(None, ge=1, le=64, description="Agent stages: independent samples.")
    topology: str | dict[str, Any] | SkipJsonSchema[InstanceOf[Topology]] | None = Field(
        None,
        description="A topology file (relative to the cascade file), a preset name, or a topology "
        "written inline (a mapping, as a topology file holds: what a cascade's dump holds).",
    )
    nodes: list[NodeSpec] | None = Field(None, description="Inline nodes over the cascade's agents.")
    output: str | None = Field(None, description="Inline nodes: the node whose output is the answer.")
    accept: AcceptSpec | None = Field(
        None, description="When this stage's answer is final; the last stage has none (it always answers)."
    )
    reuse: StrictBool = Field(
        False, description="The earlier stages' answers join this stage's prompt as candidate answers."
    )

    @field_validator("agent", "output")
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        return require_printable(v, "name")

    @field_validator("topology")
    @classmethod
    def _printable_reference(cls, v: Any) -> Any:
        return require_printable(v, "value") if isinstance(v, str) else v
