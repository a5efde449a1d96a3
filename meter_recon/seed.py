"""Realistic, deterministic demo data: Stripe meter events, ledger line items, planted mistakes.

`generate(anchor=..., customers=..., seed=...)` builds, for the UTC day `anchor` ("today"
when the data was made):

- three meters, one per formula (`sum`, `count`, `last`);
- customers billed monthly (the last complete month, closed, and the current month,
  pending), weekly (Monday weeks) or daily (the last two weeks), with meter events on every
  day of what they are billed for, so that every ordinary line item matches Stripe exactly;
- planted discrepancies of every kind, on pairs set aside for them (five customers), and
  the exact set the comparison must find (`DemoData.expected`), each with its story.

The same anchor, customer count and seed always give the same data, byte for byte. Usage
is also generated for the days of a pending period that lie after the anchor, so a pending
line item matches Stripe once its period closes: re-running the demo on a later day (over
the stored window) finds nothing new.

Every quantity is an exact decimal (values such as `0.1` or `12.345`); Stripe's aggregation
of them is computed here independently of the simulator and the comparison, so tests can
hold the two against each other.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from meter_recon.importer import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from models.canonical import canonical_decimal, utc_midnight
from models.enums import DiscrepancyKind
from models.keys import DiscrepancyKey

DEFAULT_CUSTOMERS = 36
DEFAULT_SEED = 7
LEDGER_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
DAILY_BILLING_DAYS = 14
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
_ID_ALPHABET = string.ascii_letters + string.digits

Kind = DiscrepancyKind


@dataclass(frozen=True, slots=True)
class DemoMeter:
    id: str
    display_name: str
    event_name: str
    formula: str
    unit_price: Decimal
    #: Digits after the point the ledger writes quantities with (e.g. `12.300`).
    ledger_scale: int


TRANSFER = DemoMeter(
    id="mtr_data_transfer",
    display_name="Data transfer (GB)",
    event_name="data_transfer_gb",
    formula="sum",
    unit_price=Decimal("0.09"),
    ledger_scale=3,
)
RUNS = DemoMeter(
    id="mtr_workflow_runs",
    display_name="Workflow runs",
    event_name="workflow_run",
    formula="count",
    unit_price=Decimal("0.25"),
    ledger_scale=0,
)
SEATS = DemoMeter(
    id="mtr_active_seats",
    display_name="Active seats",
    event_name="active_seats",
    formula="last",
    unit_price=Decimal("12.00"),
    ledger_scale=0,
)
METERS = (TRANSFER, RUNS, SEATS)


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

    # -- the simulator's data file (its documented contract) ----------------------------------

    def simulator_document(self) -> dict[str, Any]:
        """The data file's JSON object; values as decimal strings."""
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
        }

    def simulator_json(self) -> str:
        """The data file's text: one meter or event a line, so it reads (and diffs) well."""
        document = self.simulator_document()
        lines = ["{", '  "meters": [']
        lines += _json_lines(document["meters"])
        lines += ["  ],", '  "events": [']
        lines += _json_lines(document["events"])
        lines += ["  ]", "}"]
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

    def expected_identities(self) -> frozenset[DiscrepancyKey]:
        return frozenset(item.identity for item in self.expected)

    def expected_by_kind(self) -> dict[DiscrepancyKind, frozenset[DiscrepancyKey]]:
        """The planted discrepancies' identities, for every kind (empty sets included)."""
        return {
            kind: frozenset(item.identity for item in self.expected if item.kind is kind)
            for kind in DiscrepancyKind
        }

    def pairs(self) -> frozenset[tuple[str, str]]:
        """Every tracked pair: from the ledger, and by hand."""
        return frozenset({(i.customer, i.meter) for i in self.line_items}) | frozenset(
            (p.customer, p.meter) for p in self.hand_tracked
        )


