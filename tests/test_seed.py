"""The demo data generator: deterministic, realistic, and planting exactly what it says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from meter_recon.seed import (
    CANCELLED_USAGE,
    INTERNAL,
    MIN_CUSTOMERS,
    NOT_SUBSCRIBED,
    PLANTED,
    STRIPE,
    DemoData,
    ExpectedDiscrepancy,
    default_window,
    generate,
)
from models.canonical import utc_midnight
from models.enums import INTERNAL_LEDGER_CAUSES, Ledger
from models.keys import DiscrepancyKey
from models.ledger import import_line_items
from models.tables import DiscrepancyKind, InvoiceLineItem, LikelyCause, PairSource, TrackedPair
from simulator import SimulatorData, wire
from tasks.compare import (
    Finding,
    Formula,
    LineItem,
    PairComparison,
    Tolerance,
    Window,
    compare_pair,
)
from tasks.compare_stripe import (
    SubscribedItem,
    compare_stripe_pair,
    group_line_items,
    metered_price,
)
from tasks.diagnose import WrongMeterCandidate, diagnose, hourly_spans, needs_hourly, wrong_meter
from tasks.value import (
    Valued,
    ledger_price_for_unbilled,
    ledger_price_of,
    price_from_stripe,
    value_discrepancy,
)

ANCHOR = date(2026, 11, 25)
Kind = DiscrepancyKind


def simulator_of(data: DemoData, *, late_events: bool = False) -> SimulatorData:
    """The data file through the simulator's own loader; with the late events posted."""
    simulator = SimulatorData.from_json(data.simulator_json())
    if late_events:
        for event in data.late_events:
            assert simulator.add_event(
                event_name=event.event_name,
                customer=event.customer,
                timestamp=event.timestamp,
                value=event.value,
                identifier=event.identifier,
            )
    return simulator


@dataclass(frozen=True)
class PairUsage:
    """One pair as the flow sees it: its line items, and Stripe's daily usage as fetched."""

    customer: str
    meter: str
    formula: Formula
    items: list[LineItem]
    daily: dict[date, Decimal]
    fetched: tuple[date, date] | None


