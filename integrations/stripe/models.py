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


@dataclass(frozen=True, slots=True)
class Malformed:
    """An invoice or invoice line Stripe sent that cannot be read: skipped, not fatal, and
    named with the reason so the caller can log and count it.

    `object` is Stripe's name for what it is (`invoice` or `line_item`); `id` is `"?"` when
    the object had none; `invoice` is the invoice it came from (its own id for an invoice).
    """

    object: str
    id: str
    invoice: str
    reason: str


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """An invoice `line_item`, reduced to what the `stripe` ledger needs.

    `price_id` is `pricing.price_details.price` (`None`: the line has no price, e.g. an
    invoice item without one); `period_start` / `period_end` are Unix seconds as Stripe sent
    them; `quantity` is `quantity_decimal`, else `quantity`, else 0; `amount` is in the
    currency's minor unit.
    """

    id: str
    invoice_id: str
    subscription_item: str | None
    price_id: str | None
    period_start: int
    period_end: int
    quantity: Decimal
    amount: int
    proration: bool


@dataclass(frozen=True, slots=True)
class Invoice:
    """An `invoice`, with the lines Stripe inlined in the listing.

    `inline_lines` is only the first page of lines when `more_lines` is true:
    `StripeClient.invoice_lines` yields them all. `subscription` is
    `parent.subscription_details.subscription`; `finalized_at` is
    `status_transitions.finalized_at`.
    """

    id: str
    customer: str
    subscription: str | None
    status: str
    created: int
    finalized_at: int | None
    currency: str
    period_start: int
    period_end: int
    inline_lines: tuple[InvoiceLine | Malformed, ...] = ()
    more_lines: bool = False


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """A pair's usage over one range `[start_time, end_time)` (as asked: minute-aligned).

    `requests` counts the HTTP attempts (retries included) made to fetch it.
    """

    value: Decimal
    start_time: int
    end_time: int
    requests: int = 0
