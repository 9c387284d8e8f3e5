"""Retry budgets: retries may add only a fraction of an endpoint's recent traffic.

Per-call retry limits cannot stop a storm: when an endpoint degrades, every call retries, and the
extra load keeps it degraded. A retry budget (Finagle's ``RetryBudget``, gRPC's retry throttling)
lets retries add at most ``ratio`` of the requests sent over the last ``window_s`` seconds, plus a
small floor so a quiet endpoint can still retry its few failures. One budget per endpoint key (the
agent's ``api_base``, else its model string), owned by the ``Runner`` so the runs sharing it share
the budget.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from moa.errors import UserError

__all__ = ["RetryBudget", "RetryBudgets"]


@dataclass(slots=True)
class RetryBudget:
    """Retries allowed within any ``window_s``: ``ratio`` x the first attempts sent in it, plus a
    floor of ``min_retries``. Finagle's 20% over 10 s, with a longer window: a retry comes after
    its attempt's timeout, and a window shorter than slow timeouts would forget the traffic the
    retry belongs to."""

    ratio: float = 0.2
    min_retries: int = 100
    window_s: float = 60.0
    _requests: deque[float] = field(default_factory=deque, repr=False)
    _retries: deque[float] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.ratio >= 0.0:
            raise UserError(f"retry budget ratio must be >= 0, got {self.ratio}")
        if not (self.min_retries >= 0 and self.window_s > 0):
            raise UserError("retry budget needs min_retries >= 0 and window_s > 0")

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for log in (self._requests, self._retries):
            while log and log[0] <= horizon:
                log.popleft()

    def sent(self) -> None:
        """Count a first attempt (a deposit into the budget)."""
        now = time.monotonic()
        # a deque's append is atomic: the lock only for the trim, which pops (paid per first
        # attempt, the lock cost a context manager's entry and exit each)
        self._requests.append(now)
        if len(self._requests) > 4096:  # keep the log short under heavy traffic
            with self._lock:
                self._expire(now)

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when retries already add their share."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            allowed = self.min_retries + self.ratio * len(self._requests)
            if len(self._retries) + 1 > allowed:
                return False
            self._retries.append(now)
            return True


class RetryBudgets:
    """One ``RetryBudget`` per endpoint key, made on first use."""

    def __init__(self, *, ratio: float = 0.2, min_retries: int = 100, window_s: float = 60.0) -> None:
        self._settings = (ratio, min_retries, window_s)
        RetryBudget(*self._settings)  # validate the settings now, not at the first retry
        self._budgets: dict[str, RetryBudget] = {}
        self._lock = threading.Lock()

    def for_endpoint(self, key: str) -> RetryBudget:
        with self._lock:
            budget = self._budgets.get(key)
            if budget is None:
                budget = self._budgets[key] = RetryBudget(*self._settings)
            return budget
