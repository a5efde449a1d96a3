"""The `stripe` ledger in a pair's task: Stripe's own invoice lines (written by a builder, as
the invoice sync stores them) against the simulator's usage over a real socket, recorded in a
real database next to the internal ledger's rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, select

from flows.windows import utc_today
from integrations.settings import get_settings
from models.billing import price_row, upsert_prices, upsert_subscription_items
from models.engine import session_scope
from models.enums import Ledger, LikelyCause
from models.ledger import ledger_has_line_items
from models.tables import (
    DiscrepancyKind,
    DiscrepancyStatus,
    InvoiceLineItem,
    PairResult,
)
from models.types import utcnow
from simulator import StripeSimulator
from tasks.reconcile_pairs import PairRef, RunContext, reconcile_one
from tasks.run_config import RunConfig
from tests.builders import discrepancy_rows as rows
from tests.builders import line_item, new_run, stripe_line

TODAY = utc_today()
START, END = TODAY - timedelta(days=5), TODAY - timedelta(days=2)  # the run's window
PAIR = PairRef(customer="cus_A", meter="mtr_api", formula="sum")
BOTH = ("internal", "stripe")
Kind = DiscrepancyKind
# A monthly-style line billing TODAY-8 .. TODAY-4 (4 a day: 20), over and compared.
LINE_START, LINE_END = TODAY - timedelta(days=8), TODAY - timedelta(days=3)


def day(offset: int) -> date:
    return TODAY - timedelta(days=offset)


def midnight(at: date) -> datetime:
    return datetime.combine(at, time(), UTC)


@pytest.fixture
def stripe(flow_env: StripeSimulator) -> StripeSimulator:
    """The pair's meter, 4 units at noon on each of the last nine days."""
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    for offset in range(1, 10):
        noon = int(datetime.combine(day(offset), time(12), UTC).timestamp())
        flow_env.add_event("api_call", "cus_A", noon, "4")
    return flow_env


def priced(
    engine: Engine, *, subscription: str | None = "active", since: date = TODAY - timedelta(days=1)
) -> None:
    """`price_api` (0.50 usd a unit) cached; with `subscription`, an item of the pair in a
    subscription of that status whose current period runs from `since` for a month."""
    now = utcnow()
    price = {
        "id": "price_api",
        "currency": "usd",
        "billing_scheme": "per_unit",
        "unit_amount_decimal": "50",
        "recurring": {"meter": "mtr_api", "usage_type": "metered"},
    }
    items = []
    if subscription is not None:
        items.append(
            {
                "id": "si_1",
                "subscription_id": "sub_1",
                "subscription_status": subscription,
                "subscription_created": now - timedelta(days=90),
                "stripe_customer_id": "cus_A",
                "meter_id": "mtr_api",
                "price_id": "price_api",
                "current_period_start": midnight(since),
                "current_period_end": midnight(since + timedelta(days=30)),
                "refreshed_at": now,
            }
        )
    with session_scope(engine) as session:
        upsert_prices(session=session, rows=[price_row(price, now=now)])
        upsert_subscription_items(session=session, rows=items)


def store(engine: Engine, *items: InvoiceLineItem) -> None:
    with session_scope(engine) as session:
        session.add_all(items)


def change(engine: Engine, id: str, ledger: Ledger, **values: Any) -> None:
    table = InvoiceLineItem.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        session.execute(
            sa.update(table).where(table.c.id == id, table.c.ledger == ledger).values(**values)
        )


def reconcile(engine: Engine, *, ledgers: tuple[str, ...] = ("stripe",)) -> int:
    """One run of the pair's task over the window, started at today's midnight."""
    run_id = new_run(engine, start=START.isoformat(), end=END.isoformat())
    config = replace(RunConfig.of(get_settings()), ledgers=ledgers)
    context = RunContext(
        run_id=run_id,
        window_start=START,
        window_end=END,
        today=TODAY,
        config=config,
        now=midnight(TODAY),
    )
    reconcile_one(context, PAIR)
    return run_id


def result(engine: Engine, run_id: int) -> PairResult:
    with Session(engine) as session:
        return session.exec(select(PairResult).where(PairResult.run_id == run_id)).one()


def summaries_asked(stripe: StripeSimulator) -> int:
    return stripe.stats.counts["event_summaries"]


# -- a finalized line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        pytest.param("20", [], id="matched"),
        pytest.param(
            "15",
            [("5", LikelyCause.LATE_USAGE, "2.5")],
            id="usage-recorded-after-finalization-is-late-usage",
        ),
        pytest.param(
            "26",
            [("-6", LikelyCause.CANCELLED_USAGE, "-3")],
            id="usage-cancelled-after-finalization-is-cancelled-usage",
        ),
    ],
)
def test_a_day_aligned_line_is_compared_from_the_daily_buckets_without_another_request(
    stripe: StripeSimulator,
    engine: Engine,
    quantity: str,
    expected: list[tuple[str, LikelyCause, str]],
) -> None:
    priced(engine)
    store(engine, stripe_line(start=LINE_START, end=LINE_END, quantity=quantity))
    stripe.reset_stats()

    run_id = reconcile(engine)

    found = [
        (r.difference, r.likely_cause, r.amount_at_stake, r.currency)
        for r in rows(engine, Ledger.STRIPE)
    ]
    assert found == [(Decimal(d), cause, Decimal(amount), "usd") for d, cause, amount in expected]
    recorded = result(engine, run_id)
    assert (recorded.stripe_compared, recorded.stripe_matched) == (1, 1 - len(expected))
    assert recorded.requests == summaries_asked(stripe) == 1


