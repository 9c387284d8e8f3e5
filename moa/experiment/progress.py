"""The progress bar: pairs done, spend and ETA (rich when installed, else one plain line redrawn in
place; imported only when a bar is shown)."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A progress bar on stderr when it is a terminal and ``enabled``; otherwise nothing."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self.spent_usd = 0.0

    def start(self, description: str, total: int, spent_usd: float = 0.0) -> None:
        self.close()
        self.spent_usd = spent_usd
        if not self.enabled or total == 0:
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
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
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, spent=spent_usd)

    def advance(self, cost_usd: float = 0.0) -> None:
        self.spent_usd += cost_usd
        if self._bar is not None:
            self._bar.update(self._task, advance=1, spent=self.spent_usd)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _PlainBar:
    """``description  done/total  $spent  ETA 12s`` redrawn in place, at most a few times a second."""

    def __init__(self, description: str, total: int, spent_usd: float) -> None:
        self.description, self.total, self.done, self.spent = description, total, 0, spent_usd
        self.started = self.last = time.monotonic()
        self._draw()

    def update(self, _task: Any, *, advance: int, spent: float) -> None:
        self.done += advance
        self.spent = spent
        now = time.monotonic()
        if now - self.last >= 0.25 or self.done >= self.total:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        eta = f"{elapsed / self.done * (self.total - self.done):.0f}s" if self.done else "?"
        sys.stderr.write(f"\r{self.description}  {self.done}/{self.total}  ${self.spent:.4f}  ETA {eta}   ")
        sys.stderr.flush()

    def stop(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
