"""Realistic, deterministic demo data: Stripe meter events and prices, ledger line items,
planted mistakes.

`generate(anchor=..., customers=..., seed=...)` builds, for the UTC day `anchor` ("today"
when the data was made):

- four meters (`sum` data transfer and API requests, `count` workflow runs, `last` seats);
- Stripe prices (a per_unit price with a transform, a graduated tiered price, prices in
  usd, eur and jpy) and one subscription per customer Stripe bills;
- customers billed monthly (the last complete month, closed, and the current month,
  pending), weekly (Monday weeks) or daily (the last two weeks), with meter events on every
  day of what they are billed for, so that every ordinary line item matches Stripe exactly;
- planted discrepancies of every kind and of every likely cause, on pairs set aside for them
  (six customers), and the exact set the run must find (`DemoData.expected`), each with its
  story, its amount at stake and its likely cause;
- late meter events (`DemoData.late_events`) the demo posts between its first and second
  run, into a closed period that matched in the first.

The same anchor, customer count and seed always give the same data, byte for byte. Usage
is also generated for the days of a pending period that lie after the anchor, so a pending
line item matches Stripe once its period closes: re-running the demo on a later day (over
the stored window) finds nothing new.

Every quantity is an exact decimal (values such as `0.1` or `12.345`); Stripe's aggregation
of them, its charge for a quantity and each amount at stake are computed here by hand,
independently of the simulator, the comparison and the valuation, so tests can hold them
against each other.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

from models.canonical import canonical_decimal, utc_midnight
from models.enums import DiscrepancyKind, Ledger, LikelyCause
from models.keys import DiscrepancyKey
from models.ledger import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from tasks.value import charge, price_from_stripe

DEFAULT_CUSTOMERS = 36
DEFAULT_SEED = 7
LEDGER_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
DAILY_BILLING_DAYS = 14
#: Decimal places of an amount at stake (of the currency's major unit), rounded half-even.
STAKE_PLACES = 6
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
_HOUR = 3_600
_ID_ALPHABET = string.ascii_letters + string.digits
#: Stripe's zero-decimal currencies among the demo's (an amount of 1 is one yen).
_ZERO_DECIMAL = frozenset({"jpy"})
#: When the demo's subscriptions were created (2025-01-01T00:00:00Z), before any window.
_SUBSCRIBED = 1_735_689_600

Kind = DiscrepancyKind
Cause = LikelyCause

#: The two ledgers a discrepancy belongs to: what the company billed, what Stripe invoiced.
INTERNAL = Ledger.INTERNAL
STRIPE = Ledger.STRIPE
#: The `stripe` ledger's own likely causes.
CANCELLED_USAGE = LikelyCause.CANCELLED_USAGE
NOT_SUBSCRIBED = LikelyCause.NOT_SUBSCRIBED
#: Stripe creates a period's invoice an hour after the period ends and finalizes it an hour
#: later (within its 72 h grace); a day is unbilled once it ended 72 h before the run.
_INVOICE_DELAY = _HOUR
_GRACE_DAYS = 3


@dataclass(frozen=True, slots=True)
class DemoMeter:
    id: str
    display_name: str
    event_name: str
    formula: str
    #: Digits after the point the ledger writes quantities with (e.g. `12.300`).
    ledger_scale: int
    #: A `sum` event's value: an integer in `values`, scaled by 10^-`value_places`.
    values: tuple[int, int] = (1, 1)
    value_places: int = 0


TRANSFER = DemoMeter(
    id="mtr_data_transfer",
    display_name="Data transfer (GB)",
    event_name="data_transfer_gb",
    formula="sum",
    ledger_scale=3,
    values=(1, 25_000),
    value_places=3,
)
RUNS = DemoMeter(
    id="mtr_workflow_runs",
    display_name="Workflow runs",
    event_name="workflow_run",
    formula="count",
    ledger_scale=0,
)
SEATS = DemoMeter(
    id="mtr_active_seats",
    display_name="Active seats",
    event_name="active_seats",
    formula="last",
    ledger_scale=0,
)
REQUESTS = DemoMeter(
    id="mtr_api_requests",
    display_name="API requests",
    event_name="api_requests",
    formula="sum",
    ledger_scale=0,
    values=(1_000, 5_000),
)
METERS = (TRANSFER, RUNS, SEATS, REQUESTS)


def _six_places(value: Fraction) -> Decimal:
    """An exact amount rounded half-even to `STAKE_PLACES` places: the one rounding."""
    return Decimal(round(value * 10**STAKE_PLACES)).scaleb(-STAKE_PLACES)


def _half_up(value: Fraction, places: int) -> Decimal:
    """A non-negative exact amount rounded half-up to `places` places (a ledger's amount)."""
    return Decimal(math.floor(value * 10**places + Fraction(1, 2))).scaleb(-places)


@dataclass(frozen=True, slots=True)
class DemoTier:
    """A tier of a graduated price: units up to `up_to` (None: no bound), in minor units."""

    up_to: int | None
    unit_amount: Decimal
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class DemoPrice:
    """A metered Stripe price: amounts in the currency's minor unit, as Stripe's are.

    `per_unit` with `unit_amount` (and, with `divide_by`, a quantity transformed by
    dividing and rounding up), or `tiered` `graduated` with `tiers`.
    """

    id: str
    meter: str
    currency: str
    unit_amount: Decimal | None = None
    divide_by: int | None = None
    tiers: tuple[DemoTier, ...] = ()

    @property
    def exponent(self) -> int:
        """Decimal places of the currency's minor unit (0 for yen, else 2)."""
        return 0 if self.currency in _ZERO_DECIMAL else 2

    def charge(self, quantity: Decimal) -> Fraction:
        """What Stripe charges for `quantity`, in the major unit, exact (0 for `q <= 0`)."""
        q = Fraction(quantity)
        if q <= 0:
            return Fraction(0)
        if self.tiers:
            total, lower = Fraction(0), Fraction(0)
            for tier in self.tiers:  # graduated: each tier charges the units in its range
                if q <= lower:
                    break
                upper = q if tier.up_to is None else min(q, Fraction(tier.up_to))
                total += (upper - lower) * Fraction(tier.unit_amount) + Fraction(tier.flat_amount)
                lower = upper
        else:
            assert self.unit_amount is not None
            units = q if self.divide_by is None else Fraction(math.ceil(q / self.divide_by))
            total = units * Fraction(self.unit_amount)
        return total / Fraction(10**self.exponent)

    def stake(self, *, stripe: Decimal, internal: Decimal) -> Decimal:
        """`V(S) - V(I)` in the major unit, rounded once."""
        return _six_places(self.charge(stripe) - self.charge(internal))

    def overlap_stake(self, shared: Decimal) -> Decimal | None:
        """`-(S x unit price)`; None (not valued) for a price without one unit price."""
        if self.tiers or self.divide_by is not None or self.unit_amount is None:
            return None
        return _six_places(-Fraction(shared) * Fraction(self.unit_amount) / 10**self.exponent)

    def document(self) -> dict[str, Any]:
        """The price as the simulator's data file gives it."""
        entry: dict[str, Any] = {"id": self.id, "currency": self.currency, "meter": self.meter}
        if self.tiers:
            entry["billing_scheme"] = "tiered"
            entry["tiers_mode"] = "graduated"
            entry["tiers"] = [
                {
                    "up_to": tier.up_to,
                    "unit_amount_decimal": canonical_decimal(tier.unit_amount),
                    "flat_amount_decimal": canonical_decimal(tier.flat_amount),
                }
                for tier in self.tiers
            ]
            return entry
        assert self.unit_amount is not None
        entry["billing_scheme"] = "per_unit"
        entry["unit_amount_decimal"] = canonical_decimal(self.unit_amount)
        if self.divide_by is not None:
            entry["transform_quantity"] = {"divide_by": self.divide_by, "round": "up"}
        return entry


def _per_unit(
    meter: DemoMeter, currency: str, amount: str, divide_by: int | None = None
) -> DemoPrice:
    return DemoPrice(
        id=f"price_{meter.event_name}_{currency}",
        meter=meter.id,
        currency=currency,
        unit_amount=Decimal(amount),
        divide_by=divide_by,
    )


#: The price list: one price per meter and currency (amounts in minor units).
PRICES: dict[tuple[str, str], DemoPrice] = {
    (price.meter, price.currency): price
    for price in (
        _per_unit(TRANSFER, "usd", "9"),  # $0.09 a GB
        DemoPrice(  # 10 cents a GB up to 20 GB, then 6 cents and a 1 EUR flat fee
            id="price_data_transfer_gb_eur",
            meter=TRANSFER.id,
            currency="eur",
            tiers=(
                DemoTier(up_to=20, unit_amount=Decimal(10)),
                DemoTier(up_to=None, unit_amount=Decimal(6), flat_amount=Decimal(100)),
            ),
        ),
        _per_unit(TRANSFER, "jpy", "14"),
        _per_unit(RUNS, "usd", "25"),
        _per_unit(RUNS, "eur", "23"),
        _per_unit(RUNS, "jpy", "40"),
        _per_unit(SEATS, "usd", "1200"),
        _per_unit(SEATS, "eur", "1100"),
        _per_unit(SEATS, "jpy", "1800"),
        # Billed per started thousand requests.
        _per_unit(REQUESTS, "usd", "50", divide_by=1000),
        _per_unit(REQUESTS, "eur", "45", divide_by=1000),
        _per_unit(REQUESTS, "jpy", "75", divide_by=1000),
    )
}


@dataclass(frozen=True, slots=True)
class DemoSubscription:
    """A customer's subscription: one metered item per (price) meter, billed monthly.

    `current_period` (Unix seconds) is its items' current period; `status` and
    `canceled_at` say whether (and when) it was cancelled.
    """

    id: str
    customer: str
    items: tuple[tuple[str, DemoPrice], ...]  # (subscription item id, price)
    current_period: tuple[int, int]
    status: str = "active"
    canceled_at: int | None = None

    def document(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "customer": self.customer,
            "status": self.status,
            "created": _SUBSCRIBED,
            "items": [
                {
                    "id": item_id,
                    "price": price.id,
                    "current_period_start": self.current_period[0],
                    "current_period_end": self.current_period[1],
                }
                for item_id, price in self.items
            ],
        }
        if self.canceled_at is not None:
            entry["canceled_at"] = entry["ended_at"] = self.canceled_at
        return entry


@dataclass(frozen=True, slots=True)
class DemoInvoiceLine:
    """A line of a Stripe invoice: a metered item's usage over its period (or one tier of it)."""

    id: str
    subscription_item: str
    price: DemoPrice
    meter: str
    period: tuple[int, int]
    quantity: Decimal
    #: In the currency's minor unit, as Stripe's are.
    amount: int

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_item": self.subscription_item,
            "price": self.price.id,
            "period": {"start": self.period[0], "end": self.period[1]},
            "quantity_decimal": canonical_decimal(self.quantity),
            "amount": self.amount,
        }