def daily_usage(
    simulator: SimulatorData, customer: str, meter_id: str, start: date, end: date
) -> dict[date, Decimal]:
    meter = simulator.meter(meter_id)
    assert meter is not None
    buckets = simulator.buckets(meter, customer, utc_midnight(start), utc_midnight(end), "day")
    return {
        start + timedelta(days=(b.start_time - utc_midnight(start)) // 86_400): b.value
        for b in buckets
    }


def pairs_as_fetched(
    data: DemoData, simulator: SimulatorData, *, today: date
) -> Iterator[PairUsage]:
    """Every tracked pair, fetched the way the flow does: the window and the periods of the
    line items that overlap it, widened by a day on both sides, never past `today`."""
    window = Window(*data.window)
    for customer, meter_id in sorted(data.pairs()):
        meter = simulator.meter(meter_id)
        assert meter is not None
        items = [
            LineItem(i.id, i.period_start, i.period_end, i.quantity)
            for i in data.line_items
            if (i.customer, i.meter) == (customer, meter_id)
        ]
        considered = [
            i for i in items if i.period_start < window.end and i.period_end > window.start
        ]
        start = min([window.start, *(i.period_start for i in considered)]) - timedelta(days=1)
        end = min(max([window.end, *(i.period_end for i in considered)]) + timedelta(days=1), today)
        yield PairUsage(
            customer=customer,
            meter=meter_id,
            formula=Formula(meter.formula),
            items=items,
            daily=daily_usage(simulator, customer, meter_id, start, end),
            fetched=(start, end),
        )


def comparison_of(data: DemoData, pair: PairUsage, *, today: date) -> PairComparison:
    bounds = {(p.customer, p.meter): (p.active_from, p.active_to) for p in data.hand_tracked}
    active_from, active_to = bounds.get((pair.customer, pair.meter), (None, None))
    return compare_pair(
        daily=pair.daily,
        line_items=pair.items,
        window=Window(*data.window),
        today=today,
        formula=pair.formula,
        active_from=active_from,
        active_to=active_to,
    )


def found_by_comparison(
    data: DemoData, *, today: date, late_events: bool = False
) -> dict[DiscrepancyKey, tuple[Decimal, ...]]:
    """What the pure comparison finds, pair by pair, over the simulator's daily buckets.

    Reads the data file through the simulator's own loader and aggregation (with the late
    events posted, if asked), fetches the way the flow does, and keys each finding by
    identity with its Stripe and ledger quantities.
    """
    simulator = simulator_of(data, late_events=late_events)
    found: dict[DiscrepancyKey, tuple[Decimal, ...]] = {}
    for pair in pairs_as_fetched(data, simulator, today=today):
        for f in comparison_of(data, pair, today=today).findings:
            identity = f.key(customer=pair.customer, meter=pair.meter)
            quantities: tuple[Decimal, ...] = (f.stripe_quantity,)
            if f.internal_quantity is not None:
                quantities += (f.internal_quantity,)
            found[identity] = quantities
    return found


def planted(
    data: DemoData, *, late_events: bool = True
) -> dict[DiscrepancyKey, tuple[Decimal, ...]]:
    result: dict[DiscrepancyKey, tuple[Decimal, ...]] = {}
    for e in data.expected_before(late_events=late_events):
        if e.ledger != INTERNAL:
            continue
        quantities: tuple[Decimal, ...] = (e.stripe_quantity,)
        if e.internal_quantity is not None:
            quantities += (e.internal_quantity,)
        result[e.identity] = quantities
    return result


def diagnosed(data: DemoData, *, today: date) -> dict[DiscrepancyKey, LikelyCause | None]:
    """Each finding's likely cause, as a run after the late events were posted gives it.

    The pure diagnosis on the planted evidence: the day's values as first fetched (by a run
    before the late events), the hourly buckets around the boundaries when it asks for them,
    then wrong_meter across the rows still without a cause.
    """
    now = datetime.combine(today, time(9, 30), tzinfo=UTC)
    tolerance = Tolerance()
    before = simulator_of(data)
    after = simulator_of(data, late_events=True)
    causes: dict[DiscrepancyKey, LikelyCause | None] = {}
    candidates: list[WrongMeterCandidate[DiscrepancyKey]] = []
    for pair in pairs_as_fetched(data, after, today=today):
        assert pair.fetched is not None
        first = daily_usage(before, pair.customer, pair.meter, *pair.fetched)
        first_known = {day: first.get(day) for day in _days(*pair.fetched)}
        for finding in comparison_of(data, pair, today=today).findings:
            key = finding.key(customer=pair.customer, meter=pair.meter)
            hourly: dict[datetime, Decimal] | None = None
            if needs_hourly(
                finding=finding,
                formula=pair.formula,
                daily=pair.daily,
                first_known=first_known,
                tolerance=tolerance,
                today=today,
                diagnose_hourly=True,
            ):
                hourly = hourly_usage(after, pair, finding, now=now)
            diagnosis = diagnose(
                finding=finding,
                formula=pair.formula,
                daily=pair.daily,
                first_known=first_known,
                hourly=hourly,
                tolerance=tolerance,
                today=today,
                now=now,
                diagnose_hourly=True,
            )
            causes[key] = diagnosis.cause
            if diagnosis.cause is None and finding.difference is not None:
                candidates.append(
                    WrongMeterCandidate(
                        key=key,
                        customer=pair.customer,
                        meter=pair.meter,
                        period_start=finding.period_start,
                        period_end=finding.period_end,
                        difference=finding.difference,
                    )
                )
    for key, diagnosis in wrong_meter(candidates=candidates, tolerance=tolerance).items():
        causes[key] = diagnosis.cause
    return causes


def hourly_usage(
    simulator: SimulatorData, pair: PairUsage, finding: Finding, *, now: datetime
) -> dict[datetime, Decimal]:
    """Stripe's hourly buckets over the spans the diagnosis asks for."""
    meter = simulator.meter(pair.meter)
    assert meter is not None
    hourly: dict[datetime, Decimal] = {}
    for start, end in hourly_spans(finding.period_start, finding.period_end, now=now):
        span = (int(start.timestamp()), int(end.timestamp()))
        for bucket in simulator.buckets(meter, pair.customer, *span, "hour"):
            hourly[datetime.fromtimestamp(bucket.start_time, UTC)] = bucket.value
    return hourly


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day < end:
        yield day
        day += timedelta(days=1)


def test_the_same_anchor_customers_and_seed_give_the_same_bytes() -> None:
    one = generate(anchor=ANCHOR, customers=12, seed=7)
    two = generate(anchor=ANCHOR, customers=12, seed=7)
    assert one.simulator_json() == two.simulator_json()
    assert one.ledger_csv() == two.ledger_csv()
    assert one.expected == two.expected
    assert one.hand_tracked == two.hand_tracked


def test_another_seed_gives_other_data() -> None:
    one = generate(anchor=ANCHOR, customers=12, seed=7)
    other = generate(anchor=ANCHOR, customers=12, seed=8)
    assert set(one.customers).isdisjoint(other.customers)
    assert one.ledger_csv() != other.ledger_csv()


def test_defaults_are_realistic_sizes_with_exact_decimals() -> None:
    data = generate(anchor=ANCHOR)
    assert len(data.customers) == 36
    assert {m.formula for m in data.meters} == {"sum", "count", "last"}
    assert len(data.pairs()) > 60
    assert len(data.line_items) > 200
    assert len({i.id for i in data.line_items}) == len(data.line_items)
    sums = [e.value for e in data.events if e.event_name == "data_transfer_gb"]
    assert any(v.as_tuple().exponent == -3 for v in sums)  # values such as 12.345
    assert all(isinstance(i.quantity, Decimal) for i in data.line_items)
    assert data.window == (date(2026, 10, 1), ANCHOR)


def test_every_kind_is_planted_on_pairs_of_its_own() -> None:
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    by_kind = data.expected_by_kind()
    assert all(by_kind[kind] for kind in Kind)
    counts = Counter(e.kind for e in data.expected_in(INTERNAL))
    assert counts[Kind.QUANTITY_MISMATCH] == 11
    assert counts[Kind.MISSING_IN_STRIPE] == 2
    assert counts[Kind.OVERLAPPING_LINE_ITEMS] == 1
    assert counts[Kind.UNBILLED_USAGE] == 9
    formulas = {m.id: m.formula for m in data.meters}
    mismatches = [e for e in data.expected_in(INTERNAL) if e.kind is Kind.QUANTITY_MISMATCH]
    assert {formulas[e.meter] for e in mismatches} == {"sum", "count", "last"}
    assert any(e.internal_quantity == 0 for e in mismatches)  # a line item that bills 0


def test_each_planted_scenario_plants_on_a_pair_of_its_own() -> None:
    """Adding a scenario is adding a function to PLANTED: it must find a pair nobody else uses."""
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    scenarios = [scenario for group in PLANTED for scenario in group]
    assert len(set(scenarios)) == len(scenarios)
    assert len(PLANTED) == MIN_CUSTOMERS
    by_scenario: dict[str, set[tuple[str, str]]] = {}
    for e in data.expected:
        by_scenario.setdefault(e.scenario, set()).add((e.customer, e.meter))
    # Every scenario plants but those that show a match (an adjustment made at once, a line
    # per tier, a draft in its grace period); wrong_meter plants two pairs.
    matching = {
        "data_transfer_event_cancelled",
        "transfer_invoiced_a_line_per_tier",
        "invoice_still_in_its_grace_period",
    }
    assert set(by_scenario) == {s.__name__ for s in scenarios} - matching
    planted_pairs = [pair for pairs in by_scenario.values() for pair in pairs]
    assert len(planted_pairs) == len(set(planted_pairs)) == len(by_scenario) + 1
    assert len({customer for customer, _ in planted_pairs}) == len(PLANTED) - 1  # the draft's


def test_the_hand_tracked_customer_was_never_billed() -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    (pair,) = data.hand_tracked
    assert pair.customer not in {i.customer for i in data.line_items}
    unbilled = [e for e in data.expected_in(INTERNAL) if e.customer == pair.customer]
    assert unbilled and all(e.kind is Kind.UNBILLED_USAGE for e in unbilled)
    assert pair.active_from is not None
    assert all(e.period_start >= pair.active_from for e in unbilled)
    assert ANCHOR - timedelta(days=1) in {e.period_start for e in unbilled}  # in the nightly window


def test_too_few_customers_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_CUSTOMERS} customers"):
        generate(anchor=ANCHOR, customers=MIN_CUSTOMERS - 1)


