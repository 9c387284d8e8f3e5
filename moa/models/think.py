"""A reasoning model's thinking written into its answer's text, told apart from the answer.

DeepSeek-R1 and its distills, QwQ and Qwen3 served without a reasoning parser (vLLM, llama-server
with ``--reasoning-format none``, older Ollama) answer ``<think>reasoning</think>answer`` in
``content``; a chat template that opens ``<think>`` in the prompt (DeepSeek-R1's and QwQ's) leaves
``reasoning</think>answer``. Kept in the answer, the reasoning went to the next node, to the
evaluators (an ``exact`` or ``choice`` reading picked a number or letter out of it), to
the run's output and to ``moa serve``'s clients. The call layer applies this to every backend's
reply, so the direct path, litellm, the embedded model and a user's own backend agree; the tokens
stay billed (the usage is the reply's, counted before the reasoning is taken out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from moa.errors import MalformedReply
from moa.models.base import ModelReply
from moa.models.openai_wire import empty_reason

__all__ = ["ThinkFilter", "answer_of", "split_reasoning"]

_OPEN, _CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str, str] | None:
    """``(reasoning, answer)`` when ``text`` begins with reasoning, else None.

    Reasoning is a ``<think>`` block at the start (after blanks), to its first ``</think>``; a
    block never closed is all reasoning (the answer is ""). Without an opening tag, the text up
    to a first ``</think>`` followed by a blank (or the end) is reasoning whose ``<think>`` the
    chat template wrote. A ``<think>`` further in (quoted HTML, code), and a ``</think>`` quoted
    mid-sentence, in inline code or in a code block, are the answer's. The answer is what
    follows the tag, as written."""
    head = text.lstrip()
    if head.startswith(_OPEN):
        end = head.find(_CLOSE, len(_OPEN))
        if end < 0:
            return head[len(_OPEN) :], ""
        return head[len(_OPEN) : end], head[end + len(_CLOSE) :]
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
        why = empty_reason(reply.finish_reason, True, False)
        raise MalformedReply(
            f"malformed reply: no answer after the model's <think> reasoning{why}",
            model=model,
            node=node or None,
        )
    return dataclasses.replace(reply, text=split[1])


class ThinkFilter:
    """``split_reasoning`` over a stream of tokens, for ``emit``: a reply that begins with
    ``<think>`` (the tags cut anywhere across tokens) is held back to its ``</think>``, and only
    what follows is passed on; any other reply passes as it comes, once its first characters show
    it does not begin so. Blanks are held until text follows them: a reply that is only reasoning,
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
            if len(head) < len(_OPEN) and _OPEN.startswith(head):  # blanks, or `<thi` so far
                self._held = text
                return
            if not head.startswith(_OPEN):
                self._state, self._held = self._PASS, ""
                self._emit(text)
                return
            self._state = self._INSIDE
            text = head[len(_OPEN) :]
        if self._state == self._INSIDE:
            end = text.find(_CLOSE)
            if end < 0:
                # only a tail that may begin `</think>` is kept: the reasoning itself is not needed
                self._held = text[-(len(_CLOSE) - 1) :]
                return
            self._state, text = self._AFTER, text[end + len(_CLOSE) :]
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
