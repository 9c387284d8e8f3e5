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


def test_errors_collects_this_threads_error_lines_even_when_quiet() -> None:
    """Inside ``errors()`` llama.cpp's error lines from this thread are collected (and still dropped
    under ``quiet()``); other levels, other threads and lines after the block are not."""
    llama_cpp = pytest.importorskip("llama_cpp")
    callback = llama_log.install(llama_cpp)
    assert callback is not None
    with llama_log.errors() as lines, llama_log.quiet():
        callback(4, b"llama_model_load: error loading model: unknown model architecture: 'x'\n", None)
        callback(3, b"a warning\n", None)
        t = threading.Thread(target=llama_log.quiet()(lambda: callback(4, b"another thread\n", None)))
        t.start()
        t.join()
    with llama_log.quiet():
        callback(4, b"after\n", None)
    assert lines == ["llama_model_load: error loading model: unknown model architecture: 'x'"]