@dataclass(frozen=True, slots=True)
class DemoInvoice:
    """An invoice Stripe created for a subscription's closed period: `paid` (finalized) or
    still a `draft` in its grace period."""

    id: str
    customer: str
    subscription: str
    status: str
    created: int
    finalized_at: int | None
    currency: str
    period: tuple[int, int]
    lines: tuple[DemoInvoiceLine, ...]

    def document(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "customer": self.customer,
            "subscription": self.subscription,
            "status": self.status,
            "created": self.created,
            "currency": self.currency,
            "period_start": self.period[0],
            "period_end": self.period[1],
            "lines": [line.document() for line in self.lines],
        }
        if self.finalized_at is not None:
            entry["finalized_at"] = self.finalized_at
        return entry

    def line_items(self) -> dict[str, tuple[DemoInvoiceLine, ...]]:
        """The invoice's line items as the stripe ledger groups them (lines of one item and
        period: a line per tier is one line item), by id (the smallest of their line ids)."""
        groups: dict[tuple[str, tuple[int, int]], list[DemoInvoiceLine]] = {}
        for line in self.lines:
            groups.setdefault((line.subscription_item, line.period), []).append(line)
        return {min(line.id for line in lines): tuple(lines) for lines in groups.values()}


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """A raw meter event, as the application reported it to Stripe."""

    event_name: str
    customer: str
    timestamp: int
    value: Decimal
    identifier: str


@dataclass(frozen=True, slots=True)
class DemoLineItem:
    """A row of the ledger CSV."""

    id: str
    invoice_id: str
    customer: str
    meter: str
    period_start: date
    period_end: date
    quantity: Decimal
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class HandTrackedPair:
    """A pair added with `meter-recon pairs add` (a customer who was never billed)."""

    customer: str
    meter: str
    active_from: date | None
    active_to: date | None


@dataclass(frozen=True, slots=True)
class ExpectedDiscrepancy:
    """A discrepancy planted in the data: what the comparison must report, and why."""

    kind: DiscrepancyKind
    customer: str
    meter: str
    period_start: date
    period_end: date
    line_item_id: str
    other_line_item_id: str
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    why: str
    #: What the difference is worth (major unit of `currency`, 6 places); None: not valued.
    amount_at_stake: Decimal | None = None
    currency: str | None = None
    #: The likely cause the run must give it (None: no cause fits): a `LikelyCause`, or
    #: one of the stripe ledger's (`CANCELLED_USAGE`, `NOT_SUBSCRIBED`).
    cause: str | None = None
    #: The planted scenario (its function's name).
    scenario: str = ""
    #: Found only once the late meter events were posted (by the demo's second run).
    after_late_events: bool = False
    #: Whose bill it is against: `INTERNAL` (the ledger CSV) or `STRIPE` (Stripe's invoices).
    ledger: str = INTERNAL

    @property
    def identity(self) -> DiscrepancyKey:
        """The stored discrepancy's key (ids empty where they do not apply, as stored)."""
        return DiscrepancyKey(
            stripe_customer_id=self.customer,
            meter_id=self.meter,
            kind=self.kind,
            period_start=self.period_start,
            period_end=self.period_end,
            line_item_id=self.line_item_id,
            other_line_item_id=self.other_line_item_id,
            ledger=Ledger(self.ledger),
        )

    @property
    def planted_key(self) -> PlantedKey:
        """The ledger and the identity: one day can be unbilled in both ledgers."""
        return self.ledger, self.identity


#: A planted discrepancy's ledger and identity.
PlantedKey = tuple[str, DiscrepancyKey]


@dataclass(frozen=True)
class DemoData:
    """Everything the demo seeds: the simulator's data, the ledger, and what must be found."""

    anchor: date
    seed: int
    customers: tuple[str, ...]
    window: tuple[date, date]
    meters: tuple[DemoMeter, ...]
    events: tuple[DemoEvent, ...]
    line_items: tuple[DemoLineItem, ...]
    hand_tracked: tuple[HandTrackedPair, ...]
    expected: tuple[ExpectedDiscrepancy, ...]
    prices: tuple[DemoPrice, ...] = ()
    subscriptions: tuple[DemoSubscription, ...] = ()
    #: Events of `events` the application cancelled (meter event adjustments).
    adjustments: tuple[DemoEvent, ...] = ()
    #: Meter events reported late: posted to the simulator between the demo's two runs.
    late_events: tuple[DemoEvent, ...] = ()
    #: The invoices Stripe created for the subscriptions' closed periods (the stripe ledger).
    invoices: tuple[DemoInvoice, ...] = ()

    # -- the simulator's data file (its documented contract) ----------------------------------

    def simulator_document(self) -> dict[str, Any]:
        """The data file's JSON object; values as decimal strings (the late events are not
        in it: the demo posts them)."""
        return {
            "meters": [
                {
                    "id": meter.id,
                    "display_name": meter.display_name,
                    "event_name": meter.event_name,
                    "formula": meter.formula,
                    "status": "active",
                }
                for meter in self.meters
            ],
            "events": [
                {
                    "event_name": event.event_name,
                    "customer": event.customer,
                    "timestamp": event.timestamp,
                    "value": canonical_decimal(event.value),
                    "identifier": event.identifier,
                }
                for event in self.events
            ],
            "prices": [price.document() for price in self.prices],
            "subscriptions": [s.document() for s in self.subscriptions],
            "adjustments": [
                {"event_name": event.event_name, "identifier": event.identifier}
                for event in self.adjustments
            ],
            "invoices": [invoice.document() for invoice in self.invoices],
        }

    def simulator_json(self) -> str:
        """The data file's text: one meter, event, price, ... a line, so it reads (and diffs)
        well."""
        document = self.simulator_document()
        lines = ["{"]
        for index, key in enumerate(SIMULATOR_KEYS):
            lines.append(f'  "{key}": [')
            lines += _json_lines(document[key])
            lines.append("  ]" if index == len(SIMULATOR_KEYS) - 1 else "  ],")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def write_simulator_file(self, path: Path) -> Path:
        path.write_text(self.simulator_json(), encoding="utf-8")
        return path

    # -- the ledger -------------------------------------------------------------------------

    def ledger_csv(self) -> str:
        """The ledger as `meter-recon import-line-items` reads it."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(LEDGER_COLUMNS)
        scales = {meter.id: meter.ledger_scale for meter in self.meters}
        for item in self.line_items:
            writer.writerow(
                [
                    item.id,
                    item.invoice_id,
                    item.customer,
                    item.meter,
                    item.period_start.isoformat(),
                    item.period_end.isoformat(),
                    ledger_text(item.quantity, scales[item.meter]),
                    item.currency,
                    f"{item.amount:.2f}",
                ]
            )
        return buffer.getvalue()

    def write_ledger_csv(self, path: Path) -> Path:
        path.write_text(self.ledger_csv(), encoding="utf-8")
        return path

    # -- what must be found -----------------------------------------------------------------

    def expected_identities(self, *, late_events: bool = True) -> frozenset[PlantedKey]:
        """What a run must find (ledger and identity); without `late_events`, before they
        were posted."""
        return frozenset(item.planted_key for item in self.expected_before(late_events=late_events))

    def expected_in(self, ledger: str) -> tuple[ExpectedDiscrepancy, ...]:
        """The planted discrepancies against one ledger."""
        return tuple(e for e in self.expected if e.ledger == ledger)

    def expected_before(self, *, late_events: bool = True) -> tuple[ExpectedDiscrepancy, ...]:
        """The planted discrepancies, or (without `late_events`) those found before them."""
        return tuple(e for e in self.expected if late_events or not e.after_late_events)

    def expected_by_kind(self) -> dict[DiscrepancyKind, frozenset[PlantedKey]]:
        """The planted discrepancies' identities, for every kind (empty sets included)."""
        return {
            kind: frozenset(item.planted_key for item in self.expected if item.kind is kind)
            for kind in DiscrepancyKind
        }

    def pairs(self) -> frozenset[tuple[str, str]]:
        """Every tracked pair: from the ledger, by hand, and from Stripe's subscriptions."""
        return (
            frozenset({(i.customer, i.meter) for i in self.line_items})
            | frozenset((p.customer, p.meter) for p in self.hand_tracked)
            | self.stripe_pairs()
        )

    def stripe_pairs(self) -> frozenset[tuple[str, str]]:
        """The pairs Stripe's subscriptions bill (discovery finds them)."""
        return frozenset(
            (s.customer, price.meter) for s in self.subscriptions for _, price in s.items
        )

    def price_of(self, customer: str, meter: str) -> DemoPrice | None:
        """The pair's Stripe price, if a subscription bills it."""
        for subscription in self.subscriptions:
            if subscription.customer == customer:
                for _, price in subscription.items:
                    if price.meter == meter:
                        return price
        return None


