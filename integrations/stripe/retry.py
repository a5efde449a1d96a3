"""When to retry a Stripe request, and how long to wait first."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Statuses retried when Stripe does not say otherwise (`Stripe-Should-Retry`). stripe-python
# retries 409 and 5xx; we also retry 429 (its SDK does not), with backoff.
RETRYABLE_STATUSES = frozenset({409, 429})


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    """stripe-python's rule, extended to 429: `Stripe-Should-Retry` wins when present."""
    header = headers.get("stripe-should-retry")
    if header is not None:
        value = header.strip().lower()
        if value == "true":
            return True
        if value == "false":
            return False
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or HTTP-date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def backoff_seconds(
    retry: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter exponential backoff before retry number `retry` (0 for the first retry).

    `Retry-After` is a floor on the delay; the caller bounds the total by its deadline.
    """
    ceiling = min(cap, base * 2.0 ** min(retry, 60))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
