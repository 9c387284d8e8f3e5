"""The ``judge`` rule's exchange: the prompt asking a model for its confidence that an answer is
right, and the strict reading of its reply (``{"confidence": 0.8}`` or a bare number). A reply that
does not read is a ``MalformedReply``, so the rater is retried like a manager's plan."""

from __future__ import annotations

import json
import math
import re

from moa._run.json_reply import json_candidates
from moa.errors import MalformedReply

__all__ = ["confidence_prompt", "parse_confidence"]

_PROMPT = """You check answers. Rate how confident you are that the answer below is correct, from 0 \
(surely wrong) to 1 (surely right).

Question:
{question}

Answer:
{answer}

Reply with only this JSON and nothing else: {{"confidence": <a number from 0 to 1>}}"""

_BARE = re.compile(r"^\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*$")


# A line of the question or the answer that could pass for this prompt's own headings: a small
# model that goes on to write a question and answer of its own ("Question: 1+1?\nAnswer: 2"), or an
# answer echoing hostile input, would have the rater rate that pair instead. A Markdown backslash
# before it leaves the text readable as what it is.
_HEADING = re.compile(r"(?im)^([ \t]*)(?=(?:question|answer)[ \t]*:)")


def confidence_prompt(question: str, answer: str) -> str:
    """The rater's prompt: ``question`` and ``answer`` as written, but for the lines that could pass
    for its ``Question:`` and ``Answer:`` headings (see ``_HEADING``)."""
    return _PROMPT.format(question=_HEADING.sub(r"\1\\", question), answer=_HEADING.sub(r"\1\\", answer))


def _value(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, int) and not 0 <= raw <= 1:
        return None  # before float(): an integer of 309 digits raised OverflowError there
    v = float(raw)
    return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None


def parse_confidence(text: str, *, node: str = "", model: str = "") -> float:
    """The confidence in ``text`` (within 0..1), or ``MalformedReply``."""
    bare = _BARE.match(text)
    if bare is not None:
        v = _value(float(bare.group(1)))
        if v is not None:
            return v
    for c in json_candidates(text):
        try:
            data = json.loads(c)
        except (ValueError, RecursionError):
            # not JSON, or hostile JSON: an integer past Python's digit limit, nesting past its stack
            continue
        if isinstance(data, dict) and "confidence" in data:
            v = _value(data["confidence"])
            if v is not None:
                return v
    snippet = " ".join(text.split())[:80]
    raise MalformedReply(f'confidence is not {{"confidence": <0..1>}}: "{snippet}"', model=model, node=node)
