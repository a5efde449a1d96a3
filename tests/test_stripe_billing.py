"""The Stripe client's billing calls (subscriptions with all their items, prices), and the
official SDK against the simulator's billing side: same request lines, same answers."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from integrations.stripe import (
    NotFoundError,
    SlidingWindowRateLimiter,
    StripeAPIError,
    StripeClient,
    StripeConnectionError,
    Subscription,
)
from integrations.stripe.client import price_target, subscription_items_params, subscriptions_params
from simulator import Fault, StripeSimulator
from tests.fixtures.stripe import BILLING_SDK_REQUESTS_FILE, TEST_KEY

ClientFactory = Callable[..., StripeClient]

RECORDED = json.loads(BILLING_SDK_REQUESTS_FILE.read_text(encoding="utf-8"))["captures"]


def recorded_lines(capture: int) -> list[str]:
    return [
        request["requestline"].removesuffix(" HTTP/1.1")
        for request in RECORDED[capture]["requests"]
    ]


SUBSCRIPTION_LINES = recorded_lines(0)
ITEM_LINES = recorded_lines(1)
PRICE_LINES = recorded_lines(2)
[ADJUSTMENT] = RECORDED[3]["requests"]
NOV_1 = 1_761_955_200


def seed_many(simulator: StripeSimulator, *, subscriptions: int, items: int = 1) -> None:
    """`subscriptions` subscriptions sub_000.. (newest last); sub_000 has `items` items."""
    simulator.add_meter("mtr_api_calls", event_name="api_call")
    for index in range(max(items, 1)):
        simulator.add_price(
            id=f"price_{index:03}",
            currency="usd",
            meter="mtr_api_calls",
            unit_amount_decimal="0.25",
        )
    for index in range(subscriptions):
        count = items if index == 0 else 1
        simulator.add_subscription(
            id=f"sub_{index:03}",
            customer=f"cus_{index:03}",
            status="canceled" if index == 1 else "active",
            created=NOV_1 + index,
            items=[
                {"id": f"si_{index:03}_{item:03}", "price": f"price_{item:03}"}
                for item in range(count)
            ],
        )


def sdk_client(simulator: StripeSimulator) -> Any:
    stripe = pytest.importorskip("stripe")
    return stripe.StripeClient(
        TEST_KEY, base_addresses={"api": simulator.url}, max_network_retries=0
    )


# -- wire format ----------------------------------------------------------------------------------


def test_query_encoding_equals_the_sdks_recorded_request_lines() -> None:
    assert [
        f"GET /v1/subscriptions?{urlencode(subscriptions_params())}",
        f"GET /v1/subscriptions?{urlencode(subscriptions_params(starting_after='sub_1'))}",
    ] == SUBSCRIPTION_LINES
    assert [
        f"GET /v1/subscription_items?{urlencode(subscription_items_params('sub_1'))}"
    ] == ITEM_LINES
    assert [f"GET {price_target('price_1', expand_tiers=True)}"] == PRICE_LINES
    assert price_target("price_1") == "/v1/prices/price_1"


def test_client_requests_are_the_sdks_request_lines(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_many(simulator, subscriptions=101, items=12)
    stripe_client.subscriptions()
    stripe_client.get_price("price_000", expand_tiers=True)
    # sub_100 .. sub_001 fill the first page; sub_000 (12 items) is on the second.
    assert list(simulator.stats.targets) == [
        SUBSCRIPTION_LINES[0],
        SUBSCRIPTION_LINES[1].replace("sub_1", "sub_001"),
        ITEM_LINES[0].replace("sub_1", "sub_000"),
        PRICE_LINES[0].replace("price_1", "price_000"),
    ]


# -- subscriptions --------------------------------------------------------------------------------


def test_subscriptions_are_every_status_each_with_its_items(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    subscriptions = stripe_client.subscriptions()
    assert [(s.id, s.customer, s.status) for s in subscriptions] == [
        ("sub_0005", "cus_A", "past_due"),
        ("sub_0004", "cus_D", "incomplete_expired"),
        ("sub_0002", "cus_B", "trialing"),
        ("sub_0001", "cus_A", "active"),
        ("sub_0003", "cus_C", "canceled"),
    ]
    first = subscriptions[3]
    assert first == Subscription(
        id="sub_0001",
        customer="cus_A",
        status="active",
        created=1_759_276_800,
        items=first.items,
    )
    assert [(item.id, item.subscription, item.price["id"]) for item in first.items] == [
        ("si_0001", "sub_0001", "price_api_calls"),
        ("si_0002", "sub_0001", "price_seats"),
    ]
    assert (first.items[0].current_period_start, first.items[0].current_period_end) == (
        1_761_955_200,
        1_764_547_200,
    )


def test_an_items_price_is_stripes_price_object_with_exact_types(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    [subscription] = [s for s in stripe_client.subscriptions() if s.id == "sub_0001"]
    price = subscription.items[0].price
    assert price["object"] == "price"
    assert price["unit_amount_decimal"] == "0.25"
    assert price["transform_quantity"] == {"divide_by": 1000, "round": "up"}
    assert price["recurring"]["meter"] == "mtr_api_calls"
    assert price["recurring"]["usage_type"] == "metered"
    assert "tiers" not in price


def test_items_beyond_the_inline_ones_are_paged_in(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_many(simulator, subscriptions=1, items=105)
    [subscription] = stripe_client.subscriptions()
    assert [item.id for item in subscription.items] == [f"si_000_{i:03}" for i in range(105)]
    assert simulator.stats.requests_to("subscription_items_list") == 2
    assert stripe_client.requests_made == 3


def test_subscriptions_page_past_100(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_many(simulator, subscriptions=230)
    subscriptions = stripe_client.subscriptions()
    assert len(subscriptions) == len({s.id for s in subscriptions}) == 230
    assert simulator.stats.requests_to("subscriptions_list") == 3
    assert simulator.stats.requests_to("subscription_items_list") == 0


def test_subscriptions_pickle_for_other_workers(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    subscriptions = stripe_client.subscriptions()
    assert pickle.loads(pickle.dumps(subscriptions)) == subscriptions  # noqa: S301


def test_no_subscriptions_is_an_empty_list(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    assert stripe_client.subscriptions() == []


def test_a_failed_subscriptions_page_is_retried(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    billing.faults.script("500", "reset", "malformed", endpoint="subscriptions_list")
    assert len(stripe_client.subscriptions()) == 5
    assert stripe_client.requests_made == 4


def test_a_failed_items_page_is_retried(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_many(simulator, subscriptions=1, items=12)
    simulator.faults.script(Fault("429"), endpoint="subscription_items_list")
    [subscription] = stripe_client.subscriptions()
    assert len(subscription.items) == 12
    assert simulator.stats.requests_to("subscription_items_list") == 2


def test_should_retry_false_is_not_retried(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    billing.faults.script(Fault("503", should_retry=False), endpoint="subscriptions_list")
    with pytest.raises(StripeAPIError) as caught:
        stripe_client.subscriptions()
    assert caught.value.status == 503
    assert stripe_client.requests_made == 1


def test_every_request_takes_a_slot_of_the_shared_rate_limit(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    class CountingLimiter(SlidingWindowRateLimiter):
        acquired = 0

        def acquire(self) -> None:
            CountingLimiter.acquired += 1
            super().acquire()

    seed_many(simulator, subscriptions=101, items=12)
    simulator.faults.script("500", endpoint="price_get")
    client = stripe_client_factory(rate_limiter=CountingLimiter(1000.0))
    client.subscriptions()
    client.get_price("price_003", expand_tiers=True)
    assert CountingLimiter.acquired == client.requests_made == 5


def test_a_body_that_is_not_a_subscription_list_is_malformed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='{"object": "list", "data": [{"id": "sub_1"}]}')

    client = StripeClient(
        api_key=TEST_KEY,
        api_base="http://stripe.test",
        transport=httpx.MockTransport(handler),
        rate_limiter=SlidingWindowRateLimiter(1000.0),
        max_attempts=2,
        backoff_base=0.001,
        backoff_cap=0.002,
    )
    with client, pytest.raises(StripeConnectionError, match="malformed"):
        client.subscriptions()


# -- prices ---------------------------------------------------------------------------------------


def test_get_price_without_tiers(billing: StripeSimulator, stripe_client: StripeClient) -> None:
    price = stripe_client.get_price("price_storage")
    assert (price["id"], price["billing_scheme"], price["tiers_mode"]) == (
        "price_storage",
        "tiered",
        "graduated",
    )
    assert "tiers" not in price
    assert billing.stats.targets[-1] == "GET /v1/prices/price_storage"


def test_get_price_with_tiers(billing: StripeSimulator, stripe_client: StripeClient) -> None:
    price = stripe_client.get_price("price_storage", expand_tiers=True)
    assert [(tier["up_to"], tier["unit_amount_decimal"]) for tier in price["tiers"]] == [
        (100, "50"),
        (None, "30"),
    ]
    assert price["currency"] == "eur"


def test_json_numbers_of_a_price_are_exact() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='{"id": "price_1", "object": "price", "x": 0.1}')

    with StripeClient(
        api_key=TEST_KEY,
        api_base="http://stripe.test",
        transport=httpx.MockTransport(handler),
        rate_limiter=SlidingWindowRateLimiter(1000.0),
    ) as client:
        assert client.get_price("price_1")["x"] == Decimal("0.1")


def test_an_unknown_price_is_not_found_and_not_retried(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    with pytest.raises(NotFoundError) as caught:
        stripe_client.get_price("price_nope")
    assert caught.value.code == "resource_missing"
    assert stripe_client.requests_made == 1


def test_a_price_id_is_escaped_in_the_path(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    with pytest.raises(NotFoundError):
        stripe_client.get_price("price/../x")
    assert billing.stats.targets[-1] == "GET /v1/prices/price%2F..%2Fx"


# -- the official SDK, unchanged, against the simulator ------------------------------------------


def test_the_sdk_pages_subscriptions_and_items(simulator: StripeSimulator) -> None:
    seed_many(simulator, subscriptions=101, items=12)
    sdk = sdk_client(simulator)
    listed = sdk.v1.subscriptions.list(params={"status": "all", "limit": 100})
    subscriptions = list(listed.auto_paging_iter())
    assert [s.id for s in subscriptions] == [f"sub_{i:03}" for i in reversed(range(101))]
    assert subscriptions[-1]["items"]["has_more"] is True
    items = sdk.v1.subscription_items.list(params={"subscription": "sub_000", "limit": 100})
    assert [item.id for item in items.auto_paging_iter()] == [f"si_000_{i:03}" for i in range(12)]
    assert list(simulator.stats.targets) == [
        SUBSCRIPTION_LINES[0],
        SUBSCRIPTION_LINES[1].replace("sub_1", "sub_001"),
        ITEM_LINES[0].replace("sub_1", "sub_000"),
    ]


def test_the_sdk_and_our_client_read_the_same_subscriptions(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    sdk = sdk_client(billing)
    from_sdk = [
        (s.id, s.customer, s.status, [item.id for item in s["items"].data])
        for s in sdk.v1.subscriptions.list(params={"status": "all"}).auto_paging_iter()
    ]
    ours = [
        (s.id, s.customer, s.status, [item.id for item in s.items])
        for s in stripe_client.subscriptions()
    ]
    assert ours == from_sdk


def test_the_sdk_retrieves_prices_with_and_without_tiers(billing: StripeSimulator) -> None:
    sdk = sdk_client(billing)
    plain = sdk.v1.prices.retrieve("price_storage")
    assert plain.tiers_mode == "graduated"
    assert "tiers" not in plain
    expanded = sdk.v1.prices.retrieve("price_storage", params={"expand": ["tiers"]})
    assert [tier.up_to for tier in expanded.tiers] == [100, None]
    assert expanded.tiers[1].flat_amount_decimal == Decimal(1000)  # the SDK reads it exactly
    assert billing.stats.targets[-1] == PRICE_LINES[0].replace("price_1", "price_storage")
    per_unit = sdk.v1.prices.retrieve("price_api_calls")
    assert per_unit.unit_amount_decimal == Decimal("0.25")
    assert per_unit.recurring.meter == "mtr_api_calls"


def test_the_sdk_lists_prices_by_meter(billing: StripeSimulator) -> None:
    sdk = sdk_client(billing)
    prices = sdk.v1.prices.list(params={"recurring": {"meter": "mtr_storage_gb"}})
    assert [price.id for price in prices.auto_paging_iter()] == [
        "price_storage_volume",
        "price_storage",
    ]


def test_the_sdk_retrieves_a_subscription_and_gets_stripes_404(billing: StripeSimulator) -> None:
    stripe = pytest.importorskip("stripe")
    sdk = sdk_client(billing)
    assert sdk.v1.subscriptions.retrieve("sub_0002").status == "trialing"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        sdk.v1.prices.retrieve("price_nope")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


def test_the_sdks_adjustment_cancels_the_event(billing: StripeSimulator) -> None:
    sdk = sdk_client(billing)
    adjustment = sdk.v1.billing.meter_event_adjustments.create(
        params={"event_name": "api_call", "type": "cancel", "cancel": {"identifier": "evt_0001"}}
    )
    assert (adjustment.status, adjustment.cancel.identifier) == ("complete", "evt_0001")
    assert billing.stats.targets[-1] == ADJUSTMENT["requestline"].removesuffix(" HTTP/1.1")
    summaries = sdk.v1.billing.meters.event_summaries.list(
        "mtr_api_calls",
        params={"customer": "cus_A", "start_time": NOV_1, "end_time": NOV_1 + 86_400},
    )
    assert [Decimal(str(s.aggregated_value)) for s in summaries.data] == [Decimal(7)]


def test_the_sdks_recorded_adjustment_body_is_answered(
    billing: StripeSimulator, stripe_client: StripeClient
) -> None:
    billing.add_event("api_call", "cus_A", NOV_1 + 60, "1", identifier="evt_1")
    headers = {
        name: value
        for name, value in ADJUSTMENT["headers"]
        if name not in ("Content-Length", "Authorization")
    }
    response = httpx.post(
        f"{billing.url}/v1/billing/meter_event_adjustments",
        headers={**headers, "Authorization": f"Bearer {TEST_KEY}"},
        content=ADJUSTMENT["body"],
    )
    assert response.status_code == 200
    assert response.json()["cancel"] == {"identifier": "evt_1"}
