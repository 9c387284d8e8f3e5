"""Reading a provider's ``Retry-After``: delta-seconds, an HTTP date, or ``retry-after-ms``. It lives
with the models because it reads provider replies; the retry policy (``moa.calls.retry``) only
honours the number."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "RETRY_AFTER_CEILING_S",
    "parse_retry_after",
    "ratelimit_reset_from_headers",
    "retry_after_from_headers",
]

#: the most a parsed wait can be: RFC 9111 §1.2.2's 2**31 s (68 years) for a delta-seconds too large
#: to represent. A longer wait (400 digits, ``1e309``, a date in the year 9999) still means "not
#: soon", so it is capped, never dropped as garbage: dropped, it let the retry go within milliseconds.
RETRY_AFTER_CEILING_S = 2.0**31


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` value in seconds from now: delta-seconds or an HTTP date; None if garbage.

    Dates in the past give 0. Negative or NaN seconds are garbage; a wait longer than
    ``RETRY_AFTER_CEILING_S`` (infinity included) is that ceiling.
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
        return _capped(seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return _capped(max(0.0, (when - current).total_seconds()))


def _capped(seconds: float) -> float | None:
    """Seconds within [0, ceiling]; None for a negative or NaN number, which says nothing."""
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CEILING_S)


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from response headers: ``retry-after-ms`` first, then ``retry-after``. A
    date is measured from the reply's own ``Date`` when it has a readable one (RFC 9110 §10.2.3):
    both come from the server's clock, so a skewed local clock neither stretches a 30 s wait past
    ``max_retry_after_s`` nor shrinks it to nothing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            ms = float(millis.strip())
        except ValueError:
            ms = math.nan
        seconds = _capped(ms / 1000.0)
        if seconds is not None:
            return seconds
    return parse_retry_after(lowered.get("retry-after"), now=_server_now(lowered.get("date")))


def _server_now(value: str | None) -> datetime | None:
    """The reply's ``Date`` header as an aware datetime, or None when absent or unreadable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


#: OpenAI's ``x-ratelimit-reset-*`` values: Go durations (``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``)
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?"
)


def ratelimit_reset_from_headers(headers: Mapping[str, str]) -> float | None:
    """For a 429 without ``Retry-After``: seconds until the exhausted window resets, read from
    ``x-ratelimit-remaining-{requests,tokens}`` (0 left) and ``x-ratelimit-reset-*`` (OpenAI's, and
    the OpenAI-compatible servers that copy them). The longest reset of the windows with nothing
    left; None when no window says it is spent or a reset cannot be read."""
    lowered = {k.lower(): v for k, v in headers.items()}
    waits: list[float] = []
    for kind in ("requests", "tokens"):
        try:
            left = float(lowered.get(f"x-ratelimit-remaining-{kind}", "").strip())
        except ValueError:
            continue
        reset = _duration(lowered.get(f"x-ratelimit-reset-{kind}"))
        if left < 1 and reset is not None:
            waits.append(reset)
    return _capped(max(waits)) if waits else None


def _duration(value: str | None) -> float | None:
    """Seconds in a Go duration or a plain number of seconds; None if neither."""
    if value is None or not (text := value.strip()):
        return None
    try:
        return _capped(float(text))
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        return None
    h, m, sec, ms = (float(g) if g else 0.0 for g in match.groups())
    return _capped(h * 3600 + m * 60 + sec + ms / 1000)
