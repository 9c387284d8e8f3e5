"""Typed output: the output node is asked for JSON matching a schema, its reply is checked inside the
run (a reply that does not match is a ``MalformedReply``, retried like a malformed plan and never
cached), and the run's result carries the parsed value (``RunResult.parsed``).

The schema is given either as a pydantic model (``output_type=Answer``: validated by pydantic in
strict mode, so ``"3"`` is no int, unless the model's config sets ``strict`` itself; parsed to an
instance) or as a JSON Schema mapping (``moa run --output-schema FILE``: parsed to plain JSON and
checked for the schema's top-level ``type``, ``required`` properties and the JSON types of the
properties it declares). Either way an object naming a key twice is refused: which value the
model meant is unknown. The schema is put in the output node's prompt (under a ``reduce`` output,
in the prompts of the agents feeding it, whose replies it returns), which every provider
understands, rather than in a provider-specific ``response_format``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from moa._run.json_reply import DuplicateKey, NotFinite, NotText, json_candidates, loads_unique
from moa.errors import MalformedReply, RequestRefused

__all__ = ["TypedOutput", "answer_key", "schema_problem"]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    for k in kinds:
        types = _JSON_TYPES.get(str(k))
        if types is None:
            return True  # a type this check does not know: leave it to the caller
        if isinstance(value, bool) and k in ("integer", "number"):
            continue
        if isinstance(value, types):
            return True
        # JSON Schema (draft 6 on) counts any number with no fractional part as an integer: JSON
        # itself does not tell `2` from `2.0`, and a model writing `2.0` answered an integer
        if k == "integer" and isinstance(value, float) and value.is_integer():
            return True
    return False


def _type_problem(kind: Any, where: str) -> str | None:
    kinds = kind if isinstance(kind, list) else [kind]
    unknown = [k for k in kinds if not isinstance(k, str) or k not in _JSON_TYPES]
    if unknown or not kinds:
        return f"`{where}` {kind!r} is not a JSON type ({', '.join(_JSON_TYPES)}, or a list of them)"
    return None


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What in a JSON Schema the answer's check cannot read, or None. Found only after the output
    node was paid for, such a schema would fail every run (an unknown `type` matched anything)."""
    if "type" in schema and (problem := _type_problem(schema["type"], "type")):
        return problem
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
        return "`required` must be a list of property names"
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping) or not all(isinstance(p, Mapping) for p in properties.values()):
        return "`properties` must map each property name to a JSON Schema object"
    for name, prop in properties.items():
        if "type" in prop and (problem := _type_problem(prop["type"], f"properties.{name}.type")):
            return problem
    return None


#: the problems of a reply a MalformedReply names (pydantic finds one per field at fault)
_SHOWN = 5


def _refuse_what_json_has_not(text: str) -> None:
    """``MalformedReply`` if one object of the reply names a key twice (of which pydantic would keep
    the last, silently), or the reply holds ``NaN``, ``Infinity`` or a number past a float's range
    (which pydantic reads as a float, and ``--json`` would print as no JSON). Text that is not JSON
    is left to pydantic to report."""
    try:
        loads_unique(text)
    except DuplicateKey as e:
        raise MalformedReply(f"typed output: {e}") from None
    except NotFinite as e:
        raise MalformedReply(f"typed output: the answer is not JSON: {e}") from None
    except (ValueError, RecursionError):
        pass


