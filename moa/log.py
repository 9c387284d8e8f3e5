"""Logging: structlog events for run start/end and each call, configured only on request.

Nothing is configured at import. Until ``configure_logging()`` is called (by the user or by the
CLI's ``--log``), moa emits nothing and the runner skips building events at all, so logging costs
nothing on the hot path. A processor redacts API keys and bearer tokens from every event.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

from moa.errors import UserError
from moa.scrub import MASK, scrub, secret_name

__all__ = [
    "RunEvents",
    "configure_logging",
    "disable_logging",
    "enabled",
    "for_run",
    "info_logger",
    "logger",
    "redact",
    "use_logger",
]

#: the configured logger, and whether it emits info events (decided once, when it is set)
_state: dict[str, Any] = {"logger": None, "info": False}


# An event's strings repeat (its name, node and model names, the run's id, moa's field names),
# and each look through the ten key shapes cost about 5 µs: 75 of an event's 108 µs went there,
# and with a line per call, logging cost more CPU than the run. Scrubbing by shape alone is a pure
# function of the text, so short texts are remembered; long ones (error messages) are not.
_scrub_short = functools.lru_cache(maxsize=4096)(scrub)
_secret_field = functools.lru_cache(maxsize=1024)(secret_name)
_REMEMBERED_LEN = 200


def redact(value: Any, key: str = "") -> Any:
    """Mask secrets in a value (recursing into mappings and sequences): the whole value of a
    key-ish field (``api_key``, ``authorization``), and key shapes anywhere (``moa.scrub``, the
    same rules the model backends apply to provider errors)."""
    if isinstance(value, str):
        if _secret_field(key):
            return MASK if value else value
        return _scrub_short(value) if len(value) <= _REMEMBERED_LEN else scrub(value)
    if isinstance(value, (int, float)) or value is None:  # most of an event: no look as a Mapping
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
    if fmt not in ("console", "json"):  # a typo must not quietly give the other format
        raise UserError(f"configure_logging: format must be 'console' or 'json', got {fmt!r}")
    levels = logging.getLevelNamesMapping()
    if not isinstance(level, str) or level.upper() not in levels:
        raise UserError(f"configure_logging: unknown level {level!r} (DEBUG, INFO, WARNING or ERROR)")
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog_logger = structlog.wrap_logger(
        structlog.PrintLogger(_Sink(stream)),  # type: ignore[arg-type]
        processors=[
            # first: the level and the time moa adds hold no secret, and a new timestamp per event
            # would be a scrub paid in full each time
            _redact_processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levels[level.upper()]),
    )
    _install(structlog_logger.bind(lib="moa"), redacts=True)


class _Sink:
    """Where ``configure_logging`` writes: a stream that fails (closed, its reader gone as in
    ``moa --log json run ... 2>&1 | head``, a full disk) loses the line, never the run it describes,
    whose result and cost record are worth more than its log. With no stream, ``sys.stderr`` as it
    is at each write: a progress bar that redirects it, or a test capturing it, gets the lines."""

    __slots__ = ("__weakref__", "_stream")  # structlog keys its write locks by a weak reference

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        out = self._stream or sys.stderr
        try:
            return out.write(text) if out is not None else 0
        except (OSError, ValueError):  # ValueError: a closed file
            return 0

    def flush(self) -> None:
        out = self._stream or sys.stderr
        try:
            if out is not None:
                out.flush()
        except (OSError, ValueError):
            pass


def disable_logging() -> None:
    """Turn moa's events off again."""
    use_logger(None)


def use_logger(bound_logger: Any) -> None:
    """Send moa's events to ``bound_logger`` (a structlog bound logger), or nowhere with None.
    Each event reaches it redacted (``redact``), and an exception it raises loses the event only."""
    if isinstance(bound_logger, _Guarded):  # one that ``logger()`` returned: put back as it was
        _state["logger"] = bound_logger
        _state["info"] = bound_logger.info_on
        return
    _install(bound_logger, redacts=False)


def _install(bound_logger: Any, *, redacts: bool) -> None:
    guarded = None if bound_logger is None else _Guarded(bound_logger, redacts)
    _state["logger"] = guarded
    _state["info"] = guarded is not None and guarded.info_on


class _Guarded:
    """moa's only door to a logger. Every caller (a run's events, ``moa serve``'s request log and
    error events, ``moa view``'s, the progress events) goes through it, so none can forget that a
    host's logger may raise (its handler, processor or stream: the event is lost, never the run or
    the request it describes) or that it has no redaction of moa's (``configure_logging``'s has
    the processor; a logger given to ``use_logger`` gets its events redacted here)."""

    __slots__ = ("_logger", "_redacts", "info_on")

    def __init__(self, bound_logger: Any, redacts: bool, info_on: bool | None = None) -> None:
        self._logger, self._redacts = bound_logger, redacts
        if info_on is None:
            # a filtering bound logger knows its level; any other logger is taken to emit everything
            try:
                is_enabled_for = getattr(bound_logger, "is_enabled_for", None)
                info_on = is_enabled_for is None or bool(is_enabled_for(logging.INFO))
            except Exception:
                info_on = True
        self.info_on = info_on

    def bind(self, **kw: Any) -> _Guarded:
        try:
            bound = self._logger.bind(**(kw if self._redacts else redact(kw)))
        except Exception:  # the events go unbound rather than not at all
            return self
        return _Guarded(bound, self._redacts, self.info_on)

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        try:
            if not self._redacts:
                event, kw = redact(event), redact(kw)
            getattr(self._logger, level)(event, **kw)
        except Exception:
            pass

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)


def enabled() -> bool:
    return _state["logger"] is not None


def logger() -> Any:
    """The configured logger (behind moa's guard: redacting, and losing an event its logger raises
    on), or None when logging is off."""
    return _state["logger"]


def info_logger() -> Any:
    """The configured logger when it emits ``info`` events, else None: code on a hot path asks
    this before building an event nobody would write."""
    return _state["logger"] if _state["info"] else None


def for_run(run_id: str) -> RunEvents | None:
    """The configured logger for one run's events (each carries ``run_id``), or None when logging is off."""
    base = _state["logger"]
    return None if base is None else RunEvents(base, run_id, _state["info"])


class RunEvents:
    """One run's events: the configured logger, bound to the run's id when the first event is
    emitted. Binding costs about 5 µs; with only warnings on, most runs emit nothing and never bind."""

    __slots__ = ("_base", "_bound", "_run_id", "info_on")

    def __init__(self, base: Any, run_id: str, info: bool) -> None:
        self._base, self._run_id = base, run_id
        #: whether ``info`` events are written: a caller asks before building one nobody would read
        self.info_on = info
        self._bound: Any = None

    def bound(self) -> Any:
        """The logger bound to this run's id."""
        if self._bound is None:
            self._bound = self._base.bind(run_id=self._run_id)
        return self._bound

    # a logger that raises (a host's handler, processor or stream) loses its event, not the run
    # (``_Guarded``): events are emitted where a paid result is in hand (``call``, ``run.end``) or
    # an error with its calls is on its way up (``run.failed``)

    def info(self, event: str, **kw: Any) -> None:
        if self.info_on:
            self.bound().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self.bound().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self.bound().error(event, **kw)
