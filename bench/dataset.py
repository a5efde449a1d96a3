"""Seed a benchmark: N (customer, meter) pairs, 3 days of Stripe usage, and a ledger.

Every customer has one subscription in the simulator with one metered item per meter it
uses (4 meters, so 5,000 subscriptions for 20,000 pairs), each on its meter's price (three
`per_unit` prices, one graduated `tiered`): the run's discovery pages them (100 a request)
and fetches the tiered price with its tiers, and finds exactly the pairs the ledger and the
hand-tracked pairs already have, so the expected discrepancies do not change. Every pair but
the missing ones has usage on each of the window's 3 days. The ledger bills each pair one
line item over the window, and the mix of pairs exercises every path:

- 80 % bill exactly what Stripe has (no discrepancy),
- 10 % bill a different quantity (`quantity_mismatch`),
- 5 % have no line item at all: tracked by hand (`unbilled_usage`, one per day),
- 5 % bill usage Stripe never saw: no events (`missing_in_stripe`).

Everything is deterministic in N, so a run is reproducible and its expected discrepancies
known in advance (`Seeded.expected_discrepancies`), and so are the requests the diagnosis
makes (`Seeded.hourly_requests`): a mismatch on a `sum` meter is explained by none of the
rules that need no request, so its timezone-shift rule fetches two spans of hourly buckets.

`build(n, invoices=True)` adds what Stripe invoiced (the `stripe` ledger): for every
subscription one `paid` invoice of one closed monthly period ending the window's first day,
one line per metered item billing exactly the pair's usage over that period, so the `stripe`
ledger finds nothing. Half the subscriptions (the even ones) bill from 00:00 UTC, so their
lines are checked against the daily buckets the run fetches anyway; the other half from
14:30 UTC, so each of their lines costs one `usage_total` request (`Seeded.off_midnight_lines`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import insert

from models.canonical import utc_midnight
from models.engine import get_engine, session_scope
from models.migrate import upgrade
from models.pairs import track_from_ledger
from models.tables import InvoiceLineItem, PairSource, TrackedPair
from simulator import SimulatorData
from simulator.billing import one_month_later

DAYS = 3
EVENTS_PER_DAY = 2
METERS = (
    ("mtr_bench_api_calls", "api_call", "sum"),
    ("mtr_bench_seats", "seat", "last"),
    ("mtr_bench_storage", "storage_gb_hour", "sum"),
    ("mtr_bench_sessions", "session", "last"),
)
#: One price per meter, in the meter's order: three per_unit, the seats graduated-tiered.
PRICES: tuple[dict[str, object], ...] = (
    {"id": "price_bench_api_calls", "unit_amount_decimal": "0.2"},
    {
        "id": "price_bench_seats",
        "billing_scheme": "tiered",
        "tiers_mode": "graduated",
        "tiers": [
            {"up_to": 20, "unit_amount_decimal": "900"},
            {"up_to": None, "unit_amount_decimal": "700", "flat_amount_decimal": "500"},
        ],
    },
    {"id": "price_bench_storage", "unit_amount_decimal": "1.25"},
    {"id": "price_bench_sessions", "unit_amount_decimal": "15"},
)
SUBSCRIBED = 1_767_225_600  # 2026-01-01T00:00:00Z; customer i subscribed i seconds later
HOURLY_SPANS = 2  # a multi-day line item's timezone-shift rule: one span per boundary
#: Where the odd subscriptions' billing periods start and end: not on a day boundary.
OFF_MIDNIGHT = 14 * 3600 + 30 * 60  # 14:30 UTC
#: After the period's end: Stripe creates the invoice, then finalizes (and is paid) an hour on.
INVOICE_CREATED_AFTER = 3600
INVOICE_FINALIZED_AFTER = 2 * 3600


@dataclass(frozen=True, slots=True)
class Seeded:
    pairs: int
    window_start: date
    window_end: date
    data: SimulatorData
    expected_discrepancies: int
    line_items: int
    events: int
    pair_kinds: dict[tuple[str, str], str]
    subscriptions: int = 0
    hourly_requests: int = 0  # the diagnosis's, as the pairs' task runs count them
    invoices: int = 0  # Stripe's invoices (`build(..., invoices=True)`), one per subscription
    invoice_lines: int = 0  # one per pair, all finalized and compared by the run
    off_midnight_lines: int = 0  # of which not on 00:00 UTC: one `usage_total` request each


def bench_window(today: date | None = None) -> tuple[date, date]:
    """The last 3 complete UTC days."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=DAYS), today


def customer_id(index: int) -> str:
    return f"cus_bench{index:07d}"