def ledger_text(value: Decimal, scale: int) -> str:
    """A ledger quantity with at least `scale` decimals (`12.3` -> `12.300`), never rounded."""
    text = canonical_decimal(value)
    whole, _, fraction = text.partition(".")
    if len(fraction) >= scale:
        return text
    return f"{whole}.{fraction.ljust(scale, '0')}"


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
    """Accumulates events and line items, and knows Stripe's quantity of any period."""

    def __init__(self, rng: random.Random, calendar: _Calendar) -> None:
        self.rng = rng
        self.calendar = calendar
        self.events: list[tuple[int, int, DemoEvent]] = []  # (timestamp, sequence, event)
        self.items: list[DemoLineItem] = []
        self.expected: list[ExpectedDiscrepancy] = []
        self.hand_tracked: list[HandTrackedPair] = []
        self.currency: dict[str, str] = {}
        # Stripe's aggregated value per (customer, meter id) and day, as Stripe computes it.
        self.daily: dict[tuple[str, str], dict[date, Decimal]] = {}
        self._seats: dict[str, int] = {}
        self._invoices: dict[tuple[str, date, date, str], str] = {}
        self._sequence = 0

    # -- Stripe's side ----------------------------------------------------------------------

    def _event(self, meter: DemoMeter, customer: str, timestamp: int, value: Decimal) -> DemoEvent:
        self._sequence += 1
        event = DemoEvent(
            event_name=meter.event_name,
            customer=customer,
            timestamp=timestamp,
            value=value,
            identifier=f"evt_{self._sequence:06d}",
        )
        self.events.append((timestamp, self._sequence, event))
        return event

    def report_day(self, meter: DemoMeter, customer: str, day: date) -> list[DemoEvent]:
        """The application's meter events of one customer for one UTC day (at least one)."""
        rng = self.rng
        if meter.formula == "sum":
            values = [Decimal(rng.randint(1, 25_000)).scaleb(-3) for _ in range(rng.randint(1, 3))]
        elif meter.formula == "count":
            values = [Decimal(1)] * rng.randint(1, 6)
        else:
            seats = self._seats.get(customer) or rng.randint(3, 40)
            if rng.random() < 0.15:
                seats = max(1, seats + rng.choice((-2, -1, 1, 1, 2, 3)))
            self._seats[customer] = seats
            values = [Decimal(seats)]
            if rng.random() < 0.1:  # a transient count corrected later the same day
                values.insert(0, Decimal(seats + rng.randint(1, 4)))
        seconds = sorted(rng.sample(range(1, 86_400), len(values)))
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

    def report(
        self, meter: DemoMeter, customer: str, start: date, end: date, *, skip: Iterable[date] = ()
    ) -> None:
        skipped = set(skip)
        for day in _days(start, end):
            if day not in skipped:
                self.report_day(meter, customer, day)

    def report_monthly(self, meter: DemoMeter, customer: str) -> None:
        """Usage on every day of the monthly periods (the closed month and the pending one)."""
        self.report(
            meter, customer, self.calendar.previous_month, self.calendar.monthly_periods()[-1][1]
        )

    def retry(self, event: DemoEvent) -> None:
        """The application sends an event again (same identifier): Stripe ignores it."""
        self._sequence += 1
        self.events.append((event.timestamp, self._sequence, event))

    def usage(self, meter: DemoMeter, customer: str, start: date, end: date) -> Decimal:
        """Stripe's quantity of `[start, end)`: days added up, or the latest day's (`last`)."""
        daily = self.daily.get((customer, meter.id), {})
        days = sorted(day for day in daily if start <= day < end)
        if not days:
            return Decimal(0)
        if meter.formula == "last":
            return daily[days[-1]]
        return sum((daily[day] for day in days), Decimal(0))

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
        item = DemoLineItem(
            id=f"li_{len(self.items) + 1:06d}",
            invoice_id=invoice_id,
            customer=customer,
            meter=meter.id,
            period_start=period[0],
            period_end=period[1],
            quantity=quantity,
            currency=self.currency[customer],
            amount=(quantity * meter.unit_price).quantize(Decimal("0.01"), ROUND_HALF_UP),
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

    def subscribe(self, meter: DemoMeter, customer: str, cadence: str) -> list[DemoLineItem]:
        """An ordinary pair: usage on every billed day, each period billed exactly."""
        periods = self.calendar.periods(cadence)
        self.report(meter, customer, periods[0][0], periods[-1][1])
        return self.bill_usage(meter, customer, periods)

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
    ) -> None:
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
            )
        )


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
            m for m, share in zip(METERS, (0.85, 0.7, 0.6), strict=True) if rng.random() < share
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
    )


