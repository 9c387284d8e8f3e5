"""The progress bar: pairs done, spend and ETA (rich when installed, else one plain line redrawn in
place; imported only when a bar is shown). When stderr is not a terminal (a log file, CI), one plain
line is printed at every tenth of the way instead.

The ETA is the time per finished pair so far times the pairs left: with slow local models a bar that
estimates speed over a short recent window would show nothing for minutes. A pair replayed whole
from the call cache (a resumed run's pairs cut off before they were stored) takes no time: it
counts toward the pairs done, not toward the pace."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from moa import log

__all__ = ["Progress", "eta_text"]


class Progress:
    """A progress bar on stderr when ``enabled``: redrawn on a terminal, a line per 10% otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self.spent_usd = 0.0

    def start(self, description: str, total: int, spent_usd: float = 0.0) -> None:
        self.close()
        self.spent_usd = spent_usd
        if not self.enabled or total == 0:
            return
        if not self.tty:
            self._bar = _TenthsBar(description, total, spent_usd)
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress
        except ImportError:  # rich is optional (the `report` extra): a plain line instead
            self._bar = _PlainBar(description, total, spent_usd)
            self._task = None
            return
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("${task.fields[spent]:.4f}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, spent=spent_usd, eta="?")
        self._started = time.monotonic()
        self._done, self._total, self._replayed = 0, total, 0

    def advance(self, cost_usd: float = 0.0, *, replayed: bool = False) -> None:
        """One pair done, at ``cost_usd``; ``replayed``: every call of it came from the cache."""
        self.spent_usd += cost_usd
        if self._bar is None:
            return
        if self._task is None:  # a plain bar keeps its own count
            self._bar.update(None, advance=1, spent=self.spent_usd, replayed=int(replayed))
            return
        self._done += 1
        self._replayed += int(replayed)
        eta = eta_text(time.monotonic() - self._started, self._done, self._total, self._replayed)
        self._bar.update(self._task, advance=1, spent=self.spent_usd, eta=eta)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def eta_text(elapsed_s: float, done: int, total: int, replayed: int = 0) -> str:
    """``1h02m``, ``3m05s``, ``12s`` left at the pace so far, or ``?`` before the first pair. The
    ``replayed`` pairs among those ``done`` came from the cache at no time: the pace is the others'."""
    paced = done - replayed
    if done >= total > 0:
        return "0s"
    if paced <= 0:
        return "?"
    left = round(elapsed_s / paced * max(total - done, 0))
    h, rest = divmod(left, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class _TenthsBar:
    """``runs: 40/400 (10%)  $0.0123  ETA 2m05s``, a line at each tenth of the way (not a terminal)."""

    def __init__(self, description: str, total: int, spent_usd: float) -> None:
        self.description, self.total, self.done, self.spent = description, total, 0, spent_usd
        self.started = time.monotonic()
        self.next_tenth = 1
        self.replayed = 0

    def update(self, _task: Any, *, advance: int, spent: float, replayed: int = 0) -> None:
        self.done += advance
        self.replayed += replayed
        self.spent = spent
        crossed = False
        # one line however many tenths this pair crossed (each of 3 pairs crosses three or four)
        while self.next_tenth <= 10 and self.done * 10 >= self.next_tenth * self.total:
            self.next_tenth += 1
            crossed = True
        if not crossed:
            return
        pct = self.done * 100 // self.total
        eta = eta_text(time.monotonic() - self.started, self.done, self.total, self.replayed)
        lg = log.info_logger()
        if lg is not None:
            # moa's events share stderr (`--log json`): a plain line among them breaks every reader
            # of JSON lines, so the progress is one more event in their format
            with contextlib.suppress(Exception):  # a logger's failure must not stop the experiment
                lg.info(
                    "compare.progress",
                    what=self.description,
                    done=self.done,
                    total=self.total,
                    spent_usd=round(self.spent, 6),
                    eta=eta,
                )
            return
        line = f"{self.description}: {self.done}/{self.total} ({pct}%)  ${self.spent:.4f}  ETA {eta}\n"
        sys.stderr.write(line)
        sys.stderr.flush()

    def stop(self) -> None:
        pass


class _PlainBar:
    """``description  done/total  $spent  ETA 12s`` redrawn in place, at most a few times a second."""

    def __init__(self, description: str, total: int, spent_usd: float) -> None:
        self.description, self.total, self.done, self.spent = description, total, 0, spent_usd
        self.started = self.last = time.monotonic()
        self.replayed = 0
        self._draw()

    def update(self, _task: Any, *, advance: int, spent: float, replayed: int = 0) -> None:
        self.done += advance
        self.replayed += replayed
        self.spent = spent
        now = time.monotonic()
        if now - self.last >= 0.25 or self.done >= self.total:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        eta = eta_text(time.monotonic() - self.started, self.done, self.total, self.replayed)
        sys.stderr.write(f"\r{self.description}  {self.done}/{self.total}  ${self.spent:.4f}  ETA {eta}   ")
        sys.stderr.flush()

    def stop(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