def test_the_data_file_passes_the_simulators_loader(tmp_path: Path) -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    loaded = SimulatorData.load(data.write_simulator_file(tmp_path / "stripe.json"))
    assert [(m.id, m.formula, m.status) for m in reversed(loaded.meters())] == [
        (m.id, m.formula, "active") for m in data.meters
    ]
    assert loaded.duplicates_ignored == 2  # the retried events Stripe de-duplicates
    # One adjustment made at once, four after an invoice was finalized.
    assert loaded.events_canceled == len(data.adjustments) == 5
    assert loaded.event_count == len(data.events) - 2 - 5


def test_the_ledger_passes_the_importer(engine: Engine, tmp_path: Path) -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    report = import_line_items(engine=engine, path=data.write_ledger_csv(tmp_path / "ledger.csv"))
    assert report.upserted == len(data.line_items)
    with Session(engine) as session:
        stored = {row.id: row for row in session.exec(select(InvoiceLineItem)).all()}
        pairs = session.exec(select(TrackedPair)).all()
    assert {i.id: i.quantity for i in data.line_items} == {k: v.quantity for k, v in stored.items()}
    assert {(p.stripe_customer_id, p.meter_id) for p in pairs} == {
        (i.customer, i.meter) for i in data.line_items
    }
    assert {p.source for p in pairs} == {PairSource.LEDGER}


