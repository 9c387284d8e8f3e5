"""Where a model's reply may hold JSON: shared by plans, typed output and a cascade judge's
confidence, which all ask a model for JSON and must find it inside whatever prose surrounds it."""

from __future__ import annotations

import re

__all__ = ["json_candidates"]

_FENCED = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)


def json_candidates(text: str) -> list[str]:
    """The spans of ``text`` that may be JSON, most explicit first: each fenced block, then the
    span from the first ``{`` to the last ``}``, then from the first ``[`` to the last ``]``, then
    the whole reply. Callers try them in order and keep the first that parses into what they need."""
    found = [m.group(1).strip() for m in _FENCED.finditer(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = text.find(open_), text.rfind(close)
        if start != -1 and end > start:
            found.append(text[start : end + 1])
    found.append(text.strip())
    return list(dict.fromkeys(found))
