"""Garbage-collector settings for long runs (``moa compare``, ``moa serve``, ``Experiment.run``).

CPython's cyclic collector runs a young-generation pass every 700 net allocations and a full pass
over every tracked object as the old generation grows. A run keeps thousands of objects alive for
its whole length (tasks, futures, records, a topology's nodes), so they are promoted and scanned
again and again, and the modules imported at start-up (pydantic, httpx, litellm: several hundred
thousand objects) are walked by each full pass. Measured on this code: a call at 256 in flight
spends about 40% of its CPU in the collector at the default settings.

``tune_gc_for_long_runs()`` does two things, and undoes them on exit:

* ``gc.freeze()``: what exists when the run starts (imported modules, loaded topologies) moves to
  the permanent generation, which no pass scans; unfrozen on exit. Skipped when something else has
  frozen objects already, so a caller's own freeze is never undone.
* a higher threshold for the young generation (``LONG_RUN_THRESHOLD``): fewer passes, and objects
  that die within a run (most of them) die before they are ever promoted.

Nothing happens at import: the library leaves the collector alone unless an entry point enters the
context. The entry points nest (an outer one tunes, inner ones do nothing), and setting the
environment variable ``MOA_GC_TUNING=off`` turns the tuning off for a whole process.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["LONG_RUN_THRESHOLD", "GCSettings", "tune_gc_for_long_runs"]

#: ``gc.set_threshold`` during a long run: young passes every 50,000 net allocations instead of
#: 700; the older generations keep CPython's ratios (a full pass also waits for the old
#: generation to grow by a quarter)
LONG_RUN_THRESHOLD = (50_000, 10, 10)

_OFF = ("0", "off", "false", "no")


@dataclass(frozen=True, slots=True)
class GCSettings:
    """What the tuning changed, so it can be put back."""

    threshold: tuple[int, int, int]
    #: whether this tuning froze the heap (and so unfreezes it on exit)
    froze: bool


# the tuning is process-wide: the blocks in progress (threads, or experiments sharing a loop) share
# it, the first one in applies it and the last one out restores it
_lock = threading.Lock()
_depth = 0
_saved: GCSettings | None = None


def _enabled() -> bool:
    return os.environ.get("MOA_GC_TUNING", "").strip().lower() not in _OFF


def _apply() -> GCSettings:
    t = gc.get_threshold()
    saved = GCSettings(threshold=(t[0], t[1], t[2]), froze=gc.get_freeze_count() == 0)
    if saved.froze:
        gc.freeze()
    gc.set_threshold(*LONG_RUN_THRESHOLD)
    return saved


def _restore(saved: GCSettings) -> None:
    gc.set_threshold(*saved.threshold)
    if saved.froze:
        gc.unfreeze()


@contextmanager
def tune_gc_for_long_runs() -> Iterator[GCSettings | None]:
    """Freeze what exists and raise the young-generation threshold for the body; put both back
    when the last tuned block in progress ends. Yields the settings saved, or ``None`` when this
    block changed nothing (another tuned block is in progress, or ``MOA_GC_TUNING=off``)."""
    global _depth, _saved
    with _lock:
        if _depth == 0 and not _enabled():
            mine = None
            counted = False
        else:
            mine = None
            if _depth == 0:
                mine = _saved = _apply()
            _depth += 1
            counted = True
    try:
        yield mine
    finally:
        if counted:
            with _lock:
                _depth -= 1
                if _depth == 0 and _saved is not None:
                    _restore(_saved)
                    _saved = None
