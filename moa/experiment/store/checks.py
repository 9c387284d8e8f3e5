"""The checks of what is read from a store before it is used: a run's row (SQLite's columns are not
typed) and the manifest (JSON). A store damaged or edited by hand (a colleague's results folder, a
downloaded artifact) can hold a text, a blob or a NULL where a number is meant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa.safe_read import parse_json

__all__ = ["manifest_problem", "run_row_problem"]

#: RunRow's fields by the type SQLite must hand back for them ("num": an int or a float; a trailing
#: "?" also allows NULL): a store edited by hand or damaged holds any type in any column (SQLite's
#: columns are not typed), and a text cost ended `moa report` in a TypeError traceback
_RUN_TYPES = (
    ("run_id", "int"), ("setup", "str"), ("item_id", "str"), ("answer", "str?"), ("error", "str?"),
    ("cost_usd", "num"), ("latency_s", "num"), ("prompt_tokens", "int"), ("completion_tokens", "int"),
    ("n_calls", "int"), ("sample", "int"), ("cost_usd_max", "num"), ("unknown_usage_attempts", "int"),
    ("turns_json", "str?"), ("stage", "int?"), ("score", "num?"), ("detail", "str?"),
    ("turn_scores_json", "str?"),
)  # fmt: skip
_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "num": (int, float), "str": (str,)}
_KIND_NAMES = {"int": "an integer", "num": "a number", "str": "text"}
#: the JSON lists of a run: each turn's answer (texts), each turn's score (numbers)
_JSON_LISTS = (("turns_json", 13, (str,), "texts"), ("turn_scores_json", 17, (int, float), "numbers"))


def run_row_problem(row: Sequence[Any]) -> str | None:
    """What in a stored run's row is not of its field's type, naming the field (None if nothing)."""
    for (name, kind), value in zip(_RUN_TYPES, row, strict=False):
        if value is None and kind.endswith("?"):
            continue
        if not isinstance(value, _KINDS[kind.rstrip("?")]):
            shown = "NULL" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
            return f"`{name}` holds {shown}, not {_KIND_NAMES[kind.rstrip('?')]}"
    for name, at, types, what in _JSON_LISTS:
        if at >= len(row) or row[at] is None:
            continue
        try:
            value = parse_json(row[at])
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, types) for v in value):
            return f"`{name}` is not a JSON list of {what}"
    return None


class _SetupShape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    hash: str
    source: str
    is_baseline: bool


class _ManifestShape(BaseModel):
    """The manifest fields `moa report` and `moa view` read (the rest are let through)."""

    model_config = ConfigDict(extra="allow", strict=True)

    experiment: str
    item_ids: list[str]
    setups: list[_SetupShape] = Field(min_length=1)
    evaluator: dict[str, Any]
    evaluator_id: str
    samples: int = Field(1, ge=1)
    pairwise: bool = False
    seed: int = 0
    # bounded above as the experiment file bounds it: a store claiming 10**12 rounds never reported
    bootstrap_rounds: int = Field(2000, ge=1, le=100_000)


def manifest_problem(manifest: Any) -> str | None:
    """Why ``manifest`` cannot be shown (one line naming the field), or None."""
    try:
        m = _ManifestShape.model_validate(manifest)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "manifest"
        return f"manifest `{field}`: {err['msg']}"
    if sum(s.is_baseline for s in m.setups) != 1:
        return "manifest `setups`: not exactly one baseline"
    return None