def ledger_text(value: Decimal, scale: int) -> str:
    """A ledger quantity with at least `scale` decimals (`12.3` -> `12.300`), never rounded."""
    text = canonical_decimal(value)
    whole, _, fraction = text.partition(".")
    if len(fraction) >= scale:
        return text
    return f"{whole}.{fraction.ljust(scale, '0')}"


SIMULATOR_KEYS = ("meters", "events", "prices", "subscriptions", "adjustments", "invoices")


def _json_lines(items: list[dict[str, Any]]) -> list[str]:
    last = len(items) - 1
    return [f"    {json.dumps(item)}{',' if i < last else ''}" for i, item in enumerate(items)]


def default_window(anchor: date) -> tuple[date, date]:
    """The demo's run window: the last complete month and the current month's complete days."""
    return _Calendar(anchor).window


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _days(start: date, end: date) -> Iterable[date]:
    day = start
    while day < end:
        yield day
        day += _DAY


def _on_day_of_month(month: date, day: int) -> date:
    """The month's `day`, or its last day when it is shorter (as Stripe anchors a cycle)."""
    last = (_next_month(month) - _DAY).day
    return month.replace(day=min(day, last))


def _touched_days(start: int, end: int) -> tuple[date, date]:
    """The UTC days `[first, end)` that the seconds `[start, end)` touch."""
    first = datetime.fromtimestamp(start, UTC).date()
    last = datetime.fromtimestamp(end - 1, UTC).date()
    return first, last + _DAY


def _minor(amount: Decimal) -> int:
    """An exact amount in minor units as Stripe writes a line's `amount`: an integer.

    Stripe rounds a line's amount computed from `unit_amount_decimal` to the nearest integer
    of the minor unit; it does not say where a half goes: half-up here (a line's amount is
    shown, never compared: the stripe ledger compares quantities and values them itself)."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class _Calendar:
    """The dates everything is placed on, relative to the anchor (today, UTC)."""

    today: date
    previous_month: date = field(init=False)
    current_month: date = field(init=False)
    next_month: date = field(init=False)
    this_monday: date = field(init=False)

    def __post_init__(self) -> None:
        current = _month_start(self.today)
        object.__setattr__(self, "current_month", current)
        object.__setattr__(self, "previous_month", _month_start(current - _DAY))
        object.__setattr__(self, "next_month", _next_month(current))
        object.__setattr__(self, "this_monday", self.today - timedelta(days=self.today.weekday()))

    @property
    def window(self) -> tuple[date, date]:
        return self.previous_month, self.today

    @property
    def billing_period(self) -> tuple[date, date]:
        """The subscriptions' current period: the current month."""
        return self.current_month, self.next_month

    @property
    def closed_month(self) -> tuple[date, date]:
        """The last complete month: its line items are closed and compared."""
        return self.previous_month, self.current_month

    @property
    def pending_months(self) -> list[tuple[date, date]]:
        """The current month, unless it starts today: its line item is pending."""
        return self.monthly_periods()[1:]

    def monthly_periods(self) -> list[tuple[date, date]]:
        """The last complete month (closed) and, unless it starts today, the current one."""
        periods = [(self.previous_month, self.current_month)]
        if self.current_month < self.today:
            periods.append((self.current_month, self.next_month))
        return periods

    def weekly_periods(self) -> list[tuple[date, date]]:
        """Monday weeks from the one holding the window's first day up to today's."""
        start = self.previous_month - timedelta(days=self.previous_month.weekday())
        periods = []
        while start < self.today:
            periods.append((start, start + _WEEK))
            start += _WEEK
        return periods

    def daily_periods(self) -> list[tuple[date, date]]:
        """The last two weeks' complete days (a pay-as-you-go customer)."""
        first = self.today - timedelta(days=DAILY_BILLING_DAYS)
        return [(day, day + _DAY) for day in _days(first, self.today)]

    def periods(self, cadence: str) -> list[tuple[date, date]]:
        if cadence == "monthly":
            return self.monthly_periods()
        if cadence == "weekly":
            return self.weekly_periods()
        return self.daily_periods()


