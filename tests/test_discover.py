"""Discovery: the pairs and prices Stripe bills, learned from its subscriptions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from integrations.settings import get_settings
from integrations.stripe import Subscription, SubscriptionItem
from models.billing import price_for_pair
from models.tables import PairSource, StripePrice, TrackedPair
from models.tables import SubscriptionItem as CachedItem
from simulator import StripeSimulator
from tasks.discover import discover, metered_items, tiered_price_ids
from tasks.run_config import RunConfig

CREATED = 1_759_276_800  # 2025-10-01


def metered(meter: str = "mtr_api", *, id: str = "price_api", **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "billing_scheme": "per_unit",
        "recurring": {"meter": meter, "usage_type": "metered"},
        **fields,
    }


def subscription(
    id: str, *prices: dict[str, Any], customer: str = "cus_A", status: str = "active"
) -> Subscription:
    items = tuple(
        SubscriptionItem(
            id=f"si_{id}_{n}",
            subscription=id,
            price=price,
            current_period_start=None,
            current_period_end=None,
        )
        for n, price in enumerate(prices)
    )
    return Subscription(id=id, customer=customer, status=status, created=CREATED, items=items)


def test_an_item_bills_a_meter_only_when_its_price_is_metered_with_a_meter() -> None:
    licensed = {"id": "price_seat", "recurring": {"usage_type": "licensed", "meter": None}}
    one_off = {"id": "price_setup", "recurring": None}
    no_meter = metered(id="price_legacy", recurring={"usage_type": "metered", "meter": None})
    found = metered_items([subscription("sub_1", metered(), licensed, one_off, no_meter)])
    assert [(i.pair, i.price["id"]) for i in found] == [(("cus_A", "mtr_api"), "price_api")]


def test_an_expired_incomplete_subscription_is_ignored_and_a_canceled_one_is_not() -> None:
    found = metered_items(
        [
            subscription("sub_1", metered(), customer="cus_X", status="incomplete_expired"),
            subscription("sub_2", metered(), customer="cus_C", status="canceled"),
        ]
    )
    assert [i.customer for i in found] == ["cus_C"]


def test_each_tiered_price_is_fetched_once() -> None:
    tiered = metered(id="price_storage", billing_scheme="tiered")
    items = metered_items(
        [
            subscription("sub_1", tiered, metered("mtr_other")),
            subscription("sub_2", tiered, customer="cus_B"),
        ]
    )
    assert tiered_price_ids(i.price for i in items) == ["price_storage"]


def seed_billing(simulator: StripeSimulator) -> None:
    simulator.add_meter("mtr_api", event_name="api_call")
    simulator.add_meter("mtr_storage", event_name="storage")
    simulator.add_price(
        id="price_api",
        currency="usd",
        meter="mtr_api",
        billing_scheme="per_unit",
        unit_amount_decimal="0.25",
        transform_quantity={"divide_by": 1000, "round": "up"},
    )
    simulator.add_price(
        id="price_storage",
        currency="eur",
        meter="mtr_storage",
        billing_scheme="tiered",
        tiers_mode="graduated",
        tiers=[
            {"up_to": 100, "unit_amount_decimal": "50", "flat_amount_decimal": "0"},
            {"up_to": None, "unit_amount_decimal": "30", "flat_amount_decimal": "1000"},
        ],
    )
    period = {"current_period_start": 1_761_955_200, "current_period_end": 1_764_547_200}
    simulator.add_subscription(
        id="sub_A",
        customer="cus_A",
        status="active",
        created=CREATED,
        items=[{"id": "si_A1", "price": "price_api", **period}],
    )
    simulator.add_subscription(
        id="sub_S",
        customer="cus_StripeOnly",
        status="past_due",
        created=CREATED + 60,
        items=[{"id": "si_S1", "price": "price_storage", **period}],
    )
    simulator.add_subscription(  # a subscription has one currency: usd usage on another
        id="sub_S2",
        customer="cus_StripeOnly",
        status="active",
        created=CREATED + 120,
        items=[{"id": "si_S2", "price": "price_api", **period}],
    )
    simulator.add_subscription(
        id="sub_X",
        customer="cus_Never",
        status="incomplete_expired",
        created=CREATED,
        items=[{"id": "si_X1", "price": "price_api", **period}],
    )


def test_discovery_tracks_every_billed_pair_with_source_stripe(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    seed_billing(flow_env)
    tracked: list[tuple[str, str]] = []
    found = discover(RunConfig.of(get_settings()), on_tracked=tracked.extend)
    assert found.added == 3
    assert tracked == [
        ("cus_A", "mtr_api"),
        ("cus_StripeOnly", "mtr_api"),
        ("cus_StripeOnly", "mtr_storage"),
    ]
    with Session(engine) as session:
        sources = {p.source for p in session.exec(select(TrackedPair))}
        items = sorted(session.exec(select(CachedItem.id)))
    assert sources == {PairSource.STRIPE}
    assert items == ["si_A1", "si_S1", "si_S2"]


def test_discovery_caches_tiered_prices_with_their_tiers(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    seed_billing(flow_env)
    found = discover(RunConfig.of(get_settings()))
    assert found.requests == 2  # one page of subscriptions, one tiered price with its tiers
    with Session(engine) as session:
        storage = session.get(StripePrice, "price_storage")
        api = price_for_pair(session=session, customer="cus_A", meter="mtr_api")
    assert storage is not None
    assert storage.tiers is not None
    assert [tier["up_to"] for tier in storage.tiers] == [100, None]
    assert api is not None
    assert api["unit_amount_decimal"] == "0.25"
    assert api["transform_quantity"] == {"divide_by": 1000, "round": "up"}
    assert storage.unit_amount_decimal is None
    assert Decimal(str(storage.tiers[1]["flat_amount_decimal"])) == Decimal(1000)


def test_discovering_again_adds_nothing(flow_env: StripeSimulator) -> None:
    seed_billing(flow_env)
    discover(RunConfig.of(get_settings()))
    tracked: list[tuple[str, str]] = []
    assert discover(RunConfig.of(get_settings()), on_tracked=tracked.extend).added == 0
    assert tracked == []


def test_a_subscription_with_more_items_than_stripe_inlines_has_them_all(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    flow_env.add_meter("mtr_api", event_name="api_call")
    for n in range(12):
        flow_env.add_meter(f"mtr_{n:02}", event_name=f"event_{n}")
        flow_env.add_price(
            id=f"price_{n:02}",
            currency="usd",
            meter=f"mtr_{n:02}",
            billing_scheme="per_unit",
            unit_amount_decimal="1",
        )
    flow_env.add_subscription(
        id="sub_big",
        customer="cus_Big",
        status="active",
        created=CREATED,
        items=[{"id": f"si_{n:02}", "price": f"price_{n:02}"} for n in range(12)],
    )
    assert discover(RunConfig.of(get_settings())).pairs == 12


def test_discovery_written_a_few_items_at_a_time_caches_them_all(
    flow_env: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.discover.ITEM_BATCH", 1)
    seed_billing(flow_env)
    assert discover(RunConfig.of(get_settings())).items == 3
    with Session(engine) as session:
        assert sorted(session.exec(select(CachedItem.id))) == ["si_A1", "si_S1", "si_S2"]


def test_an_item_stripe_no_longer_lists_is_forgotten_by_the_next_discovery(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    seed_billing(flow_env)
    discover(RunConfig.of(get_settings()))
    key = flow_env.api_key
    flow_env.reset()  # Stripe now bills only cus_A
    flow_env.api_key = key
    flow_env.add_meter("mtr_api", event_name="api_call")
    flow_env.add_price(
        id="price_api",
        currency="usd",
        meter="mtr_api",
        billing_scheme="per_unit",
        unit_amount_decimal="0.25",
    )
    flow_env.add_subscription(
        id="sub_A",
        customer="cus_A",
        status="active",
        created=CREATED,
        items=[{"id": "si_A1", "price": "price_api"}],
    )
    discover(RunConfig.of(get_settings()))
    with Session(engine) as session:
        assert sorted(session.exec(select(CachedItem.id))) == ["si_A1"]
        assert len(session.exec(select(TrackedPair)).all()) == 3  # tracked pairs stay
