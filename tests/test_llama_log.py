"""moa.models.llama_log: which llama.cpp lines moa drops, and the logger level it leaves alone."""

from __future__ import annotations

import logging
import threading
import types

import pytest

from moa.models import llama_log


def test_quiet_is_per_thread_and_nests() -> None:
    """``quiet()`` covers the thread that entered it, nested blocks included, and no other thread."""
    seen: list[bool] = []
    with llama_log.quiet():
        with llama_log.quiet():
            pass
        assert llama_log.is_quiet()
        t = threading.Thread(target=lambda: seen.append(llama_log.is_quiet()))
        t.start()
        t.join()
    assert seen == [False]
    assert not llama_log.is_quiet()


def test_keep_level_undoes_a_reset_to_error_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A level set before and reset to ERROR inside the block (llama-cpp-python's verbose=False) is
    put back; any other level set inside (another thread's verbose model) stays, and so does the
    ERROR over a level nobody had set."""
    logger = logging.getLogger(llama_log.LOGGER)
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    with llama_log.keep_level():
        logger.setLevel(logging.ERROR)
    assert logger.level == logging.DEBUG
    monkeypatch.setattr(logger, "level", logging.WARNING)
    with llama_log.keep_level():
        logger.setLevel(logging.INFO)
    assert logger.level == logging.INFO
    # never configured (NOTSET, which llama-cpp-python's callback reads as "print everything"):
    # the ERROR its own verbose=False open leaves stays
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    with llama_log.keep_level():
        logger.setLevel(logging.ERROR)
    assert logger.level == logging.ERROR


def test_install_leaves_a_llama_cpp_without_a_log_callback_alone() -> None:
    """A llama-cpp-python with no log callback to stand in front of: nothing is installed."""
    assert llama_log.install(types.ModuleType("llama_cpp")) is None
