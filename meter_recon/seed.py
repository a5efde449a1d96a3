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
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from models.canonical import canonical_decimal, utc_midnight
from models.enums import DiscrepancyKind, LikelyCause
from models.keys import DiscrepancyKey
from models.ledger import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

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
    """A customer's subscription: one metered item per (price) meter, billed monthly."""

    id: str
    customer: str
    items: tuple[tuple[str, DemoPrice], ...]  # (subscription item id, price)

    def document(self, *, period: tuple[date, date]) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": self.customer,
            "status": "active",
            "created": _SUBSCRIBED,
            "items": [
                {
                    "id": item_id,
                    "price": price.id,
                    "current_period_start": utc_midnight(period[0]),
                    "current_period_end": utc_midnight(period[1]),
                }
                for item_id, price in self.items
            ],
        }


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
    #: The likely cause the run must give it (None: no cause fits).
    cause: LikelyCause | None = None
    #: The planted scenario (its function's name).
    scenario: str = ""
    #: Found only once the late meter events were posted (by the demo's second run).
    after_late_events: bool = False

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
        )


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

    # -- the simulator's data file (its documented contract) ----------------------------------

    def simulator_document(self) -> dict[str, Any]:
        """The data file's JSON object; values as decimal strings (the late events are not
        in it: the demo posts them)."""
        period = _Calendar(self.anchor).billing_period
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
            "subscriptions": [s.document(period=period) for s in self.subscriptions],
            "adjustments": [
                {"event_name": event.event_name, "identifier": event.identifier}
                for event in self.adjustments
            ],
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

    def expected_identities(self, *, late_events: bool = True) -> frozenset[DiscrepancyKey]:
        """What a run must find; without `late_events`, before they were posted."""
        return frozenset(item.identity for item in self.expected_before(late_events=late_events))

    def expected_before(self, *, late_events: bool = True) -> tuple[ExpectedDiscrepancy, ...]:
        """The planted discrepancies, or (without `late_events`) those found before them."""
        return tuple(e for e in self.expected if late_events or not e.after_late_events)

    def expected_by_kind(self) -> dict[DiscrepancyKind, frozenset[DiscrepancyKey]]:
        """The planted discrepancies' identities, for every kind (empty sets included)."""
        return {
            kind: frozenset(item.identity for item in self.expected if item.kind is kind)
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


SIMULATOR_KEYS = ("meters", "events", "prices", "subscriptions", "adjustments")


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
        self.adjustments.append(self._event(meter, customer, timestamp, value))

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
        cause: LikelyCause | None = None,
        after_late_events: bool = False,
    ) -> None:
        amount, currency = self._stake(kind, meter, customer, items[0], stripe, internal)
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
            )
        )

    def expect_unbilled(
        self, meter: DemoMeter, customer: str, period: tuple[date, date], *, why: str
    ) -> None:
        """Stripe's usage over `period` with no line item covering it."""
        self.expect(
            Kind.UNBILLED_USAGE,
            meter,
            customer,
            period,
            stripe=self.usage(meter, customer, *period),
            internal=Decimal(0),
            why=why,
        )

    def _stake(
        self,
        kind: DiscrepancyKind,
        meter: DemoMeter,
        customer: str,
        item_id: str,
        stripe: Decimal,
        internal: Decimal | None,
    ) -> tuple[Decimal | None, str | None]:
        """The amount at stake, by hand: the pair's Stripe price first, else the ledger's."""
        price = self.prices.get((customer, meter.id))
        if price is not None:
            if kind is Kind.OVERLAPPING_LINE_ITEMS:
                return price.overlap_stake(stripe), price.currency
            return price.stake(stripe=stripe, internal=internal or Decimal(0)), price.currency
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
                id=f"sub_{customer.removeprefix('cus_')}", customer=customer, items=tuple(items)
            )
            for customer, items in sorted(build.subscribed.items())
        ),
        adjustments=tuple(build.adjustments),
        late_events=tuple(build.late_events),
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
    batches of that month (the demo posts them between its runs): late_usage."""
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
    """Data transfer (sum), priced by the ledger: an event sent by mistake was cancelled
    with a meter event adjustment, and the ledger never billed it: it matches."""
    build.subscribe(TRANSFER, customer, "monthly", stripe_price=False)
    day = build.calendar.previous_month + timedelta(days=9)
    build.cancel(TRANSFER, customer, utc_midnight(day) + 13 * _HOUR, Decimal("250.5"))


def ledger_includes_the_day_after_the_week(build: _Builder, customer: str) -> None:
    """Workflow runs (count), billed weekly, priced by the ledger: one week's line item
    counted the day after it too (an inclusive end): period_off_by_one."""
    cal = build.calendar
    weeks = cal.weekly_periods()
    week = (cal.this_monday - 2 * _WEEK, cal.this_monday - _WEEK)
    build.report(RUNS, customer, weeks[0][0], weeks[-1][1])
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
    other unbilled days differ the same way, never the opposite).
    """
    cal = build.calendar
    trial = cal.today - timedelta(days=10)
    build.hand_tracked.append(HandTrackedPair(customer, RUNS.id, trial, None))
    build.report_day(RUNS, customer, trial - timedelta(days=5))
    used = sorted({cal.today - _DAY, *build.rng.sample(list(_days(trial, cal.today - _DAY)), 4)})
    for day in used:
        build.report_day(RUNS, customer, day)
        build.expect_unbilled(
            RUNS, customer, (day, day + _DAY), why="a trial customer who was never billed"
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
)

#: Customers the planted discrepancies need (the rest are ordinary, matching customers).
MIN_CUSTOMERS = len(PLANTED)


def _plant(build: _Builder, customers: Sequence[str]) -> None:
    """Every planted scenario, on the customers set aside for them (one group each)."""
    for customer, scenarios in zip(customers, PLANTED, strict=True):
        for scenario in scenarios:
            build.scenario = scenario.__name__
            scenario(build, customer)
