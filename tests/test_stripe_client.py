"""The Stripe client: wire format, exact decimals, pagination, retries, and key hygiene."""

from __future__ import annotations

import json
import logging
import pickle
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from integrations.stripe import (
    STRIPE_VERSION,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    SlidingWindowRateLimiter,
    StripeAPIError,
    StripeClient,
    StripeConnectionError,
    StripeError,
)
from integrations.stripe.client import summaries_path, summaries_query
from integrations.stripe.redaction import redact
from integrations.stripe.retry import backoff_seconds, retry_after_seconds, should_retry_status
from simulator import Fault, StripeSimulator, summary_id
from tests.fixtures.stripe import DAY, HOUR, JAN_1, SDK_REQUESTS_FILE, TEST_KEY

ClientFactory = Callable[..., StripeClient]

RECORDED = json.loads(SDK_REQUESTS_FILE.read_text(encoding="utf-8"))
RECORDED_LINES = [
    request["requestline"].removesuffix(" HTTP/1.1")
    for request in RECORDED["captures"][0]["requests"]
]
JAN_4 = date(2025, 1, 4)


def seed_three_days(
    simulator: StripeSimulator, meter: str = "mtr_123", customer: str = "cus_1"
) -> None:
    simulator.add_meter(meter, event_name="api_call")
    for day, value in enumerate(["1.5", "2", "3.25"]):
        simulator.add_event("api_call", customer, JAN_1 + day * DAY + 30, value)


def usage(
    client: StripeClient, customer: str = "cus_1", meter: str = "mtr_123"
) -> dict[date, Decimal]:
    return client.daily_usage(
        meter_id=meter, customer=customer, start=date(2025, 1, 1), end=JAN_4
    ).values


EXPECTED = {
    date(2025, 1, 1): Decimal("1.5"),
    date(2025, 1, 2): Decimal(2),
    date(2025, 1, 3): Decimal("3.25"),
}


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **overrides: Any
) -> StripeClient:
    options: dict[str, Any] = {
        "api_key": TEST_KEY,
        "api_base": "http://stripe.test",
        "transport": httpx.MockTransport(handler),
        "rate_limiter": SlidingWindowRateLimiter(1000.0),
        "backoff_base": 0.001,
        "backoff_cap": 0.002,
    }
    options.update(overrides)
    return StripeClient(**options)


def summary_json(start: int, value: str, size: int = DAY) -> str:
    return (
        f'{{"id": "{summary_id("mtr_123", "cus_1", start, start + size)}", '
        f'"object": "billing.meter_event_summary", "aggregated_value": {value}, '
        f'"end_time": {start + size}, "livemode": false, "meter": "mtr_123", '
        f'"start_time": {start}}}'
    )


def list_json(*items: str, has_more: bool = False) -> str:
    return (
        f'{{"object": "list", "data": [{", ".join(items)}], "has_more": {json.dumps(has_more)}, '
        '"url": "/v1/billing/meters/mtr_123/event_summaries"}'
    )


# -- wire format ----------------------------------------------------------------------------------


def test_query_encoding_equals_the_sdks_recorded_request_lines() -> None:
    params = RECORDED["params"]
    common = {
        "customer": params["customer"],
        "start_time": params["start_time"],
        "end_time": params["end_time"],
        "value_grouping_window": params["value_grouping_window"],
        "limit": params["limit"],
        "expand": params["expand"],
    }
    first = f"GET {summaries_path('mtr_123')}?{summaries_query(**common)}"
    second = (
        f"GET {summaries_path('mtr_123')}?{summaries_query(**common, starting_after='mtrusg_B')}"
    )
    assert [first, second] == RECORDED_LINES


def test_the_sdks_requests_reach_the_simulator_as_recorded(simulator: StripeSimulator) -> None:
    stripe = pytest.importorskip("stripe")
    seed_three_days(simulator)
    sdk = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": simulator.url}, max_network_retries=0
    )
    listed = sdk.v1.billing.meters.event_summaries.list("mtr_123", params=RECORDED["params"])
    summaries = list(listed.auto_paging_iter())
    assert [Decimal(str(item.aggregated_value)) for item in summaries] == [
        Decimal("3.25"),
        Decimal(2),
        Decimal("1.5"),
    ]
    cursor = summary_id("mtr_123", "cus_1", JAN_1 + DAY, JAN_1 + 2 * DAY)
    expected = [RECORDED_LINES[0], RECORDED_LINES[1].replace("mtrusg_B", cursor)]
    assert list(simulator.stats.targets) == expected