@pytest.mark.parametrize(
    "anchor",
    [
        date(2026, 11, 25),  # a Wednesday
        date(2026, 11, 30),  # a Monday, the month's last day
        date(2026, 12, 1),  # the first of a month: no complete day in the current month
        date(2026, 12, 2),
        date(2027, 1, 1),  # across a year
        date(2027, 1, 3),  # a Sunday
        date(2028, 2, 29),  # a leap day
        date(2028, 3, 1),
    ],
)
def test_the_comparison_finds_exactly_what_was_planted(anchor: date) -> None:
    for customers, seed in ((MIN_CUSTOMERS, 0), (14, 11)):
        data = generate(anchor=anchor, customers=customers, seed=seed)
        assert data.window == default_window(anchor)
        assert found_by_comparison(data, today=anchor) == planted(data, late_events=False)
        assert found_by_comparison(data, today=anchor, late_events=True) == planted(data)


@pytest.mark.parametrize("days_later", [1, 6, 31, 45])
def test_a_later_run_over_the_stored_window_finds_the_same(days_later: int) -> None:
    # Pending line items have closed by then: their usage was generated in full, so they match.
    data = generate(anchor=ANCHOR, customers=14, seed=5)
    later = ANCHOR + timedelta(days=days_later)
    assert found_by_comparison(data, today=later, late_events=True) == planted(data)


# -- prices, subscriptions, money at stake and likely causes ------------------------------------

ANCHORS = [
    date(2026, 11, 25),
    date(2026, 11, 30),  # a Monday, the month's last day
    date(2026, 12, 1),  # the first of a month: the closed month ends today
    date(2027, 1, 3),  # a Sunday
    date(2028, 3, 1),  # after a leap day
]


def test_every_price_subscription_and_adjustment_loads_into_the_simulator() -> None:
    data = generate(anchor=ANCHOR, customers=12, seed=4)
    loaded = simulator_of(data)
    assert {p.id for p in loaded.prices()} == {p.id for p in data.prices}
    assert {s.id for s in loaded.subscriptions()} == {s.id for s in data.subscriptions}
    billed = {(s.customer, item.price.meter) for s in loaded.subscriptions() for item in s.items}
    assert billed == data.stripe_pairs()
    assert Counter(s.status for s in loaded.subscriptions())["canceled"] == 1
    assert loaded.events_canceled == len(data.adjustments) == 5
    schemes = {
        (p.billing_scheme, p.tiers_mode, p.transform_quantity is not None) for p in loaded.prices()
    }
    assert ("per_unit", None, True) in schemes  # a transform
    assert ("tiered", "graduated", False) in schemes
    assert {p.currency for p in loaded.prices()} == {"usd", "eur", "jpy"}


def test_a_customer_only_stripe_knows_has_usage_and_a_subscription_but_no_line_item() -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    ledger = {(i.customer, i.meter) for i in data.line_items}
    hand = {(p.customer, p.meter) for p in data.hand_tracked}
    (only_stripe,) = data.stripe_pairs() - ledger - hand
    unbilled = [e for e in data.expected if (e.customer, e.meter) == only_stripe]
    assert unbilled and all(e.kind is Kind.UNBILLED_USAGE for e in unbilled)
    assert all(e.amount_at_stake is not None and e.amount_at_stake > 0 for e in unbilled)
    price = data.price_of(*only_stripe)
    assert price is not None and price.tiers  # valued at the graduated price


def test_a_yen_customer_is_valued_in_whole_yen() -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    yen = [e for e in data.expected if e.currency == "jpy"]
    assert yen
    seats = next(e for e in yen if e.scenario == "removed_seats_still_billed")
    assert seats.amount_at_stake == Decimal(-2 * 1800)  # 2 seats at 1800 yen each
    assert "JPY" in {i.currency for i in data.line_items}


def test_one_planted_discrepancy_of_each_cause_and_money_in_three_currencies() -> None:
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    causes = Counter(e.cause for e in data.expected_in(INTERNAL))
    assert set(causes) == {*INTERNAL_LEDGER_CAUSES, None}
    assert causes[LikelyCause.WRONG_METER] == 2  # one pair of pairs
    assert {e.currency for e in data.expected} == {"usd", "eur", "jpy", None}
    assert all((e.amount_at_stake is None) == (e.currency is None) for e in data.expected)
    assert any(e.amount_at_stake is None for e in data.expected)  # not valued, too


