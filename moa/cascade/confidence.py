"""The ``judge`` rule's exchange: the prompt asking a model for its confidence that an answer is
right, and the strict reading of its reply (``{"confidence": 0.8}`` or a bare number). A reply that
does not read is a ``MalformedReply``, so the rater is retried like a manager's plan."""

from __future__ import annotations

import json
import math
import re

from moa._run.json_reply import json_spans
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


def _last_rating(text: str) -> tuple[int, object] | None:
    """Where the last ``{"confidence": ...}`` object of ``text`` starts, and its ``confidence``. A rater that
    writes a first rating and then corrects it ("On reflection, {"confidence": 0.2}") means the
    correction, as a manager's corrected plan is the one run; the first rating skipped escalation."""
    best: tuple[int, object] | None = None
    read: dict[str, object] = {}
    for start, span in json_spans(text):
        if span not in read:
            try:
                read[span] = json.loads(span)
            except (ValueError, RecursionError):
                # not JSON, or hostile JSON: an integer past Python's digit limit, nesting past its stack
                read[span] = None
        data = read[span]
        if isinstance(data, dict) and "confidence" in data and (best is None or start > best[0]):
            best = (start, data["confidence"])
    return best


def parse_confidence(text: str, *, node: str = "", model: str = "") -> float:
    """The confidence in ``text`` (within 0..1), or ``MalformedReply``: a bare number, else the last
    ``{"confidence": x}`` of the reply (``_last_rating``), whose ``x`` must be a number in 0..1."""
    bare = _BARE.match(text)
    if bare is not None:
        v = _value(float(bare.group(1)))
        if v is not None:
            return v
    rating = _last_rating(text)
    if rating is not None:
        v = _value(rating[1])
        if v is not None:
            return v
    snippet = " ".join(text.split())[:80]
    raise MalformedReply(f'confidence is not {{"confidence": <0..1>}}: "{snippet}"', model=model, node=node)
