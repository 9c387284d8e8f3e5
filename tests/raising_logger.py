"""A host's logger that fails on every event, for the tests that moa's work survives it."""

from __future__ import annotations


class RaisingLogger:
    """A host's logger whose handler fails on every event (a full disk, a broken socket)."""

    def bind(self, **_kw: object) -> RaisingLogger:
        return self

    def info(self, *_a: object, **_kw: object) -> None:
        raise OSError("No space left on device")

    warning = error = info
