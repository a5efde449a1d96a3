"""The Stripe simulator, over a real socket: wire format, aggregation, validation, knobs, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import (
    Fault,
    SimulatorData,
    SimulatorDataError,
    StripeSimulator,
    max_in_window,
    summary_id,
)
from tests.fixtures.stripe import (
    DATA_DIR,
    DAY,
    HOUR,
    JAN_1,
    OPENAPI_FILE,
    SDK_REQUESTS_FILE,
    TEST_KEY,
    StripeHttp,
    StripeSchemas,
    body,
)

#: The shared Stripe references, beside the repository when present (as on CI).
SHARED_STRIPE = Path(__file__).resolve().parents[2] / "shared" / "stripe"
BASIC_DATA = DATA_DIR / "simulator_basic.json"


def day_query(
    customer: str = "cus_A", start: int = JAN_1, end: int = JAN_1 + 3 * DAY, **extra: Any
) -> str:
    query = f"customer={customer}&start_time={start}&end_time={end}&value_grouping_window=day"
    return query + "".join(f"&{key}={value}" for key, value in extra.items())


def values_by_start(response: httpx.Response) -> dict[int, Decimal]:
    return {
        item["start_time"]: Decimal(item["aggregated_value"]) for item in body(response)["data"]
    }


@pytest.fixture
def basic(simulator: StripeSimulator) -> StripeSimulator:
    simulator.data = SimulatorData.load(BASIC_DATA)
    return simulator


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = body(response)["error"]
    return error


# -- reference data ----------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_STRIPE.is_dir(), reason="shared Stripe extract not present")
def test_reference_copies_equal_the_shared_stripe_extract() -> None:
    shared = {
        name: json.loads((SHARED_STRIPE / name).read_text())
        for name in (
            "openapi_components_schemas.json",
            "openapi_event_summaries_operation.json",
            "openapi_meters_operations.json",
            "stripe_python_16.1.0_recorded_requests.json",
        )
    }
    openapi = json.loads(OPENAPI_FILE.read_text())
    assert openapi["components"]["schemas"] == shared["openapi_components_schemas.json"]
    assert openapi["paths"] == {
        **shared["openapi_event_summaries_operation.json"],
        **shared["openapi_meters_operations.json"],
    }
    assert (
        json.loads(SDK_REQUESTS_FILE.read_text())
        == shared["stripe_python_16.1.0_recorded_requests.json"]
    )


# -- aggregation ---------------------------------------------------------------------------------


def test_sum_meter_adds_decimal_values_per_utc_day(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query())
    assert response.status_code == 200
    assert values_by_start(response) == {JAN_1: Decimal("12.8"), JAN_1 + DAY: Decimal("7")}


def test_count_meter_counts_events(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries("mtr_logins", day_query())
    assert values_by_start(response) == {JAN_1: Decimal(3), JAN_1 + 2 * DAY: Decimal(1)}


def test_last_meter_takes_latest_event_and_file_order_breaks_ties(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries("mtr_seats", day_query())
    assert values_by_start(response) == {JAN_1: Decimal(5)}


def test_hour_window_buckets_by_hour(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls",
        f"customer=cus_A&start_time={JAN_1}&end_time={JAN_1 + DAY}&value_grouping_window=hour",
    )
    items = body(response)["data"]
    assert [(item["start_time"], item["end_time"]) for item in items] == [
        (JAN_1 + HOUR, JAN_1 + 2 * HOUR),
        (JAN_1, JAN_1 + HOUR),
    ]
    assert [item["aggregated_value"] for item in items] == [Decimal("0.3"), Decimal("12.5")]


def test_no_window_gives_one_summary_spanning_the_range(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    start, end = JAN_1 + 60, JAN_1 + 2 * DAY
    response = stripe_http.summaries(
        "mtr_api_calls", f"customer=cus_A&start_time={start}&end_time={end}"
    )
    [summary] = body(response)["data"]
    assert (summary["start_time"], summary["end_time"]) == (start, end)
    assert summary["aggregated_value"] == Decimal("7.3")  # 12.5 at JAN_1 is before the range


def test_no_window_without_events_is_an_empty_list(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", f"customer=cus_Z&start_time={JAN_1}&end_time={JAN_1 + DAY}"
    )
    assert body(response) == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": "/v1/billing/meters/mtr_api_calls/event_summaries",
    }


def test_end_time_is_exclusive(simulator: StripeSimulator, stripe_http: StripeHttp) -> None:
    simulator.add_meter("mtr_x", event_name="x")
    simulator.add_event("x", "cus_A", JAN_1 + DAY, "4")
    response = stripe_http.summaries("mtr_x", day_query(end=JAN_1 + DAY))
    assert body(response)["data"] == []


def test_buckets_are_newest_first(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    starts = [
        item["start_time"]
        for item in body(stripe_http.summaries("mtr_logins", day_query()))["data"]
    ]
    assert starts == sorted(starts, reverse=True)


def test_summary_objects_have_stripes_shape_and_stable_ids(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    first = body(stripe_http.summaries("mtr_api_calls", day_query()))["data"]
    again = body(stripe_http.summaries("mtr_api_calls", day_query()))["data"]
    assert first == again
    assert first[-1] == {
        "id": summary_id("mtr_api_calls", "cus_A", JAN_1, JAN_1 + DAY),
        "object": "billing.meter_event_summary",
        "aggregated_value": Decimal("12.8"),
        "end_time": JAN_1 + DAY,
        "livemode": False,
        "meter": "mtr_api_calls",
        "start_time": JAN_1,
    }
    other = body(stripe_http.summaries("mtr_api_calls", day_query(customer="cus_B")))["data"]
    assert other[0]["id"] != first[-1]["id"]
    assert first[-1]["id"].startswith("mtrusg_")


def test_aggregated_value_is_written_from_the_decimal_text(
    simulator: StripeSimulator, stripe_http: StripeHttp
) -> None:
    simulator.add_meter("mtr_x", event_name="x")
    for offset in range(3):
        simulator.add_event("x", "cus_A", JAN_1 + offset, "0.1")
    simulator.add_event("x", "cus_B", JAN_1, "123456789012.123456789")
    text_a = stripe_http.summaries("mtr_x", day_query()).text
    text_b = stripe_http.summaries("mtr_x", day_query(customer="cus_B")).text
    assert '"aggregated_value":0.3,' in text_a
    assert '"aggregated_value":123456789012.123456789,' in text_b


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["customer", "start_time", "end_time"])
def test_missing_required_parameter_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp, missing: str
) -> None:
    params = {"customer": "cus_A", "start_time": str(JAN_1), "end_time": str(JAN_1 + DAY)}
    del params[missing]
    response = stripe_http.summaries(
        "mtr_api_calls", "&".join(f"{k}={v}" for k, v in params.items())
    )
    assert response.status_code == 400
    assert error_of(response) == {
        "code": "parameter_missing",
        "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
        "message": f"Missing required param: {missing}.",
        "param": missing,
        "type": "invalid_request_error",
    }


def test_empty_customer_is_a_400(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query(customer=""))
    assert response.status_code == 400
    assert error_of(response)["code"] == "parameter_invalid_empty"


def test_non_integer_start_time_is_a_400(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", f"customer=cus_A&start_time=abc&end_time={JAN_1}"
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["message"]) == ("start_time", "Invalid integer: abc")


@pytest.mark.parametrize(
    ("window", "start", "end", "param"),
    [
        (None, JAN_1 + 30, JAN_1 + DAY, "start_time"),
        (None, JAN_1, JAN_1 + DAY + 1, "end_time"),
        ("hour", JAN_1 + 60, JAN_1 + DAY, "start_time"),
        ("hour", JAN_1, JAN_1 + HOUR + 60, "end_time"),
        ("day", JAN_1 + HOUR, JAN_1 + DAY, "start_time"),
        ("day", JAN_1, JAN_1 + DAY + HOUR, "end_time"),
    ],
)
def test_misaligned_times_are_a_400(
    basic: StripeSimulator,
    stripe_http: StripeHttp,
    window: str | None,
    start: int,
    end: int,
    param: str,
) -> None:
    query = f"customer=cus_A&start_time={start}&end_time={end}"
    if window:
        query += f"&value_grouping_window={window}"
    response = stripe_http.summaries("mtr_api_calls", query)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert "aligned" in error["message"]


def test_aligned_minutes_are_accepted_without_window(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", f"customer=cus_A&start_time={JAN_1 + 60}&end_time={JAN_1 + 120}"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("end_offset", [0, -DAY])
def test_start_time_not_before_end_time_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp, end_offset: int
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", day_query(start=JAN_1 + DAY, end=JAN_1 + DAY + end_offset)
    )
    assert response.status_code == 400
    assert error_of(response)["message"] == "start_time must be before end_time."


def test_unknown_value_grouping_window_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls",
        f"customer=cus_A&start_time={JAN_1}&end_time={JAN_1 + DAY}&value_grouping_window=week",
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "value_grouping_window"


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1"])
def test_limit_outside_1_to_100_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp, limit: str
) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query(limit=limit))
    assert response.status_code == 400
    assert error_of(response)["param"] == "limit"


def test_unknown_parameter_is_a_400(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query(foo="bar"))
    assert response.status_code == 400
    error = error_of(response)
    assert (error["message"], error["param"], error["code"]) == (
        "Received unknown parameter: foo",
        "foo",
        "parameter_unknown",
    )


@pytest.mark.parametrize("expand", ["expand%5B%5D=data", "expand%5B0%5D=data", "expand=data"])
def test_expand_is_accepted(basic: StripeSimulator, stripe_http: StripeHttp, expand: str) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query() + "&" + expand)
    assert response.status_code == 200


def test_unknown_meter_is_a_404_resource_missing(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.summaries("mtr_nope", day_query())
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["type"]) == ("resource_missing", "invalid_request_error")
    assert "mtr_nope" in error["message"]


def test_unknown_route_is_a_404(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.request("GET", "/v1/billing/meters/mtr_api_calls/nope")
    assert response.status_code == 404
    assert error_of(response) == {
        "message": "Unrecognized request URL (GET: /v1/billing/meters/mtr_api_calls/nope).",
        "type": "invalid_request_error",
    }


# -- pagination ------------------------------------------------------------------------------------


@pytest.fixture
def five_days(simulator: StripeSimulator) -> StripeSimulator:
    simulator.add_meter("mtr_x", event_name="x")
    for day in range(5):
        simulator.add_event("x", "cus_A", JAN_1 + day * DAY + 5, str(day + 1))
    return simulator


def test_default_limit_is_10(simulator: StripeSimulator, stripe_http: StripeHttp) -> None:
    simulator.add_meter("mtr_x", event_name="x")
    for day in range(12):
        simulator.add_event("x", "cus_A", JAN_1 + day * DAY, "1")
    page = body(stripe_http.summaries("mtr_x", day_query(end=JAN_1 + 12 * DAY)))
    assert (len(page["data"]), page["has_more"]) == (10, True)


def test_starting_after_walks_every_page_once(
    five_days: StripeSimulator, stripe_http: StripeHttp
) -> None:
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        page = body(
            stripe_http.summaries("mtr_x", day_query(end=JAN_1 + 5 * DAY, limit=2) + cursor)
        )
        pages += 1
        seen += [item["start_time"] for item in page["data"]]
        if not page["has_more"]:
            break
        cursor = f"&starting_after={page['data'][-1]['id']}"
    assert pages == 3
    assert seen == [JAN_1 + day * DAY for day in reversed(range(5))]


def test_ending_before_returns_the_page_before_the_cursor(
    five_days: StripeSimulator, stripe_http: StripeHttp
) -> None:
    everything = body(stripe_http.summaries("mtr_x", day_query(end=JAN_1 + 5 * DAY)))["data"]
    ids = [item["id"] for item in everything]
    page = body(
        stripe_http.summaries(
            "mtr_x", day_query(end=JAN_1 + 5 * DAY, limit=2, ending_before=ids[3])
        )
    )
    assert [item["id"] for item in page["data"]] == ids[1:3]
    assert page["has_more"] is True
    first = body(
        stripe_http.summaries(
            "mtr_x", day_query(end=JAN_1 + 5 * DAY, limit=2, ending_before=ids[1])
        )
    )
    assert ([item["id"] for item in first["data"]], first["has_more"]) == (ids[:1], False)


def test_both_cursors_is_a_400(five_days: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries(
        "mtr_x", day_query(starting_after="mtrusg_a", ending_before="mtrusg_b")
    )
    assert response.status_code == 400


def test_unknown_cursor_is_a_400(five_days: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries("mtr_x", day_query(starting_after="mtrusg_nope"))
    assert response.status_code == 400
    assert error_of(response)["param"] == "starting_after"


# -- meters ----------------------------------------------------------------------------------------


def test_meters_list_newest_first_with_status_filter(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    listed = body(stripe_http.meters())
    assert [meter["id"] for meter in listed["data"]] == [
        "mtr_legacy",
        "mtr_logins",
        "mtr_seats",
        "mtr_api_calls",
    ]
    assert listed["url"] == "/v1/billing/meters"
    inactive = body(stripe_http.meters("status=inactive"))["data"]
    assert [meter["id"] for meter in inactive] == ["mtr_legacy"]
    assert inactive[0]["status_transitions"]["deactivated_at"] is not None


def test_meters_list_paginates(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    first = body(stripe_http.meters("limit=3"))
    assert (len(first["data"]), first["has_more"]) == (3, True)
    second = body(stripe_http.meters(f"limit=3&starting_after={first['data'][-1]['id']}"))
    assert ([meter["id"] for meter in second["data"]], second["has_more"]) == (
        ["mtr_api_calls"],
        False,
    )


def test_meters_list_rejects_unknown_status(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    assert stripe_http.meters("status=paused").status_code == 400


def test_meter_get_returns_the_meter(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    meter = body(stripe_http.meter("mtr_seats", "expand%5B0%5D=default_aggregation"))
    assert (meter["id"], meter["object"], meter["default_aggregation"], meter["display_name"]) == (
        "mtr_seats",
        "billing.meter",
        {"formula": "last"},
        "Seats",
    )
    assert meter["event_name"] == "seats"


def test_meter_get_unknown_is_a_404(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    assert stripe_http.meter("mtr_nope").status_code == 404


# -- authentication --------------------------------------------------------------------------------


def test_missing_authorization_is_a_401(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.summaries("mtr_api_calls", day_query(), headers={})
    assert response.status_code == 401
    assert error_of(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer pk_test_123", "Bearer", "sk_test_123", "Basic c2tfdGVzdF8xMjM6", "Bearer nope"],
)
def test_malformed_authorization_is_a_401(
    basic: StripeSimulator, stripe_http: StripeHttp, authorization: str
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", day_query(), headers={"Authorization": authorization}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("key", ["sk_test_123", "rk_live_abc"])
def test_any_secret_or_restricted_key_is_accepted(
    basic: StripeSimulator, stripe_http: StripeHttp, key: str
) -> None:
    response = stripe_http.summaries(
        "mtr_api_calls", day_query(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


def test_only_the_configured_key_is_accepted_and_never_echoed(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.api_key = "sk_test_right"
    wrong = stripe_http.summaries(
        "mtr_api_calls", day_query(), headers={"Authorization": "Bearer sk_test_WRONG"}
    )
    assert wrong.status_code == 401
    assert "WRONG" not in wrong.text
    right = stripe_http.summaries(
        "mtr_api_calls", day_query(), headers={"Authorization": "Bearer sk_test_right"}
    )
    assert right.status_code == 200
    assert basic.stats.unauthorized == 1


# -- meter events ----------------------------------------------------------------------------------


def test_posted_meter_event_is_read_back(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    response = stripe_http.post_event(
        {
            "event_name": "api_call",
            "payload[stripe_customer_id]": "cus_C",
            "payload[value]": "2.25",
            "timestamp": str(JAN_1 + 10),
            "identifier": "evt_post_1",
        }
    )
    assert response.status_code == 200
    assert body(response) == {
        "object": "billing.meter_event",
        "created": body(response)["created"],
        "event_name": "api_call",
        "identifier": "evt_post_1",
        "livemode": False,
        "payload": {"stripe_customer_id": "cus_C", "value": "2.25"},
        "timestamp": JAN_1 + 10,
    }
    assert values_by_start(stripe_http.summaries("mtr_api_calls", day_query(customer="cus_C"))) == {
        JAN_1: Decimal("2.25")
    }
    assert basic.stats.meter_events_post == 1


def test_posted_event_with_a_seen_identifier_is_ignored(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    form = {
        "event_name": "api_call",
        "payload[stripe_customer_id]": "cus_A",
        "payload[value]": "1000",
        "timestamp": str(JAN_1),
        "identifier": "evt_0004",  # already in the data file
    }
    assert stripe_http.post_event(form).status_code == 200
    assert values_by_start(stripe_http.summaries("mtr_api_calls", day_query()))[JAN_1] == Decimal(
        "12.8"
    )


@pytest.mark.parametrize("missing", ["event_name", "payload[stripe_customer_id]", "payload[value]"])
def test_posted_event_without_a_required_field_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp, missing: str
) -> None:
    form = {
        "event_name": "api_call",
        "payload[stripe_customer_id]": "cus_A",
        "payload[value]": "1",
    }
    del form[missing]
    response = stripe_http.post_event(form)
    assert response.status_code == 400
    assert error_of(response)["param"] == missing


def test_posted_event_with_a_bad_value_is_a_400(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    response = stripe_http.post_event(
        {"event_name": "api_call", "payload[stripe_customer_id]": "cus_A", "payload[value]": "lots"}
    )
    assert response.status_code == 400


# -- data file -------------------------------------------------------------------------------------


def test_data_file_dedupes_identifiers_across_meters_first_wins() -> None:
    data = SimulatorData.load(BASIC_DATA)
    assert data.duplicates_ignored == 2
    assert data.event_count == 12


def test_data_file_json_numbers_are_read_from_their_text() -> None:
    data = SimulatorData.from_json(
        '{"meters": [{"id": "m", "event_name": "e", "formula": "sum", "status": "active"}],'
        ' "events": [{"event_name": "e", "customer": "c", "timestamp": 0, "value": 0.1},'
        ' {"event_name": "e", "customer": "c", "timestamp": 1, "value": 0.2}]}'
    )
    meter = data.meter("m")
    assert meter is not None
    [bucket] = data.buckets(meter, "c", 0, DAY, "day")
    assert str(bucket.value) == "0.3"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"meters": [{"id": "m", "event_name": "e", "formula": "max"}]}',
        '{"meters": [{"id": "m", "event_name": "e", "status": "paused"}]}',
        '{"meters": [{"id": "m", "event_name": "e"}, {"id": "m", "event_name": "f"}]}',
        '{"events": [{"event_name": "e", "customer": "c", "timestamp": "soon", "value": "1"}]}',
        '{"events": [{"event_name": "e", "customer": "c", "timestamp": 1, "value": "NaN"}]}',
        '{"events": [{"event_name": "e", "customer": "c", "timestamp": 1, "value": true}]}',
        '{"meters": [], "extra": 1}',
        "{not json",
    ],
)
def test_bad_data_files_are_rejected(text: str) -> None:
    with pytest.raises(SimulatorDataError):
        SimulatorData.from_json(text)


def test_many_customers_are_indexed_for_fast_lookups() -> None:
    data = SimulatorData()
    meter = data.add_meter(id="mtr_x", event_name="x")
    for index in range(60_000):
        data.add_event(
            event_name="x", customer=f"cus_{index % 20_000}", timestamp=JAN_1 + index, value="1"
        )
    started = time.perf_counter()
    for index in range(1_000):
        data.buckets(meter, f"cus_{index}", JAN_1, JAN_1 + 35 * DAY, "day")
    assert time.perf_counter() - started < 1.0


# -- rate limit, latency ---------------------------------------------------------------------------


def test_rate_limit_answers_429_with_stripes_body_and_headers(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.rate_limit = 2
    statuses = [stripe_http.summaries("mtr_api_calls", day_query()) for _ in range(3)]
    assert [response.status_code for response in statuses] == [200, 200, 429]
    limited = statuses[-1]
    assert error_of(limited) == {
        "code": "rate_limit",
        "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
        "message": "Request rate limit exceeded. You can learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        "type": "invalid_request_error",
    }
    assert limited.headers["stripe-rate-limited-reason"] == "global-rate"
    assert "retry-after" not in limited.headers
    assert "stripe-should-retry" not in limited.headers
    assert (basic.stats.rate_limited, len(basic.stats.start_times)) == (1, 2)


def test_rate_limit_window_slides(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    basic.rate_limit = 1
    basic.rate_limit_retry_after = 1
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200
    limited = stripe_http.summaries("mtr_api_calls", day_query())
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    time.sleep(1.05)
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200


def test_latency_does_not_serialise_concurrent_requests(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.latency = 0.3
    basic.jitter = 0.05
    results: list[int] = []

    def fetch() -> None:
        with httpx.Client(base_url=basic.url) as client:
            response = client.get(
                f"/v1/billing/meters/mtr_api_calls/event_summaries?{day_query()}",
                headers={"Authorization": f"Bearer {TEST_KEY}"},
            )
            stripe_http.check(response, "event_summaries")
            results.append(response.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == [200] * 20
    assert 0.3 <= elapsed < 3.0  # one after the other would take 6 s


# -- faults (seen from httpx) ----------------------------------------------------------------------


def test_reset_fault_closes_the_connection_without_a_response(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.faults.script("reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        stripe_http.summaries("mtr_api_calls", day_query())
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200
    assert basic.stats.faults == 1


def test_timeout_fault_holds_the_response_past_the_client_timeout(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.faults.script(Fault("timeout", delay=1.0))
    with httpx.Client(base_url=basic.url, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get(
            f"/v1/billing/meters/mtr_api_calls/event_summaries?{day_query()}",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        )


def test_timeout_fault_answers_late_when_the_client_waits(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.faults.script(Fault("timeout", delay=0.2))
    started = time.monotonic()
    response = stripe_http.summaries("mtr_api_calls", day_query())
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_malformed_fault_is_a_200_with_broken_json(basic: StripeSimulator) -> None:
    basic.faults.script("malformed")
    response = httpx.get(
        f"{basic.url}/v1/billing/meters/mtr_api_calls/event_summaries?{day_query()}",
        headers={"Authorization": f"Bearer {TEST_KEY}"},
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize(
    ("fault", "status", "should_retry"),
    [
        (Fault("500"), 500, None),
        (Fault("503", should_retry=False), 503, "false"),
        (Fault("409", should_retry=True), 409, "true"),
        (Fault("429"), 429, None),
    ],
)
def test_status_faults_answer_stripe_errors(
    basic: StripeSimulator,
    stripe_http: StripeHttp,
    fault: Fault,
    status: int,
    should_retry: str | None,
) -> None:
    basic.faults.script(fault)
    response = stripe_http.summaries("mtr_api_calls", day_query())
    assert response.status_code == status
    assert response.headers.get("stripe-should-retry") == should_retry


def test_scripted_faults_can_target_one_customer(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.faults.script("500", "500", customer="cus_B")
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200
    assert stripe_http.summaries("mtr_api_calls", day_query(customer="cus_B")).status_code == 500
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200
    assert stripe_http.summaries("mtr_api_calls", day_query(customer="cus_B")).status_code == 500
    assert stripe_http.summaries("mtr_api_calls", day_query(customer="cus_B")).status_code == 200
    assert basic.stats.event_summaries_by_customer == {"cus_A": 2, "cus_B": 3}


def test_random_fault_rate_draws_from_the_mix(
    basic: StripeSimulator, stripe_http: StripeHttp
) -> None:
    basic.faults.set_random(1.0, ["503"], seed=1)
    assert {stripe_http.summaries("mtr_api_calls", day_query()).status_code for _ in range(5)} == {
        503
    }
    basic.faults.set_random(0.0)
    assert stripe_http.summaries("mtr_api_calls", day_query()).status_code == 200
    assert basic.stats.faults == 5


def test_unknown_fault_kind_is_rejected(simulator: StripeSimulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        simulator.faults.script("418")


# -- stats, helpers, CLI ---------------------------------------------------------------------------


def test_stats_count_requests_per_kind(basic: StripeSimulator, stripe_http: StripeHttp) -> None:
    stripe_http.summaries("mtr_api_calls", day_query())
    stripe_http.meters()
    stripe_http.meter("mtr_seats")
    stripe_http.summaries("mtr_api_calls", day_query(), headers={})
    snapshot = basic.stats.snapshot()
    assert snapshot["event_summaries"] == 2
    assert (snapshot["meters_list"], snapshot["meter_get"], snapshot["unauthorized"]) == (1, 1, 1)
    assert snapshot["total"] == 4
    assert (
        basic.stats.targets[0]
        == f"GET /v1/billing/meters/mtr_api_calls/event_summaries?{day_query()}"
    )
    basic.reset_stats()
    assert basic.stats.total == 0


def test_max_in_window_counts_a_half_open_sliding_window() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([]) == 0


def test_simulator_context_manager_serves_on_a_free_port(stripe_schemas: StripeSchemas) -> None:
    with StripeSimulator(api_key="sk_test_own") as own:
        assert own.url.startswith("http://127.0.0.1:")
        response = httpx.get(
            f"{own.url}/v1/billing/meters", headers={"Authorization": "Bearer sk_test_own"}
        )
        assert response.status_code == 200
        stripe_schemas.validate("meter_list", body(response))
    assert not own.running


def test_simulate_stripe_command_serves_a_data_file_until_interrupted(
    stripe_schemas: StripeSchemas,
) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from simulator.cli import simulate_stripe; "
        "simulate_stripe(port=0, data=Path(sys.argv[1]), api_key='sk_test_cli')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(BASIC_DATA)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        response = httpx.get(
            f"{url}/v1/billing/meters/mtr_api_calls/event_summaries?{day_query()}",
            headers={"Authorization": "Bearer sk_test_cli"},
            timeout=5,
        )
        stripe_schemas.validate("summary_list", body(response))
        assert values_by_start(response) == {JAN_1: Decimal("12.8"), JAN_1 + DAY: Decimal("7")}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert process.returncode == 0