def pair_list(n: int) -> list[tuple[str, str, str, str]]:
    """(customer, meter, event_name, formula) for the first n pairs, spread over the meters."""
    pairs = []
    for index in range(n):
        meter, event_name, formula = METERS[index % len(METERS)]
        pairs.append((customer_id(index // len(METERS)), meter, event_name, formula))
    return pairs


def kind_of(index: int) -> str:
    slot = index % 20
    if slot < 16:
        return "match"
    if slot < 18:
        return "mismatch"
    if slot == 18:
        return "unbilled"
    return "missing"


def day_value(index: int, day: int, event: int) -> Decimal:
    return Decimal(10 + (index * 7 + day * 3 + event) % 90) + Decimal("0.25")


#: Unix seconds of a day's 00:00 UTC (the one definition, under the name bench uses).
midnight = utc_midnight


def pair_events(index: int, start: date) -> list[tuple[int, Decimal]]:
    """(Unix seconds, value) of pair `index`'s events over the window starting `start`:
    two a day at 01:00 and 02:00 UTC, none for a pair Stripe never saw."""
    if kind_of(index) == "missing":
        return []
    return [
        (midnight(start + timedelta(days=day)) + 3600 * (event + 1), day_value(index, day, event))
        for day in range(DAYS)
        for event in range(EVENTS_PER_DAY)
    ]


def build(n: int, *, window: tuple[date, date] | None = None, invoices: bool = False) -> Seeded:
    """The simulator's data and the ledger rows (not written) for n pairs; with `invoices`,
    Stripe's invoices of every pair too."""
    start, end = window or bench_window()
    data = SimulatorData()
    for meter, event_name, formula in METERS:
        data.add_meter(id=meter, event_name=event_name, formula=formula)
    pairs = pair_list(n)
    subscriptions = add_subscriptions(data, pairs, periods_end=start if invoices else None)
    expected = 0
    items = 0
    hourly = 0
    kinds: dict[tuple[str, str], str] = {}
    events: list[list[tuple[int, Decimal]]] = []
    for index, (customer, meter, event_name, formula) in enumerate(pairs):
        kind = kind_of(index)
        kinds[(customer, meter)] = kind
        if kind in ("mismatch", "missing") and formula == "sum":
            hourly += HOURLY_SPANS
        events.append(pair_events(index, start))
        for timestamp, value in events[-1]:
            data.add_event(
                event_name=event_name, customer=customer, timestamp=timestamp, value=value
            )
        if kind == "missing":
            expected += 1
            items += 1
        elif kind == "unbilled":
            expected += DAYS
        else:
            items += 1
            expected += kind == "mismatch"
    invoiced = add_invoices(data, pairs, events, start) if invoices else Invoiced(0, 0, 0)
    return Seeded(
        pairs=n,
        window_start=start,
        window_end=end,
        data=data,
        expected_discrepancies=expected,
        line_items=items,
        events=data.event_count,
        pair_kinds=kinds,
        subscriptions=subscriptions,
        hourly_requests=hourly,
        invoices=invoiced.invoices,
        invoice_lines=invoiced.lines,
        off_midnight_lines=invoiced.off_midnight,
    )


def anchor(number: int) -> int:
    """Seconds after 00:00 UTC that subscription `number`'s billing periods start at: the
    even ones at midnight, the odd ones at 14:30."""
    return 0 if number % 2 == 0 else OFF_MIDNIGHT


def invoiced_period(number: int, window_start: date) -> tuple[int, int]:
    """Subscription `number`'s closed period: the month up to the window's first day's end
    (at its anchor), so the run's window overlaps it and it was over before the run."""
    end = midnight(window_start + timedelta(days=1)) + anchor(number)
    start = month_before(end)
    return start, end


def month_before(timestamp: int) -> int:
    """The same instant one calendar month earlier (clamped to the month's last day)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    year, month = (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def usage_over(events: list[tuple[int, Decimal]], formula: str, start: int, end: int) -> Decimal:
    """What Stripe's meter says over exactly `[start, end)`: the sum, or the last value."""
    inside = sorted((t, v) for t, v in events if start <= t < end)
    if not inside:
        return Decimal(0)
    if formula == "last":
        return inside[-1][1]
    return sum((value for _, value in inside), Decimal(0))


def amount_minor(price: dict[str, object], quantity: Decimal) -> int:
    """What the price bills for `quantity`, in cents (rounded half up, as Stripe does)."""
    if price.get("billing_scheme") != "tiered":
        total = quantity * Decimal(str(price["unit_amount_decimal"]))
    else:
        total, below = Decimal(0), Decimal(0)
        for tier in price["tiers"]:  # type: ignore[attr-defined]
            up_to = tier["up_to"]
            in_tier = (quantity if up_to is None else min(quantity, Decimal(up_to))) - below
            if in_tier <= 0:
                break
            total += in_tier * Decimal(tier["unit_amount_decimal"])
            total += Decimal(tier.get("flat_amount_decimal", 0))
            below += in_tier
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Invoiced:
    invoices: int
    lines: int
    off_midnight: int


def add_invoices(
    data: SimulatorData,
    pairs: list[tuple[str, str, str, str]],
    events: list[list[tuple[int, Decimal]]],
    window_start: date,
) -> Invoiced:
    """One `paid` invoice per subscription for its closed period, one line per metered item
    billing the pair's usage over exactly that period (nothing for the `stripe` ledger to
    find); finalized two hours after the period's end."""
    price_of = {meter: price for (meter, _e, _f), price in zip(METERS, PRICES, strict=True)}
    by_customer: dict[int, list[dict[str, object]]] = {}
    off_midnight = 0
    for index, (_customer, meter, _event, formula) in enumerate(pairs):
        number = index // len(METERS)
        start, end = invoiced_period(number, window_start)
        quantity = usage_over(events[index], formula, start, end)
        price = price_of[meter]
        by_customer.setdefault(number, []).append(
            {
                "id": f"il_bench{index:08d}",
                "subscription_item": f"si_bench{index:08d}",
                "price": price["id"],
                "period": {"start": start, "end": end},
                "quantity_decimal": str(quantity),
                "amount": amount_minor(price, quantity),
            }
        )
        off_midnight += anchor(number) != 0
    for number, lines in by_customer.items():
        start, end = invoiced_period(number, window_start)
        data.add_invoice(
            {
                "id": f"in_stripe{number:07d}",
                "customer": customer_id(number),
                "subscription": f"sub_bench{number:07d}",
                "status": "paid",
                "created": end + INVOICE_CREATED_AFTER,
                "finalized_at": end + INVOICE_FINALIZED_AFTER,
                "currency": "usd",
                "period_start": start,
                "period_end": end,
                "lines": lines,
            }
        )
    return Invoiced(
        invoices=len(by_customer),
        lines=sum(map(len, by_customer.values())),
        off_midnight=off_midnight,
    )


def add_subscriptions(
    data: SimulatorData, pairs: list[tuple[str, str, str, str]], *, periods_end: date | None = None
) -> int:
    """The meters' prices, and one subscription per customer billing each of its pairs: what
    discovery finds is then exactly the seeded pairs, at known prices. With `periods_end`
    (the window's start, when invoiced), each item's current period is the month after the
    invoiced one."""
    price_of: dict[str, str] = {}
    for (meter, _event, _formula), price in zip(METERS, PRICES, strict=True):
        data.add_price({"currency": "usd", "meter": meter, **price})
        price_of[meter] = str(price["id"])
    by_customer: dict[str, list[dict[str, object]]] = {}
    for index, (customer, meter, _event, _formula) in enumerate(pairs):
        item: dict[str, object] = {"id": f"si_bench{index:08d}", "price": price_of[meter]}
        if periods_end is not None:
            current = invoiced_period(index // len(METERS), periods_end)[1]
            item |= {
                "current_period_start": current,
                "current_period_end": one_month_later(current),
            }
        by_customer.setdefault(customer, []).append(item)
    for number, (customer, items) in enumerate(by_customer.items()):
        data.add_subscription(
            {
                "id": f"sub_bench{number:07d}",
                "customer": customer,
                "created": SUBSCRIBED + number,
                "items": items,
            }
        )
    return len(by_customer)


def stripe_quantity(index: int, formula: str) -> Decimal:
    """What Stripe says for pair `index` over the whole window."""
    if formula == "sum":
        return sum(
            (day_value(index, d, e) for d in range(DAYS) for e in range(EVENTS_PER_DAY)),
            Decimal(0),
        )
    return day_value(index, DAYS - 1, EVENTS_PER_DAY - 1)


def write_ledger(seeded: Seeded, database_url: str) -> None:
    """Migrate the database and write the ledger and tracked pairs for `seeded`."""
    upgrade(database_url)
    engine = get_engine(database_url)
    rows: list[dict[str, object]] = []
    manual: list[dict[str, object]] = []
    for index, (customer, meter, _event, formula) in enumerate(pair_list(seeded.pairs)):
        kind = seeded.pair_kinds[(customer, meter)]
        if kind == "unbilled":
            manual.append(
                {"stripe_customer_id": customer, "meter_id": meter, "source": PairSource.MANUAL}
            )
            continue
        quantity = Decimal(25) if kind == "missing" else stripe_quantity(index, formula)
        if kind == "mismatch":
            quantity += 1
        rows.append(
            {
                "id": f"li_bench{index:08d}",
                "invoice_id": f"in_bench{index // len(METERS):07d}",
                "stripe_customer_id": customer,
                "meter_id": meter,
                "period_start": seeded.window_start,
                "period_end": seeded.window_end,
                "quantity": quantity,
            }
        )
    with session_scope(engine) as session:
        for offset in range(0, len(rows), 5000):
            session.execute(insert(InvoiceLineItem), rows[offset : offset + 5000])
        track_from_ledger(
            session=session,
            pairs=[(str(r["stripe_customer_id"]), str(r["meter_id"])) for r in rows],
        )
        if manual:
            session.execute(insert(TrackedPair), manual)