def test_a_late_usage_row_says_which_invoice_missed_the_units(
    stripe: StripeSimulator, engine: Engine
) -> None:
    priced(engine)
    store(engine, stripe_line(start=LINE_START, end=LINE_END, quantity="15", invoice="in_7"))
    reconcile(engine)
    [row] = rows(engine)
    assert (row.ledger, row.kind, row.line_item_id) == (
        Ledger.STRIPE,
        Kind.QUANTITY_MISMATCH,
        "il_1",
    )
    assert row.cause_detail is not None
    assert row.cause_detail.startswith("5 units were recorded for this period after invoice in_7")


@pytest.mark.parametrize(
    ("quantity", "mismatched"), [pytest.param("20", False, id="matched"), ("19", True)]
)
def test_a_line_off_midnight_costs_exactly_one_request_over_its_instants(
    stripe: StripeSimulator, engine: Engine, quantity: str, mismatched: bool
) -> None:
    priced(engine)
    six = timedelta(hours=6)  # TODAY-8 06:00 .. TODAY-3 06:00: the noons of TODAY-8..-4
    line = stripe_line(
        start=midnight(LINE_START) + six, end=midnight(LINE_END) + six, quantity=quantity
    )
    store(engine, line)
    stripe.reset_stats()

    run_id = reconcile(engine)

    assert summaries_asked(stripe) == result(engine, run_id).requests == 2
    whole_range = [t for t in stripe.stats.targets if "value_grouping_window" not in t]
    assert len(whole_range) == 1
    assert [(r.stripe_quantity, r.internal_quantity) for r in rows(engine)] == (
        [(Decimal(20), Decimal(quantity))] if mismatched else []
    )


def test_a_draft_line_is_pending_and_covers_its_days(
    stripe: StripeSimulator, engine: Engine
) -> None:
    priced(engine, since=day(1))
    store(engine, stripe_line(start=LINE_START, end=LINE_END, quantity="1", status="draft"))
    run_id = reconcile(engine)
    recorded = result(engine, run_id)
    assert (recorded.stripe_compared, recorded.stripe_pending) == (0, 1)
    assert rows(engine) == []


# -- unbilled days -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "since", "expected"),
    [
        pytest.param(
            None,
            day(1),
            [
                (day(5), LikelyCause.NOT_SUBSCRIBED, None),
                (day(4), LikelyCause.NOT_SUBSCRIBED, None),
            ],
            id="no-subscription-bills-the-pair",
        ),
        pytest.param(
            "active",
            day(4),
            [(day(5), None, Decimal(2))],
            id="the-current-period-is-still-to-be-invoiced",
        ),
        pytest.param(
            "canceled",
            day(4),
            [(day(5), None, Decimal(2)), (day(4), None, Decimal(2))],
            id="a-canceled-subscription-will-not-invoice-its-period",
        ),
    ],
)
def test_a_day_no_invoice_bills_is_unbilled_once_72_hours_passed(
    stripe: StripeSimulator,
    engine: Engine,
    subscription: str | None,
    since: date,
    expected: list[tuple[date, LikelyCause | None, Decimal | None]],
) -> None:
    priced(engine, subscription=subscription, since=since)
    reconcile(engine)  # TODAY-3 ended less than 72 hours before the run: not yet unbilled
    found = [(r.period_start, r.likely_cause, r.amount_at_stake) for r in rows(engine)]
    assert found == expected
    assert {r.kind for r in rows(engine)} == {Kind.UNBILLED_USAGE}


def test_not_subscribed_names_the_customer_and_the_meter(
    stripe: StripeSimulator, engine: Engine
) -> None:
    reconcile(engine)
    details = {r.cause_detail for r in rows(engine)}
    assert details == {
        "no subscription of cus_A bills meter mtr_api: Stripe will never invoice this usage."
    }


def test_two_lines_billing_the_same_time_are_an_overlap(
    stripe: StripeSimulator, engine: Engine
) -> None:
    priced(engine)
    store(
        engine,
        stripe_line("il_1", start=LINE_START, end=LINE_END, quantity="20"),
        stripe_line("il_2", start=day(4), end=day(2), quantity="8", invoice="in_2"),
    )
    reconcile(engine)
    [overlap] = rows(engine)
    assert (overlap.kind, overlap.line_item_id, overlap.other_line_item_id) == (
        Kind.OVERLAPPING_LINE_ITEMS,
        "il_2",
        "il_1",
    )
    assert (overlap.period_start, overlap.stripe_quantity) == (day(4), Decimal(4))


# -- re-evaluation, per ledger -------------------------------------------------------------------


