"""Logging: structlog events for run start/end and each call, configured only on request.

Nothing is configured at import. Until ``configure_logging()`` is called (by the user or by the
CLI's ``--log``), moa emits nothing and the runner skips building events at all, so logging costs
nothing on the hot path. A processor redacts API keys and bearer tokens from every event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

__all__ = ["configure_logging", "disable_logging", "enabled", "logger", "redact", "use_logger"]

_state: dict[str, Any] = {"logger": None}

# provider key shapes (OpenAI sk-..., Anthropic sk-ant-..., Together/others hex, AWS AKIA...) and
# bearer/authorization values; anything after a key-ish field name is also masked
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/=]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\b(?:gsk|xai|pk|rk|tgp)_[A-Za-z0-9]{16,}\b"),
    re.compile(r"\b[a-f0-9]{40,}\b"),
]
_SECRET_KEYS = re.compile(r"(?i)(api[_-]?key|authorization|token|secret|password)")
_MASK = "***"


def redact(value: Any, key: str = "") -> Any:
    """Mask secrets in a value (recursing into mappings and sequences)."""
    if isinstance(value, str):
        if key and _SECRET_KEYS.search(key) and not key.endswith(("_tokens", "tokens")):
            return _MASK if value else value
        for pat in _SECRET_PATTERNS:
            value = pat.sub(_MASK, value)
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, key) for v in value)
    return value


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        event_dict[k] = redact(event_dict[k], k)
    return event_dict


def configure_logging(
    fmt: Literal["console", "json"] = "console", *, level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Turn moa's events on: human-readable console lines or one JSON object per line."""
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    out = stream or sys.stderr
    structlog_logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
    )
    _state["logger"] = structlog_logger.bind(lib="moa")


def disable_logging() -> None:
    """Turn moa's events off again."""
    use_logger(None)


def use_logger(bound_logger: Any) -> None:
    """Send moa's events to ``bound_logger`` (a structlog bound logger), or nowhere with None."""
    _state["logger"] = bound_logger


def enabled() -> bool:
    return _state["logger"] is not None


def logger() -> Any:
    """The configured bound logger, or None when logging is off."""
    return _state["logger"]
