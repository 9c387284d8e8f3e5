"""A call cache of the user's, in a dict (``Runner(cache=...)``): a reply stored by one run is
replayed to the next."""

from __future__ import annotations

from typing import Any

from moa.models.base import ModelRequest


class DictCache:
    """The experiment's call cache, in a dict."""

    def __init__(self) -> None:
        self.replies: dict[str, object] = {}

    def key(self, node: str, request: ModelRequest) -> str:
        return f"{node}|{request.model}|{request.messages!r}"

    def get(self, key: str) -> Any:
        return self.replies.get(key)

    def put(self, key: str, value: object) -> None:
        self.replies[key] = value