def _both_mismatched(engine: Engine) -> None:
    priced(engine)
    store(
        engine,
        stripe_line(start=LINE_START, end=LINE_END, quantity="15"),
        line_item("li_1", start=START.isoformat(), end=END.isoformat(), quantity="10"),
    )
    reconcile(engine, ledgers=BOTH)
    assert {(r.ledger, r.status) for r in rows(engine)} == {
        (Ledger.INTERNAL, DiscrepancyStatus.OPEN),
        (Ledger.STRIPE, DiscrepancyStatus.OPEN),
    }


def test_a_stripe_row_that_no_longer_holds_resolves_and_the_internal_one_stays(
    stripe: StripeSimulator, engine: Engine
) -> None:
    _both_mismatched(engine)
    change(engine, "il_1", Ledger.STRIPE, quantity=Decimal(20))
    second = reconcile(engine, ledgers=BOTH)
    assert {(r.ledger, r.status, r.resolved_run) for r in rows(engine)} == {
        (Ledger.INTERNAL, DiscrepancyStatus.OPEN, None),
        (Ledger.STRIPE, DiscrepancyStatus.RESOLVED, second),
    }


def test_an_internal_row_that_no_longer_holds_resolves_and_the_stripe_one_stays(
    stripe: StripeSimulator, engine: Engine
) -> None:
    _both_mismatched(engine)
    change(engine, "li_1", Ledger.INTERNAL, quantity=Decimal(12))
    second = reconcile(engine, ledgers=BOTH)
    assert {(r.ledger, r.status, r.resolved_run) for r in rows(engine)} == {
        (Ledger.INTERNAL, DiscrepancyStatus.RESOLVED, second),
        (Ledger.STRIPE, DiscrepancyStatus.OPEN, None),
    }


@pytest.mark.parametrize(
    "withdrawal",
    [
        pytest.param({"withdrawn_at": utcnow()}, id="withdrawn"),
        pytest.param({"invoice_status": "void"}, id="its-invoice-voided"),
    ],
)
def test_a_withdrawn_stripe_lines_rows_resolve_when_the_pair_is_re_run(
    stripe: StripeSimulator, engine: Engine, withdrawal: dict[str, Any]
) -> None:
    priced(engine, since=day(1))
    store(
        engine,
        stripe_line("il_1", start=LINE_START, end=LINE_END, quantity="15"),
        stripe_line("il_2", start=day(4), end=day(2), quantity="8", invoice="in_2"),
    )
    reconcile(engine)
    assert {r.kind for r in rows(engine)} == {Kind.QUANTITY_MISMATCH, Kind.OVERLAPPING_LINE_ITEMS}
    change(engine, "il_1", Ledger.STRIPE, **withdrawal)
    reconcile(engine)
    # Its rows resolve, and the day only it billed is unbilled again.
    assert {(r.kind, r.status, r.period_start) for r in rows(engine)} == {
        (Kind.QUANTITY_MISMATCH, DiscrepancyStatus.RESOLVED, LINE_START),
        (Kind.OVERLAPPING_LINE_ITEMS, DiscrepancyStatus.RESOLVED, day(4)),
        (Kind.UNBILLED_USAGE, DiscrepancyStatus.OPEN, day(5)),
    }


def test_with_the_internal_ledger_only_no_stripe_row_and_no_extra_request(
    stripe: StripeSimulator, engine: Engine
) -> None:
    six = timedelta(hours=6)
    store(
        engine,
        stripe_line(start=midnight(LINE_START) + six, end=midnight(LINE_END) + six, quantity="1"),
        line_item("li_1", start=START.isoformat(), end=END.isoformat(), quantity="12"),
    )
    stripe.reset_stats()
    run_id = reconcile(engine, ledgers=("internal",))
    assert rows(engine) == []
    recorded = result(engine, run_id)
    assert (recorded.stripe_compared, recorded.stripe_pending) == (0, 0)
    assert summaries_asked(stripe) == recorded.requests == 1


# -- an empty internal ledger --------------------------------------------------------------------


def test_an_internal_ledger_holding_only_stripe_lines_holds_no_line_item(engine: Engine) -> None:
    store(engine, stripe_line(start=LINE_START, end=LINE_END, quantity="1"))
    with Session(engine) as session:
        assert not ledger_has_line_items(session=session, ledger=Ledger.INTERNAL)
        assert ledger_has_line_items(session=session, ledger=Ledger.STRIPE)


@pytest.mark.parametrize(
    ("ledgers", "empty", "compared"),
    [
        (BOTH, True, ("stripe",)),
        (BOTH, False, BOTH),
        (("internal",), False, ("internal",)),
        (("stripe",), False, ("stripe",)),
    ],
)
def test_a_run_compares_its_ledgers_less_an_empty_internal_one(
    ledgers: tuple[str, ...], empty: bool, compared: tuple[str, ...]
) -> None:
    config = RunConfig(database_url="sqlite://", ledgers=ledgers)  # type: ignore[arg-type]
    context = RunContext(
        run_id=1,
        window_start=START,
        window_end=END,
        today=TODAY,
        config=config,
        internal_ledger_empty=empty,
    )
    assert context.ledgers == compared