def _non_finite(value: Any, where: str = "") -> str | None:
    """The place (``a.b.0``; ``the answer`` at the top) of the first infinite or NaN float in a
    parsed answer, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "the answer"
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        found = _non_finite(inner, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def answer_key(value: Any) -> str:
    """What two parsed answers are compared by in a vote (``majority``, a cascade's ``agree``): the
    value as canonical JSON, so key order, whitespace and a fence around the reply do not matter,
    and ``2`` and ``2.0`` are one JSON number. Strings compare exactly. ``""``, a vote for nothing,
    for a value nested too deeply to write again (a hostile reply that the check, higher on the
    stack, could just read)."""
    try:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        same = json.loads(text, parse_float=_number)
        return json.dumps(same, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return ""


class TypedOutput:
    """A schema the output node's answer must match."""

    def __init__(self, schema: type[BaseModel] | Mapping[str, Any]) -> None:
        #: the schema as given, which a cascade hands each stage's run
        self.given = schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self.model: type[BaseModel] | None = schema
            self.schema: dict[str, Any] = schema.model_json_schema()
            #: a reply is read strictly (``"3"`` is no int, ``"yes"`` no bool), as a JSON Schema's
            #: types are, unless the model's own config says how strict it is
            self.strict: bool | None = None if "strict" in schema.model_config else True
        elif isinstance(schema, Mapping):
            problem = schema_problem(schema)
            if problem is not None:
                raise RequestRefused(f"the output schema: {problem}", field="output_type")
            self.model = None
            self.schema = dict(schema)
            self.strict = True
        else:
            raise RequestRefused(
                f"must be a pydantic model class or a JSON Schema mapping, not {schema!r}",
                field="output_type",
            )

    def instruction(self) -> str:
        """What the output node is told, after its own prompt."""
        return (
            "Answer with one JSON value only (no prose before or after it) that matches this JSON "
            f"Schema:\n{json.dumps(self.schema, ensure_ascii=False)}"
        )

    def parse(self, reply: str) -> Any:
        """The reply as the schema's value: the first JSON span of the reply (``json_candidates``)
        that matches; else ``MalformedReply`` naming what the most explicit one lacks."""
        first: MalformedReply | None = None
        for text in json_candidates(reply):
            try:
                return self._parse(text)
            except MalformedReply as e:
                first = first or e
        assert first is not None  # json_candidates always yields the whole reply
        raise first

    def _parse(self, text: str) -> Any:
        if self.model is not None:
            _refuse_what_json_has_not(text)
            try:
                parsed = self.model.model_validate_json(text, strict=self.strict)
            except ValidationError as e:
                # every field at fault, so a log (and a retry's record) shows what the reply half-did
                problems = [
                    f"{'.'.join(str(p) for p in err['loc']) or 'the answer'}: {err['msg']}"
                    for err in e.errors(include_url=False)[:_SHOWN]
                ]
                raise MalformedReply(
                    f"typed output: {'; '.join(problems)} ({e.error_count()} problem(s) against "
                    f"`{self.model.__name__}`)"
                ) from None
            # an integer of 309 digits is JSON, and a `float` field reads it as infinity
            where = _non_finite(parsed.model_dump())
            if where is not None:
                raise MalformedReply(f"typed output: {where}: the number is past a float's range")
            return parsed
        try:
            value = loads_unique(text)
        except (DuplicateKey, NotText) as e:
            raise MalformedReply(f"typed output: {e}") from None
        except ValueError as e:
            raise MalformedReply(f"typed output: the answer is not JSON: {e}") from None
        except RecursionError:
            raise MalformedReply("typed output: the answer's JSON is nested too deeply to read") from None
        self._check(value)
        return value

    def validate(self, reply: str) -> None:
        self.parse(reply)

    def key(self, reply: str) -> str:
        """A checked reply's vote (``answer_key`` of its value); ``""``, a vote for nothing, for one
        that does not match (a reply no check has passed)."""
        try:
            return answer_key(self.parse(reply))
        except MalformedReply:
            return ""

    def _check(self, value: Any) -> None:
        kind = self.schema.get("type")
        if kind is not None and not _type_ok(value, kind):
            raise MalformedReply(f"typed output: expected a JSON {kind}, got {type(value).__name__}")
        if isinstance(value, dict):
            missing = [k for k in self.schema.get("required", []) if k not in value]
            if missing:
                raise MalformedReply(f"typed output: missing required field(s): {', '.join(missing)}")
            for name, prop in (self.schema.get("properties") or {}).items():
                typed = name in value and isinstance(prop, Mapping) and "type" in prop
                if typed and not _type_ok(value[name], prop["type"]):
                    raise MalformedReply(f"typed output: `{name}` should be a JSON {prop['type']}")