class _Builder:
    """Accumulates events, line items and subscriptions, and knows Stripe's quantity and
    price of any period."""

    def __init__(self, rng: random.Random, calendar: _Calendar) -> None:
        self.rng = rng
        self.calendar = calendar
        self.events: list[tuple[int, int, DemoEvent]] = []  # (timestamp, sequence, event)
        self.late_events: list[DemoEvent] = []
        self.adjustments: list[DemoEvent] = []
        self.items: list[DemoLineItem] = []
        self.expected: list[ExpectedDiscrepancy] = []
        self.hand_tracked: list[HandTrackedPair] = []
        self.currency: dict[str, str] = {}
        # Stripe's aggregated value per (customer, meter id) and day, as Stripe computes it.
        self.daily: dict[tuple[str, str], dict[date, Decimal]] = {}
        # The Stripe price of each pair a subscription bills, and each customer's items.
        self.prices: dict[tuple[str, str], DemoPrice] = {}
        self.subscribed: dict[str, list[tuple[str, DemoPrice]]] = {}
        self.scenario = ""
        self._seats: dict[str, int] = {}
        self._invoices: dict[tuple[str, date, date, str], str] = {}
        self._sequence = 0
        # Stripe's billing cycles: a customer's (day of month, seconds after 00:00 UTC) its
        # periods start at (default: the 1st at midnight), ...
        self.cycles: dict[str, tuple[int, int]] = {}
        # ... the subscriptions cancelled (when), and those whose last closed period's
        # invoice is still a draft.
        self.canceled: dict[str, int] = {}
        self.drafts: set[str] = set()
        # When each cancelled event was cancelled (an invoice finalized before counts it).
        self.cancelled_at: dict[str, int] = {}

    # -- Stripe's side ----------------------------------------------------------------------

    def _new_event(
        self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal
    ) -> DemoEvent:
        self._sequence += 1
        return DemoEvent(
            event_name=meter.event_name,
            customer=customer,
            timestamp=timestamp,
            value=value,
            identifier=f"evt_{self._sequence:06d}",
        )

    def _event(self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal) -> DemoEvent:
        event = self._new_event(meter, customer, timestamp, value)
        self.events.append((timestamp, self._sequence, event))
        return event

    def _value(self, meter: DemoMeter, least: int | None) -> Decimal:
        """A `sum` event's value, at least `least` (in the meter's smallest step)."""
        low, high = meter.values
        return Decimal(self.rng.randint(max(low, least or low), high)).scaleb(-meter.value_places)

    def report_day(
        self,
        meter: DemoMeter,
        customer: str,
        day: date,
        *,
        hours: tuple[int, int] = (0, 24),
        least: int | None = None,
    ) -> list[DemoEvent]:
        """The application's meter events of one customer for one UTC day (at least one),
        at seconds within `hours` of the day."""
        rng = self.rng
        if meter.formula == "sum":
            values = [self._value(meter, least) for _ in range(rng.randint(1, 3))]
        elif meter.formula == "count":
            values = [Decimal(1)] * rng.randint(1, 6)
        else:
            seats = self._seats.get(customer) or rng.randint(3, 40)
            if rng.random() < 0.15:
                seats = max(3, seats + rng.choice((-2, -1, 1, 1, 2, 3)))
            self._seats[customer] = seats
            values = [Decimal(seats)]
            if rng.random() < 0.1:  # a transient count corrected later the same day
                values.insert(0, Decimal(seats + rng.randint(1, 4)))
        seconds = sorted(rng.sample(range(max(1, hours[0] * _HOUR), hours[1] * _HOUR), len(values)))
        start = utc_midnight(day)
        events = [
            self._event(meter, customer, start + second, value)
            for second, value in zip(seconds, values, strict=True)
        ]
        daily = self.daily.setdefault((customer, meter.id), {})
        if meter.formula == "last":
            daily[day] = values[-1]
        elif meter.formula == "count":
            daily[day] = Decimal(len(values))
        else:
            daily[day] = sum(values, Decimal(0))
        return events

    def add_event(
        self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal
    ) -> DemoEvent:
        """One more event of a `sum` or `count` meter on a day already reported (or not)."""
        assert meter.formula != "last"
        event = self._event(meter, customer, timestamp, value)
        day = datetime.fromtimestamp(timestamp, UTC).date()
        daily = self.daily.setdefault((customer, meter.id), {})
        counted = Decimal(1) if meter.formula == "count" else value
        daily[day] = daily.get(day, Decimal(0)) + counted
        return event

    def report(
        self,
        meter: DemoMeter,
        customer: str,
        start: date,
        end: date,
        *,
        skip: Iterable[date] = (),
        hours: Callable[[date], tuple[int, int]] | None = None,
        least: int | None = None,
    ) -> None:
        skipped = set(skip)
        for day in _days(start, end):
            if day not in skipped:
                self.report_day(
                    meter, customer, day, hours=hours(day) if hours else (0, 24), least=least
                )

    def report_monthly(
        self,
        meter: DemoMeter,
        customer: str,
        *,
        hours: Callable[[date], tuple[int, int]] | None = None,
        least: int | None = None,
    ) -> None:
        """Usage on every day of the monthly periods (the closed month and the pending one)."""
        self.report(
            meter,
            customer,
            self.calendar.previous_month,
            self.calendar.monthly_periods()[-1][1],
            hours=hours,
            least=least,
        )

    def retry(self, event: DemoEvent) -> None:
        """The application sends an event again (same identifier): Stripe ignores it."""
        self._sequence += 1
        self.events.append((event.timestamp, self._sequence, event))

    def cancel(self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal) -> None:
        """An event sent by mistake and cancelled at once (a meter event adjustment)."""
        event = self._event(meter, customer, timestamp, value)
        self.adjustments.append(event)
        self.cancelled_at[event.identifier] = timestamp

    def cancel_later(self, event: DemoEvent, at: int) -> None:
        """A `sum` or `count` event Stripe counted, cancelled at `at` (an adjustment)."""
        meter = next(m for m in METERS if m.event_name == event.event_name)
        assert meter.formula != "last"
        self.adjustments.append(event)
        self.cancelled_at[event.identifier] = at
        day = datetime.fromtimestamp(event.timestamp, UTC).date()
        daily = self.daily[(event.customer, meter.id)]
        daily[day] -= Decimal(1) if meter.formula == "count" else event.value

    def report_late(self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal) -> None:
        """An event the application reports after the ledger was computed (posted later)."""
        self.late_events.append(self._new_event(meter, customer, timestamp, value))

    def usage(self, meter: DemoMeter, customer: str, start: date, end: date) -> Decimal:
        """Stripe's quantity of `[start, end)`: days added up, or the latest day's (`last`)."""
        daily = self.daily.get((customer, meter.id), {})
        days = sorted(day for day in daily if start <= day < end)
        if not days:
            return Decimal(0)
        if meter.formula == "last":
            return daily[days[-1]]
        return sum((daily[day] for day in days), Decimal(0))

    def day_value(self, meter: DemoMeter, customer: str, day: date) -> Decimal:
        return self.daily.get((customer, meter.id), {}).get(day, Decimal(0))

    def subscribe_price(self, meter: DemoMeter, customer: str) -> DemoPrice:
        """Stripe bills the pair: an item of the customer's subscription at its list price."""
        price = PRICES[(meter.id, self.currency[customer].lower())]
        self.prices[(customer, meter.id)] = price
        items = self.subscribed.setdefault(customer, [])
        items.append((f"si_{customer.removeprefix('cus_')}_{len(items) + 1}", price))
        return price

    # -- Stripe's invoices -------------------------------------------------------------------

    def usage_at(
        self,
        meter: DemoMeter,
        customer: str,
        period: tuple[int, int],
        *,
        at: int | None,
        late: bool = False,
        known: Sequence[tuple[int, int, DemoEvent]] | None = None,
    ) -> Decimal:
        """Stripe's usage over the seconds `[start, end)` as its meter knew it at `at` (None:
        now; with `late`, after the late events were posted): each identifier once, events
        cancelled by then left out; added up, counted, or the latest event's value.

        `known`: the customer's events, if already picked out of all of them."""
        events = sorted(
            (timestamp, sequence, event)
            for timestamp, sequence, event in (self.events if known is None else known)
            if event.customer == customer and event.event_name == meter.event_name
        )
        if late:
            extra = [
                e
                for e in self.late_events
                if (e.customer, e.event_name) == (customer, meter.event_name)
            ]
            events = sorted([*events, *((e.timestamp, 10**9 + i, e) for i, e in enumerate(extra))])
        seen: set[str] = set()
        values: list[Decimal] = []
        for timestamp, _, event in events:
            if not period[0] <= timestamp < period[1] or event.identifier in seen:
                continue
            seen.add(event.identifier)
            cancelled = self.cancelled_at.get(event.identifier)
            if cancelled is not None and (at is None or cancelled <= at):
                continue
            values.append(event.value)
        if meter.formula == "count":
            return Decimal(len(values))
        if meter.formula == "last":
            return values[-1] if values else Decimal(0)
        return sum(values, Decimal(0))

    def cycle(self, customer: str) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """The customer's monthly periods Stripe invoiced (ended by the anchor's 00:00 UTC,
        ending after the month before the window began), and its current period."""
        day, offset = self.cycles.get(customer, (1, 0))
        first = _month_start(_month_start(self.calendar.previous_month - _DAY) - _DAY)
        months = [first]
        while len(months) < 6:
            months.append(_next_month(months[-1]))
        starts = [utc_midnight(_on_day_of_month(month, day)) + offset for month in months]
        now = utc_midnight(self.calendar.today)
        since = utc_midnight(_month_start(self.calendar.previous_month - _DAY))
        periods = list(pairwise(starts))
        current = next(p for p in periods if p[0] <= now < p[1])
        canceled = self.canceled.get(customer)
        if canceled is not None:
            current = next(p for p in periods if p[0] <= canceled < p[1])
            now = current[0]
        return [p for p in periods if since < p[1] <= now], current

    def invoices_of(self, customer: str) -> list[DemoInvoice]:
        """What Stripe invoiced the customer's subscription: one invoice per closed period,
        created an hour after it ended and finalized (paid) an hour later, its lines the
        meter's usage over the period as known at finalization (a draft: at creation)."""
        items = self.subscribed.get(customer, [])
        if not items:
            return []
        suffix = customer.removeprefix("cus_")
        closed, _ = self.cycle(customer)
        known = [entry for entry in self.events if entry[2].customer == customer]
        invoices = []
        for period in closed:
            created = period[1] + _INVOICE_DELAY
            draft = customer in self.drafts and period == closed[-1]
            finalized = None if draft else created + _INVOICE_DELAY
            stamp = datetime.fromtimestamp(period[1], UTC).strftime("%Y%m%d")
            lines: list[DemoInvoiceLine] = []
            for item_id, price in items:
                meter = next(m for m in METERS if m.id == price.meter)
                quantity = self.usage_at(
                    meter, customer, period, at=finalized or created, known=known
                )
                for units, amount in _priced_lines(price, quantity):
                    lines.append(
                        DemoInvoiceLine(
                            id=f"il_{suffix}_{stamp}_{len(lines) + 1}",
                            subscription_item=item_id,
                            price=price,
                            meter=price.meter,
                            period=period,
                            quantity=units,
                            amount=amount,
                        )
                    )
            invoices.append(
                DemoInvoice(
                    id=f"in_{suffix}_{stamp}",
                    customer=customer,
                    subscription=f"sub_{suffix}",
                    status="draft" if draft else "paid",
                    created=created,
                    finalized_at=finalized,
                    currency=items[0][1].currency,
                    period=period,
                    lines=tuple(lines),
                )
            )
        return invoices

    def invoiced(
        self, meter: DemoMeter, customer: str, *, ending: int | None = None
    ) -> tuple[DemoInvoice, str, tuple[DemoInvoiceLine, ...]]:
        """The meter's line item (invoice, id, lines) of the customer's last closed period,
        or of the one ending at `ending`."""
        for invoice in reversed(self.invoices_of(customer)):
            if ending is not None and invoice.period[1] != ending:
                continue
            for item_id, lines in invoice.line_items().items():
                if lines[0].meter == meter.id:
                    return invoice, item_id, lines
        raise LookupError(f"no invoice of {customer} bills {meter.id}")

    def expect_invoiced(
        self,
        meter: DemoMeter,
        customer: str,
        *,
        why: str,
        cause: str | None,
        ending: int | None = None,
        after_late_events: bool = False,
    ) -> None:
        """A finalized Stripe line item whose quantity Stripe's meter no longer shows: `S` is
        the usage over exactly its period now, `I` its quantity."""
        invoice, item_id, lines = self.invoiced(meter, customer, ending=ending)
        billed = sum((line.quantity for line in lines), Decimal(0))
        stripe = self.usage_at(meter, customer, invoice.period, at=None, late=after_late_events)
        self.expect(
            Kind.QUANTITY_MISMATCH if stripe else Kind.MISSING_IN_STRIPE,
            meter,
            customer,
            _touched_days(*invoice.period),
            stripe=stripe,
            internal=billed,
            items=(item_id, ""),
            why=why,
            cause=cause,
            after_late_events=after_late_events,
            ledger=STRIPE,
        )

    # -- the ledger's side ------------------------------------------------------------------

    def bill(
        self,
        meter: DemoMeter,
        customer: str,
        period: tuple[date, date],
        quantity: Decimal,
        *,
        invoice: str = "",
    ) -> DemoLineItem:
        key = (customer, period[0], period[1], invoice)
        invoice_id = self._invoices.get(key)
        if invoice_id is None:
            invoice_id = self._invoices[key] = f"in_{len(self._invoices) + 1:05d}"
        currency = self.currency[customer]
        price = PRICES[(meter.id, currency.lower())]
        item = DemoLineItem(
            id=f"li_{len(self.items) + 1:06d}",
            invoice_id=invoice_id,
            customer=customer,
            meter=meter.id,
            period_start=period[0],
            period_end=period[1],
            quantity=quantity,
            currency=currency,
            # What the list price charges, in the currency's major unit.
            amount=_half_up(price.charge(quantity), price.exponent),
        )
        self.items.append(item)
        return item

    def bill_usage(
        self, meter: DemoMeter, customer: str, periods: Iterable[tuple[date, date]]
    ) -> list[DemoLineItem]:
        """Line items that bill exactly what Stripe metered (they match)."""
        return [
            self.bill(meter, customer, period, self.usage(meter, customer, *period))
            for period in periods
        ]

    def subscribe(
        self, meter: DemoMeter, customer: str, cadence: str, *, stripe_price: bool = True
    ) -> list[DemoLineItem]:
        """An ordinary pair: usage on every billed day, each period billed exactly (and,
        with `stripe_price`, billed by a Stripe subscription too)."""
        periods = self.calendar.periods(cadence)
        self.report(meter, customer, periods[0][0], periods[-1][1])
        if stripe_price:
            self.subscribe_price(meter, customer)
        return self.bill_usage(meter, customer, periods)

    # -- what must be found -----------------------------------------------------------------

    def expect(
        self,
        kind: DiscrepancyKind,
        meter: DemoMeter,
        customer: str,
        period: tuple[date, date],
        *,
        stripe: Decimal,
        internal: Decimal | None,
        why: str,
        items: tuple[str, str] = ("", ""),
        cause: str | None = None,
        after_late_events: bool = False,
        ledger: str = INTERNAL,
    ) -> None:
        amount, currency = self._stake(kind, meter, customer, items[0], stripe, internal, ledger)
        self.expected.append(
            ExpectedDiscrepancy(
                kind=kind,
                customer=customer,
                meter=meter.id,
                period_start=period[0],
                period_end=period[1],
                line_item_id=items[0],
                other_line_item_id=items[1],
                stripe_quantity=stripe,
                internal_quantity=internal,
                why=why,
                amount_at_stake=amount,
                currency=None if amount is None else currency,
                cause=cause,
                scenario=self.scenario,
                after_late_events=after_late_events,
                ledger=ledger,
            )
        )

    def expect_unbilled(
        self,
        meter: DemoMeter,
        customer: str,
        period: tuple[date, date],
        *,
        why: str,
        ledger: str = INTERNAL,
        cause: str | None = None,
    ) -> None:
        """Stripe's usage over `period` with no line item (of `ledger`) covering it."""
        self.expect(
            Kind.UNBILLED_USAGE,
            meter,
            customer,
            period,
            stripe=self.usage(meter, customer, *period),
            internal=Decimal(0),
            why=why,
            ledger=ledger,
            cause=cause,
        )

    def expect_unbilled_by_stripe(self, meter: DemoMeter, customer: str, *, why: str) -> None:
        """Each window day of the pair with usage that no subscription bills (`not_subscribed`)
        and that ended 72 h before a run on the anchor day: Stripe will never invoice it."""
        start, _ = self.calendar.window
        last = self.calendar.today - (_GRACE_DAYS + 1) * _DAY
        for day in sorted(self.daily.get((customer, meter.id), {})):
            if start <= day <= last and self.day_value(meter, customer, day):
                self.expect_unbilled(
                    meter, customer, (day, day + _DAY), why=why, ledger=STRIPE, cause=NOT_SUBSCRIBED
                )

    def _stake(
        self,
        kind: DiscrepancyKind,
        meter: DemoMeter,
        customer: str,
        item_id: str,
        stripe: Decimal,
        internal: Decimal | None,
        ledger: str = INTERNAL,
    ) -> tuple[Decimal | None, str | None]:
        """The amount at stake, by hand: the pair's Stripe price first, else (in the internal
        ledger) the ledger's. A Stripe line is valued at its own price, the pair's here."""
        price = self.prices.get((customer, meter.id))
        if price is not None:
            if kind is Kind.OVERLAPPING_LINE_ITEMS:
                return price.overlap_stake(stripe), price.currency
            return price.stake(stripe=stripe, internal=internal or Decimal(0)), price.currency
        if ledger == STRIPE:
            return None, None
        own = [i for i in self.items if (i.customer, i.meter) == (customer, meter.id)]
        if kind is Kind.UNBILLED_USAGE:
            billed = [i for i in own if i.quantity]
            item = max(billed, key=lambda i: (i.period_end, i.id)) if billed else None
        else:
            item = next((i for i in own if i.id == item_id), None)
        if item is None or not item.quantity:
            return None, None
        gap = Fraction(stripe) - Fraction(internal or 0)
        if kind is Kind.OVERLAPPING_LINE_ITEMS:
            gap = -Fraction(stripe)
        stake = gap * Fraction(item.amount) / Fraction(item.quantity)
        return _six_places(stake), item.currency.lower()


