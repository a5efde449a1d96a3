"""What the Stripe client returns: small frozen value objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


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


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    """A `subscription_item`: what one subscription bills, and over which current period.

    `price` is the price object exactly as Stripe sent it, not to be changed (integers as
    `int`, other JSON numbers as `Decimal`, `*_decimal` amounts as Stripe's decimal strings):
    the valuation parses it, and refuses shapes it does not know.
    """

    id: str
    subscription: str
    price: Mapping[str, Any]
    current_period_start: int | None
    current_period_end: int | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A `subscription` with every one of its items (paged in when Stripe inlined only some)."""

    id: str
    customer: str
    status: str
    created: int
    items: tuple[SubscriptionItem, ...]
