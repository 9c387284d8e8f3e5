"""llama.cpp's log: quiet in moa's own work, left as it was everywhere else in the process.

llama-cpp-python prints llama.cpp's log lines to stderr from one process-wide callback, gated by
the level of its "llama-cpp-python" logger, and every ``Llama(verbose=...)`` resets that level.
Silencing moa's lines by raising the level (as moa did) silenced a user's own verbose model too,
and a user's model opened while moa decoded reset the level and let moa's warnings through.

Instead, the first load puts a callback in front of llama-cpp-python's: a line logged by a thread
inside ``quiet()`` (moa's loads, decodes and frees run there) is dropped, and every other line goes
on to llama-cpp-python's callback, unchanged. ``keep_level()`` undoes the level reset of moa's own
opens, so the level stays whatever the user's models set. ``errors()`` collects a thread's error
lines, dropped or not: a failed load's reason is in them alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["LOGGER", "errors", "install", "is_quiet", "keep_level", "quiet"]

#: the logger whose level llama-cpp-python's callback reads
LOGGER = "llama-cpp-python"
#: ggml's ``GGML_LOG_LEVEL_ERROR``
_ERROR = 4


@functools.cache
def _depth() -> threading.local:
    # made on first use, not at import
    return threading.local()


def is_quiet() -> bool:
    """Whether this thread is inside ``quiet()``."""
    return getattr(_depth(), "n", 0) > 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """llama.cpp's lines logged by this thread meanwhile are dropped (nests; as a decorator, for
    each call)."""
    state = _depth()
    n = getattr(state, "n", 0)
    state.n = n + 1
    try:
        yield
    finally:
        state.n = n


@contextlib.contextmanager
def errors() -> Iterator[list[str]]:
    """The error lines llama.cpp logs from this thread meanwhile, collected whether they are dropped
    or printed: a failed load raises only "Failed to load model from file", and the reason
    (an unknown architecture, a truncated tensor) is in the log alone."""
    state = _depth()
    outer: list[str] | None = getattr(state, "errors", None)
    lines: list[str] = []
    state.errors = lines
    try:
        yield lines
    finally:
        state.errors = outer


@contextlib.contextmanager
def keep_level() -> Iterator[None]:
    """Put back the logger's level after a ``Llama(verbose=False)`` opened meanwhile reset it to
    ERROR; a level set to something else meanwhile (another thread's open) is left alone. A level
    nobody had set (NOTSET, which llama-cpp-python's callback reads as "print everything") stays at
    the ERROR llama-cpp-python's own open leaves."""
    logger = logging.getLogger(LOGGER)
    before = logger.level
    try:
        yield
    finally:
        if logger.level == logging.ERROR and before not in (logging.NOTSET, logging.ERROR):
            logger.setLevel(before)


@functools.cache
def install(llama_cpp: Any) -> Any:
    """Put moa's callback in front of llama-cpp-python's, once per process; returns it (the
    cached return keeps the ctypes callback alive for as long as llama.cpp may call it). Call it
    under one lock: two first calls at once would each set a callback, and the one not cached
    could be collected while llama.cpp still calls it. None,
    and nothing changed, for a llama-cpp-python without a log callback to stand in front of."""
    if not (hasattr(llama_cpp, "llama_log_callback") and hasattr(llama_cpp, "llama_log_set")):
        return None
    forward = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _ERROR:
            collected: list[str] | None = getattr(_depth(), "errors", None)
            if collected is not None:
                collected.append(text.decode("utf-8", "replace").strip())
        if is_quiet():
            return
        if forward is not None:
            forward(level, text, user_data)
        else:  # a llama-cpp-python without its own callback: llama.cpp's default, stderr
            sys.stderr.write(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    return callback