def _priced_lines(price: DemoPrice, quantity: Decimal) -> list[tuple[Decimal, int]]:
    """A metered item's invoice line(s) for `quantity`: (quantity, amount in minor units).

    A graduated price shows a line per tier it reaches (its units, their amount and the
    tier's flat fee), as Stripe's invoices do; any other price one line, charged as Stripe
    charges (`tasks.value.charge`, exact, then rounded to the minor unit)."""
    if not price.tiers:
        exact = charge(price_from_stripe(price.document()), quantity)
        return [(quantity, _minor(exact))]
    lines: list[tuple[Decimal, int]] = []
    lower = Decimal(0)
    for tier in price.tiers:
        upper = quantity if tier.up_to is None else min(quantity, Decimal(tier.up_to))
        if upper <= lower and lines:
            break
        units = max(upper - lower, Decimal(0))
        flat = tier.flat_amount if units else Decimal(0)
        lines.append((units, _minor(units * tier.unit_amount + flat)))
        lower = upper
    return lines


def _customer_id(rng: random.Random) -> str:
    return "cus_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(14))


def generate(
    *, anchor: date, customers: int = DEFAULT_CUSTOMERS, seed: int = DEFAULT_SEED
) -> DemoData:
    """Demo data anchored at the UTC day `anchor` (today when it is made); deterministic.

    Raises `ValueError` when `customers` is below `MIN_CUSTOMERS`.
    """
    if customers < MIN_CUSTOMERS:
        raise ValueError(
            f"The demo needs at least {MIN_CUSTOMERS} customers to plant every kind of "
            f"discrepancy, got {customers}."
        )
    rng = random.Random(seed)
    calendar = _Calendar(anchor)
    build = _Builder(rng, calendar)
    ids: list[str] = []
    while len(ids) < customers:
        candidate = _customer_id(rng)
        if candidate not in ids:
            ids.append(candidate)
    for customer in ids:
        build.currency[customer] = "EUR" if rng.random() < 0.25 else "USD"

    planted = rng.sample(range(customers), MIN_CUSTOMERS)
    _plant(build, [ids[i] for i in planted])

    ordinary = [ids[i] for i in range(customers) if i not in planted]
    for number, customer in enumerate(ordinary):
        meters = [
            m
            for m, share in zip(METERS, (0.85, 0.7, 0.6, 0.3), strict=True)
            if rng.random() < share
        ]
        for meter in meters or [rng.choice(METERS)]:
            cadence = rng.choices(("monthly", "weekly", "daily"), weights=(14, 4, 2))[0]
            items = build.subscribe(meter, customer, cadence)
            if number == 0 and meter is TRANSFER:
                # A ledger that keeps more decimals than Stripe shows: equal within the
                # default tolerance (1e-6), so it matches.
                closed = items[0]
                build.items[build.items.index(closed)] = replace(
                    closed, quantity=closed.quantity + Decimal("0.0000004")
                )

    build.events.sort(key=lambda entry: (entry[0], entry[1]))
    build.expected.sort(key=lambda e: (e.kind.value, e.customer, e.meter, e.period_start))
    return DemoData(
        anchor=anchor,
        seed=seed,
        customers=tuple(ids),
        window=calendar.window,
        meters=METERS,
        events=tuple(event for _, _, event in build.events),
        line_items=tuple(build.items),
        hand_tracked=tuple(build.hand_tracked),
        expected=tuple(build.expected),
        prices=tuple(PRICES.values()),
        subscriptions=tuple(
            DemoSubscription(
                id=f"sub_{customer.removeprefix('cus_')}",
                customer=customer,
                items=tuple(items),
                current_period=build.cycle(customer)[1],
                status="canceled" if customer in build.canceled else "active",
                canceled_at=build.canceled.get(customer),
            )
            for customer, items in sorted(build.subscribed.items())
        ),
        adjustments=tuple(build.adjustments),
        late_events=tuple(build.late_events),
        invoices=tuple(
            invoice
            for customer in sorted(build.subscribed)
            for invoice in build.invoices_of(customer)
        ),
    )


