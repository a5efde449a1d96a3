"""The Stripe simulator's billing side, over a real socket: subscriptions, subscription items,
prices and meter event adjustments, their filters, pagination, errors, knobs and data file.

Every answer is checked against Stripe's schemas by `stripe_http` (tests/fixtures/stripe.py).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import Fault, SimulatorData, SimulatorDataError, StripeSimulator
from simulator.cli import load_data_file
from tests.fixtures.stripe import (
    BILLING_DATA,
    BILLING_FIXTURES_FILE,
    DAY,
    StripeHttp,
    StripeSchemas,
    body,
    stripe_openapi,
)

NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z, where BILLING_DATA's events are
FIXTURES = json.loads(BILLING_FIXTURES_FILE.read_text(encoding="utf-8"))["resources"]
# Every status but `canceled` (the default filter), newest created first.
NOT_CANCELED = ["sub_0005", "sub_0004", "sub_0002", "sub_0001"]


def ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in body(response)["data"]]


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = body(response)["error"]
    return error


def add_many_items(simulator: StripeSimulator, count: int, subscription: str = "sub_many") -> None:
    simulator.add_meter("mtr_many", event_name="many")
    for index in range(count):
        simulator.add_price(
            id=f"price_{index:03}", currency="usd", meter="mtr_many", unit_amount_decimal="1"
        )
    simulator.add_subscription(
        id=subscription,
        customer="cus_M",
        created=NOV_1,
        items=[{"id": f"si_{index:03}", "price": f"price_{index:03}"} for index in range(count)],
    )


def schema_properties(name: str) -> set[str]:
    properties = stripe_openapi()["components"]["schemas"][name]["properties"]
    return set(properties)


# -- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "schema", "fetch"),
    [
        ("subscription", "subscription", lambda http: body(http.subscription("sub_0001"))),
        ("price", "price", lambda http: body(http.price("price_api_calls"))),
        (
            "subscription_item",
            "subscription_item",
            lambda http: body(http.subscription("sub_0001"))["items"]["data"][1],
        ),
    ],
)
def test_objects_carry_every_field_of_the_stripe_mock_fixture_that_the_schema_defines(
    billing: StripeSimulator, stripe_http: StripeHttp, resource: str, schema: str, fetch: Any
) -> None:
    ours = fetch(stripe_http)
    expected = set(FIXTURES[resource]) & schema_properties(schema)
    assert expected - set(ours) == set()
    assert set(ours) <= schema_properties(schema)


def test_a_metered_item_leaves_quantity_out_and_a_licensed_one_sends_it(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    metered, licensed = body(stripe_http.subscription("sub_0001"))["items"]["data"]
    assert "quantity" not in metered
    assert licensed["quantity"] == 3
    assert licensed["price"]["recurring"] == {
        "interval": "month",
        "interval_count": 1,
        "meter": None,
        "usage_type": "licensed",
    }


def test_the_schemas_refuse_a_null_quantity_and_fields_stripe_lacks(
    billing: StripeSimulator, stripe_http: StripeHttp, stripe_schemas: StripeSchemas
) -> None:
    item = body(stripe_http.subscription("sub_0001"))["items"]["data"][0]
    assert stripe_schemas.errors("subscription_item", item) == []
    assert stripe_schemas.errors("subscription_item", {**item, "quantity": None}) != []
    assert stripe_schemas.errors("subscription_item", {**item, "plan": {}}) != []


def test_a_metered_price_is_recurring_monthly_on_its_meter(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    price = body(stripe_http.price("price_api_calls"))
    assert price["recurring"] == {
        "interval": "month",
        "interval_count": 1,
        "meter": "mtr_api_calls",
        "usage_type": "metered",
    }
    assert (price["billing_scheme"], price["currency"], price["type"]) == (
        "per_unit",
        "usd",
        "recurring",
    )
    assert (price["unit_amount_decimal"], price["unit_amount"]) == ("0.25", None)
    assert price["transform_quantity"] == {"divide_by": 1000, "round": "up"}


def test_amounts_are_decimal_strings_with_the_integer_only_when_whole(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.price("price_seats")
    assert '"unit_amount":2000,"unit_amount_decimal":"2000"' in response.text
    assert (
        '"unit_amount":null,"unit_amount_decimal":"0.25"'
        in stripe_http.price("price_api_calls").text
    )


def test_a_subscription_has_stripes_shape(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    subscription = body(stripe_http.subscription("sub_0001"))
    assert subscription["object"] == "subscription"
    assert (subscription["customer"], subscription["status"], subscription["created"]) == (
        "cus_A",
        "active",
        1_759_276_800,
    )
    assert subscription["items"]["object"] == "list"
    assert subscription["items"]["url"] == "/v1/subscription_items?subscription=sub_0001"
    assert subscription["items"]["has_more"] is False
    assert [item["id"] for item in subscription["items"]["data"]] == ["si_0001", "si_0002"]
    assert subscription["currency"] == "usd"
    assert subscription["livemode"] is False


def test_a_canceled_subscription_says_when_it_ended(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    subscription = body(stripe_http.subscription("sub_0003"))
    assert (subscription["canceled_at"], subscription["ended_at"]) == (1_756_684_800,) * 2
    assert subscription["cancellation_details"]["reason"] == "cancellation_requested"


def test_item_periods_default_to_one_calendar_month_from_creation(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    [item] = body(stripe_http.subscription("sub_0002"))["items"]["data"]
    assert item["current_period_start"] == 1_759_363_200  # 2025-10-02
    assert item["current_period_end"] == 1_762_041_600  # 2025-11-02


def test_adjustment_has_stripes_shape(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.post_adjustment(
        {"event_name": "api_call", "type": "cancel", "cancel[identifier]": "evt_0002"}
    )
    assert response.status_code == 200
    assert body(response) == {
        **FIXTURES["billing.meter_event_adjustment"],
        "cancel": {"identifier": "evt_0002"},
        "event_name": "api_call",
    }


# -- subscriptions: filters and pages ------------------------------------------------------------


def test_subscriptions_by_default_are_every_status_but_canceled_newest_first(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.subscriptions()
    assert ids(response) == NOT_CANCELED
    assert body(response)["url"] == "/v1/subscriptions"


def test_status_all_lists_every_subscription(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    assert ids(stripe_http.subscriptions("status=all")) == [
        "sub_0005",
        "sub_0004",
        "sub_0002",
        "sub_0001",
        "sub_0003",
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["sub_0001"]),
        ("trialing", ["sub_0002"]),
        ("canceled", ["sub_0003"]),
        ("incomplete_expired", ["sub_0004"]),
        ("past_due", ["sub_0005"]),
        ("unpaid", []),
        ("paused", []),
        ("incomplete", []),
        ("ended", ["sub_0004", "sub_0003"]),
    ],
)
def test_status_filter_keeps_that_status(
    billing: StripeSimulator, stripe_http: StripeHttp, status: str, expected: list[str]
) -> None:
    assert ids(stripe_http.subscriptions(f"status={status}")) == expected


def test_customer_and_price_filters(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    assert ids(stripe_http.subscriptions("customer=cus_A")) == ["sub_0005", "sub_0001"]
    assert ids(stripe_http.subscriptions("price=price_api_calls")) == ["sub_0004", "sub_0001"]
    assert ids(stripe_http.subscriptions("price=price_seats&customer=cus_B")) == []


def test_created_filter_takes_stripes_range_operators(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    query = "status=all&created%5Bgte%5D=1759363200&created%5Blt%5D=1759536000"
    assert ids(stripe_http.subscriptions(query)) == ["sub_0004", "sub_0002"]
    assert ids(stripe_http.subscriptions("created=1759276800")) == ["sub_0001"]


def test_subscriptions_page_with_starting_after_and_ending_before(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    first = stripe_http.subscriptions("status=all&limit=2")
    assert (ids(first), body(first)["has_more"]) == (["sub_0005", "sub_0004"], True)
    second = stripe_http.subscriptions("status=all&limit=2&starting_after=sub_0004")
    assert (ids(second), body(second)["has_more"]) == (["sub_0002", "sub_0001"], True)
    last = stripe_http.subscriptions("status=all&limit=2&starting_after=sub_0001")
    assert (ids(last), body(last)["has_more"]) == (["sub_0003"], False)
    before = stripe_http.subscriptions("status=all&limit=2&ending_before=sub_0001")
    assert (ids(before), body(before)["has_more"]) == (["sub_0004", "sub_0002"], True)


def test_default_page_is_10_and_at_most_100(
    simulator: StripeSimulator, stripe_http: StripeHttp
) -> None:
    simulator.add_meter("mtr_x", event_name="x")
    simulator.add_price(id="price_x", currency="usd", meter="mtr_x", unit_amount_decimal="1")
    for index in range(101):
        simulator.add_subscription(
            id=f"sub_{index:03}",
            customer="cus_A",
            created=NOV_1 + index,
            items=[{"id": f"si_{index:03}", "price": "price_x"}],
        )
    assert len(ids(stripe_http.subscriptions())) == 10
    full = stripe_http.subscriptions("limit=100")
    assert (len(ids(full)), body(full)["has_more"]) == (100, True)


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_limit_outside_1_to_100_is_a_400(
    billing: StripeSimulator, stripe_http: StripeHttp, limit: str
) -> None:
    for response in (
        stripe_http.subscriptions(f"limit={limit}"),
        stripe_http.prices(f"limit={limit}"),
        stripe_http.subscription_items(f"subscription=sub_0001&limit={limit}"),
    ):
        assert response.status_code == 400
        assert error_of(response)["param"] == "limit"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("status=gone", "status"),
        ("colour=red", "colour"),
        ("customer%5Bid%5D=cus_A", "customer[id]"),
        ("starting_after=sub_nope", "starting_after"),
        ("test_clock=clock_1", "test_clock"),
        ("created%5Bafter%5D=1", "created[after]"),
        ("created=soon", "created"),
    ],
)
def test_bad_subscription_list_parameters_are_a_400(
    billing: StripeSimulator, stripe_http: StripeHttp, query: str, param: str
) -> None:
    response = stripe_http.subscriptions(query)
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert error_of(response)["param"] == param


def test_unknown_subscription_is_a_404_with_stripes_error(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.subscription("sub_nope")
    assert response.status_code == 404
    assert body(response) == {
        "error": {
            "code": "resource_missing",
            "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
            "message": "No such subscription: 'sub_nope'",
            "param": "id",
            "type": "invalid_request_error",
        }
    }


# -- subscription items ----------------------------------------------------------------------------


def test_a_subscription_inlines_ten_items_and_says_has_more(
    simulator: StripeSimulator, stripe_http: StripeHttp
) -> None:
    add_many_items(simulator, 12)
    items = body(stripe_http.subscription("sub_many"))["items"]
    assert ([item["id"] for item in items["data"]], items["has_more"]) == (
        [f"si_{index:03}" for index in range(10)],
        True,
    )


def test_subscription_items_list_pages_every_item(
    simulator: StripeSimulator, stripe_http: StripeHttp
) -> None:
    add_many_items(simulator, 12)
    first = stripe_http.subscription_items("subscription=sub_many&limit=5")
    assert (ids(first), body(first)["has_more"]) == (
        [f"si_{index:03}" for index in range(5)],
        True,
    )
    assert body(first)["url"] == "/v1/subscription_items"
    rest = stripe_http.subscription_items("subscription=sub_many&limit=100&starting_after=si_004")
    assert (ids(rest), body(rest)["has_more"]) == (
        [f"si_{index:03}" for index in range(5, 12)],
        False,
    )


def test_subscription_items_need_a_known_subscription(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    missing = stripe_http.subscription_items()
    assert missing.status_code == 400
    assert error_of(missing)["code"] == "parameter_missing"
    unknown = stripe_http.subscription_items("subscription=sub_nope")
    assert unknown.status_code == 404
    assert error_of(unknown)["param"] == "subscription"


# -- prices --------------------------------------------------------------------------------------


def test_prices_list_is_the_active_prices_newest_first(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.prices()
    assert ids(response) == [
        "price_seats",
        "price_storage_volume",
        "price_storage",
        "price_api_calls",
    ]
    assert ids(stripe_http.prices("active=false")) == ["price_api_calls_2024"]


def test_prices_filter_by_currency_and_meter(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    assert ids(stripe_http.prices("currency=eur")) == ["price_storage"]
    assert ids(stripe_http.prices("recurring%5Bmeter%5D=mtr_storage_gb")) == [
        "price_storage_volume",
        "price_storage",
    ]
    assert ids(stripe_http.prices("recurring%5Busage_type%5D=licensed")) == ["price_seats"]
    assert ids(stripe_http.prices("lookup_keys%5B0%5D=seats")) == ["price_seats"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("active=yes", "active"),
        ("recurring%5Bcolour%5D=red", "recurring[colour]"),
        ("recurring%5Busage_type%5D=sometimes", "recurring[usage_type]"),
        ("type=forever", "type"),
    ],
)
def test_bad_price_list_parameters_are_a_400(
    billing: StripeSimulator, stripe_http: StripeHttp, query: str, param: str
) -> None:
    response = stripe_http.prices(query)
    assert response.status_code == 400
    assert error_of(response)["param"] == param


def test_tiers_appear_only_when_expanded(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    plain = body(stripe_http.price("price_storage"))
    assert "tiers" not in plain
    assert plain["tiers_mode"] == "graduated"
    expanded = body(stripe_http.price("price_storage", "expand%5B%5D=tiers"))
    assert expanded["tiers"] == [
        {
            "flat_amount": 0,
            "flat_amount_decimal": "0",
            "unit_amount": 50,
            "unit_amount_decimal": "50",
            "up_to": 100,
        },
        {
            "flat_amount": 1000,
            "flat_amount_decimal": "1000",
            "unit_amount": 30,
            "unit_amount_decimal": "30",
            "up_to": None,
        },
    ]
    assert {key: value for key, value in expanded.items() if key != "tiers"} == plain


def test_tiers_expand_through_lists_and_subscriptions(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    listed = body(stripe_http.prices("currency=eur&expand%5B%5D=data.tiers"))["data"]
    assert len(listed[0]["tiers"]) == 2
    subscription = body(stripe_http.subscription("sub_0002", "expand%5B%5D=items.data.price.tiers"))
    assert len(subscription["items"]["data"][0]["price"]["tiers"]) == 2
    subscriptions = body(
        stripe_http.subscriptions("customer=cus_B&expand%5B%5D=data.items.data.price.tiers")
    )
    assert len(subscriptions["data"][0]["items"]["data"][0]["price"]["tiers"]) == 2
    items = body(
        stripe_http.subscription_items("subscription=sub_0002&expand%5B0%5D=data.price.tiers")
    )
    assert len(items["data"][0]["price"]["tiers"]) == 2
    assert "tiers" not in body(stripe_http.subscription("sub_0002"))["items"]["data"][0]["price"]


def test_a_volume_tier_may_be_flat_only(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    tiers = body(stripe_http.price("price_storage_volume", "expand%5B%5D=tiers"))["tiers"]
    assert tiers[1] == {
        "flat_amount": 400,
        "flat_amount_decimal": "400",
        "unit_amount": None,
        "unit_amount_decimal": None,
        "up_to": None,
    }
    assert (tiers[0]["unit_amount"], tiers[0]["unit_amount_decimal"]) == (None, "0.5")


def test_unknown_price_is_a_404(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.price("price_nope")
    assert response.status_code == 404
    assert error_of(response)["message"] == "No such price: 'price_nope'"
    assert error_of(response)["code"] == "resource_missing"


# -- adjustments ---------------------------------------------------------------------------------


def api_calls_on_nov_1(http: StripeHttp, customer: str = "cus_A") -> list[Decimal]:
    query = f"customer={customer}&start_time={NOV_1}&end_time={NOV_1 + DAY}"
    response = http.summaries("mtr_api_calls", query + "&value_grouping_window=day")
    return [item["aggregated_value"] for item in body(response)["data"]]


def test_an_adjustment_in_the_data_file_cancels_its_event(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    assert api_calls_on_nov_1(stripe_http) == [Decimal("19.5")]  # 12.5 + 7; 100 is cancelled


def test_a_posted_adjustment_cancels_its_event_at_once(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    stripe_http.post_adjustment(
        {"event_name": "api_call", "type": "cancel", "cancel[identifier]": "evt_0001"}
    )
    assert api_calls_on_nov_1(stripe_http) == [Decimal("7")]
    assert billing.stats.requests_to("meter_event_adjustments_post") == 1


def test_a_cancelled_identifier_cannot_be_sent_again(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.post_event(
        {
            "event_name": "api_call",
            "payload[stripe_customer_id]": "cus_A",
            "payload[value]": "5",
            "timestamp": str(NOV_1 + 600),
            "identifier": "evt_0003",
        }
    )
    assert response.status_code == 200
    assert api_calls_on_nov_1(stripe_http) == [Decimal("19.5")]


def test_cancelling_twice_is_no_error(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    form = {"event_name": "api_call", "type": "cancel", "cancel[identifier]": "evt_0003"}
    assert stripe_http.post_adjustment(form).status_code == 200
    assert api_calls_on_nov_1(stripe_http) == [Decimal("19.5")]


@pytest.mark.parametrize(
    ("form", "param"),
    [
        ({"type": "cancel", "cancel[identifier]": "evt_0001"}, "event_name"),
        ({"event_name": "api_call", "cancel[identifier]": "evt_0001"}, "type"),
        ({"event_name": "api_call", "type": "undo", "cancel[identifier]": "evt_0001"}, "type"),
        ({"event_name": "api_call", "type": "cancel"}, "cancel[identifier]"),
        ({"event_name": "api_call", "type": "cancel", "cancel[id]": "x"}, "cancel[id]"),
        ({"event_name": "api_call", "type": "cancel", "cancel[identifier]": "evt_x"}, None),
        ({"event_name": "login", "type": "cancel", "cancel[identifier]": "evt_0001"}, None),
    ],
)
def test_bad_adjustments_are_a_400_and_cancel_nothing(
    billing: StripeSimulator, stripe_http: StripeHttp, form: dict[str, str], param: str | None
) -> None:
    response = stripe_http.post_adjustment(form)
    assert response.status_code == 400
    assert error_of(response).get("param") == (param or "cancel[identifier]")
    assert api_calls_on_nov_1(stripe_http) == [Decimal("19.5")]


def test_the_sdks_raw_adjustment_body_is_understood(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.post_adjustment(
        "event_name=api_call&type=cancel&cancel[identifier]=evt_0002"
    )
    assert body(response)["cancel"] == {"identifier": "evt_0002"}
    assert api_calls_on_nov_1(stripe_http) == [Decimal("12.5")]


# -- knobs ---------------------------------------------------------------------------------------


def test_rate_limit_applies_to_the_billing_side(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    billing.rate_limit = 2
    answers = [
        stripe_http.subscriptions().status_code,
        stripe_http.price("price_api_calls").status_code,
        stripe_http.subscription_items("subscription=sub_0001").status_code,
    ]
    assert answers == [200, 200, 429]
    assert billing.stats.rate_limited == 1


def test_latency_applies_to_the_billing_side(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    billing.latency = 0.2
    started = time.monotonic()
    stripe_http.prices()
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("endpoint", "call"),
    [
        ("subscriptions_list", lambda http: http.subscriptions()),
        ("subscription_get", lambda http: http.subscription("sub_0001")),
        ("subscription_items_list", lambda http: http.subscription_items("subscription=sub_0001")),
        ("prices_list", lambda http: http.prices()),
        ("price_get", lambda http: http.price("price_storage")),
    ],
)
def test_a_scripted_fault_hits_the_endpoint_it_names(
    billing: StripeSimulator, stripe_http: StripeHttp, endpoint: str, call: Any
) -> None:
    billing.faults.script(Fault("503", should_retry=True), endpoint=endpoint)
    failed = call(stripe_http)
    assert (failed.status_code, failed.headers["stripe-should-retry"]) == (503, "true")
    assert call(stripe_http).status_code == 200
    assert billing.stats.faults == 1


def test_scripted_faults_keep_to_event_summaries_unless_told(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    billing.faults.script("500")
    assert stripe_http.subscriptions().status_code == 200
    assert stripe_http.price("price_seats").status_code == 200
    assert billing.faults.pending == 1
    query = f"customer=cus_A&start_time={NOV_1}&end_time={NOV_1 + DAY}"
    assert stripe_http.summaries("mtr_api_calls", query).status_code == 500


def test_an_any_endpoint_fault_hits_the_next_billing_request(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    billing.faults.script(Fault("502", endpoint="any"))
    assert stripe_http.prices().status_code == 502


def test_random_faults_hit_the_billing_side_unless_left_out(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    billing.faults.set_random(1.0, ["500"])
    assert stripe_http.price("price_seats").status_code == 500
    billing.faults.set_random(1.0, ["500"], endpoints=["event_summaries"])
    assert stripe_http.price("price_seats").status_code == 200


def test_a_malformed_fault_on_the_billing_side_is_broken_json(billing: StripeSimulator) -> None:
    billing.faults.script("malformed", endpoint="subscriptions_list")
    response = httpx.get(
        f"{billing.url}/v1/subscriptions", headers={"Authorization": "Bearer sk_test_x"}
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_the_billing_side_needs_a_key(billing: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.request("GET", "/v1/prices", headers={})
    assert response.status_code == 401


def test_unknown_billing_routes_are_a_404(
    billing: StripeSimulator, stripe_http: StripeHttp
) -> None:
    for target in ("/v1/prices/price_api_calls/extra", "/v1/subscription_items/si_0001"):
        response = stripe_http.request("GET", target)
        assert response.status_code == 404
        assert error_of(response)["message"].startswith("Unrecognized request URL")
    assert stripe_http.request("POST", "/v1/prices").status_code == 404


# -- the data file --------------------------------------------------------------------------------


def billing_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(BILLING_DATA.read_text(encoding="utf-8"))
    document.update(changes)
    return document


def with_price(index: int, **changes: Any) -> dict[str, Any]:
    document = billing_document()
    document["prices"][index] = {**document["prices"][index], **changes}
    return document


def rejected(document: object) -> str:
    with pytest.raises(SimulatorDataError) as caught:
        SimulatorData.from_json(json.dumps(document))
    return str(caught.value)


def test_the_billing_data_file_loads(billing: StripeSimulator) -> None:
    assert len(billing.data.subscriptions()) == 5
    assert len(billing.data.prices()) == 5


def test_a_subscription_naming_an_unknown_price_is_rejected() -> None:
    document = billing_document()
    document["subscriptions"][1]["items"][0]["price"] = "price_nope"
    assert rejected(document) == (
        "subscriptions[1] (sub_0002): items[0] (si_0003) names an unknown price 'price_nope'"
    )


def test_a_tiered_price_without_tiers_is_rejected() -> None:
    message = rejected(with_price(1, tiers=[]))
    assert message == "prices[1] (price_storage) is tiered but has no tiers"
    document = billing_document()
    del document["prices"][1]["tiers"]
    assert rejected(document) == message


@pytest.mark.parametrize("value", ["abc", "-1", "NaN", "1.0000000000001", True, [1]])
def test_a_malformed_amount_is_rejected(value: object) -> None:
    message = rejected(with_price(0, unit_amount_decimal=value))
    assert message.startswith("prices[0] (price_api_calls): 'unit_amount_decimal' ")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"meter": "mtr_nope"}, "unknown meter 'mtr_nope'"),
        ({"currency": "USD"}, "'currency'"),
        ({"billing_scheme": "flat"}, "'billing_scheme'"),
        ({"transform_quantity": {"divide_by": 0, "round": "up"}}, "'divide_by'"),
        ({"transform_quantity": {"divide_by": 10, "round": "sideways"}}, "'round'"),
        ({"colour": "red"}, "unknown keys: colour"),
        ({"unit_amount_decimal": None}, "no unit_amount_decimal"),
        ({"tiers_mode": "graduated"}, "cannot have tiers"),
    ],
)
def test_other_bad_prices_are_rejected_naming_the_entry(change: dict[str, Any], names: str) -> None:
    message = rejected(with_price(0, **change))
    assert message.startswith("prices[0] (price_api_calls)")
    assert names in message


@pytest.mark.parametrize(
    ("tiers", "names"),
    [
        ([{"up_to": 10, "unit_amount_decimal": "1"}], "last tier's 'up_to' must be null"),
        ([{"up_to": None, "unit_amount_decimal": "1"}] * 2, "above the previous tier's"),
        ([{"up_to": None}], "needs a unit_amount_decimal or a flat_amount_decimal"),
        ([{"unit_amount_decimal": "1"}], "'up_to' is required"),
        ([{"up_to": None, "flat_amount_decimal": "x"}], "'flat_amount_decimal'"),
    ],
)
def test_bad_tiers_are_rejected_naming_the_tier(tiers: list[Any], names: str) -> None:
    message = rejected(with_price(1, tiers=tiers))
    assert message.startswith("prices[1] (price_storage): tiers[")
    assert names in message


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"status": "sleeping"}, "'status'"),
        ({"items": []}, "non-empty 'items'"),
        ({"created": "yesterday"}, "'created'"),
        ({"items": [{"id": "si_0001", "price": "price_storage"}]}, "si_0001"),
        ({"items": [{"id": "si_9", "price": "price_api_calls", "quantity": 2}]}, "metered"),
        ({"items": [{"id": "si_9", "price": "price_storage", "colour": 1}]}, "colour"),
        (
            {
                "items": [
                    {"id": "si_9", "price": "price_storage"},
                    {"id": "si_8", "price": "price_seats"},
                ]
            },
            "currencies",
        ),
    ],
)
def test_bad_subscriptions_are_rejected_naming_the_entry(
    change: dict[str, Any], names: str
) -> None:
    document = billing_document()
    document["subscriptions"][1] = {**document["subscriptions"][1], **change}
    message = rejected(document)
    assert "sub_0002" in message
    assert names in message


def test_an_adjustment_for_no_event_is_rejected() -> None:
    document = billing_document(adjustments=[{"event_name": "api_call", "identifier": "evt_x"}])
    assert rejected(document) == (
        "adjustments[0]: no event 'evt_x' of event name 'api_call' to cancel"
    )


@pytest.mark.parametrize("key", ["prices", "subscriptions", "adjustments"])
def test_billing_keys_must_be_arrays(key: str) -> None:
    assert rejected(billing_document(**{key: {}})) == f"{key!r} must be an array"


def test_an_unknown_top_level_key_names_the_known_ones() -> None:
    assert rejected({"plans": []}) == (
        "unknown top-level keys: plans "
        "(known: meters, events, prices, subscriptions, adjustments, invoices)"
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"plans": []}',
        '{"prices": [{"id": "price_x", "currency": "usd", "meter": "mtr_nope"}]}',
        '{"prices": [7]}',
        '{"subscriptions": [{"id": "sub_1"}]}',
        "{not json",
        "[]",
    ],
)
def test_a_bad_data_file_exits_2_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        load_data_file(path)
    assert caught.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: the data file {path} cannot be used: ")
    assert line.endswith(".")
    assert line.count(". ") == 0
    assert "Traceback" not in line


def test_a_missing_data_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_data_file(tmp_path / "nope.json")
    assert caught.value.code == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_simulate_stripe_with_a_bad_data_file_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meter_recon.cli import main

    document = billing_document()
    document["prices"][1]["tiers"] = None
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["simulate-stripe", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: the data file {path} cannot be used: "
        "prices[1] (price_storage) is tiered but has no tiers.\n"
    )
