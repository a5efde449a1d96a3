"""One pair's pipeline end to end: the simulator over a real socket, a real database.

What a pair's task records with each discrepancy: the money at stake (by the pair's Stripe
price, else the ledger's), the likely cause (from the usage history, and from hourly usage
when the day boundary may be shifted), and when it settles.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import tasks.reconcile_pairs as pairs_module
from flows.windows import utc_today
from integrations.settings import get_settings
from integrations.stripe.models import DailyUsage
from models.billing import price_row, upsert_prices, upsert_subscription_items
from models.engine import session_scope
from models.enums import LikelyCause, Valuation
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    InvoiceLineItem,
    PairResult,
    PairStatus,
    UsageChange,
)
from models.types import utcnow
from simulator import StripeSimulator
from simulator.faults import Fault
from tasks.assess import Pricing, value_finding
from tasks.compare import Finding
from tasks.discover import discover
from tasks.reconcile_pairs import PairRef, RunContext, reconcile_one
from tasks.run_config import RunConfig
from tasks.value import NOT_VALUED, LedgerPrice
from tests.builders import new_run

TODAY = utc_today()
START, END = TODAY - timedelta(days=5), TODAY - timedelta(days=2)  # a 3-day period and window
PAIR = PairRef(customer="cus_A", meter="mtr_api", formula="sum")


def at(day: date, hour: int = 12) -> int:
    return int(datetime.combine(day, time(hour), UTC).timestamp())


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@pytest.fixture
def stripe(flow_env: StripeSimulator) -> StripeSimulator:
    """The simulator with the pair's meter."""
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    return flow_env


def usage(stripe: StripeSimulator, *values: tuple[date, int, str]) -> None:
    for day, hour, value in values:
        stripe.add_event("api_call", "cus_A", at(day, hour), value)


def every_day_four(stripe: StripeSimulator) -> None:
    """12 over the period, 4 a day at noon."""
    usage(stripe, *((START + timedelta(days=n), 12, "4") for n in range(3)))


def bill(
    engine: Engine,
    id: str = "li_1",
    *,
    quantity: str,
    start: date = START,
    end: date = END,
    amount: str | None = None,
    currency: str | None = None,
) -> None:
    with session_scope(engine) as session:
        session.add(
            InvoiceLineItem(
                id=id,
                invoice_id=f"in_{id}",
                stripe_customer_id="cus_A",
                meter_id="mtr_api",
                period_start=start,
                period_end=end,
                quantity=Decimal(quantity),
                amount=None if amount is None else Decimal(amount),
                currency=currency,
            )
        )


def price_in_stripe(stripe: StripeSimulator, **price: Any) -> None:
    """The pair billed at `price` by an active subscription, learnt by discovery."""
    stripe.add_price(id="price_api", meter="mtr_api", **price)
    stripe.add_subscription(
        id="sub_1",
        customer="cus_A",
        status="active",
        created=at(TODAY - timedelta(days=60)),
        items=[{"id": "si_1", "price": "price_api"}],
    )
    discover(RunConfig.of(get_settings()))


def context(engine: Engine, *, now: datetime | None = None) -> RunContext:
    return RunContext(
        run_id=new_run(engine, start=START.isoformat(), end=END.isoformat()),
        window_start=START,
        window_end=END,
        today=TODAY,
        config=RunConfig.of(get_settings()),
        now=now or midnight(TODAY),
    )


def reconcile(engine: Engine, *, now: datetime | None = None) -> dict[str, Any]:
    return reconcile_one(context(engine, now=now), PAIR)


def discrepancies(engine: Engine) -> list[Discrepancy]:
    with Session(engine) as session:
        return list(session.exec(select(Discrepancy).order_by(col(Discrepancy.id))).all())


def only(engine: Engine) -> Discrepancy:
    [row] = discrepancies(engine)
    return row


def result(engine: Engine) -> PairResult:
    with Session(engine) as session:
        return session.exec(select(PairResult).order_by(col(PairResult.id).desc())).first()  # type: ignore[return-value]