# -- the planted scenarios -----------------------------------------------------------------
#
# One function per planted discrepancy story, on one customer set aside for it (each of a
# customer's scenarios uses its own meter). They run in `PLANTED`'s order, which is part of
# the data: every scenario draws from the same random generator.
#
# Each states the discrepancies it plants: kind, numbers, amount at stake (by hand, from the
# pair's price) and the likely cause a run must give it. The likely-cause rules are tried in
# order (late_usage, period_off_by_one, timezone_shift, duplicated_usage, unit_scale, then
# wrong_meter across pairs), so a scenario also makes sure no earlier rule fits it (and none
# at all where it plants no cause); its docstring says how.

Scenario = Callable[[_Builder, str], None]


def _quiet_boundaries(period: tuple[date, date]) -> Callable[[date], tuple[int, int]]:
    """Event hours that no shifted day boundary reaches: a day that ends at a boundary
    has events before 10:00, a day that starts at one after 14:00 (a shift is 14 h at most)."""
    starts = set(period)

    def hours(day: date) -> tuple[int, int]:
        if day + _DAY in starts:
            return (0, 10)
        if day in starts:
            return (14, 24)
        return (0, 24)

    return hours


def invoice_cut_before_the_last_days_usage(build: _Builder, customer: str) -> None:
    """Data transfer (sum): the invoice was cut before the month's last day of usage arrived.

    The ledger is Stripe's month without its last day: period_off_by_one (a missed last day).
    """
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(TRANSFER, customer)
    build.subscribe_price(TRANSFER, customer)
    stripe = build.usage(TRANSFER, customer, *month)
    late = build.usage(TRANSFER, customer, month[1] - _DAY, month[1])
    item = build.bill(TRANSFER, customer, month, stripe - late)
    build.bill_usage(TRANSFER, customer, cal.pending_months)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        TRANSFER,
        customer,
        month,
        stripe=stripe,
        internal=stripe - late,
        items=(item.id, ""),
        why="the invoice was cut before the last day's usage arrived",
        cause=Cause.PERIOD_OFF_BY_ONE,
    )


def week_of_events_never_reached_stripe(build: _Builder, customer: str) -> None:
    """Workflow runs (count), billed weekly: a week of meter events was lost (an outage).

    No cause: Stripe has nothing (no multiple), and the 20-60 runs billed are more than a
    neighbouring day (at most 6 runs) could add, shifted or not.
    """
    cal = build.calendar
    weeks = cal.weekly_periods()
    lost = (cal.this_monday - _WEEK, cal.this_monday)
    build.report(RUNS, customer, weeks[0][0], weeks[-1][1], skip=_days(*lost))
    build.subscribe_price(RUNS, customer)
    for period in weeks:
        if period != lost:
            build.bill_usage(RUNS, customer, [period])
            continue
        billed = Decimal(build.rng.randint(20, 60))
        item = build.bill(RUNS, customer, period, billed)
        build.expect(
            Kind.MISSING_IN_STRIPE,
            RUNS,
            customer,
            period,
            stripe=Decimal(0),
            internal=billed,
            items=(item.id, ""),
            why="a week of meter events never reached Stripe",
        )


def ledger_counts_requests_in_thousands(build: _Builder, customer: str) -> None:
    """API requests (sum): the ledger bills thousands of requests, Stripe counts each one.

    unit_scale (S = 1000 x I): a day holds at most 15,000 of the month's 28,000 or more
    requests, so no day left out or added (shifted or not) explains the gap, and 1000 is
    the first factor that fits.
    """
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(REQUESTS, customer)
    build.subscribe_price(REQUESTS, customer)
    stripe = build.usage(REQUESTS, customer, *month)
    item = build.bill(REQUESTS, customer, month, stripe.scaleb(-3))
    build.bill_usage(REQUESTS, customer, cal.pending_months)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        REQUESTS,
        customer,
        month,
        stripe=stripe,
        internal=item.quantity,
        items=(item.id, ""),
        why="the ledger bills API requests in thousands",
        cause=Cause.UNIT_SCALE,
    )


def deduplicated_retries_billed_twice(build: _Builder, customer: str) -> None:
    """Workflow runs (count): retried events Stripe de-duplicated (same identifier) were billed.

    No cause: events near the month's boundaries lie where no shifted boundary reaches,
    the day after the month does not hold exactly the 2 retries, and the month has no usage
    the day before it.
    """
    cal = build.calendar
    month = cal.closed_month
    build.currency[customer] = "EUR"
    build.report_monthly(RUNS, customer, hours=_quiet_boundaries(month))
    after = month[1]
    if after < cal.today and build.day_value(RUNS, customer, after) == 2:
        build.add_event(RUNS, customer, utc_midnight(after) + 20 * _HOUR, Decimal(1))
    build.subscribe_price(RUNS, customer)
    retried = [
        event
        for _, _, event in build.events
        if event.customer == customer
        and event.event_name == RUNS.event_name
        and month[0] <= datetime.fromtimestamp(event.timestamp, UTC).date() < month[1]
    ][3:5]
    for event in retried:
        build.retry(event)
    stripe = build.usage(RUNS, customer, *month)
    item = build.bill(RUNS, customer, month, stripe + len(retried))
    build.bill_usage(RUNS, customer, cal.pending_months)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        RUNS,
        customer,
        month,
        stripe=stripe,
        internal=stripe + len(retried),
        items=(item.id, ""),
        why="retried meter events that Stripe de-duplicated were billed twice",
    )


def plan_change_billed_half_a_month_twice(build: _Builder, customer: str) -> None:
    """Data transfer (sum): a mid-month plan change billed the second half of the month twice.

    An overlap gets no cause; at a graduated price (no one unit price) it is not valued.
    """
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(TRANSFER, customer)
    build.subscribe_price(TRANSFER, customer)
    first = build.bill_usage(TRANSFER, customer, [month])[0]
    build.bill_usage(TRANSFER, customer, cal.pending_months)
    half = (month[0] + timedelta(days=14), month[1])
    usage = build.usage(TRANSFER, customer, *half)
    second = build.bill(TRANSFER, customer, half, usage, invoice="plan change")
    build.expect(
        Kind.OVERLAPPING_LINE_ITEMS,
        TRANSFER,
        customer,
        half,
        stripe=usage,
        internal=None,
        items=(max(first.id, second.id), min(first.id, second.id)),
        why="a mid-month plan change billed the second half of the month twice",
    )


def requests_reported_after_the_invoice(build: _Builder, customer: str) -> None:
    """API requests (sum): the month matched; then the application reported two more
    batches of that month (the demo posts them between its runs): late_usage, in both
    ledgers (Stripe had finalized the month's invoice too: it will not invoice them)."""
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(REQUESTS, customer)
    build.subscribe_price(REQUESTS, customer)
    item = build.bill_usage(REQUESTS, customer, [month])[0]
    build.bill_usage(REQUESTS, customer, cal.pending_months)
    day = utc_midnight(month[0] + timedelta(days=19))
    late = [Decimal(build.rng.randint(1_000, 5_000)) for _ in range(2)]
    for hour, value in zip((10, 15), late, strict=True):
        build.report_late(REQUESTS, customer, day + hour * _HOUR + 7, value)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        REQUESTS,
        customer,
        month,
        stripe=item.quantity + sum(late, Decimal(0)),
        internal=item.quantity,
        items=(item.id, ""),
        why="API requests of the month reported after the invoice was computed",
        cause=Cause.LATE_USAGE,
        after_late_events=True,
    )
    build.expect_invoiced(
        REQUESTS,
        customer,
        why="API requests recorded after Stripe finalized the month's invoice",
        cause=Cause.LATE_USAGE,
        after_late_events=True,
    )


