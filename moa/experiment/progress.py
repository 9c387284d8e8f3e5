"""The progress bar: pairs done, spend and ETA (rich, imported only when a bar is shown)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A rich progress bar on stderr when it is a terminal and ``enabled``; otherwise nothing."""

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
        except ImportError:  # rich is optional (the `report` extra): no bar, same results
            self.enabled = False
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
