"""The cache of what Stripe bills: items, prices, and the price that values a pair."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from models.billing import (
    forget_subscription_items,
    price_for_pair,
    price_ids_by_pair,
    price_row,
    upsert_prices,
    upsert_subscription_items,
)
from models.pairs import track_by_hand, track_from_stripe
from models.tables import PairSource, StripePrice, SubscriptionItem, TrackedPair

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def stripe_price(id: str = "price_api", **fields: Any) -> dict[str, Any]:
    """A price object as Stripe sends it (numbers already parsed to Decimal)."""
    return {
        "id": id,
        "object": "price",
        "currency": "USD",
        "billing_scheme": "per_unit",
        "unit_amount_decimal": Decimal("0.25"),
        "tiers_mode": None,
        "transform_quantity": None,
        "recurring": {"meter": "mtr_api", "usage_type": "metered"},
        **fields,
    }


def item_row(
    id: str,
    *,
    subscription: str = "sub_1",
    status: str = "active",
    created: int = 1_759_276_800,
    customer: str = "cus_A",
    meter: str = "mtr_api",
    price: str = "price_api",
) -> dict[str, Any]:
    return {
        "id": id,
        "subscription_id": subscription,
        "subscription_status": status,
        "subscription_created": datetime.fromtimestamp(created, UTC),
        "stripe_customer_id": customer,
        "meter_id": meter,
        "price_id": price,
        "current_period_start": None,
        "current_period_end": None,
        "refreshed_at": NOW,
    }


def test_a_price_keeps_its_amounts_exact_and_its_currency_lowercased(engine: Engine) -> None:
    tiers = [
        {"up_to": 100, "unit_amount_decimal": Decimal("50.0000000001"), "flat_amount": None},
        {"up_to": None, "unit_amount_decimal": Decimal("30"), "flat_amount_decimal": "1000"},
    ]
    price = stripe_price(billing_scheme="tiered", tiers_mode="graduated", tiers=tiers)
    with Session(engine) as session:
        upsert_prices(session=session, rows=[price_row(price, now=NOW)])
        session.commit()
        row = session.get(StripePrice, "price_api")
    assert row is not None
    assert row.currency == "usd"
    assert row.meter_id == "mtr_api"
    assert row.tiers == [
        {"up_to": 100, "unit_amount_decimal": "50.0000000001", "flat_amount": None},
        {"up_to": None, "unit_amount_decimal": "30", "flat_amount_decimal": "1000"},
    ]


def test_a_refreshed_price_replaces_the_cached_one(engine: Engine) -> None:
    with Session(engine) as session:
        upsert_prices(session=session, rows=[price_row(stripe_price(), now=NOW)])
        upsert_prices(
            session=session,
            rows=[price_row(stripe_price(unit_amount_decimal=Decimal("0.3")), now=NOW)],
        )
        session.commit()
        row = session.get(StripePrice, "price_api")
    assert row is not None
    assert row.unit_amount_decimal == Decimal("0.3")


def test_the_item_cache_becomes_what_stripe_lists_now(engine: Engine) -> None:
    later = NOW + timedelta(hours=1)
    with Session(engine) as session:
        upsert_subscription_items(session=session, rows=[item_row("si_1"), item_row("si_2")])
        upsert_subscription_items(
            session=session,
            rows=[
                {**item_row("si_2"), "refreshed_at": later},
                {**item_row("si_3"), "refreshed_at": later},
            ],
        )
        forgotten = forget_subscription_items(session=session, seen_before=later)
        session.commit()
        ids = sorted(session.exec(select(SubscriptionItem.id)))
    assert (ids, forgotten) == (["si_2", "si_3"], 1)


def test_a_pair_is_priced_by_its_most_recently_created_subscription(engine: Engine) -> None:
    with Session(engine) as session:
        upsert_subscription_items(
            session=session,
            rows=[
                item_row("si_old", subscription="sub_1", created=100, price="price_old"),
                item_row("si_new", subscription="sub_2", created=200, price="price_new"),
            ],
        )
        session.commit()
        assert price_ids_by_pair(session=session) == {("cus_A", "mtr_api"): "price_new"}


def test_created_at_the_same_second_the_greater_subscription_id_wins(engine: Engine) -> None:
    with Session(engine) as session:
        upsert_subscription_items(
            session=session,
            rows=[
                item_row("si_a", subscription="sub_b", created=100, price="price_b"),
                item_row("si_b", subscription="sub_a", created=100, price="price_a"),
            ],
        )
        session.commit()
        assert price_ids_by_pair(session=session)[("cus_A", "mtr_api")] == "price_b"


def test_an_expired_incomplete_subscription_prices_nothing(engine: Engine) -> None:
    with Session(engine) as session:
        upsert_subscription_items(
            session=session,
            rows=[
                item_row("si_1", subscription="sub_1", created=100, price="price_live"),
                item_row(
                    "si_2",
                    subscription="sub_2",
                    created=200,
                    status="incomplete_expired",
                    price="price_never",
                ),
            ],
        )
        session.commit()
        assert price_ids_by_pair(session=session)[("cus_A", "mtr_api")] == "price_live"


def test_the_pair_price_comes_back_in_stripes_shape(engine: Engine) -> None:
    with Session(engine) as session:
        upsert_prices(
            session=session,
            rows=[
                price_row(
                    stripe_price(transform_quantity={"divide_by": 1000, "round": "up"}), now=NOW
                )
            ],
        )
        upsert_subscription_items(session=session, rows=[item_row("si_1")])
        session.commit()
        price = price_for_pair(session=session, customer="cus_A", meter="mtr_api")
        unpriced = price_for_pair(session=session, customer="cus_B", meter="mtr_api")
    assert price is not None
    assert price["unit_amount_decimal"] == "0.25"
    assert price["transform_quantity"] == {"divide_by": 1000, "round": "up"}
    assert price["recurring"]["meter"] == "mtr_api"
    assert unpriced is None


def test_pairs_from_stripe_are_tracked_open_ended_with_source_stripe(engine: Engine) -> None:
    with Session(engine) as session:
        added = track_from_stripe(session=session, pairs=[("cus_Z", "mtr_api")] * 2)
        session.commit()
        (pair,) = session.exec(select(TrackedPair)).all()
    assert added == [("cus_Z", "mtr_api")]
    assert pair.source is PairSource.STRIPE
    assert (pair.active_from, pair.active_to) == (None, None)


def test_a_pair_already_tracked_keeps_its_source_and_bounds(engine: Engine) -> None:

    with Session(engine) as session:
        track_by_hand(
            session=session, customer="cus_A", meter="mtr_api", active_from=date(2026, 10, 1)
        )
        session.commit()
        added = track_from_stripe(session=session, pairs=[("cus_A", "mtr_api")])
        session.commit()
        (pair,) = session.exec(select(TrackedPair)).all()
    assert added == []
    assert pair.source is PairSource.MANUAL
    assert pair.active_from == date(2026, 10, 1)
