"""What the Stripe client returns: small frozen value objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Meter:
    """A `billing.meter`, reduced to what reconciliation needs."""

    id: str
    display_name: str
    event_name: str
    formula: str  # "sum" | "count" | "last"
    status: str  # "active" | "inactive"


@dataclass(frozen=True, slots=True)
class EventSummary:
    """A `billing.meter_event_summary`: one bucket `[start_time, end_time)` of usage."""

    id: str
    meter: str
    start_time: int
    end_time: int
    aggregated_value: Decimal


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """Daily usage of one (customer, meter) pair: each UTC day with a bucket, and its value.

    `requests` counts the HTTP attempts (retries included) made to fetch it.
    """

    values: dict[date, Decimal] = field(default_factory=dict)
    requests: int = 0


@dataclass(frozen=True, slots=True)
class HourlyUsage:
    """Hourly usage of one pair: each UTC hour (its start) with a bucket, and its value."""

    values: dict[datetime, Decimal] = field(default_factory=dict)
    requests: int = 0
