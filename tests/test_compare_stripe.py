"""The `stripe` ledger's pure comparison (tasks/compare_stripe.py), rule by rule, with numbers
worked by hand: grouping, one finalized line, overlaps, unbilled days, causes, money."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from integrations.stripe import Invoice, InvoiceLine
from models.enums import DiscrepancyKind, Formula, LikelyCause, Valuation
from tasks.compare import Tolerance, Window
from tasks.compare_stripe import (
    LineState,
    MeteredPrice,
    StripeLineItem,
    SubscribedItem,
    compare_line,
    compare_stripe_pair,
    exact_usage,
    group_line_items,
    line_state,
    metered_price,
    overlapping_line_items,
    touched_days,
    unbilled_usage,
)
from tasks.value import Price, price_from_stripe

OCT_1 = 1_759_276_800  # 2025-10-01T00:00:00Z
NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z
DEC_1 = 1_764_547_200  # 2025-12-01T00:00:00Z
HOUR = 3_600
DAY = 86_400


def price_object(
    id: str = "price_api", *, unit: str = "25", meter: str | None = "mtr_api", **extra: Any
) -> dict[str, Any]:
    """A Stripe price object: `unit` minor units per unit of `meter`."""
    return {
        "id": id,
        "object": "price",
        "currency": "usd",
        "billing_scheme": "per_unit",
        "unit_amount_decimal": unit,
        "recurring": {"usage_type": "metered", "meter": meter},
        **extra,
    }


API = price_from_stripe(price_object())  # 25 cents a unit
PRICES = {"price_api": MeteredPrice(meter="mtr_api", price=API)}


def head(
    status: str = "paid", *, currency: str = "usd", finalized_at: int | None = NOV_1 + 2 * HOUR
) -> Invoice:
    return Invoice(
        id="in_1",
        customer="cus_1",
        subscription="sub_1",
        status=status,
        created=NOV_1 + HOUR,
        finalized_at=None if status == "draft" else finalized_at,
        currency=currency,
        period_start=OCT_1,
        period_end=NOV_1,
    )


def line(
    id: str,
    quantity: str,
    amount: int,
    *,
    start: int = OCT_1,
    end: int = NOV_1,
    item: str | None = "si_1",
    price: str | None = "price_api",
) -> InvoiceLine:
    return InvoiceLine(
        id=id,
        invoice_id="in_1",
        subscription_item=item,
        price_id=price,
        period_start=start,
        period_end=end,
        quantity=Decimal(quantity),
        amount=amount,
        proration=False,
    )


def stripe_item(
    quantity: str = "100",
    *,
    id: str = "il_1",
    status: str = "paid",
    start: int = OCT_1,
    end: int = NOV_1,
) -> StripeLineItem:
    [item] = group_line_items(head(status), [line(id, quantity, 0, start=start, end=end)], PRICES)
    return item


def d(text: str) -> date:
    return date.fromisoformat(text)


# -- grouping -------------------------------------------------------------------------------------


def test_the_tier_lines_of_one_item_and_period_are_one_line_item() -> None:
    lines = [line("il_b", "100", 250), line("il_a", "50", 100)]
    [item] = group_line_items(head(), lines, PRICES)
    assert (item.id, item.invoice_id, item.customer, item.meter) == (
        "il_a",
        "in_1",
        "cus_1",
        "mtr_api",
    )
    assert (item.quantity, item.amount, item.currency) == (Decimal(150), Decimal("3.50"), "usd")
    assert (item.price_id, item.invoice_status, item.subscription_item) == (
        "price_api",
        "paid",
        "si_1",
    )
    assert item.finalized_at == datetime(2025, 11, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("usd", Decimal("3.5")), ("jpy", Decimal(350)), ("kwd", Decimal("0.35"))],
)
def test_the_amount_is_in_the_currencys_major_unit(currency: str, amount: Decimal) -> None:
    [item] = group_line_items(head(currency=currency), [line("il_1", "1", 350)], PRICES)
    assert item.amount == amount


def test_other_periods_and_other_items_are_other_line_items() -> None:
    lines = [
        line("il_1", "1", 25),
        line("il_2", "2", 50, start=NOV_1, end=DEC_1),
        line("il_3", "3", 75, item="si_2"),
    ]
    items = group_line_items(head(), lines, PRICES)
    assert [(item.id, item.quantity) for item in items] == [
        ("il_1", Decimal(1)),
        ("il_2", Decimal(2)),
        ("il_3", Decimal(3)),
    ]


def test_lines_without_a_metered_price_are_skipped() -> None:
    lines = [line("il_1", "1", 25, price="price_seat"), line("il_2", "1", 25, price=None)]
    assert group_line_items(head(), lines, PRICES) == []


def test_a_price_without_a_meter_is_not_metered_and_one_not_understood_is_not_valued() -> None:
    assert metered_price(price_object(meter=None)) is None
    odd = metered_price(price_object(billing_scheme="custom"))
    assert odd == MeteredPrice(meter="mtr_api", price=None)
    assert metered_price(price_object()) == MeteredPrice(meter="mtr_api", price=API)


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (OCT_1, NOV_1, ("2025-10-01", "2025-11-01")),  # 00:00 UTC end: ends that day
        (OCT_1 + 10 * HOUR, NOV_1 + 10 * HOUR, ("2025-10-01", "2025-11-02")),
        (OCT_1 + 10 * HOUR, OCT_1 + 10 * HOUR, ("2025-10-01", "2025-10-02")),  # at least a day
    ],
)
def test_period_days_are_the_utc_days_the_period_touches(
    start: int, end: int, days: tuple[str, str]
) -> None:
    assert touched_days(start, end) == (d(days[0]), d(days[1]))
    item = stripe_item(start=start, end=end)
    assert (item.period_start, item.period_end) == (d(days[0]), d(days[1]))


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("draft", LineState.PENDING),
        ("open", LineState.FINALIZED),
        ("paid", LineState.FINALIZED),
        ("uncollectible", LineState.FINALIZED),
        ("void", LineState.WITHDRAWN),
    ],
)
def test_the_invoice_status_makes_the_lines_state(status: str, state: LineState) -> None:
    assert line_state(status) is state
    assert stripe_item(status=status).state is state


def test_an_unknown_invoice_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'deleted'"):
        line_state("deleted")


# -- the usage of a line --------------------------------------------------------------------------

DAILY = {d("2025-09-30"): Decimal(7), d("2025-10-01"): Decimal(2), d("2025-10-31"): Decimal(3)}


@pytest.mark.parametrize(
    ("formula", "usage"), [(Formula.SUM, Decimal(5)), (Formula.LAST, Decimal(3))]
)
def test_a_line_on_day_boundaries_takes_its_usage_from_the_daily_buckets(
    formula: Formula, usage: Decimal
) -> None:
    assert exact_usage(stripe_item(), DAILY, formula) == usage


def test_a_line_off_day_boundaries_needs_a_usage_total() -> None:
    assert exact_usage(stripe_item(start=OCT_1 + 60), DAILY, Formula.SUM) is None


# -- one finalized line ---------------------------------------------------------------------------


def test_equal_within_tolerance_is_matched() -> None:
    item = stripe_item("100")
    assert (
        compare_line(item, stripe_quantity=Decimal("100.0000005"), formula=Formula.SUM, price=API)
        is None
    )
    loose = Tolerance(rel_tol=Decimal("0.01"))
    assert (
        compare_line(
            item, stripe_quantity=Decimal(101), formula=Formula.SUM, price=API, tolerance=loose
        )
        is None
    )


def test_more_usage_than_invoiced_is_late_usage_valued_at_the_lines_price() -> None:
    finding = compare_line(
        stripe_item("100"), stripe_quantity=Decimal(120), formula=Formula.SUM, price=API
    )
    assert finding is not None
    assert (finding.kind, finding.ledger) == (DiscrepancyKind.QUANTITY_MISMATCH, "stripe")
    assert (finding.stripe_quantity, finding.internal_quantity, finding.difference) == (
        Decimal(120),
        Decimal(100),
        Decimal(20),
    )
    assert (finding.period_start, finding.period_end, finding.line_item_id) == (
        d("2025-10-01"),
        d("2025-11-01"),
        "il_1",
    )
    assert finding.likely_cause is LikelyCause.LATE_USAGE
    assert finding.cause_detail == (
        "20 units were recorded for this period after invoice in_1 was finalized on "
        "2025-11-01: Stripe will not invoice them."
    )
    # V(120) - V(100) = 3000 - 2500 = 500 cents
    assert (finding.valued.amount_at_stake, finding.valued.currency, finding.valued.valuation) == (
        Decimal("5.000000"),
        "usd",
        Valuation.STRIPE_PRICE,
    )


def test_less_usage_than_invoiced_is_cancelled_usage_and_a_credit_risk() -> None:
    finding = compare_line(
        stripe_item("100"), stripe_quantity=Decimal(80), formula=Formula.COUNT, price=API
    )
    assert finding is not None and finding.kind is DiscrepancyKind.QUANTITY_MISMATCH
    assert finding.likely_cause is LikelyCause.CANCELLED_USAGE
    assert finding.cause_detail == (
        "Stripe's meter now counts 20 fewer than invoice in_1 billed: usage cancelled or "
        "adjusted after finalization."
    )
    assert finding.valued.amount_at_stake == Decimal("-5.000000")


def test_no_usage_left_is_missing_in_stripe() -> None:
    finding = compare_line(
        stripe_item("100"), stripe_quantity=Decimal(0), formula=Formula.SUM, price=API
    )
    assert finding is not None and finding.kind is DiscrepancyKind.MISSING_IN_STRIPE
    assert (finding.stripe_quantity, finding.difference) == (Decimal(0), Decimal(-100))
    assert finding.likely_cause is LikelyCause.CANCELLED_USAGE
    assert finding.valued.amount_at_stake == Decimal("-25.000000")


def test_a_last_meter_gets_no_cause_and_its_detail_says_the_value_changed() -> None:
    finding = compare_line(
        stripe_item("100"), stripe_quantity=Decimal(90), formula=Formula.LAST, price=API
    )
    assert finding is not None
    assert (finding.likely_cause, finding.cause_detail) == (None, None)
    assert "the value changed after finalization" in finding.detail


def test_without_a_price_a_difference_is_not_valued() -> None:
    finding = compare_line(
        stripe_item("1"), stripe_quantity=Decimal(2), formula=Formula.SUM, price=None
    )
    assert finding is not None
    assert finding.valued.amount_at_stake is None and finding.valued.valuation is None


PER_THOUSAND = price_from_stripe(
    price_object(unit="200", transform_quantity={"divide_by": 1000, "round": "up"})
)


@pytest.mark.parametrize(
    ("billed", "matched"), [("2", True), ("1", True), ("3", False), ("1500", True)]
)
def test_a_transformed_quantity_matches_its_ceil_or_floor(billed: str, matched: bool) -> None:
    finding = compare_line(
        stripe_item(billed), stripe_quantity=Decimal(1500), formula=Formula.SUM, price=PER_THOUSAND
    )
    assert (finding is None) is matched


def test_an_unmatched_transformed_quantity_is_valued_as_raw_usage() -> None:
    finding = compare_line(
        stripe_item("3"), stripe_quantity=Decimal(1500), formula=Formula.SUM, price=PER_THOUSAND
    )
    # V(1500) = ceil(1.5) x 200 = 400; V(3) = ceil(0.003) x 200 = 200: 2 dollars not billed
    assert finding is not None and finding.valued.amount_at_stake == Decimal("2.000000")


def test_a_start_inside_a_minute_is_said_in_the_detail() -> None:
    item = stripe_item("100", start=OCT_1 + 10 * HOUR + 30 * 60 + 15)
    finding = compare_line(item, stripe_quantity=Decimal(101), formula=Formula.SUM, price=API)
    assert finding is not None
    assert "counted from 10:30" in finding.detail and "whole minutes" in finding.detail
    aligned = compare_line(
        stripe_item("100", start=OCT_1 + 10 * HOUR),
        stripe_quantity=Decimal(101),
        formula=Formula.SUM,
        price=API,
    )
    assert aligned is not None and "whole minutes" not in aligned.detail


def test_only_a_finalized_line_is_compared() -> None:
    with pytest.raises(ValueError, match="pending"):
        compare_line(
            stripe_item(status="draft"), stripe_quantity=Decimal(1), formula=Formula.SUM, price=API
        )


# -- overlaps -------------------------------------------------------------------------------------

OVERLAP_DAILY = {
    d("2025-10-14"): Decimal(50),
    d("2025-10-15"): Decimal(2),
    d("2025-10-31"): Decimal(3),
    d("2025-11-01"): Decimal(100),
}


def test_two_finalized_items_sharing_time_overlap_on_the_days_they_share() -> None:
    first = stripe_item(id="il_a")
    second = stripe_item(id="il_b", start=OCT_1 + 14 * DAY + 12 * HOUR, end=DEC_1)
    cheap = price_from_stripe(price_object("price_cheap", unit="10"))
    prices: dict[str, Price | None] = {"price_api": API, "price_cheap": cheap}
    [finding] = overlapping_line_items(
        [second, first],
        daily=OVERLAP_DAILY,
        formula=Formula.SUM,
        today=d("2025-12-02"),
        prices=prices,
    )
    assert (finding.kind, finding.period_start, finding.period_end) == (
        DiscrepancyKind.OVERLAPPING_LINE_ITEMS,
        d("2025-10-15"),
        d("2025-11-01"),
    )
    assert (finding.line_item_id, finding.other_line_item_id) == ("il_b", "il_a")
    assert (finding.stripe_quantity, finding.internal_quantity, finding.difference) == (
        Decimal(5),
        None,
        None,
    )
    # -(5 x 25 cents), at il_b's price
    assert finding.valued.amount_at_stake == Decimal("-1.250000")


def test_items_that_only_touch_or_are_not_finalized_do_not_overlap() -> None:
    touching = [stripe_item(id="il_a"), stripe_item(id="il_b", start=NOV_1, end=DEC_1)]
    drafts = [stripe_item(id="il_c"), stripe_item(id="il_d", status="draft")]
    for items in (touching, drafts):
        assert (
            overlapping_line_items(
                items, daily=OVERLAP_DAILY, formula=Formula.SUM, today=d("2025-12-02"), prices={}
            )
            == []
        )


def test_an_overlap_is_not_valued_with_a_transformed_price() -> None:
    items = [stripe_item(id="il_a"), stripe_item(id="il_b")]
    [finding] = overlapping_line_items(
        items,
        daily=OVERLAP_DAILY,
        formula=Formula.SUM,
        today=d("2025-12-02"),
        prices={"price_api": PER_THOUSAND},
    )
    assert finding.valued.amount_at_stake is None


# -- unbilled days --------------------------------------------------------------------------------

NOVEMBER = Window(d("2025-11-01"), d("2025-12-01"))
AFTER = datetime(2025, 12, 10, tzinfo=UTC)
USED = {d("2025-11-10"): Decimal(4)}


def unbilled(
    *,
    items: list[StripeLineItem] | None = None,
    subscribed: list[SubscribedItem] | None = None,
    run_started: datetime = AFTER,
    daily: dict[date, Decimal] | None = None,
) -> list[Any]:
    return unbilled_usage(
        daily=USED if daily is None else daily,
        window=NOVEMBER,
        items=items or [],
        subscription_items=subscribed or [],
        run_started=run_started,
        customer="cus_1",
        meter="mtr_api",
        price=API,
    )


def active(
    status: str = "active", start: int = DEC_1, end: int = DEC_1 + 31 * DAY
) -> SubscribedItem:
    return SubscribedItem(
        subscription_status=status, current_period_start=start, current_period_end=end
    )


def test_usage_no_subscription_bills_is_unbilled_and_not_subscribed() -> None:
    [finding] = unbilled()
    assert (finding.kind, finding.period_start, finding.period_end, finding.ledger) == (
        DiscrepancyKind.UNBILLED_USAGE,
        d("2025-11-10"),
        d("2025-11-11"),
        "stripe",
    )
    assert (finding.stripe_quantity, finding.internal_quantity, finding.difference) == (
        Decimal(4),
        Decimal(0),
        Decimal(4),
    )
    assert finding.likely_cause is LikelyCause.NOT_SUBSCRIBED
    assert finding.cause_detail == (
        "no subscription of cus_1 bills meter mtr_api: Stripe will never invoice this usage."
    )
    assert finding.valued.amount_at_stake == Decimal("1.000000")  # 4 x 25 cents


def test_a_subscribed_pairs_unbilled_day_has_no_cause() -> None:
    [finding] = unbilled(subscribed=[active()])
    assert (finding.likely_cause, finding.cause_detail) == (None, None)


@pytest.mark.parametrize("status", ["draft", "paid"])
def test_a_day_a_line_item_touches_is_not_unbilled(status: str) -> None:
    part = stripe_item(status=status, start=NOV_1 + 9 * DAY + 23 * HOUR, end=NOV_1 + 12 * DAY)
    assert unbilled(items=[part]) == []


def test_a_day_only_a_void_invoice_billed_is_unbilled() -> None:
    voided = stripe_item(status="void", start=NOV_1, end=DEC_1)
    assert len(unbilled(items=[voided])) == 1


@pytest.mark.parametrize(
    ("status", "is_unbilled"),
    [
        ("active", False),
        ("past_due", False),
        ("canceled", True),
        ("incomplete_expired", True),
        ("paused", True),
    ],
)
def test_a_day_in_a_current_period_still_to_be_invoiced_is_not_unbilled(
    status: str, is_unbilled: bool
) -> None:
    current = active(status, start=NOV_1 + 9 * DAY + 23 * HOUR, end=DEC_1)
    assert bool(unbilled(subscribed=[current])) is is_unbilled


@pytest.mark.parametrize(
    ("run_started", "is_unbilled"),
    [
        (datetime(2025, 11, 14, tzinfo=UTC), True),  # 11-10 ended 11-11 00:00, 72 h before
        (datetime(2025, 11, 13, 23, 59, tzinfo=UTC), False),
    ],
)
def test_a_day_is_unbilled_only_72_hours_after_it_ended(
    run_started: datetime, is_unbilled: bool
) -> None:
    assert bool(unbilled(run_started=run_started)) is is_unbilled


def test_days_outside_the_window_or_without_usage_are_not_unbilled() -> None:
    daily = {d("2025-10-31"): Decimal(9), d("2025-11-02"): Decimal(0), d("2025-12-01"): Decimal(9)}
    assert unbilled(daily=daily) == []


# -- one pair -------------------------------------------------------------------------------------


def test_a_pair_compares_its_finalized_lines_and_counts_the_drafts_pending() -> None:
    matched = stripe_item("5", id="il_a", start=OCT_1, end=NOV_1)
    late = stripe_item("1", id="il_b", start=NOV_1, end=NOV_1 + 10 * DAY)
    draft = stripe_item("1", id="il_c", status="draft", start=NOV_1 + 10 * DAY, end=DEC_1)
    voided = stripe_item("1", id="il_d", status="void", start=NOV_1, end=DEC_1)
    result = compare_stripe_pair(
        items=[matched, late, draft, voided],
        stripe_usage={"il_a": Decimal(5), "il_b": Decimal(3)},
        daily={d("2025-11-20"): Decimal(1)},
        window=Window(d("2025-10-31"), d("2025-12-01")),
        today=d("2025-12-10"),
        run_started=AFTER,
        formula=Formula.SUM,
        prices={"price_api": API},
        pair_price=API,
        subscription_items=[active()],
        customer="cus_1",
        meter="mtr_api",
    )
    assert (result.compared, result.matched, result.pending) == (2, 1, 1)
    assert [(f.kind, f.line_item_id) for f in result.findings] == [
        (DiscrepancyKind.QUANTITY_MISMATCH, "il_b")
    ]
    assert result.compared_line_item_ids == {"il_a", "il_b"}
    assert result.considered_line_item_ids == {"il_a", "il_b", "il_c"}
    assert result.unbilled_days == (d("2025-10-31"), d("2025-12-01"))


def test_a_pair_needs_the_usage_of_every_line_it_compares() -> None:
    with pytest.raises(ValueError, match="il_1"):
        compare_stripe_pair(
            items=[stripe_item()],
            stripe_usage={},
            daily={},
            window=Window(d("2025-10-01"), d("2025-11-01")),
            today=d("2025-12-10"),
            run_started=AFTER,
            formula=Formula.SUM,
            prices={},
            pair_price=None,
            subscription_items=[],
            customer="cus_1",
            meter="mtr_api",
        )
