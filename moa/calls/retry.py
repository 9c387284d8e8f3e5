"""The retry policy of one model call: exponential backoff with full jitter, capped, never shorter
than the provider's ``Retry-After`` (delta-seconds, an HTTP date, or ``retry-after-ms``), and which
errors are worth another attempt (rate limits, 5xx, timeouts, connection errors, malformed replies;
never 4xx that will not change)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from moa.errors import ModelError, UserError
from moa.models.retry_after import parse_retry_after, retry_after_from_headers

__all__ = ["RetryPolicy", "parse_retry_after", "retry_after_from_headers", "should_retry"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts one model gets and how long to wait between them."""

    #: total attempts per model (the first one included), >= 1
    max_attempts: int = 3
    #: the backoff cap of the first retry; doubles with each attempt
    backoff_base_s: float = 0.5
    #: the largest backoff cap, whatever the attempt number
    backoff_max_s: float = 30.0
    #: a Retry-After longer than this is not waited for: the error is raised instead
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UserError(f"retry.max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("backoff_base_s", "backoff_max_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"retry.{name} must be a finite number >= 0, got {value}")

    def delay_s(
        self, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), or None to give up.

        Full jitter (uniform between 0 and the exponential cap) spreads the retries of many
        concurrent runs that failed together; a provider's Retry-After is a floor, never shortened.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None and retry_after_s > self.max_retry_after_s:
            return None
        # min() before the power would overflow for huge attempt numbers; cap the exponent instead.
        cap = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 1023))
        jittered = rng.uniform(0.0, cap) if rng is not None else random.uniform(0.0, cap)
        if retry_after_s is None:
            return jittered
        return max(retry_after_s, jittered)


def should_retry(error: BaseException) -> bool:
    """True when another attempt at the same request may succeed (a retryable ``ModelError``)."""
    return isinstance(error, ModelError) and error.retryable