def test_the_late_events_land_in_a_closed_period_that_matched_before_them() -> None:
    data = generate(anchor=ANCHOR, customers=13, seed=3)
    (late,) = [e for e in data.expected_in(INTERNAL) if e.after_late_events]
    assert late.cause is LikelyCause.LATE_USAGE and late.period_end <= ANCHOR
    assert late.identity not in found_by_comparison(data, today=ANCHOR)
    assert data.late_events
    for event in data.late_events:
        day = datetime.fromtimestamp(event.timestamp, UTC).date()
        assert late.period_start <= day < late.period_end
        assert event.identifier not in {e.identifier for e in data.events}
    assert late.internal_quantity is not None
    assert late.stripe_quantity - late.internal_quantity == sum(e.value for e in data.late_events)


@pytest.mark.parametrize("anchor", ANCHORS)
def test_the_planted_evidence_gives_each_planted_cause_and_no_other(anchor: date) -> None:
    for customers, seed in ((MIN_CUSTOMERS, 0), (14, 11), (36, 7)):
        data = generate(anchor=anchor, customers=customers, seed=seed)
        expected = {e.identity: e.cause for e in data.expected_in(INTERNAL)}
        assert diagnosed(data, today=anchor) == expected


def _valued(data: DemoData, simulator: SimulatorData, e: ExpectedDiscrepancy) -> Valued:
    """The pure valuation of a planted discrepancy, at the price Stripe serves for the pair."""
    price = data.price_of(e.customer, e.meter)
    stripe_price = None
    if price is not None:
        record = simulator.price(price.id)
        assert record is not None
        stripe_price = price_from_stripe(wire.price_object(record, tiers=True))
    items = [i for i in data.line_items if (i.customer, i.meter) == (e.customer, e.meter)]
    if e.ledger == STRIPE:  # a line at its own price (the pair's), never the ledger's
        ledger = None
    elif e.kind is Kind.UNBILLED_USAGE:
        ledger = ledger_price_for_unbilled(items)
    else:
        ledger = ledger_price_of(next(i for i in items if i.id == e.line_item_id))
    return value_discrepancy(
        kind=e.kind,
        stripe_quantity=e.stripe_quantity,
        internal_quantity=e.internal_quantity,
        price=stripe_price,
        ledger_price=ledger,
    )


@pytest.mark.parametrize("anchor", ANCHORS)
def test_each_planted_amount_at_stake_is_what_the_valuation_gives(anchor: date) -> None:
    for customers, seed in ((MIN_CUSTOMERS, 0), (14, 11)):
        data = generate(anchor=anchor, customers=customers, seed=seed)
        simulator = simulator_of(data)  # loaded once: it serves every planted pair's price
        for e in data.expected:
            valued = _valued(data, simulator, e)
            assert (valued.amount_at_stake, valued.currency) == (e.amount_at_stake, e.currency), e
            if e.amount_at_stake is not None:
                assert e.amount_at_stake.as_tuple().exponent == -6  # 6 places, exact


# -- the stripe ledger: what Stripe invoiced ----------------------------------------------------

GRACE = timedelta(hours=72)


@dataclass(frozen=True)
class StripeLineItem:
    """Lines of one invoice, subscription item and period: one line item (a line per tier)."""

    id: str
    invoice: str
    status: str
    customer: str
    meter: str
    price: str
    start: int
    end: int
    quantity: Decimal


def stripe_line_items(simulator: SimulatorData) -> list[StripeLineItem]:
    groups: dict[tuple[str, str, int, int], list[Any]] = {}
    invoices = {invoice.id: invoice for invoice in simulator.invoices()}
    for invoice in invoices.values():
        for line in invoice.lines:
            key = (invoice.id, line.item.id, line.period_start, line.period_end)
            groups.setdefault(key, []).append(line)
    items = []
    for (invoice_id, _, start, end), lines in groups.items():
        first = min(lines, key=lambda line: line.id)
        invoice = invoices[invoice_id]
        assert first.price.meter is not None
        items.append(
            StripeLineItem(
                id=first.id,
                invoice=invoice_id,
                status=invoice.status,
                customer=invoice.customer,
                meter=first.price.meter,
                price=first.price.id,
                start=start,
                end=end,
                quantity=sum((line.quantity_decimal for line in lines), Decimal(0)),
            )
        )
    return items


def exact_usage(
    simulator: SimulatorData, customer: str, meter_id: str, start: int, end: int
) -> Decimal:
    """Stripe's usage over exactly `[start, end)` (one summary, the ends on a minute)."""
    meter = simulator.meter(meter_id)
    assert meter is not None
    buckets = simulator.buckets(meter, customer, start - start % 60, end - end % 60, None)
    return buckets[0].value if buckets else Decimal(0)


