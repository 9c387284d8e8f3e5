"""Where a model's reply may hold JSON, and reading it strictly: shared by plans, typed output and a
cascade judge's confidence, which all ask a model for JSON and must find it inside whatever prose
surrounds it."""

from __future__ import annotations

import json
import re
from typing import Any

from moa.safe_read import DuplicateKey, lone_surrogate, unique_pairs

__all__ = ["DuplicateKey", "NotText", "json_candidates", "loads_unique"]

_FENCED = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)

#: the openings a complete JSON value is looked for at (``Use {x}: {"a": 1}`` holds one at the
#: second): enough for any prose a model writes first, and a reply of a million ``{`` stays cheap
_MAX_OPENINGS = 32

_DECODER = json.JSONDecoder()


def _values_at_openings(text: str, open_: str) -> list[str]:
    """The complete JSON values starting at the first ``open_`` characters, in order (the search
    going on after each value found): a value that prose holding braces of its own surrounds,
    which no first-to-last span isolates, even after an example (``use {} for none: {"a": 1}``)."""
    found: list[str] = []
    start = text.find(open_)
    for _ in range(_MAX_OPENINGS):
        if start == -1:
            break
        try:
            _, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find(open_, start + 1)
            continue
        found.append(text[start:end])
        start = text.find(open_, end)
    return found


def json_candidates(text: str) -> list[str]:
    """The spans of ``text`` that may be JSON, most explicit first: each fenced block, then the
    span from the first ``{`` to the last ``}``, then from the first ``[`` to the last ``]``, then
    the complete objects and then arrays found by decoding from each opening, then the whole
    reply. Callers try them in order and keep the first that parses into what they need."""
    found = [m.group(1).strip() for m in _FENCED.finditer(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = text.find(open_), text.rfind(close)
        if start != -1 and end > start:
            found.append(text[start : end + 1])
    found += _values_at_openings(text, "{")
    found += _values_at_openings(text, "[")
    found.append(text.strip())
    return list(dict.fromkeys(found))


class NotText(ValueError):
    """A string of the value holds a lone UTF-16 surrogate (the escape ``\\ud800`` with no pair):
    not text, it fails whatever encodes it next (a worker's request, ``moa run``'s output)."""


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not: a value holding one could not be
    # written back as JSON (`moa run --json`, the store)
    raise ValueError(f"`{name}` is not JSON")


def loads_unique(text: str) -> Any:
    """``json.loads`` as JSON itself reads: refusing an object that names a key twice
    (``DuplicateKey``, a ``ValueError``) and ``NaN``/``Infinity`` (a ``ValueError``). Raises what
    ``json.loads`` raises otherwise (``RecursionError`` included), and ``NotText`` for a string
    holding a lone surrogate."""
    value = json.loads(text, object_pairs_hook=unique_pairs, parse_constant=_no_constant)
    if problem := lone_surrogate(text, value):
        raise NotText(problem)
    return value
