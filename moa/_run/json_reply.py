"""Where a model's reply may hold JSON, and reading it strictly: shared by plans, typed output and a
cascade judge's confidence, which all ask a model for JSON and must find it inside whatever prose
surrounds it."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from moa.safe_read import DuplicateKey, lone_surrogate, unique_pairs

__all__ = ["DuplicateKey", "NotFinite", "NotText", "json_candidates", "json_spans", "loads_unique"]

_FENCED = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)

#: the openings tried that start no complete JSON value (an example cut short, ``{"a": ...}``) before
#: the search stops: enough for any prose a model writes first, and a reply of a million of them
#: stays cheap (each failure costs a count of the lines before it)
_MAX_OPENINGS = 32
#: the values kept: a reply of a million ``[1]`` stays cheap to read
_MAX_VALUES = 1024

#: where a JSON object or array can start: prose's ``{x}``, ``[sic]`` or ``[a link](url)`` cannot, so
#: it does not use up the openings tried
_OPENING = re.compile(r'\{\s*["}]|\[\s*(?:[\[{"\]\-0-9]|true|false|null)')

_DECODER = json.JSONDecoder()


def _top_level_values(text: str) -> list[tuple[int, str]]:
    """The complete JSON values of ``text`` that no other one holds, with where each starts, in
    order: after each value the
    search goes on past its end, so prose holding braces of its own around the value (even an
    example before it, ``use {} for none: {"a": 1}``) does not hide it, and a piece of a value (the
    first object of an array, a list inside an object) is never taken for the whole."""
    found: list[tuple[int, str]] = []
    failed = 0
    m = _OPENING.search(text)
    while m is not None and failed < _MAX_OPENINGS and len(found) < _MAX_VALUES:
        start = m.start()
        try:
            _, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            failed += 1
            m = _OPENING.search(text, start + 1)
            continue
        found.append((start, text[start:end]))
        m = _OPENING.search(text, end)
    return found


def json_spans(text: str) -> list[tuple[int, str]]:
    """The spans of ``text`` that may be JSON, each with where it starts in ``text``, most explicit
    first: each fenced block, then the complete top-level objects and then arrays
    (``_top_level_values``), then the whole reply. A span written twice is offered at each place."""
    found: list[tuple[int, str]] = []
    for m in _FENCED.finditer(text):
        body = m.group(1)
        found.append((m.start(1) + len(body) - len(body.lstrip()), body.strip()))
    values = _top_level_values(text)
    found += [v for v in values if v[1][0] == "{"]
    found += [v for v in values if v[1][0] == "["]
    found.append((len(text) - len(text.lstrip()), text.strip()))
    return found


def json_candidates(text: str) -> list[str]:
    """The spans of ``text`` that may be JSON, most explicit first (``json_spans``), each once.
    Callers try them in order and keep the first that parses into what they need. No span inside a
    complete value is offered: a reply ``[{"a": 1}, {"a": 2}]`` or ``{"notes": ["x", "y"]}`` is of
    the wrong shape, not an answer whose first item (or inner list) is the one meant."""
    return list(dict.fromkeys(span for _, span in json_spans(text)))


class NotText(ValueError):
    """A string of the value holds a lone UTF-16 surrogate (the escape ``\\ud800`` with no pair):
    not text, it fails whatever encodes it next (a worker's request, ``moa run``'s output)."""


class NotFinite(ValueError):
    """``NaN`` or ``Infinity``, which Python's json reads and JSON has not, or a number past a
    float's range (``1e400``, read as infinity): a value holding one could not be written back as
    JSON (``moa run --json``, the store)."""


def _no_constant(name: str) -> Any:
    raise NotFinite(f"`{name}` is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotFinite(f"`{text[:40]}` is past a float's range")
    return value


def loads_unique(text: str) -> Any:
    """``json.loads`` as JSON itself reads: refusing an object that names a key twice
    (``DuplicateKey``, a ``ValueError``) and ``NaN``, ``Infinity`` or a number past a float's range
    (``NotFinite``, a ``ValueError``). Raises what ``json.loads`` raises otherwise
    (``RecursionError`` included), and ``NotText`` for a string holding a lone surrogate."""
    value = json.loads(text, object_pairs_hook=unique_pairs, parse_constant=_no_constant, parse_float=_finite)
    if problem := lone_surrogate(text, value):
        raise NotText(problem)
    return value