def touched(start: int, end: int) -> tuple[date, date]:
    first = datetime.fromtimestamp(start, UTC).date()
    return first, datetime.fromtimestamp(end - 1, UTC).date() + timedelta(days=1)


def found_in_stripe_ledger(
    data: DemoData, *, run_started: datetime, late_events: bool = False
) -> dict[DiscrepancyKey, tuple[Decimal, Decimal, str | None]]:
    """The stripe ledger's rules, by hand, over the simulator's invoices, subscriptions and
    usage: each finalized line item overlapping the window against Stripe's usage over its
    period now; each window day with usage that no line item touches, no live current
    period holds, and that ended 72 h before the run. Keyed by identity: (S, I, cause)."""
    simulator = simulator_of(data, late_events=late_events)
    today = run_started.date()
    window = Window(*data.window)
    items = stripe_line_items(simulator)
    formulas = {m.id: m.formula for m in data.meters}
    found: dict[DiscrepancyKey, tuple[Decimal, Decimal, str | None]] = {}
    for item in items:
        days = touched(item.start, item.end)
        closed = days[1] <= today
        if item.status == "draft" or not closed or days[1] <= window.start or days[0] >= window.end:
            continue
        stripe = exact_usage(simulator, item.customer, item.meter, item.start, item.end)
        if abs(stripe - item.quantity) <= Decimal("0.000001"):
            continue
        cause = None
        if formulas[item.meter] != "last":
            cause = LikelyCause.LATE_USAGE.value if stripe > item.quantity else CANCELLED_USAGE
        kind = Kind.QUANTITY_MISMATCH if stripe else Kind.MISSING_IN_STRIPE
        key = DiscrepancyKey(item.customer, item.meter, kind, *days, item.id, "", Ledger.STRIPE)
        found[key] = (stripe, item.quantity, cause)
    subscribed = [
        (s.customer, i.price.meter, s.status, i.current_period_start, i.current_period_end)
        for s in simulator.subscriptions()
        for i in s.items
    ]
    last_day = (run_started - GRACE).date()
    for customer, meter_id in sorted(data.pairs()):
        own = [s for s in subscribed if s[:2] == (customer, meter_id)]
        covered = [
            touched(i.start, i.end) for i in items if (i.customer, i.meter) == (customer, meter_id)
        ]
        daily = daily_usage(simulator, customer, meter_id, window.start, window.end)
        for day, value in sorted(daily.items()):
            start = utc_midnight(day)
            if day >= last_day or not value:
                continue
            if any(first <= day < end for first, end in covered):
                continue
            if any(
                status not in ("canceled", "incomplete_expired", "paused")
                and period_start < start + 86_400
                and period_end > start
                for _, _, status, period_start, period_end in own
            ):
                continue
            key = DiscrepancyKey(
                customer,
                meter_id,
                Kind.UNBILLED_USAGE,
                day,
                day + timedelta(days=1),
                "",
                "",
                STRIPE,
            )
            found[key] = (value, Decimal(0), None if own else NOT_SUBSCRIBED)
    return found


def planted_in_stripe_ledger(
    data: DemoData, *, late_events: bool = True
) -> dict[DiscrepancyKey, tuple[Decimal, Decimal, str | None]]:
    return {
        e.identity: (e.stripe_quantity, e.internal_quantity or Decimal(0), e.cause)
        for e in data.expected_before(late_events=late_events)
        if e.ledger == STRIPE
    }


@pytest.mark.parametrize("anchor", ANCHORS)
def test_the_stripe_ledger_finds_exactly_what_was_planted(anchor: date) -> None:
    run_started = datetime.combine(anchor, time(9, 30), tzinfo=UTC)
    for customers, seed in ((MIN_CUSTOMERS, 0), (14, 11), (36, 7)):
        data = generate(anchor=anchor, customers=customers, seed=seed)
        before = found_in_stripe_ledger(data, run_started=run_started)
        assert before == planted_in_stripe_ledger(data, late_events=False)
        after = found_in_stripe_ledger(data, run_started=run_started, late_events=True)
        assert after == planted_in_stripe_ledger(data)