def removed_seats_still_billed(build: _Builder, customer: str) -> None:
    """Active seats (last), in yen: two seats removed during the month were still billed.

    No cause: a `last` meter has no period rules, and with at least 3 seats billing 2 more
    is no multiple.
    """
    cal = build.calendar
    month = cal.closed_month
    build.currency[customer] = "JPY"
    build.report_monthly(SEATS, customer)
    build.subscribe_price(SEATS, customer)
    stripe = build.usage(SEATS, customer, *month)
    item = build.bill(SEATS, customer, month, stripe + 2)
    build.bill_usage(SEATS, customer, cal.pending_months)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        SEATS,
        customer,
        month,
        stripe=stripe,
        internal=stripe + 2,
        items=(item.id, ""),
        why="two seats removed during the month were still billed",
    )


def daily_billing_zero_and_skipped_day(build: _Builder, customer: str) -> None:
    """Data transfer (sum), billed daily: one day billed 0, and one day never billed.

    No cause: one-day periods have no period rules, 0 is no multiple, and an unbilled day
    is late or on the wrong meter only.
    """
    days = build.calendar.daily_periods()
    zero, skipped = days[-3], days[-2]
    build.report(TRANSFER, customer, days[0][0], days[-1][1])
    build.subscribe_price(TRANSFER, customer)
    for period in days:
        if period == zero:
            item = build.bill(TRANSFER, customer, period, Decimal(0))
            build.expect(
                Kind.QUANTITY_MISMATCH,
                TRANSFER,
                customer,
                period,
                stripe=build.usage(TRANSFER, customer, *period),
                internal=Decimal(0),
                items=(item.id, ""),
                why="a daily line item billed 0 for a day with usage",
            )
        elif period == skipped:
            build.expect_unbilled(
                TRANSFER, customer, period, why="the daily billing job skipped a day"
            )
        else:
            build.bill_usage(TRANSFER, customer, [period])


def workflow_runs_sent_twice(build: _Builder, customer: str) -> None:
    """Workflow runs (count), in yen: a retry loop sent every event of the month again with
    new identifiers, so Stripe counted each run twice: duplicated_usage.

    Stripe's 56 or more runs are more than a day (at most 12 runs) could explain, shifted or
    not.
    """
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(RUNS, customer)
    build.subscribe_price(RUNS, customer)
    billed = build.usage(RUNS, customer, *month)
    sent = [
        event
        for _, _, event in build.events
        if event.customer == customer
        and event.event_name == RUNS.event_name
        and month[0] <= datetime.fromtimestamp(event.timestamp, UTC).date() < month[1]
    ]
    for event in sent:
        build.add_event(RUNS, customer, event.timestamp, event.value)
    item = build.bill(RUNS, customer, month, billed)
    build.bill_usage(RUNS, customer, cal.pending_months)
    build.expect(
        Kind.QUANTITY_MISMATCH,
        RUNS,
        customer,
        month,
        stripe=build.usage(RUNS, customer, *month),
        internal=billed,
        items=(item.id, ""),
        why="a retry loop sent the month's events again with new identifiers",
        cause=Cause.DUPLICATED_USAGE,
    )


def ledger_days_in_utc_minus_five(build: _Builder, customer: str) -> None:
    """API requests (sum), in yen, billed weekly: the ledger computed one week in UTC-05:00
    days (05:00 to 05:00 UTC): timezone_shift, h = +5.

    The only events within 14 h of the week's boundaries are one at 04:30 on its first day
    and one at 04:30 on the day after it, so no smaller shift fits; their difference (under
    1,000 requests) is less than any day's usage, so no day left out or added does either.
    """
    cal = build.calendar
    weeks = cal.weekly_periods()
    week = (cal.this_monday - 2 * _WEEK, cal.this_monday - _WEEK)
    edges = {week[0] - _DAY, week[0], week[1] - _DAY, week[1]}
    build.report(
        REQUESTS,
        customer,
        weeks[0][0],
        weeks[-1][1],
        hours=lambda day: (6, 18) if day in edges else (0, 24),
    )
    build.subscribe_price(REQUESTS, customer)
    early = Decimal(build.rng.randint(1_000, 2_000))  # on the week's first day
    later = early + build.rng.randint(100, 900)  # on the day after the week
    for day, value in ((week[0], early), (week[1], later)):
        build.add_event(REQUESTS, customer, utc_midnight(day) + 4 * _HOUR + 1_800, value)
    for period in weeks:
        if period != week:
            build.bill_usage(REQUESTS, customer, [period])
            continue
        stripe = build.usage(REQUESTS, customer, *week)
        item = build.bill(REQUESTS, customer, week, stripe - early + later)
        build.expect(
            Kind.QUANTITY_MISMATCH,
            REQUESTS,
            customer,
            week,
            stripe=stripe,
            internal=item.quantity,
            items=(item.id, ""),
            why="the ledger computed the week in UTC-05:00 days",
            cause=Cause.TIMEZONE_SHIFT,
        )


def seats_stripe_never_received(build: _Builder, customer: str) -> None:
    """Active seats (last), priced by the ledger (no Stripe subscription): billed, but Stripe
    never got a seat count (the application reported under the wrong customer id).

    No cause: a `last` meter has no period rules, and Stripe's 0 is no multiple.
    """
    build.currency[customer] = "USD"
    month = build.calendar.closed_month
    item = build.bill(SEATS, customer, month, Decimal(build.rng.randint(4, 12)))
    build.expect(
        Kind.MISSING_IN_STRIPE,
        SEATS,
        customer,
        month,
        stripe=Decimal(0),
        internal=item.quantity,
        items=(item.id, ""),
        why="billed for seats Stripe never received a count of",
    )


def data_transfer_event_cancelled(build: _Builder, customer: str) -> None:
    """Data transfer (sum): an event sent by mistake was cancelled at once with a meter event
    adjustment; neither the ledger nor Stripe's invoice billed it: both match."""
    build.subscribe(TRANSFER, customer, "monthly")
    day = build.calendar.previous_month + timedelta(days=9)
    build.cancel(TRANSFER, customer, utc_midnight(day) + 13 * _HOUR, Decimal("250.5"))


def ledger_includes_the_day_after_the_week(build: _Builder, customer: str) -> None:
    """Workflow runs (count), billed weekly: one week's line item counted the day after it
    too (an inclusive end): period_off_by_one."""
    cal = build.calendar
    weeks = cal.weekly_periods()
    week = (cal.this_monday - 2 * _WEEK, cal.this_monday - _WEEK)
    build.report(RUNS, customer, weeks[0][0], weeks[-1][1])
    build.subscribe_price(RUNS, customer)
    for period in weeks:
        if period != week:
            build.bill_usage(RUNS, customer, [period])
            continue
        stripe = build.usage(RUNS, customer, *week)
        item = build.bill(
            RUNS, customer, week, build.usage(RUNS, customer, week[0], week[1] + _DAY)
        )
        build.expect(
            Kind.QUANTITY_MISMATCH,
            RUNS,
            customer,
            week,
            stripe=stripe,
            internal=item.quantity,
            items=(item.id, ""),
            why="the ledger counted the day after the week too (an inclusive end)",
            cause=Cause.PERIOD_OFF_BY_ONE,
        )


def trial_customer_never_billed(build: _Builder, customer: str) -> None:
    """Workflow runs (count): a trial customer, never billed, tracked by hand from the trial's
    first day; usage before that day (an onboarding test) is outside the pair's bounds.

    Not valued (no price anywhere) and no cause (nothing arrived late, and the customer's
    other unbilled days differ the same way, never the opposite). No subscription bills it
    either: in the stripe ledger each day with usage that ended 72 h before the run (the
    onboarding day too: the stripe ledger has no bounds) is unbilled, `not_subscribed`.
    """
    cal = build.calendar
    trial = cal.today - timedelta(days=10)
    build.hand_tracked.append(HandTrackedPair(customer, RUNS.id, trial, None))
    build.report_day(RUNS, customer, trial - timedelta(days=5))
    # Its last day of usage ended 72 h before the anchor day began, so a later run of the
    # same window (another day) finds the same unbilled days in the stripe ledger.
    last = cal.today - 4 * _DAY
    used = sorted({last, *build.rng.sample(list(_days(trial, last)), 4)})
    for day in used:
        build.report_day(RUNS, customer, day)
        build.expect_unbilled(
            RUNS, customer, (day, day + _DAY), why="a trial customer who was never billed"
        )
    build.expect_unbilled_by_stripe(
        RUNS, customer, why="a trial customer no subscription bills: Stripe never invoices it"
    )


def data_transfer_only_stripe_bills(build: _Builder, customer: str) -> None:
    """Data transfer (sum), in euros: the trial customer's subscription, which only Stripe
    knows (no line item), billed the last three days at a graduated price: discovery tracks
    the pair, and each day is unbilled usage valued at that price. No cause."""
    build.currency[customer] = "EUR"
    build.subscribe_price(TRANSFER, customer)
    today = build.calendar.today
    for day in _days(today - 3 * _DAY, today):
        build.report_day(TRANSFER, customer, day)
        build.expect_unbilled(
            TRANSFER, customer, (day, day + _DAY), why="a subscription only Stripe knows about"
        )