def test_client_requests_are_the_sdks_request_line_with_limit_100(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    stripe_client.event_summaries(
        meter_id="mtr_123", customer="cus_1", start_time=start, end_time=start + 3 * DAY
    )
    assert list(simulator.stats.targets) == [
        RECORDED_LINES[0].replace("limit=2&expand%5B0%5D=data", "limit=100")
    ]


def test_client_sends_bearer_key_pinned_version_and_its_user_agent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            text='{"object": "list", "data": [], "has_more": false, "url": "/v1/billing/meters"}',
        )

    with mock_client(handler) as client:
        assert client.list_meters() == []
    [request] = seen
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert request.headers["stripe-version"] == STRIPE_VERSION == "2026-10-28.endive"
    assert request.headers["user-agent"].startswith("meter-recon/")
    assert request.url.raw_path == b"/v1/billing/meters?limit=100"


def test_client_and_sdk_read_the_same_summaries(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    stripe = pytest.importorskip("stripe")
    seed_three_days(simulator)
    sdk = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": simulator.url}, max_network_retries=0
    )
    params = {
        "customer": "cus_1",
        "start_time": JAN_1,
        "end_time": JAN_1 + 3 * DAY,
        "value_grouping_window": "day",
    }
    from_sdk = [
        (item.id, item.start_time)
        for item in sdk.v1.billing.meters.event_summaries.list(
            "mtr_123", params=params
        ).auto_paging_iter()
    ]
    ours = stripe_client.event_summaries(
        meter_id="mtr_123", customer="cus_1", start_time=JAN_1, end_time=JAN_1 + 3 * DAY
    )
    assert [(item.id, item.start_time) for item in ours] == from_sdk


# -- decimals, days, pages ------------------------------------------------------------------------


