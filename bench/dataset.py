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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert

from models.canonical import utc_midnight
from models.engine import get_engine, session_scope
from models.migrate import upgrade
from models.pairs import track_from_ledger
from models.tables import InvoiceLineItem, PairSource, TrackedPair
from simulator import SimulatorData

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


def build(n: int, *, window: tuple[date, date] | None = None) -> Seeded:
    """The simulator's data and the ledger rows (not written) for n pairs."""
    start, end = window or bench_window()
    data = SimulatorData()
    for meter, event_name, formula in METERS:
        data.add_meter(id=meter, event_name=event_name, formula=formula)
    subscriptions = add_subscriptions(data, pair_list(n))
    expected = 0
    items = 0
    hourly = 0
    kinds: dict[tuple[str, str], str] = {}
    for index, (customer, meter, event_name, formula) in enumerate(pair_list(n)):
        kind = kind_of(index)
        kinds[(customer, meter)] = kind
        if kind in ("mismatch", "missing") and formula == "sum":
            hourly += HOURLY_SPANS
        if kind == "missing":
            expected += 1
            items += 1
            continue
        for day in range(DAYS):
            base = midnight(start + timedelta(days=day))
            for event in range(EVENTS_PER_DAY):
                data.add_event(
                    event_name=event_name,
                    customer=customer,
                    timestamp=base + 3600 * (event + 1),
                    value=day_value(index, day, event),
                )
        if kind == "unbilled":
            expected += DAYS
        else:
            items += 1
            expected += kind == "mismatch"
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
    )


def add_subscriptions(data: SimulatorData, pairs: list[tuple[str, str, str, str]]) -> int:
    """The meters' prices, and one subscription per customer billing each of its pairs: what
    discovery finds is then exactly the seeded pairs, at known prices."""
    price_of: dict[str, str] = {}
    for (meter, _event, _formula), price in zip(METERS, PRICES, strict=True):
        data.add_price({"currency": "usd", "meter": meter, **price})
        price_of[meter] = str(price["id"])
    by_customer: dict[str, list[dict[str, object]]] = {}
    for index, (customer, meter, _event, _formula) in enumerate(pairs):
        item: dict[str, object] = {"id": f"si_bench{index:08d}", "price": price_of[meter]}
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