# -- the planted scenarios -----------------------------------------------------------------
#
# One function per planted discrepancy story, on one customer set aside for it (each of a
# customer's scenarios uses its own meter). They run in `PLANTED`'s order, which is part of
# the data: every scenario draws from the same random generator.

Scenario = Callable[[_Builder, str], None]


def invoice_cut_before_the_last_days_usage(build: _Builder, customer: str) -> None:
    """Data transfer (sum): the invoice was cut before the month's last day of usage arrived."""
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(TRANSFER, customer)
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
    )


def week_of_events_never_reached_stripe(build: _Builder, customer: str) -> None:
    """Workflow runs (count), billed weekly: a week of meter events was lost (an outage)."""
    cal = build.calendar
    weeks = cal.weekly_periods()
    lost = (cal.this_monday - _WEEK, cal.this_monday)
    build.report(RUNS, customer, weeks[0][0], weeks[-1][1], skip=_days(*lost))
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


def deduplicated_retries_billed_twice(build: _Builder, customer: str) -> None:
    """Workflow runs (count): retried events Stripe de-duplicated (same identifier) were billed."""
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(RUNS, customer)
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
    """Data transfer (sum): a mid-month plan change billed the second half of the month twice."""
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(TRANSFER, customer)
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


def removed_seats_still_billed(build: _Builder, customer: str) -> None:
    """Active seats (last): two seats removed during the month were still billed."""
    cal = build.calendar
    month = cal.closed_month
    build.report_monthly(SEATS, customer)
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
    """Data transfer (sum), billed daily: one day billed 0, and one day never billed."""
    days = build.calendar.daily_periods()
    zero, skipped = days[-3], days[-2]
    build.report(TRANSFER, customer, days[0][0], days[-1][1])
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
            build.expect(
                Kind.UNBILLED_USAGE,
                TRANSFER,
                customer,
                period,
                stripe=build.usage(TRANSFER, customer, *period),
                internal=Decimal(0),
                why="the daily billing job skipped a day",
            )
        else:
            build.bill_usage(TRANSFER, customer, [period])


def seats_stripe_never_received(build: _Builder, customer: str) -> None:
    """Active seats (last): billed, but Stripe never got a seat count (the application reported
    under the wrong customer id); the customer's other meter is fine."""
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
    build.subscribe(TRANSFER, customer, "monthly")


def trial_customer_never_billed(build: _Builder, customer: str) -> None:
    """Workflow runs (count): a trial customer, never billed, tracked by hand from the trial's
    first day; usage before that day (an onboarding test) is outside the pair's bounds."""
    cal = build.calendar
    trial = cal.today - timedelta(days=10)
    build.hand_tracked.append(HandTrackedPair(customer, RUNS.id, trial, None))
    build.report_day(RUNS, customer, trial - timedelta(days=5))
    used = sorted({cal.today - _DAY, *build.rng.sample(list(_days(trial, cal.today - _DAY)), 4)})
    for day in used:
        build.report_day(RUNS, customer, day)
        build.expect(
            Kind.UNBILLED_USAGE,
            RUNS,
            customer,
            (day, day + _DAY),
            stripe=build.usage(RUNS, customer, day, day + _DAY),
            internal=Decimal(0),
            why="a trial customer who was never billed",
        )


#: The scenarios of each customer set aside for them, in the order they are planted.
PLANTED: tuple[tuple[Scenario, ...], ...] = (
    (invoice_cut_before_the_last_days_usage, week_of_events_never_reached_stripe),
    (deduplicated_retries_billed_twice, plan_change_billed_half_a_month_twice),
    (removed_seats_still_billed, daily_billing_zero_and_skipped_day),
    (seats_stripe_never_received,),
    (trial_customer_never_billed,),
)

#: Customers the planted discrepancies need (the rest are ordinary, matching customers).
MIN_CUSTOMERS = len(PLANTED)


def _plant(build: _Builder, customers: Sequence[str]) -> None:
    """Every planted scenario, on the customers set aside for them (one group each)."""
    for customer, scenarios in zip(customers, PLANTED, strict=True):
        for scenario in scenarios:
            scenario(build, customer)