def test_a_thousand_tenths_sum_to_exactly_100(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_123", event_name="api_call")
    for index in range(1000):
        simulator.add_event("api_call", "cus_1", JAN_1 + index, "0.1")
    [value] = usage(stripe_client).values()
    assert isinstance(value, Decimal)
    assert str(value) == "100.0"


def test_large_values_keep_every_digit(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_123", event_name="api_call")
    simulator.add_event("api_call", "cus_1", JAN_1, "123456789012.123456789")
    assert usage(stripe_client) == {date(2025, 1, 1): Decimal("123456789012.123456789")}


def test_summary_times_are_ints_and_values_decimals(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    summaries = stripe_client.event_summaries(
        meter_id="mtr_123", customer="cus_1", start_time=JAN_1, end_time=JAN_1 + 3 * DAY
    )
    assert {type(item.start_time) for item in summaries} == {int}
    assert {type(item.end_time) for item in summaries} == {int}
    assert {type(item.aggregated_value) for item in summaries} == {Decimal}


def test_daily_usage_maps_each_bucket_to_its_utc_day(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    result = stripe_client.daily_usage(
        meter_id="mtr_123", customer="cus_1", start=date(2025, 1, 1), end=JAN_4
    )
    assert (result.values, result.requests) == (EXPECTED, 1)


def test_daily_usage_does_not_rely_on_bucket_order() -> None:
    page = list_json(
        summary_json(JAN_1, "1"), summary_json(JAN_1 + 2 * DAY, "3"), summary_json(JAN_1 + DAY, "2")
    )
    with mock_client(lambda request: httpx.Response(200, text=page)) as client:
        assert usage(client) == {
            date(2025, 1, 1): Decimal(1),
            date(2025, 1, 2): Decimal(2),
            date(2025, 1, 3): Decimal(3),
        }


def test_daily_usage_of_an_empty_range_makes_no_request(stripe_client: StripeClient) -> None:
    result = stripe_client.daily_usage(meter_id="mtr_123", customer="cus_1", start=JAN_4, end=JAN_4)
    assert (result.values, result.requests, stripe_client.requests_made) == ({}, 0, 0)


def test_daily_usage_rejects_a_reversed_range(stripe_client: StripeClient) -> None:
    with pytest.raises(ValueError, match="before"):
        stripe_client.daily_usage(
            meter_id="mtr_123", customer="cus_1", start=JAN_4, end=date(2025, 1, 1)
        )


@pytest.mark.parametrize("start", [JAN_1 - DAY, JAN_1 + HOUR, JAN_1 + 3 * DAY])
def test_daily_usage_rejects_a_bucket_that_is_not_a_requested_day(start: int) -> None:
    page = list_json(summary_json(start, "1"))
    with (
        mock_client(lambda request: httpx.Response(200, text=page)) as client,
        pytest.raises(StripeConnectionError),
    ):
        usage(client)


def test_daily_usage_rejects_the_same_day_twice() -> None:
    page = list_json(summary_json(JAN_1, "1"), summary_json(JAN_1, "2"))
    with (
        mock_client(lambda request: httpx.Response(200, text=page)) as client,
        pytest.raises(StripeConnectionError),
    ):
        usage(client)


def test_hourly_summaries_page_through_more_than_100_buckets(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_123", event_name="api_call")
    for hour in range(250):
        simulator.add_event("api_call", "cus_1", JAN_1 + hour * HOUR, str(hour))
    summaries = stripe_client.event_summaries(
        meter_id="mtr_123",
        customer="cus_1",
        start_time=JAN_1,
        end_time=JAN_1 + 250 * HOUR,
        value_grouping_window="hour",
    )
    assert sorted(item.start_time for item in summaries) == [
        JAN_1 + hour * HOUR for hour in range(250)
    ]
    assert sum(item.aggregated_value for item in summaries) == sum(range(250))
    assert simulator.stats.event_summaries == 3
    targets = list(simulator.stats.targets)
    assert targets[1] == f"{targets[0]}&starting_after={summaries[99].id}"


def test_no_window_summary_spans_the_range(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    [summary] = stripe_client.event_summaries(
        meter_id="mtr_123",
        customer="cus_1",
        start_time=JAN_1,
        end_time=JAN_1 + 3 * DAY,
        value_grouping_window=None,
    )
    assert (summary.start_time, summary.end_time, summary.aggregated_value) == (
        JAN_1,
        JAN_1 + 3 * DAY,
        Decimal("6.75"),
    )


def test_list_meters_reads_every_page(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    for index in range(150):
        simulator.add_meter(
            f"mtr_{index:03}", event_name=f"e{index}", formula=("sum", "count", "last")[index % 3]
        )
    meters = stripe_client.list_meters()
    assert sorted(meter.id for meter in meters) == [f"mtr_{index:03}" for index in range(150)]
    assert {meter.formula for meter in meters} == {"sum", "count", "last"}
    assert simulator.stats.meters_list == 2


def test_get_meter_reads_one_meter(simulator: StripeSimulator, stripe_client: StripeClient) -> None:
    simulator.add_meter("mtr_123", event_name="api_call", formula="last", display_name="Seats")
    meter = stripe_client.get_meter("mtr_123")
    assert (meter.id, meter.display_name, meter.event_name, meter.formula, meter.status) == (
        "mtr_123",
        "Seats",
        "api_call",
        "last",
        "active",
    )


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("500"),
        Fault("502"),
        Fault("503"),
        Fault("409"),
        Fault("429"),
        Fault("reset"),
        Fault("malformed"),
        Fault("timeout", delay=1.0),
        Fault("409", should_retry=True),
    ],
    ids=lambda fault: f"{fault.kind}{'-should-retry' if fault.should_retry else ''}",
)
def test_transient_failures_are_retried(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory, fault: Fault
) -> None:
    seed_three_days(simulator)
    client = stripe_client_factory(timeout=0.3)
    simulator.faults.script(fault)
    result = client.daily_usage(
        meter_id="mtr_123", customer="cus_1", start=date(2025, 1, 1), end=JAN_4
    )
    assert (result.values, result.requests) == (EXPECTED, 2)
    assert (simulator.stats.event_summaries, simulator.stats.faults) == (2, 1)
    assert client.requests_made == 2


@pytest.mark.parametrize("kind", ["500", "503", "409"])
def test_should_retry_false_is_never_retried(
    simulator: StripeSimulator, stripe_client: StripeClient, kind: str
) -> None:
    seed_three_days(simulator)
    simulator.faults.script(Fault(kind, should_retry=False))
    with pytest.raises(StripeAPIError) as raised:
        usage(stripe_client)
    assert (raised.value.status, raised.value.should_retry) == (int(kind), False)
    assert simulator.stats.event_summaries == 1


def test_bad_request_is_not_retried(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    with pytest.raises(StripeAPIError) as raised:
        stripe_client.event_summaries(
            meter_id="mtr_123", customer="cus_1", start_time=JAN_1 + 1, end_time=JAN_1 + DAY
        )
    assert (raised.value.status, raised.value.type, raised.value.param) == (
        400,
        "invalid_request_error",
        "start_time",
    )
    assert simulator.stats.event_summaries == 1


def test_unknown_key_is_not_retried(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    seed_three_days(simulator)
    simulator.api_key = "sk_test_the_right_one"
    with pytest.raises(AuthenticationError) as raised:
        usage(stripe_client_factory())
    assert raised.value.status == 401
    assert simulator.stats.event_summaries == 1


def test_unknown_meter_is_not_retried(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    with pytest.raises(NotFoundError) as raised:
        usage(stripe_client, meter="mtr_nope")
    assert (raised.value.status, raised.value.code) == (404, "resource_missing")
    assert raised.value.request_id is not None
    assert simulator.stats.event_summaries == 1


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (400, {}, False),
        (401, {}, False),
        (403, {}, False),
        (404, {}, False),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (503, {"stripe-should-retry": "false"}, False),
        (400, {"stripe-should-retry": "true"}, True),
        (500, {"stripe-should-retry": "maybe"}, True),
    ],
)
def test_retry_rule(status: int, headers: dict[str, str], expected: bool) -> None:
    assert should_retry_status(status, headers) is expected


def test_retries_stop_after_max_attempts(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    seed_three_days(simulator)
    simulator.faults.script("503", "503", "503", "503")
    with pytest.raises(StripeAPIError) as raised:
        usage(stripe_client_factory(max_attempts=3))
    assert raised.value.status == 503
    assert "gave up after 3 attempts" in str(raised.value)
    assert simulator.stats.event_summaries == 3


def test_a_429_that_persists_raises_rate_limit_error(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    seed_three_days(simulator)
    simulator.faults.script("429", "429")
    with pytest.raises(RateLimitError):
        usage(stripe_client_factory(max_attempts=2))


def test_unreachable_stripe_raises_a_connection_error_after_retries(
    stripe_client_factory: ClientFactory,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = stripe_client_factory(api_base=f"http://127.0.0.1:{port}", max_attempts=3)
    with pytest.raises(StripeConnectionError) as raised:
        usage(client)
    assert raised.value.status is None
    assert client.requests_made == 3


def test_retry_after_is_a_floor_on_the_backoff(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_three_days(simulator)
    simulator.faults.script(Fault("503", retry_after=0.4))
    started = time.monotonic()
    assert usage(stripe_client) == EXPECTED
    assert time.monotonic() - started >= 0.4


def test_no_retry_when_the_wait_would_pass_max_retry_seconds(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    seed_three_days(simulator)
    simulator.faults.script(Fault("503", retry_after=30))
    started = time.monotonic()
    with pytest.raises(StripeAPIError):
        usage(stripe_client_factory(max_retry_seconds=1.0))
    assert time.monotonic() - started < 1.0
    assert simulator.stats.event_summaries == 1


def test_each_retry_is_logged_with_meter_customer_attempt_and_reason(
    simulator: StripeSimulator, stripe_client: StripeClient, caplog: pytest.LogCaptureFixture
) -> None:
    seed_three_days(simulator)
    simulator.faults.script("503", "reset")
    with caplog.at_level(logging.WARNING, logger="integrations.stripe"):
        usage(stripe_client)
    records = [record for record in caplog.records if record.name == "integrations.stripe"]
    assert [record.levelno for record in records] == [logging.WARNING, logging.WARNING]
    assert [(r.stripe_meter, r.stripe_customer, r.stripe_attempt) for r in records] == [  # type: ignore[attr-defined]
        ("mtr_123", "cus_1", 1),
        ("mtr_123", "cus_1", 2),
    ]
    assert "HTTP 503" in records[0].getMessage()
    assert "meter=mtr_123 customer=cus_1" in records[0].getMessage()
    assert records[1].stripe_reason in {"RemoteProtocolError", "ReadError"}  # type: ignore[attr-defined]


def test_malformed_but_valid_json_is_retried() -> None:
    answers = iter(
        [
            '{"unexpected": true}',
            '{"object": "list", "data": [{"id": 1}], "has_more": false}',
            "NaN",
            list_json(summary_json(JAN_1, "4")),
        ]
    )
    with mock_client(lambda request: httpx.Response(200, text=next(answers))) as client:
        result = client.daily_usage(
            meter_id="mtr_123", customer="cus_1", start=date(2025, 1, 1), end=JAN_4
        )
    assert (result.values, result.requests) == ({date(2025, 1, 1): Decimal(4)}, 4)


def test_backoff_is_full_jitter_below_the_cap() -> None:
    rng = random.Random(3)
    delays = [
        backoff_seconds(retry, base=0.5, cap=8.0, rng=rng) for retry in range(12) for _ in range(50)
    ]
    assert all(0.0 <= delay <= 8.0 for delay in delays)
    assert max(backoff_seconds(0, base=0.5, cap=8.0, rng=rng) for _ in range(200)) <= 0.5
    assert backoff_seconds(0, base=0.5, cap=8.0, retry_after=3.0, rng=rng) >= 3.0


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 00:00:05 GMT"}, now=now) == 5.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


# -- resilience under load ------------------------------------------------------------------------


def _fetch_all(
    client: StripeClient, customers: list[str], threads: int
) -> dict[str, dict[date, Decimal]]:
    results: dict[str, dict[date, Decimal]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(mine: list[str]) -> None:
        try:
            for customer in mine:
                values = usage(client, customer=customer)
                with lock:
                    results[customer] = values
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(customers[index::threads],)) for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    return results


def _seed_customers(simulator: StripeSimulator, count: int) -> list[str]:
    simulator.add_meter("mtr_123", event_name="api_call")
    customers = [f"cus_{index:03}" for index in range(count)]
    for index, customer in enumerate(customers):
        for day in range(3):
            simulator.add_event("api_call", customer, JAN_1 + day * DAY + index, f"{index}.{day}")
    return customers


def _expected(index: int) -> dict[date, Decimal]:
    return {date(2025, 1, 1 + day): Decimal(f"{index}.{day}") for day in range(3)}


def test_a_429_storm_still_returns_complete_data(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    customers = _seed_customers(simulator, 30)
    simulator.rate_limit = 20
    client = stripe_client_factory(backoff_base=0.05, backoff_cap=0.4, max_attempts=30)
    results = _fetch_all(client, customers, threads=10)
    assert results == {customer: _expected(index) for index, customer in enumerate(customers)}
    assert simulator.stats.rate_limited > 0


def test_thirty_percent_faults_still_return_complete_data(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    customers = _seed_customers(simulator, 20)
    simulator.faults.set_random(
        0.3, ["500", "503", "409", "429", "reset", "timeout", "malformed"], seed=7
    )
    simulator.faults.timeout_delay = 0.6
    client = stripe_client_factory(timeout=0.25, max_attempts=25)
    results = _fetch_all(client, customers, threads=4)
    assert results == {customer: _expected(index) for index, customer in enumerate(customers)}
    assert simulator.stats.faults > 0
    assert client.requests_made == simulator.stats.event_summaries


def test_requests_made_counts_every_attempt_across_threads(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    customers = _seed_customers(simulator, 12)
    simulator.faults.script("500", "500", "500")
    _fetch_all(stripe_client, customers, threads=6)
    assert stripe_client.requests_made == 15 == simulator.stats.event_summaries


# -- the key never leaks --------------------------------------------------------------------------


def test_key_never_appears_in_logs_errors_or_reprs(
    simulator: StripeSimulator,
    stripe_client_factory: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk_test_CANARYgood0123456789"
    wrong = "sk_test_CANARYwrong987654321"
    seed_three_days(simulator)
    simulator.api_key = key
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "integrations.stripe", "uvicorn.error"):
        caplog.set_level(logging.DEBUG, logger=name)

    good = stripe_client_factory(api_key=SecretStr(key))
    simulator.faults.script("503", "reset")
    assert usage(good) == EXPECTED
    bad = stripe_client_factory(api_key=wrong)
    with pytest.raises(AuthenticationError) as raised:
        usage(bad)
    unreachable = stripe_client_factory(api_key=key, api_base="http://127.0.0.1:9", max_attempts=2)
    with pytest.raises(StripeConnectionError) as unreached:
        usage(unreachable)

    texts = [caplog.text, repr(good), repr(bad), str(good.__dict__)]
    for error in (raised.value, unreached.value):
        texts += [str(error), repr(error), str(error.args), str(pickle.loads(pickle.dumps(error)))]  # noqa: S301
    for record in caplog.records:
        texts += [record.getMessage(), str(record.args), str(record.__dict__)]
    assert len(caplog.records) >= 3
    leaked = [text for text in texts if "CANARY" in text]
    assert leaked == []


def test_stripes_own_401_message_echoing_the_key_is_redacted() -> None:
    message = (
        "Please authenticate by specifying an `Authorization` header with any valid looking "
        "testmode secret API key. For example, `Authorization: Bearer sk_test_123`. "
        f"Authorization was 'Bearer {TEST_KEY}'."
    )  # stripe-mock's 401 message, verbatim but for the key
    echoed = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    with (
        mock_client(lambda request: httpx.Response(401, text=echoed)) as client,
        pytest.raises(AuthenticationError) as raised,
    ):
        client.list_meters()
    assert TEST_KEY not in str(raised.value)
    assert "sk_test_123" not in str(raised.value)
    assert "Authorization was" in str(raised.value)


def test_stripe_errors_survive_pickling_without_losing_fields() -> None:
    error = NotFoundError(
        "No such billing meter: 'mtr_x'", status=404, code="resource_missing", request_id="req_1"
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301
    assert (type(copy), copy.status, copy.code, copy.request_id, str(copy)) == (
        NotFoundError,
        404,
        "resource_missing",
        "req_1",
        str(error),
    )
    assert isinstance(copy, StripeError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk_test_abc123 here", "key [REDACTED] here"),
        ("rk_live_ZZZ", "[REDACTED]"),
        ("Authorization was 'Bearer whatever'", "Authorization was 'Bearer [REDACTED]'"),
        ("task_run and disk_usage stay", "task_run and disk_usage stay"),
        ("Invalid API Key provided: sk_test_****1234", "Invalid API Key provided: [REDACTED]"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_client_requires_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        StripeClient(api_key="")


def test_hourly_usage_maps_each_bucket_to_its_utc_hour(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_123", event_name="api_call")
    simulator.add_event("api_call", "cus_1", JAN_1 + 2 * HOUR + 59, "1.5")
    simulator.add_event("api_call", "cus_1", JAN_1 + 2 * HOUR + 60, "2.25")
    simulator.add_event("api_call", "cus_1", JAN_1 + 27 * HOUR, "4")
    start = datetime.fromtimestamp(JAN_1, UTC)
    result = stripe_client.hourly_usage(
        meter_id="mtr_123", customer="cus_1", start=start, end=start + timedelta(hours=28)
    )
    assert result.values == {
        start + timedelta(hours=2): Decimal("3.75"),
        start + timedelta(hours=27): Decimal(4),
    }
    assert result.requests == 1


def test_hourly_usage_is_asked_for_whole_hours(stripe_client: StripeClient) -> None:
    start = datetime.fromtimestamp(JAN_1 + 60, UTC)
    with pytest.raises(ValueError, match="whole hours"):
        stripe_client.hourly_usage(
            meter_id="mtr_123", customer="cus_1", start=start, end=start + timedelta(hours=1)
        )


def test_hourly_usage_rejects_a_bucket_that_is_not_a_requested_hour() -> None:
    page = list_json(summary_json(JAN_1 + 30 * 60, "1"))
    start = datetime.fromtimestamp(JAN_1, UTC)
    with (
        mock_client(lambda request: httpx.Response(200, text=page)) as client,
        pytest.raises(StripeConnectionError),
    ):
        client.hourly_usage(
            meter_id="mtr_123", customer="cus_1", start=start, end=start + timedelta(hours=2)
        )