@pytest.mark.parametrize("days_later", [1, 3, 40])
def test_a_run_on_a_later_day_finds_the_same_in_the_stripe_ledger(days_later: int) -> None:
    """`make demo` again another day runs the same window: no day becomes unbilled by then
    (no day without an invoice has usage within the 72 h before the anchor)."""
    data = generate(anchor=ANCHOR, customers=36, seed=7)
    later = datetime.combine(ANCHOR + timedelta(days=days_later), time(9, 30), tzinfo=UTC)
    found = found_in_stripe_ledger(data, run_started=later, late_events=True)
    assert found == planted_in_stripe_ledger(data)


@pytest.mark.parametrize("anchor", [date(2026, 11, 25), date(2026, 12, 1), date(2028, 3, 1)])
def test_every_line_not_planted_bills_what_stripe_metered_over_its_period(anchor: date) -> None:
    """A line's quantity is its meter's usage over exactly its period as known when the
    invoice finalized; with nothing cancelled or posted since, that is Stripe's usage now."""
    data = generate(anchor=anchor, customers=14, seed=2)
    simulator = simulator_of(data)
    planted_items = {e.line_item_id for e in data.expected_in(STRIPE)}
    items = stripe_line_items(simulator)
    assert len(items) > 50
    for item in items:
        if item.id not in planted_items:
            usage = exact_usage(simulator, item.customer, item.meter, item.start, item.end)
            assert item.quantity == usage, item


def test_every_subscriptions_closed_periods_are_invoiced_an_hour_after_they_end() -> None:
    data = generate(anchor=ANCHOR, customers=14, seed=2)
    window_start = utc_midnight(data.window[0])
    month_before = utc_midnight(date(2026, 9, 1))
    for subscription in data.subscriptions:
        invoices = sorted(
            (i for i in data.invoices if i.subscription == subscription.id), key=lambda i: i.period
        )
        assert invoices, subscription.id
        assert invoices[0].period[0] <= month_before < invoices[0].period[1]
        for one, two in pairwise(invoices):
            assert one.period[1] == two.period[0]  # consecutive periods, no gap
        assert invoices[-1].created >= window_start
        if subscription.status == "active":
            assert invoices[-1].period[1] == subscription.current_period[0]
        for invoice in invoices:
            assert invoice.created == invoice.period[1] + 3_600
            assert invoice.period[1] <= utc_midnight(ANCHOR)
            if invoice.status == "paid":
                assert invoice.finalized_at == invoice.created + 3_600
            items = {line.subscription_item for line in invoice.lines}
            assert items == {item_id for item_id, _ in subscription.items}


def test_a_graduated_price_is_invoiced_a_line_per_tier_and_charged_as_stripe_charges() -> None:
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    simulator = simulator_of(data)
    customer = next(
        e.customer for e in data.expected if e.scenario == "runs_cancelled_after_the_invoice"
    )
    (invoice,) = [
        i
        for i in data.invoices
        if i.customer == customer and i.period[1] == utc_midnight(date(2026, 11, 1))
    ]
    transfer = [line for line in invoice.lines if line.meter == "mtr_data_transfer"]
    assert len(transfer) == 2 and transfer[0].quantity == 20  # the first tier, whole
    total = sum((line.quantity for line in transfer), Decimal(0))
    assert total == exact_usage(simulator, customer, "mtr_data_transfer", *invoice.period)
    assert transfer[1].amount == round((total - 20) * 6 + 100)  # 6 cents a GB and the flat fee
    assert len(invoice.line_items()) == 2  # one line item per metered item: tiers grouped
    for other in data.invoices:
        for line in other.lines:
            if not line.price.tiers:
                exact = line.price.charge(line.quantity) * 10**line.price.exponent
                assert abs(Fraction(line.amount) - exact) <= Fraction(1, 2)


def test_a_draft_in_its_grace_period_has_no_finalized_at_and_covers_its_days() -> None:
    for anchor in ANCHORS:
        data = generate(anchor=anchor, customers=MIN_CUSTOMERS, seed=1)
        (draft,) = [i for i in data.invoices if i.status == "draft"]
        assert draft.finalized_at is None
        assert draft.period[1] == utc_midnight(anchor - timedelta(days=1))
        assert anchor - timedelta(days=1) == touched(*draft.period)[1]
        assert not any(e.customer == draft.customer for e in data.expected)


