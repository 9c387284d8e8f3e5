"""The checks of what is read from a store before it is used: a run's row, a call's row and a cached
reply's row (SQLite's columns are not typed), their JSON columns, and the manifest (JSON). A store
damaged or edited by hand (a colleague's results folder, a downloaded artifact) can hold a text, a
blob or a NULL where a number is meant, an infinite cost, or JSON of another shape."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from moa.eval.stats import MAX_BOOTSTRAP_ROUNDS
from moa.safe_read import parse_json

__all__ = [
    "CACHE_TYPES",
    "CALL_TYPES",
    "bad_call_sql",
    "call_row_problem",
    "edited",
    "manifest_problem",
    "parsed_call_row",
    "parsed_run_row",
]

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
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,), "num": (int, float), "str": (str,), "count": (int,), "amount": (int, float),
}  # fmt: skip
_KIND_NAMES = {
    "int": "an integer", "num": "a number", "str": "text", "count": "a count (an integer, not negative)",
    "amount": "a finite number, not negative",
}  # fmt: skip
#: SQLite's largest integer: a count past it came from no SQLite column, and cannot go back into one
_MAX_COUNT = 2**63 - 1
#: the JSON lists of a run: each turn's answer (texts), each turn's score (numbers)
_JSON_LISTS = (("turns_json", 13, (str,), "texts"), ("turn_scores_json", 17, (int, float), "numbers"))


def edited(path: object, where: str, *, run: bool = False) -> str:
    """The line for a store holding at ``where`` what moa did not write (damaged, or edited by
    hand), with the way out: a bad run can be deleted and run again, anything else needs a copy."""
    remedy = "delete that run (the next `moa compare` runs it again)" if run else "use another --out"
    return f"{path}: {where}: the store is damaged or was edited; restore it from a copy, or {remedy}"


def _value_problem(name: str, kind: str, value: Any, *, shown: bool = False) -> str | None:
    if value is None and kind.endswith("?"):
        return None
    kind = kind.rstrip("?")
    fits = isinstance(value, _KINDS[kind]) and not isinstance(value, bool)
    if fits and kind == "count":
        fits = 0 <= value <= _MAX_COUNT
    elif fits and kind == "amount":
        fits = value >= 0 and (shown or math.isfinite(value))
    if fits:
        return None
    held = "NULL" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
    return f"`{name}` holds {held}, not {_KIND_NAMES[kind]}"


def _fields_problem(types: Iterable[tuple[str, str]], values: Iterable[Any]) -> str | None:
    for (name, kind), value in zip(types, values, strict=False):
        if (problem := _value_problem(name, kind, value)) is not None:
            return problem
    return None


def parsed_run_row(row: Sequence[Any]) -> tuple[str | None, list[Any]]:
    """What in a stored run's row is not of its field's type, naming the field (None if nothing),
    and the row with its JSON lists parsed as ``RunRow`` holds them (each turn's answer and score,
    None where NULL), so its reader does not parse them again."""
    values = list(row)
    if (problem := _fields_problem(_RUN_TYPES, row)) is not None:
        return problem, values
    for name, at, types, what in _JSON_LISTS:
        if at >= len(row) or row[at] is None:
            continue
        try:
            value = parse_json(row[at])
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, types) for v in value):
            return f"`{name}` is not a JSON list of {what}", values
        # a score stored as 1 is read as 1.0, as every other score
        values[at] = [float(v) for v in value] if what == "numbers" else value
    return None, values


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
    bootstrap_rounds: int = Field(2000, ge=1, le=MAX_BOOTSTRAP_ROUNDS)


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


#: the columns of a stored call (``calls``) its readers use, by kind: "count" is an integer from 0 to
#: SQLite's largest, "amount" a finite number not below 0 (a text cost summed as 0 in `moa view`'s
#: table; an infinite one replayed made every total infinite, though the viewer shows it as missing
#: and names it), "json" a JSON column checked by its own shape
CALL_TYPES = (
    ("seq", "int"), ("node", "str"), ("model", "str"), ("requested_model", "str"),
    ("prompt_tokens", "count"), ("completion_tokens", "count"), ("cost_usd", "amount"),
    ("cost_usd_max", "amount"), ("latency_s", "amount"), ("attempts", "count"), ("error", "str?"),
    ("started_s", "amount"), ("cached", "int"), ("attempt_log", "json?"), ("messages", "json?"),
    ("reply", "str?"), ("cached_tokens", "count"), ("cache_write_tokens", "count"),
    ("cache_write_1h_tokens", "count"), ("service_tier", "str?"), ("usage_suspect", "int"),
    ("usage_estimated", "int"),
)  # fmt: skip
#: the columns of a cached reply (``cache``), in ``StoreCache``'s order; NULL times and flags: cached
#: by an older moa
CACHE_TYPES = (
    ("text", "str"), ("model", "str"), ("reply_model", "str"), ("finish_reason", "str?"),
    ("prompt_tokens", "count"), ("completion_tokens", "count"), ("cost_usd", "amount"),
    ("latency_s", "amount?"), ("queued_s", "amount?"), ("usage_estimated", "int?"),
    ("cached_tokens", "count"), ("cache_write_tokens", "count"), ("cache_write_1h_tokens", "count"),
    ("usage_suspect", "int"), ("service_tier", "str?"), ("attempt_log", "json?"), ("answer_only", "int?"),
)  # fmt: skip

_Count = Field(0, ge=0, le=_MAX_COUNT)
_Amount = Field(0.0, ge=0)


class _Shape(BaseModel):
    # infinities pass here: whether they may be shown is ``_infinite``'s to say
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=True)


class _Lifetimes(_Shape):
    ephemeral_1h_input_tokens: int = _Count


class _Details(_Shape):
    cached_tokens: int = _Count
    cache_creation_tokens: int = _Count
    cache_creation_token_details: _Lifetimes | None = None


class _UsageShape(_Shape):
    prompt_tokens: int = _Count
    completion_tokens: int = _Count
    prompt_tokens_details: _Details | None = None


class _AttemptShape(_Shape):
    """An entry of an ``attempt_log`` as ``Attempt.from_dict`` reads it (``worst_case_usd``: the cache's)."""

    status: Literal["ok", "error", "timeout", "cancelled"]
    latency_s: float = _Amount
    usage: _UsageShape | None = None
    error: str | None = None
    cost_usd: float | None = _Amount
    worst_case_usd: float = _Amount


_JSON_SHAPES: dict[str, TypeAdapter[Any]] = {
    "attempt_log": TypeAdapter(list[_AttemptShape]),
    # a message's fields are texts: the trace shows them, and tuning compares them with a request's
    "messages": TypeAdapter(list[dict[str, str]], config=ConfigDict(strict=True)),
}


def _infinite(value: Any, where: str) -> str | None:
    """Where in ``value`` (JSON) a number is not finite, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _infinite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}")
        if found is not None:
            return found
    return None


def _json_problem(name: str, text: Any, *, shown: bool) -> tuple[str | None, Any]:
    """What in the JSON column ``name`` is not of its shape (None if nothing), and its value."""
    if not isinstance(text, str):
        return _value_problem(name, "str", text), None
    try:
        value = parse_json(text)
    except ValueError:
        return f"`{name}` is not JSON", None
    if not shown and (where := _infinite(value, name)) is not None:
        return f"`{where}` is not a finite number", value
    try:
        _JSON_SHAPES[name].validate_python(value)
    except ValidationError as e:
        err = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        return f"`{name}{where}`: {err['msg']}", value
    return None, value


def call_row_problem(
    types: Sequence[tuple[str, str]], row: Sequence[Any], *, shown: bool = False
) -> str | None:
    """What in a stored call's (or cached reply's) row, its columns named by ``types``, is not of its
    field's type or shape, naming the field (None if nothing). ``shown``: the row is only shown (the
    viewer), so an infinite amount passes, to show as missing and be named on the page."""
    return parsed_call_row(types, row, shown=shown)[0]


def parsed_call_row(
    types: Sequence[tuple[str, str]], row: Sequence[Any], *, shown: bool = False
) -> tuple[str | None, list[Any]]:
    """``call_row_problem``, and the row with its JSON columns parsed (None where NULL or empty), so
    its reader does not parse them again."""
    values = list(row)
    for at, ((name, kind), value) in enumerate(zip(types, row, strict=True)):
        if kind.rstrip("?") != "json":
            problem = _value_problem(name, kind, value, shown=shown)
        elif value is None or value == "":
            problem, values[at] = None, None
        else:
            problem, values[at] = _json_problem(name, value, shown=shown)
        if problem is not None:
            return problem, values
    return None, values


def bad_call_sql(alias: str) -> str:
    """An SQL condition true for a call row (table alias ``alias``) whose numbers ``moa view`` sums
    are not counts or amounts: SQLite sums a text as 0 and ignores a NULL, silently."""
    out = []
    for name, kind in CALL_TYPES:
        col = f"{alias}.{name}"
        if kind == "count":
            out.append(f"typeof({col}) <> 'integer' OR {col} < 0")
        elif kind == "amount" and name != "cost_usd_max":  # NULL: stored by an older moa
            out.append(f"typeof({col}) NOT IN ('integer', 'real') OR {col} < 0")
    return " OR ".join(out)
