"""Properties of the `stripe` ledger's pure comparison (tasks/compare_stripe.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.stripe import Invoice, InvoiceLine
from models.enums import Formula
from tasks.compare import Window
from tasks.compare_stripe import (
    MeteredPrice,
    StripeLineItem,
    SubscribedItem,
    compare_line,
    group_line_items,
    overlapping_line_items,
    touched_days,
    unbilled_usage,
)
from tasks.value import Price, price_from_stripe

PROPERTY = settings(max_examples=100, deadline=None, database=None)
NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z
DAY = 86_400
FIRST_DAY = date(2025, 11, 1)


def price(transform: dict[str, object] | None = None, unit: str = "25") -> Price:
    return price_from_stripe(
        {
            "id": "price_api",
            "currency": "usd",
            "billing_scheme": "per_unit",
            "unit_amount_decimal": unit,
            "transform_quantity": transform,
        }
    )


PRICES = {"price_api": MeteredPrice(meter="mtr_api", price=price())}

quantities = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False)
prices = st.one_of(
    st.just(price()),
    st.builds(
        lambda by, rounding: price({"divide_by": by, "round": rounding}),
        st.integers(min_value=1, max_value=1000),
        st.sampled_from(["up", "down"]),
    ),
)
formulas = st.sampled_from(list(Formula))


def head(status: str = "paid") -> Invoice:
    return Invoice(
        id="in_1",
        customer="cus_1",
        subscription="sub_1",
        status=status,
        created=NOV_1,
        finalized_at=NOV_1,
        currency="usd",
        period_start=NOV_1,
        period_end=NOV_1,
    )


def line(id: str, quantity: Decimal, amount: int, start: int, end: int) -> InvoiceLine:
    return InvoiceLine(
        id=id,
        invoice_id="in_1",
        subscription_item="si_1",
        price_id="price_api",
        period_start=start,
        period_end=end,
        quantity=quantity,
        amount=amount,
        proration=False,
    )


def item(
    id: str, start: int, end: int, quantity: Decimal = Decimal(1), status: str = "paid"
) -> StripeLineItem:
    [grouped] = group_line_items(head(status), [line(id, quantity, 0, start, end)], PRICES)
    return grouped


# Periods inside November, on any minute.
moments = st.integers(min_value=0, max_value=30 * 24 * 60).map(lambda minute: NOV_1 + 60 * minute)
periods = st.tuples(moments, moments).map(sorted).filter(lambda pair: pair[0] < pair[1])


@PROPERTY
@given(quantity=quantities, formula=formulas, stripe_price=prices)
def test_a_line_whose_usage_equals_its_quantity_is_never_recorded(
    quantity: Decimal, formula: Formula, stripe_price: Price
) -> None:
    billed = item("il_1", NOV_1, NOV_1 + DAY, quantity)
    assert (
        compare_line(billed, stripe_quantity=quantity, formula=formula, price=stripe_price) is None
    )


@PROPERTY
@given(
    tiers=st.lists(
        st.tuples(quantities, st.integers(min_value=0, max_value=10**6)), min_size=1, max_size=6
    ),
    order=st.randoms(use_true_random=False),
)
def test_grouping_tier_lines_gives_one_item_whatever_their_order(
    tiers: list[tuple[Decimal, int]], order: object
) -> None:
    lines = [line(f"il_{n}", q, a, NOV_1, NOV_1 + DAY) for n, (q, a) in enumerate(tiers)]
    shuffled = list(lines)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    assert group_line_items(head(), shuffled, PRICES) == group_line_items(head(), lines, PRICES)
    [grouped] = group_line_items(head(), shuffled, PRICES)
    assert grouped.id == min(f"il_{n}" for n in range(len(tiers)))
    assert grouped.quantity == sum((q for q, _ in tiers), Decimal(0))
    assert grouped.amount * 100 == sum(a for _, a in tiers)


@PROPERTY
@given(stripe=quantities, billed=quantities, stripe_price=prices)
def test_the_money_at_stake_follows_the_sign_of_the_difference(
    stripe: Decimal, billed: Decimal, stripe_price: Price
) -> None:
    finding = compare_line(
        item("il_1", NOV_1, NOV_1 + DAY, billed),
        stripe_quantity=stripe,
        formula=Formula.SUM,
        price=stripe_price,
    )
    if finding is None:
        return
    amount = finding.valued.amount_at_stake
    assert amount is not None and finding.difference is not None
    assert amount * finding.difference >= 0
    if stripe_price.divide_by is None:
        assert (amount > 0) == (finding.difference > 0)


@PROPERTY
@given(
    spans=st.lists(periods, max_size=4),
    statuses=st.lists(st.sampled_from(["draft", "paid", "void"]), min_size=4, max_size=4),
    current=st.lists(
        st.tuples(st.sampled_from(["active", "canceled", "paused"]), periods), max_size=2
    ),
    usage=st.dictionaries(st.integers(min_value=0, max_value=29), quantities, max_size=30),
)
def test_an_unbilled_day_is_never_also_covered(
    spans: list[tuple[int, int]],
    statuses: list[str],
    current: list[tuple[str, tuple[int, int]]],
    usage: dict[int, Decimal],
) -> None:
    items = [item(f"il_{n}", s, e, status=statuses[n]) for n, (s, e) in enumerate(spans)]
    subscribed = [SubscribedItem(status, s, e) for status, (s, e) in current]
    daily = {FIRST_DAY + timedelta(days=n): value for n, value in usage.items()}
    findings = unbilled_usage(
        daily=daily,
        window=Window(FIRST_DAY, date(2025, 12, 1)),
        items=items,
        subscription_items=subscribed,
        run_started=datetime(2026, 1, 1, tzinfo=UTC),
        customer="cus_1",
        meter="mtr_api",
        price=price(),
    )
    for finding in findings:
        day = finding.period_start
        assert daily[day] != 0
        assert not any(
            i.period_start <= day < i.period_end for i in items if i.invoice_status != "void"
        )
        assert not any(entry.still_to_invoice(day) for entry in subscribed)


@PROPERTY
@given(spans=st.lists(periods, max_size=5))
def test_every_two_finalized_items_sharing_time_overlap_once(spans: list[tuple[int, int]]) -> None:
    items = [item(f"il_{n}", s, e) for n, (s, e) in enumerate(spans)]
    findings = overlapping_line_items(
        items, daily={}, formula=Formula.SUM, today=date(2026, 1, 1), prices={}
    )
    sharing = {
        (b.id, a.id)
        for a in items
        for b in items
        if a.id < b.id
        and max(a.period_start_at, b.period_start_at) < min(a.period_end_at, b.period_end_at)
    }
    assert sorted((f.line_item_id, f.other_line_item_id) for f in findings) == sorted(sharing)


@PROPERTY
@given(span=periods)
def test_the_period_days_hold_every_moment_of_the_period(span: tuple[int, int]) -> None:
    start, end = span
    first, last = touched_days(start, end)
    assert first == datetime.fromtimestamp(start, UTC).date()
    assert datetime.fromtimestamp(end - 1, UTC).date() < last
    assert datetime.fromtimestamp(end, UTC).date() >= last - timedelta(days=1)