def test_the_stripe_ledgers_planted_stories_carry_their_numbers_and_causes() -> None:
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    stripe = data.expected_in(STRIPE)
    by_scenario: dict[str, list[ExpectedDiscrepancy]] = {}
    for e in stripe:
        by_scenario.setdefault(e.scenario, []).append(e)
    (cancelled,) = by_scenario["runs_cancelled_after_the_invoice"]
    assert (cancelled.cause, cancelled.currency, cancelled.amount_at_stake) == (
        CANCELLED_USAGE,
        "eur",
        Decimal("-0.690000"),  # 3 runs at 23 cents
    )
    assert cancelled.stripe_quantity - (cancelled.internal_quantity or 0) == -3
    (anchored,) = by_scenario["transfer_billed_from_half_past_two"]
    assert anchored.amount_at_stake == Decimal("-1.125000")  # 12.5 GB at 9 cents
    assert (anchored.period_start, anchored.period_end) == (date(2026, 10, 10), date(2026, 11, 11))
    (late,) = by_scenario["requests_reported_after_the_invoice"]
    assert late.after_late_events and late.cause == LikelyCause.LATE_USAGE
    assert late.stripe_quantity - (late.internal_quantity or 0) == sum(
        e.value for e in data.late_events
    )
    left = by_scenario["subscription_cancelled_without_a_final_invoice"]
    assert len(left) == 9 and all(e.cause is None and e.currency == "usd" for e in left)
    assert all(e.amount_at_stake == e.stripe_quantity / 4 for e in left)  # 25 cents a run
    outside = by_scenario["transfer_invoiced_outside_stripe"]
    assert [e.period_start for e in outside] == [
        ANCHOR - timedelta(days=9),
        ANCHOR - timedelta(days=6),
    ]
    assert all(e.cause == NOT_SUBSCRIBED and e.amount_at_stake is None for e in outside)
    trial = by_scenario["trial_customer_never_billed"]
    assert trial and all(e.period_start <= ANCHOR - timedelta(days=4) for e in trial)
    assert {e.kind for e in stripe} == {Kind.QUANTITY_MISMATCH, Kind.UNBILLED_USAGE}


@dataclass(frozen=True)
class WireLine:
    """A simulator invoice line as the stripe ledger's grouping reads one."""

    id: str
    subscription_item: str | None
    price_id: str | None
    period_start: int
    period_end: int
    quantity: Decimal
    amount: int


@pytest.mark.parametrize("anchor", [date(2026, 11, 25), date(2026, 12, 1), date(2027, 1, 3)])
def test_the_stripe_ledgers_own_comparison_finds_what_was_planted_with_its_money_and_cause(
    anchor: date,
) -> None:
    """`tasks.compare_stripe`, pair by pair, over the simulator's invoices, subscriptions and
    usage after the late events: exactly the planted stripe rows, amounts and causes."""
    data = generate(anchor=anchor, customers=14, seed=11)
    simulator = simulator_of(data, late_events=True)
    run_started = datetime.combine(anchor, time(9, 30), tzinfo=UTC)
    priced = {p.id: metered_price(wire.price_object(p, tiers=True)) for p in simulator.prices()}
    prices = {pid: m for pid, m in priced.items() if m is not None}
    items = [
        item
        for invoice in simulator.invoices()
        for item in group_line_items(
            invoice,
            [
                WireLine(
                    line.id,
                    line.item.id,
                    line.price.id,
                    line.period_start,
                    line.period_end,
                    line.quantity_decimal,
                    line.amount,
                )
                for line in invoice.lines
            ],
            prices,
        )
    ]
    found = {}
    for customer, meter_id in sorted(data.pairs()):
        meter = simulator.meter(meter_id)
        assert meter is not None
        own = [i for i in items if (i.customer, i.meter) == (customer, meter_id)]
        subscribed = [
            SubscribedItem(s.status, i.current_period_start, i.current_period_end)
            for s in simulator.subscriptions()
            if s.customer == customer
            for i in s.items
            if i.price.meter == meter_id
        ]
        pair_price = data.price_of(customer, meter_id)
        result = compare_stripe_pair(
            items=own,
            stripe_usage={
                i.id: exact_usage(
                    simulator,
                    customer,
                    meter_id,
                    int(i.period_start_at.timestamp()),
                    int(i.period_end_at.timestamp()),
                )
                for i in own
            },
            daily=daily_usage(simulator, customer, meter_id, *data.window),
            window=Window(*data.window),
            today=anchor,
            run_started=run_started,
            formula=Formula(meter.formula),
            prices={pid: m.price for pid, m in prices.items()},
            pair_price=None if pair_price is None else prices[pair_price.id].price,
            subscription_items=subscribed,
            customer=customer,
            meter=meter_id,
        )
        for f in result.findings:
            key = DiscrepancyKey(customer, meter_id, *f.identity, ledger=STRIPE)
            found[key] = (
                f.stripe_quantity,
                f.internal_quantity,
                f.valued.amount_at_stake,
                f.likely_cause,
            )
    assert found == {
        e.identity: (e.stripe_quantity, e.internal_quantity, e.amount_at_stake, e.cause)
        for e in data.expected_in(STRIPE)
    }