def transfer_reported_as_requests(build: _Builder, customer: str) -> None:
    """Data transfer and API requests (sum): one data-transfer batch was reported with the
    API requests event name; the ledger billed it as data transfer: wrong_meter.

    The batch (80-100 GB, not a whole number) is more than a day of this customer's transfer
    (at most 75 GB) and less than half its month (28 days of 5 GB or more), and is no whole
    number of requests, so no earlier rule fits either pair.
    """
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(TRANSFER, customer, least=5_000)
    build.report_monthly(REQUESTS, customer)
    build.subscribe_price(TRANSFER, customer)
    build.subscribe_price(REQUESTS, customer)
    batch = Decimal(build.rng.randint(80_000, 99_999) | 1).scaleb(-3)  # odd: never whole
    day = utc_midnight(month[0] + timedelta(days=14)) + 12 * _HOUR
    build.add_event(REQUESTS, customer, day, batch)
    transfer = build.usage(TRANSFER, customer, *month)
    requests = build.usage(REQUESTS, customer, *month)
    moved = build.bill(TRANSFER, customer, month, transfer + batch)
    kept = build.bill(REQUESTS, customer, month, requests - batch)
    build.bill_usage(TRANSFER, customer, cal.pending_months)
    build.bill_usage(REQUESTS, customer, cal.pending_months)
    why = "a data-transfer batch was reported as API requests"
    for meter, item, stripe in ((TRANSFER, moved, transfer), (REQUESTS, kept, requests)):
        build.expect(
            Kind.QUANTITY_MISMATCH,
            meter,
            customer,
            month,
            stripe=stripe,
            internal=item.quantity,
            items=(item.id, ""),
            why=why,
            cause=Cause.WRONG_METER,
        )


# -- the stripe ledger: what Stripe invoiced ---------------------------------------------------
#
# Every subscribed customer gets the invoices Stripe finalized for its closed periods, each
# line its meter's usage at finalization: a pair matches unless its meter moved after that.


def transfer_invoiced_a_line_per_tier(build: _Builder, customer: str) -> None:
    """Data transfer (sum), in euros at the graduated price: Stripe's invoice shows each
    month as two lines (the first 20 GB at 10 cents, the rest at 6 cents plus the 1 EUR flat
    fee), which the stripe ledger groups into one line item: it matches, nothing is planted
    (each line compared alone would be two mismatches). At least 1 GB a day: both tiers."""
    build.currency[customer] = "EUR"
    build.report_monthly(TRANSFER, customer, least=1_000)
    build.subscribe_price(TRANSFER, customer)
    build.bill_usage(TRANSFER, customer, build.calendar.monthly_periods())


def runs_cancelled_after_the_invoice(build: _Builder, customer: str) -> None:
    """Workflow runs (count), in euros: three runs counted twice by a retry were cancelled
    with meter event adjustments an hour after Stripe finalized the month's invoice. The
    ledger, computed later, never billed them (it matches); Stripe's invoice did:
    cancelled_usage in the stripe ledger, 3 runs at 23 cents (billed beyond usage)."""
    month = build.calendar.closed_month
    build.currency[customer] = "EUR"
    build.report_monthly(RUNS, customer)
    build.subscribe_price(RUNS, customer)
    at = utc_midnight(month[0] + timedelta(days=11)) + 16 * _HOUR
    cancelled = utc_midnight(month[1]) + 2 * _INVOICE_DELAY + _HOUR
    for minute in (1, 2, 3):
        build.cancel_later(build.add_event(RUNS, customer, at + 60 * minute, Decimal(1)), cancelled)
    build.bill_usage(RUNS, customer, build.calendar.monthly_periods())
    build.expect_invoiced(
        RUNS,
        customer,
        why="runs cancelled after Stripe finalized the month's invoice",
        cause=CANCELLED_USAGE,
    )


def subscription_cancelled_without_a_final_invoice(build: _Builder, customer: str) -> None:
    """Workflow runs (count): the subscription was cancelled on the closed month's tenth day
    without a final invoice; the ledger billed the nine days itself (it matches), Stripe
    never will: each day is unbilled in the stripe ledger, valued at 25 cents a run. No cause
    (a subscription item bills the pair: a cancelled one's period is no longer pending)."""
    month = build.calendar.closed_month
    build.currency[customer] = "USD"
    left = month[0] + timedelta(days=9)
    build.report(RUNS, customer, month[0], left)
    build.subscribe_price(RUNS, customer)
    build.canceled[customer] = utc_midnight(left) + 11 * _HOUR
    build.bill_usage(RUNS, customer, [(month[0], left)])
    for day in _days(month[0], left):
        build.expect_unbilled(
            RUNS,
            customer,
            (day, day + _DAY),
            why="a subscription cancelled mid-period without a final invoice",
            ledger=STRIPE,
        )


def transfer_invoiced_outside_stripe(build: _Builder, customer: str) -> None:
    """Data transfer (sum), two days billed daily by the ledger (it matches), invoiced outside
    Stripe: no subscription bills the customer, so each day is unbilled in the stripe
    ledger, not_subscribed, not valued (no Stripe price)."""
    today = build.calendar.today
    build.currency[customer] = "USD"
    for day in (today - 9 * _DAY, today - 6 * _DAY):
        build.report_day(TRANSFER, customer, day)
        build.bill_usage(TRANSFER, customer, [(day, day + _DAY)])
    build.expect_unbilled_by_stripe(
        TRANSFER, customer, why="usage of a customer no subscription bills"
    )


def transfer_billed_from_half_past_two(build: _Builder, customer: str) -> None:
    """Data transfer (sum): the subscription's periods start on the 10th at 14:30 UTC, so
    the stripe ledger asks Stripe for the usage over exactly each period (one request, on a
    minute). A 12.5 GB event at 12:30 on the last closed period's last day (inside it) was
    cancelled after the invoice was finalized: cancelled_usage, -1.125 USD; the ledger's
    calendar months match."""
    build.currency[customer] = "USD"
    build.cycles[customer] = (10, 14 * _HOUR + 1_800)
    build.report_monthly(TRANSFER, customer)
    build.subscribe_price(TRANSFER, customer)
    closed, _ = build.cycle(customer)
    end = closed[-1][1]
    event = build.add_event(TRANSFER, customer, end - 2 * _HOUR, Decimal("12.5"))
    build.cancel_later(event, end + 2 * _INVOICE_DELAY + _HOUR)
    build.bill_usage(TRANSFER, customer, build.calendar.monthly_periods())
    build.expect_invoiced(
        TRANSFER,
        customer,
        why="an event of a 14:30-anchored period cancelled after the invoice",
        cause=CANCELLED_USAGE,
    )


def invoice_still_in_its_grace_period(build: _Builder, customer: str) -> None:
    """Workflow runs (count): the subscription's periods start on yesterday's day of the
    month, so its last period ended at 00:00 UTC today and its invoice is still a draft (no
    `finalized_at`): its days are covered and pending in the stripe ledger, and nothing is
    found. The ledger's calendar months match."""
    today = build.calendar.today
    build.currency[customer] = "USD"
    build.cycles[customer] = ((today - _DAY).day, 0)
    build.drafts.add(customer)
    build.report_monthly(RUNS, customer)
    build.subscribe_price(RUNS, customer)
    build.bill_usage(RUNS, customer, build.calendar.monthly_periods())


#: The scenarios of each customer set aside for them, in the order they are planted.
PLANTED: tuple[tuple[Scenario, ...], ...] = (
    (
        invoice_cut_before_the_last_days_usage,
        week_of_events_never_reached_stripe,
        ledger_counts_requests_in_thousands,
    ),
    (
        deduplicated_retries_billed_twice,
        plan_change_billed_half_a_month_twice,
        requests_reported_after_the_invoice,
    ),
    (
        removed_seats_still_billed,
        daily_billing_zero_and_skipped_day,
        workflow_runs_sent_twice,
        ledger_days_in_utc_minus_five,
    ),
    (
        seats_stripe_never_received,
        data_transfer_event_cancelled,
        ledger_includes_the_day_after_the_week,
    ),
    (trial_customer_never_billed, data_transfer_only_stripe_bills),
    (transfer_reported_as_requests,),
    (transfer_invoiced_a_line_per_tier, runs_cancelled_after_the_invoice),
    (subscription_cancelled_without_a_final_invoice,),
    (transfer_invoiced_outside_stripe,),
    (transfer_billed_from_half_past_two,),
    (invoice_still_in_its_grace_period,),
)

#: Customers the planted discrepancies need (the rest are ordinary, matching customers).
MIN_CUSTOMERS = len(PLANTED)


def _plant(build: _Builder, customers: Sequence[str]) -> None:
    """Every planted scenario, on the customers set aside for them (one group each)."""
    for customer, scenarios in zip(customers, PLANTED, strict=True):
        for scenario in scenarios:
            build.scenario = scenario.__name__
            scenario(build, customer)
