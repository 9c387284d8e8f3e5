"""A reasoning model's thinking written into its answer's text, told apart from the answer.

DeepSeek-R1 and its distills, QwQ and Qwen3 served without a reasoning parser (vLLM, llama-server
with ``--reasoning-format none``, older Ollama) answer ``<think>reasoning</think>answer`` in
``content``; a chat template that opens ``<think>`` in the prompt (DeepSeek-R1's and QwQ's) leaves
``reasoning</think>answer``. Kept in the answer, the reasoning went to the next node, to the
evaluators (an ``exact`` or ``choice`` reading picked a number or letter out of it), to
the run's output and to ``moa serve``'s clients. The call layer applies this to every backend's
reply, so the direct path, litellm, the embedded model and a user's own backend agree; the tokens
stay billed (the usage is the reply's, counted before the reasoning is taken out). The block may
be ``<thinking>`` or ``<budget:thinking>`` too, the tags litellm itself takes out of a whole reply:
read here alone, one server's reply answered one way over litellm and another over the direct
path or streamed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from moa.models.base import ModelReply
from moa.models.openai_wire import after_reasoning

__all__ = ["ThinkFilter", "answer_of", "split_reasoning"]

_OPEN, _CLOSE = "<think>", "</think>"
#: the tags a leading block may open with, and close with (any of them, as litellm reads them)
_OPENS = (_OPEN, "<thinking>", "<budget:thinking>")
_CLOSES = (_CLOSE, "</thinking>", "</budget:thinking>")
_LONGEST_CLOSE = max(len(c) for c in _CLOSES)


def _opening(head: str) -> str | None:
    """The opening tag ``head`` starts with, if any."""
    return next((o for o in _OPENS if head.startswith(o)), None)


def _first_close(text: str, start: int = 0) -> tuple[int, int]:
    """Where the first closing tag in ``text`` (from ``start``) begins and ends; (-1, -1) if none."""
    found = [(i, i + len(c)) for c in _CLOSES if (i := text.find(c, start)) >= 0]
    return min(found) if found else (-1, -1)


def split_reasoning(text: str) -> tuple[str, str] | None:
    """``(reasoning, answer)`` when ``text`` begins with reasoning, else None.

    Reasoning is a ``<think>`` (``<thinking>``, ``<budget:thinking>``) block at the start (after
    blanks), to its first closing tag of those; a block never closed is all reasoning (the answer
    is ""). Without an opening tag, the text up to a first ``</think>`` followed by a blank (or
    the end) is reasoning whose ``<think>`` the chat template wrote. A ``<think>`` further in (quoted HTML, code), and a ``</think>`` quoted
    mid-sentence, in inline code or in a code block, are the answer's. The answer is what
    follows the tag, as written."""
    if "<" not in text:  # no tag of either form: the usual reply, found in one scan
        return None
    head = text.lstrip()
    if (opening := _opening(head)) is not None:
        close, stop = _first_close(head, len(opening))
        if close < 0:
            return head[len(opening) :], ""
        return head[len(opening) : close], head[stop:]
    end = text.find(_CLOSE)
    if end < 0 or _OPEN in text[:end]:
        return None
    before, after = text[:end], text[end + len(_CLOSE) : end + len(_CLOSE) + 1]
    # a tag quoted in a sentence (`</think>.`), in inline code or in a code block is the answer's
    if (after and not after.isspace()) or before.endswith("`") or before.count("```") % 2:
        return None
    return before, text[end + len(_CLOSE) :]


def answer_of(reply: ModelReply, node: str, model: str) -> ModelReply:
    """``reply`` without the reasoning its text begins with. A reply that is only reasoning (cut at
    ``max_tokens`` inside it, or closed with nothing after) is MalformedReply, as is one whose
    reasoning came in ``reasoning_content`` with no ``content``: billed, retried, and saying why."""
    split = split_reasoning(reply.text)
    if split is None:
        return reply
    if not split[1].strip():
        raise after_reasoning(reply.finish_reason, model, node)
    return dataclasses.replace(reply, text=split[1])


class ThinkFilter:
    """``split_reasoning`` over a stream of tokens, for ``emit``: a reply that begins with
    ``<think>`` or another opening tag (cut anywhere across tokens) is held back to its closing
    tag, and only what follows is passed on; any other reply passes as it comes, once its first
    characters show it does not begin so. Blanks are held until text follows them: a reply that is only reasoning,
    or blank, then reaches the consumer not at all, and may be retried (a token passed on forbids
    it). ``flush`` passes on what was held back of a reply that ended before showing a ``<think>``
    (``<thi``). Reasoning whose ``<think>`` the chat template opened cannot be told from an answer
    before its ``</think>``: its tokens pass (the reply's text leaves it out)."""

    __slots__ = ("_emit", "_held", "_state")

    #: before the reply shows whether it begins with ``<think>``; inside that block; after it,
    #: while only blanks followed; passing everything on
    _START, _INSIDE, _AFTER, _PASS = 0, 1, 2, 3

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._held = ""
        self._state = self._START

    def feed(self, piece: str) -> None:
        if self._state == self._PASS:
            self._emit(piece)
            return
        text = self._held + piece
        if self._state == self._START:
            head = text.lstrip()
            opening = _opening(head)
            if opening is None and any(o.startswith(head) for o in _OPENS):  # blanks, or `<thi`
                self._held = text
                return
            if opening is None:
                self._state, self._held = self._PASS, ""
                self._emit(text)
                return
            self._state = self._INSIDE
            text = head[len(opening) :]
        if self._state == self._INSIDE:
            end, after = _first_close(text)
            if end < 0:
                # only a tail that may begin a closing tag is kept: the reasoning is not needed
                self._held = text[-(_LONGEST_CLOSE - 1) :]
                return
            self._state, text = self._AFTER, text[after:]
        if text.isspace() or not text:
            self._held = text
            return
        self._state, self._held = self._PASS, ""
        self._emit(text)

    def flush(self) -> None:
        """The reply ended: what was held back before it showed a ``<think>`` is answer, unless
        it is blank (no answer, which the reply's check refuses)."""
        held, self._held = self._held, ""
        if self._state == self._START and held and not held.isspace():
            self._emit(held)
