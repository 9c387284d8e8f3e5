"""The simulator's token counting: what the server reports as usage, and what tests compute their
expectations with. A token is a whitespace-separated word, so expectations are easy to write by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def count_tokens(text: str) -> int:
    """The simulated token count of a text: its whitespace-separated words."""
    return len(text.split())


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The server's `prompt_tokens`: words of every message plus 3 per message."""
    return sum(count_tokens(message_text(m)) + 3 for m in messages)


def count_completion_tokens(answer: str) -> int:
    """The server's `completion_tokens` for an answer: its words, at least 1."""
    return max(1, count_tokens(answer))


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last `user` message, or "" when there is none."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""
