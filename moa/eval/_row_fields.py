"""A dataset row's fields read as the types a layout needs, each refusal naming the field: the
helpers every row reader (``moa.eval.datasets`` and the ``_*_rows`` modules) shares, and the shape a
reader hands back for ``moa.eval.datasets`` to make an ``Item`` of."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from moa.safe_read import lone_surrogate, parse_json

__all__ = [
    "RowFields",
    "RowProblem",
    "number_text",
    "opt_str",
    "prompt_text",
    "required_str",
    "str_list",
    "test_code",
]


class RowProblem(Exception):
    """A row-level problem, turned into a ``BadRow`` or a ``DatasetError`` by the loader."""


@dataclass(frozen=True, slots=True)
class RowFields:
    """What a row reader makes of a row: an ``Item``'s fields but its id, which the loader gives."""

    input: str
    target: str | None = None
    category: str | None = None
    tests: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def opt_str(row: Mapping[str, Any], key: str, *, numbers: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return number_text(key, value)
    # a bool is refused, not written "True": the answer it should match ("true", "yes", "1") is the
    # author's to write, as a string
    kinds = "a string or a number" if numbers else "a string"
    raise RowProblem(f"`{key}` must be {kinds}, not {type(value).__name__}")


def number_text(key: str, value: int | float) -> str:
    """A JSON number as the text a reference evaluator compares with, written out in full."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):  # JSON's NaN and Infinity, and 1e400, which reads as infinity
        raise RowProblem(f"`{key}` must be a finite number, not {value}")
    # str() writes 1e-05 and 1e+20, which the numeric evaluator reads as 1 and -5 (or 1 and 20);
    # repr is the shortest text that reads back as the same float, so writing it out without an
    # exponent adds no binary noise (0.1 stays "0.1", not 0.1000000000000000055...)
    return format(Decimal(repr(value)), "f")


def str_list(row: Mapping[str, Any], key: str) -> list[str] | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip().startswith("["):
        # CSV cells carry lists as JSON text
        text = value
        try:
            value = parse_json(text)
        except json.JSONDecodeError as e:
            raise RowProblem(f"`{key}` is not a valid JSON list: {e.msg}") from None
        except ValueError as e:
            raise RowProblem(f"`{key}`: {e}") from None
        if problem := lone_surrogate(text, value):
            raise RowProblem(problem)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowProblem(f"`{key}` must be a list of strings")
    return list(value)


def required_str(row: Mapping[str, Any], key: str) -> str:
    if key not in row or row[key] is None:
        raise RowProblem(f"row has no `{key}`")
    value = row[key]
    if not isinstance(value, str):
        raise RowProblem(f"`{key}` must be a string, not {type(value).__name__}")
    return value


def prompt_text(value: str, key: str) -> str:
    """``value`` as a prompt to send: a blank one would pay every agent to answer nothing (and the
    runner refuses it, which stopped a run at that row); skipped here instead, naming its line."""
    if not value.strip():
        raise RowProblem(f"`{key}` is blank")
    return value


def test_code(value: str, key: str) -> str:
    """``value`` as tests to run the answers against: a blank one runs nothing, and then every
    answer that compiles passes (a blank test program or assert line) or none does (HumanEval)."""
    if not value.strip():
        raise RowProblem(f"`{key}` is blank: there is nothing to run the answers against")
    return value
