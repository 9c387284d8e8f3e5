"""Reading a provider's ``Retry-After``: delta-seconds, an HTTP date, or ``retry-after-ms``. It lives
with the models because it reads provider replies; the retry policy (``moa.calls.retry``) only
honours the number."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after", "retry_after_from_headers"]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` value in seconds from now: delta-seconds or an HTTP date; None if garbage.

    Dates in the past give 0. Negative, infinite or NaN seconds are garbage.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from response headers: ``retry-after-ms`` first, then ``retry-after``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            ms = float(millis.strip())
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    return parse_retry_after(lowered.get("retry-after"))
