"""The demo data generator: deterministic, realistic, and planting exactly what it says."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from meter_recon.importer import import_line_items
from meter_recon.seed import MIN_CUSTOMERS, PLANTED, DemoData, default_window, generate
from meter_recon.simulator import SimulatorData
from models.canonical import utc_midnight
from models.keys import DiscrepancyKey
from models.tables import DiscrepancyKind, InvoiceLineItem, PairSource, TrackedPair
from tasks.compare import Formula, LineItem, Window, compare_pair

ANCHOR = date(2026, 11, 25)
Kind = DiscrepancyKind


def found_by_comparison(
    data: DemoData, *, today: date
) -> dict[DiscrepancyKey, tuple[Decimal, ...]]:
    """What the pure comparison finds, pair by pair, over the simulator's daily buckets.

    Reads the data file through the simulator's own loader and aggregation, fetches the
    way the flow does (window and line item periods, never past `today`), and keys each
    finding by identity with its Stripe and ledger quantities.
    """
    simulator = SimulatorData.from_json(data.simulator_json())
    window = Window(*data.window)
    bounds = {(p.customer, p.meter): (p.active_from, p.active_to) for p in data.hand_tracked}
    found: dict[DiscrepancyKey, tuple[Decimal, ...]] = {}
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
        start = min([window.start, *(i.period_start for i in considered)])
        end = min(max([window.end, *(i.period_end for i in considered)]), today)
        buckets = simulator.buckets(meter, customer, utc_midnight(start), utc_midnight(end), "day")
        daily = {
            start + timedelta(days=(b.start_time - utc_midnight(start)) // 86_400): b.value
            for b in buckets
        }
        active_from, active_to = bounds.get((customer, meter_id), (None, None))
        result = compare_pair(
            daily=daily,
            line_items=items,
            window=window,
            today=today,
            formula=Formula(meter.formula),
            active_from=active_from,
            active_to=active_to,
        )
        for f in result.findings:
            identity = f.key(customer=customer, meter=meter_id)
            quantities: tuple[Decimal, ...] = (f.stripe_quantity,)
            if f.internal_quantity is not None:
                quantities += (f.internal_quantity,)
            found[identity] = quantities
    return found


def planted(data: DemoData) -> dict[DiscrepancyKey, tuple[Decimal, ...]]:
    result: dict[DiscrepancyKey, tuple[Decimal, ...]] = {}
    for e in data.expected:
        quantities: tuple[Decimal, ...] = (e.stripe_quantity,)
        if e.internal_quantity is not None:
            quantities += (e.internal_quantity,)
        result[e.identity] = quantities
    return result


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
    counts = Counter(e.kind for e in data.expected)
    assert counts[Kind.QUANTITY_MISMATCH] == 4
    assert counts[Kind.MISSING_IN_STRIPE] == 2
    assert counts[Kind.OVERLAPPING_LINE_ITEMS] == 1
    assert counts[Kind.UNBILLED_USAGE] >= 2
    formulas = {m.id: m.formula for m in data.meters}
    mismatches = [e for e in data.expected if e.kind is Kind.QUANTITY_MISMATCH]
    assert {formulas[e.meter] for e in mismatches} == {"sum", "count", "last"}
    assert any(e.internal_quantity == 0 for e in mismatches)  # a line item that bills 0


def test_each_planted_scenario_plants_on_a_pair_of_its_own() -> None:
    """Adding a scenario is adding a function to PLANTED: it must find a pair nobody else uses."""
    data = generate(anchor=ANCHOR, customers=MIN_CUSTOMERS, seed=1)
    scenarios = [scenario for group in PLANTED for scenario in group]
    assert len(set(scenarios)) == len(scenarios)
    assert len(PLANTED) == MIN_CUSTOMERS
    planted_pairs = {(e.customer, e.meter) for e in data.expected}
    assert len(planted_pairs) == len(scenarios)
    assert len({customer for customer, _ in planted_pairs}) == len(PLANTED)


def test_the_hand_tracked_customer_was_never_billed() -> None:
    data = generate(anchor=ANCHOR, customers=8, seed=3)
    (pair,) = data.hand_tracked
    assert pair.customer not in {i.customer for i in data.line_items}
    unbilled = [e for e in data.expected if e.customer == pair.customer]
    assert unbilled and all(e.kind is Kind.UNBILLED_USAGE for e in unbilled)
    assert pair.active_from is not None
    assert all(e.period_start >= pair.active_from for e in unbilled)
    assert ANCHOR - timedelta(days=1) in {e.period_start for e in unbilled}  # in the nightly window


def test_too_few_customers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 5 customers"):
        generate(anchor=ANCHOR, customers=MIN_CUSTOMERS - 1)


def test_the_data_file_passes_the_simulators_loader(tmp_path: Path) -> None:
    data = generate(anchor=ANCHOR, customers=8, seed=3)
    loaded = SimulatorData.load(data.write_simulator_file(tmp_path / "stripe.json"))
    assert [(m.id, m.formula, m.status) for m in reversed(loaded.meters())] == [
        (m.id, m.formula, "active") for m in data.meters
    ]
    assert loaded.duplicates_ignored == 2  # the retried events Stripe de-duplicates
    assert loaded.event_count == len(data.events) - 2


def test_the_ledger_passes_the_importer(engine: Engine, tmp_path: Path) -> None:
    data = generate(anchor=ANCHOR, customers=8, seed=3)
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
    for customers, seed in ((MIN_CUSTOMERS, 0), (9, 11)):
        data = generate(anchor=anchor, customers=customers, seed=seed)
        assert data.window == default_window(anchor)
        assert found_by_comparison(data, today=anchor) == planted(data)


@pytest.mark.parametrize("days_later", [1, 6, 31, 45])
def test_a_later_run_over_the_stored_window_finds_the_same(days_later: int) -> None:
    # Pending line items have closed by then: their usage was generated in full, so they match.
    data = generate(anchor=ANCHOR, customers=9, seed=5)
    later = ANCHOR + timedelta(days=days_later)
    assert found_by_comparison(data, today=later) == planted(data)