def hourly_requests(stripe: StripeSimulator) -> int:
    return sum("value_grouping_window=hour" in target for target in stripe.stats.targets)


def set_env(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()


# ------------------------------------------------------------------------------ fetch range


def test_stripe_is_asked_once_for_the_period_widened_by_a_day_on_both_sides(
    stripe: StripeSimulator, engine: Engine
) -> None:
    usage(stripe, (START, 12, "5"))
    bill(engine, quantity="5")
    stripe.reset_stats()

    reconcile(engine)

    recorded = result(engine)
    assert (recorded.fetched_start, recorded.fetched_end) == (
        START - timedelta(days=1),
        END + timedelta(days=1),
    )
    assert recorded.requests == stripe.stats.total == 1
    assert discrepancies(engine) == []


def test_a_long_window_with_month_long_items_is_still_one_request(
    stripe: StripeSimulator, engine: Engine
) -> None:
    window_start, window_end = TODAY - timedelta(days=60), TODAY - timedelta(days=2)
    usage(stripe, (window_start, 12, "5"))
    bill(
        engine, quantity="5", start=TODAY - timedelta(days=94), end=window_start + timedelta(days=1)
    )
    bill(engine, "li_2", quantity="0", start=window_end - timedelta(days=1), end=TODAY)
    stripe.reset_stats()
    shared = RunContext(
        run_id=new_run(engine, start=window_start.isoformat(), end=window_end.isoformat()),
        window_start=window_start,
        window_end=window_end,
        today=TODAY,
        config=replace(RunConfig.of(get_settings()), abs_tol=Decimal(0)),
        now=midnight(TODAY),
    )

    reconcile_one(shared, PAIR)

    recorded = result(engine)
    assert (recorded.fetched_start, recorded.fetched_end) == (TODAY - timedelta(days=95), TODAY)
    assert recorded.requests == stripe.stats.total == 1


# -------------------------------------------------------------------------------- valuation


def test_a_pair_with_a_stripe_price_is_valued_by_it_not_by_the_ledger(
    stripe: StripeSimulator, engine: Engine
) -> None:
    every_day_four(stripe)
    price_in_stripe(stripe, currency="usd", billing_scheme="per_unit", unit_amount_decimal="25")
    bill(engine, quantity="10", amount="30", currency="eur")

    reconcile(engine)

    row = only(engine)
    assert (row.amount_at_stake, row.currency, row.valuation) == (
        Decimal("0.5"),  # (12 - 10) x 25 cents
        "usd",
        Valuation.STRIPE_PRICE,
    )


def test_without_a_stripe_price_the_line_items_own_price_values_it(
    stripe: StripeSimulator, engine: Engine
) -> None:
    every_day_four(stripe)
    bill(engine, quantity="10", amount="20", currency="EUR")

    reconcile(engine)

    row = only(engine)
    assert (row.amount_at_stake, row.currency, row.valuation) == (
        Decimal(4),  # (12 - 10) x 20 / 10
        "eur",
        Valuation.LEDGER_PRICE,
    )


def test_unbilled_days_are_valued_by_the_pairs_latest_priced_line_item(
    stripe: StripeSimulator, engine: Engine
) -> None:
    usage(stripe, (START + timedelta(days=1), 12, "3"))
    earlier = START - timedelta(days=40)
    bill(
        engine,
        "li_old",
        quantity="10",
        start=earlier,
        end=earlier + timedelta(days=10),
        amount="1",
        currency="usd",
    )
    bill(
        engine,
        "li_last",
        quantity="10",
        start=earlier + timedelta(days=10),
        end=START,
        amount="5",
        currency="usd",
    )

    reconcile(engine)

    row = only(engine)
    assert row.kind is DiscrepancyKind.UNBILLED_USAGE
    assert (row.amount_at_stake, row.currency, row.valuation) == (
        Decimal("1.5"),  # 3 x 5 / 10
        "usd",
        Valuation.LEDGER_PRICE,
    )


def test_a_stripe_price_not_understood_leaves_the_pair_not_valued_and_says_so(
    stripe: StripeSimulator, engine: Engine
) -> None:
    every_day_four(stripe)
    bill(engine, quantity="10", amount="20", currency="eur")
    now = utcnow()
    with session_scope(engine) as session:
        upsert_prices(
            session=session,
            rows=[
                price_row(
                    {
                        "id": "price_pkg",
                        "currency": "usd",
                        "billing_scheme": "package",
                        "recurring": {"meter": "mtr_api", "usage_type": "metered"},
                    },
                    now=now,
                )
            ],
        )
        upsert_subscription_items(
            session=session,
            rows=[
                {
                    "id": "si_1",
                    "subscription_id": "sub_1",
                    "subscription_status": "active",
                    "subscription_created": now,
                    "stripe_customer_id": "cus_A",
                    "meter_id": "mtr_api",
                    "price_id": "price_pkg",
                    "current_period_start": None,
                    "current_period_end": None,
                    "refreshed_at": now,
                }
            ],
        )

    outcome = reconcile(engine)

    row = only(engine)
    assert (row.amount_at_stake, row.currency, row.valuation) == (None, None, None)
    assert result(engine).status is PairStatus.OK
    [note] = [n for n in outcome["notes"] if "price_pkg" in n]
    assert "cus_A / mtr_api" in note and "package" in note


# -------------------------------------------------------------------------------- diagnosis


def test_usage_that_arrived_after_the_ledger_was_computed_is_late_usage(
    stripe: StripeSimulator, engine: Engine
) -> None:
    every_day_four(stripe)
    bill(engine, quantity="12")
    reconcile(engine)  # it matched, and was recorded
    usage(stripe, (START + timedelta(days=1), 20, "3"))  # a late event
    stripe.reset_stats()

    reconcile(engine)

    row = only(engine)
    assert row.likely_cause is LikelyCause.LATE_USAGE
    assert row.cause_detail
    assert hourly_requests(stripe) == 0
    with Session(engine) as session:
        [change] = session.exec(select(UsageChange)).all()
    assert (change.day, change.previous_value, change.value) == (
        START + timedelta(days=1),
        Decimal(4),
        Decimal(7),
    )


def shifted_day_boundary(stripe: StripeSimulator, engine: Engine) -> None:
    """The ledger's days start at 03:00 UTC: it misses 3 early on day one and bills 2 early
    on the day after the period."""
    every_day_four(stripe)
    usage(stripe, (START, 2, "3"), (END, 2, "2"))
    bill(engine, quantity="14")  # 15 - 3 + 2


def test_a_shifted_day_boundary_is_found_in_hourly_usage(
    stripe: StripeSimulator, engine: Engine
) -> None:
    shifted_day_boundary(stripe, engine)
    stripe.reset_stats()

    reconcile(engine)

    row = only(engine)
    assert row.likely_cause is LikelyCause.TIMEZONE_SHIFT
    assert hourly_requests(stripe) == 2
    assert result(engine).requests == stripe.stats.total == 3


def test_with_diagnosis_off_no_hourly_usage_is_asked_for(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, "METER_RECON_DIAGNOSE", "false")
    shifted_day_boundary(stripe, engine)
    stripe.reset_stats()

    reconcile(engine)

    assert (only(engine).likely_cause, only(engine).cause_detail) == (None, None)
    assert hourly_requests(stripe) == 0
    assert result(engine).requests == stripe.stats.total == 1


def test_a_failed_hourly_fetch_still_records_the_pair_and_says_why_no_cause(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    shifted_day_boundary(stripe, engine)
    fetch_daily = pairs_module.fetch_daily_usage

    def then_fail_hourly(*args: Any, **kwargs: Any) -> DailyUsage:
        fetched = fetch_daily(*args, **kwargs)
        stripe.faults.script(Fault("500", should_retry=False), customer="cus_A")
        return fetched

    monkeypatch.setattr(pairs_module, "fetch_daily_usage", then_fail_hourly)

    outcome = reconcile(engine)

    row = only(engine)
    assert row.likely_cause is None
    assert row.cause_detail is not None and "could not be fetched" in row.cause_detail
    assert result(engine).status is PairStatus.OK
    assert any("hourly usage" in note for note in outcome["notes"])


def test_an_overlap_gets_no_cause_and_reads_no_history(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_day_four(stripe)
    bill(engine, "li_a", quantity="8", end=START + timedelta(days=2))
    bill(engine, "li_b", quantity="8", start=START + timedelta(days=1))

    def no_history(**_: object) -> None:
        raise AssertionError("the history was read for a pair with nothing to diagnose")

    monkeypatch.setattr(pairs_module, "first_known_values", no_history)

    reconcile(engine)

    row = only(engine)
    assert row.kind is DiscrepancyKind.OVERLAPPING_LINE_ITEMS
    assert (row.likely_cause, row.cause_detail) == (None, None)


def test_a_pair_without_findings_reads_neither_prices_nor_history(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_day_four(stripe)
    bill(engine, quantity="12")

    def not_needed(**_: object) -> None:
        raise AssertionError("read for a pair without findings")

    monkeypatch.setattr(pairs_module, "first_known_values", not_needed)
    monkeypatch.setattr(pairs_module, "price_for_pair", not_needed)

    assert reconcile(engine)["findings"] == 0


# --------------------------------------------------------------------------------- settling


def test_a_discrepancy_whose_period_just_ended_settles_its_hours_later(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, "METER_RECON_SETTLE_HOURS", "72")
    bill(engine, quantity="5")

    reconcile(engine, now=midnight(END) + timedelta(hours=1))

    assert only(engine).settles_at == midnight(END) + timedelta(hours=72)


def test_a_discrepancy_found_after_its_settle_hours_is_settled(
    stripe: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, "METER_RECON_SETTLE_HOURS", "24")
    bill(engine, quantity="5")

    reconcile(engine, now=midnight(END) + timedelta(hours=24))

    assert only(engine).settles_at is None


# ------------------------------------------------------------------- the pricing, by itself

MISMATCH = Finding(
    kind=DiscrepancyKind.QUANTITY_MISMATCH,
    period_start=START,
    period_end=END,
    line_item_id="li_1",
    other_line_item_id="",
    stripe_quantity=Decimal(12),
    internal_quantity=Decimal(10),
    difference=Decimal(2),
    detail="",
)
OVERLAP = Finding(
    kind=DiscrepancyKind.OVERLAPPING_LINE_ITEMS,
    period_start=START,
    period_end=START + timedelta(days=1),
    line_item_id="li_b",
    other_line_item_id="li_a",
    stripe_quantity=Decimal(4),
    internal_quantity=None,
    difference=None,
    detail="",
)
TEN_FOR_20_EUR = LedgerPrice(amount=Decimal(20), quantity=Decimal(10), currency="eur")


def test_a_price_not_understood_values_nothing_even_with_a_ledger_price() -> None:
    pricing = Pricing(unsupported=True, by_line_item={"li_1": TEN_FOR_20_EUR})
    assert value_finding(MISMATCH, pricing) == NOT_VALUED


def test_an_overlap_is_valued_by_the_price_of_its_line_item() -> None:
    pricing = Pricing(by_line_item={"li_b": TEN_FOR_20_EUR, "li_a": None})
    assert value_finding(OVERLAP, pricing).amount_at_stake == Decimal(-8)


def test_the_run_context_travels_whole() -> None:
    shared = RunContext(
        run_id=1,
        window_start=START,
        window_end=END,
        today=TODAY,
        config=replace(RunConfig.of(get_settings()), abs_tol=Decimal(0)),
        now=midnight(TODAY),
    )
    # What Dask does with a task's parameters; the bytes are our own.
    assert pickle.loads(pickle.dumps(shared)) == shared  # noqa: S301
