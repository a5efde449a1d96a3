"""The Stripe client's invoices, invoice lines and usage totals, over real sockets.

Everything runs against the project's simulator, except what it will not serve (it validates
its data): invoices and lines Stripe could send malformed are read by the parsers directly, and
one listing holding one is served by `CannedStripe`, a tiny server of canned pages.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from integrations.stripe import (
    Invoice,
    InvoiceLine,
    Malformed,
    SlidingWindowRateLimiter,
    StripeClient,
    StripeConnectionError,
)
from integrations.stripe.client import (
    invoice_lines_path,
    invoices_params,
    parse_invoice_line,
    parse_listed_invoice,
)
from simulator import Fault, StripeSimulator
from tests.fixtures.canned import CannedStripe
from tests.fixtures.stripe import INVOICES_FIXTURES_FILE, INVOICES_SDK_REQUESTS_FILE, TEST_KEY

ClientFactory = Callable[..., StripeClient]
RECORDED = json.loads(INVOICES_SDK_REQUESTS_FILE.read_text(encoding="utf-8"))["captures"]
FIXTURES = json.loads(INVOICES_FIXTURES_FILE.read_text(encoding="utf-8"))["resources"]
OCT_1 = 1_759_276_800  # 2025-10-01T00:00:00Z
NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z
DEC_1 = 1_764_547_200  # 2025-12-01T00:00:00Z
INLINE_LINES = 10


def recorded_lines(capture: int) -> list[str]:
    return [
        request["requestline"].removesuffix(" HTTP/1.1")
        for request in RECORDED[capture]["requests"]
    ]


# The SDK's listing with customer, status, created[gte], limit (the client sends no status),
# and its line-item listing; each a first page, then the cursor.
LIST_LINES = [recorded.replace("status=paid&", "") for recorded in recorded_lines(0)]
LINE_ITEM_LINES = recorded_lines(3)


# -- builders -------------------------------------------------------------------------------------


def seed_customer(simulator: StripeSimulator, customer: str = "cus_1") -> None:
    """`customer` subscribes (sub_1, item si_1) to price_api: 25 cents a unit of mtr_api."""
    simulator.add_meter("mtr_api", event_name="api_call")
    simulator.add_price(id="price_api", currency="usd", meter="mtr_api", unit_amount_decimal="25")
    simulator.add_subscription(
        id="sub_1", customer=customer, created=OCT_1, items=[{"id": "si_1", "price": "price_api"}]
    )


def data_line(line_id: str, **changes: Any) -> dict[str, Any]:
    """A data-file line: 12.5 units of price_api over November, 313 cents."""
    return {
        "id": line_id,
        "subscription_item": "si_1",
        "price": "price_api",
        "period": {"start": NOV_1, "end": DEC_1},
        "quantity_decimal": "12.5",
        "amount": 313,
        **changes,
    }


def add_invoice(
    simulator: StripeSimulator, invoice_id: str, lines: int = 1, **changes: Any
) -> None:
    simulator.add_invoice(
        **{
            "id": invoice_id,
            "customer": "cus_1",
            "subscription": "sub_1",
            "status": "paid",
            "created": DEC_1 + 3_600,
            "finalized_at": DEC_1 + 7_200,
            "currency": "usd",
            "period_start": NOV_1,
            "period_end": DEC_1,
            "lines": [data_line(f"il_{invoice_id}_{n:03}") for n in range(lines)],
            **changes,
        }
    )


def wire_line(**changes: Any) -> dict[str, Any]:
    """Stripe's fixture line item, made a metered subscription line (as on the wire)."""
    body = copy.deepcopy(FIXTURES["line_item"])
    body.update(
        id="il_1",
        period={"start": NOV_1, "end": DEC_1},
        quantity=12,
        quantity_decimal="12.5",
        pricing={
            "type": "price_details",
            "price_details": {"price": "price_api", "product": "prod_1"},
            "unit_amount_decimal": "25",
        },
    )
    body.update(changes)
    return body


def wire_invoice(invoice_id: str, **changes: Any) -> dict[str, Any]:
    """Stripe's fixture invoice with its fixture line inline (as on the wire)."""
    body = copy.deepcopy(FIXTURES["invoice"])
    body.update(id=invoice_id, **changes)
    return body


def listed(client: StripeClient, **params: Any) -> list[Invoice | Malformed]:
    return list(client.invoices(created_gte=params.pop("created_gte", OCT_1), **params))


def only_invoice(client: StripeClient) -> Invoice:
    [found] = listed(client)
    assert isinstance(found, Invoice)
    return found


class CountingLimiter:
    """A rate limiter that lets everything through and counts the slots taken."""

    def __init__(self) -> None:
        self.slots = 0

    def acquire(self) -> None:
        self.slots += 1


# -- wire format ----------------------------------------------------------------------------------


def test_query_encoding_equals_the_sdks_recorded_request_lines() -> None:
    params = invoices_params(created_gte=1_759_276_800, customer="cus_1")
    cursor = [*params, ("starting_after", "in_1")]
    assert [
        f"GET /v1/invoices?{urlencode(params)}",
        f"GET /v1/invoices?{urlencode(cursor)}",
    ] == LIST_LINES
    lines = [("limit", "100")]
    assert [
        f"GET {invoice_lines_path('in_1')}?{urlencode(lines)}",
        f"GET {invoice_lines_path('in_1')}?{urlencode([*lines, ('starting_after', 'il_1')])}",
    ] == LINE_ITEM_LINES


def test_listing_pages_with_the_sdks_request_lines(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    for n in range(101):
        add_invoice(simulator, f"in_{n:03}", created=DEC_1 + n, finalized_at=DEC_1 + n)
    found = listed(stripe_client, created_gte=1_759_276_800, customer="cus_1")
    assert [invoice.id for invoice in found] == [f"in_{n:03}" for n in reversed(range(101))]
    assert list(simulator.stats.targets) == [LIST_LINES[0], LIST_LINES[1].replace("in_1", "in_001")]


def test_without_a_customer_the_listing_asks_only_created_and_limit(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_a")
    add_invoice(simulator, "in_old", created=NOV_1, finalized_at=NOV_1)
    assert [invoice.id for invoice in listed(stripe_client, created_gte=DEC_1)] == ["in_a"]
    assert list(simulator.stats.targets) == [f"GET /v1/invoices?created%5Bgte%5D={DEC_1}&limit=100"]


def test_the_listing_is_lazy_one_page_at_a_time(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    for n in range(150):
        add_invoice(simulator, f"in_{n:03}", created=DEC_1 + n, finalized_at=DEC_1 + n)
    first = next(stripe_client.invoices(created_gte=OCT_1))
    assert isinstance(first, Invoice) and first.id == "in_149"
    assert stripe_client.requests_made == 1


def test_an_invoice_reads_its_head_fields(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator, customer="cus_9")
    add_invoice(simulator, "in_1", customer="cus_9", status="open", created=DEC_1 + 7)
    got = only_invoice(stripe_client)
    assert (got.id, got.customer, got.subscription, got.status, got.currency) == (
        "in_1",
        "cus_9",
        "sub_1",
        "open",
        "usd",
    )
    assert (got.created, got.finalized_at, got.period_start, got.period_end) == (
        DEC_1 + 7,
        DEC_1 + 7_200,
        NOV_1,
        DEC_1,
    )


def test_a_draft_is_not_finalized(simulator: StripeSimulator, stripe_client: StripeClient) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_1", status="draft", finalized_at=None)
    got = only_invoice(stripe_client)
    assert (got.status, got.finalized_at) == ("draft", None)


def test_an_invoice_line_reads_price_period_quantity_amount_and_item(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_1")
    [got] = list(stripe_client.invoice_lines(only_invoice(stripe_client)))
    assert got == InvoiceLine(
        id="il_in_1_000",
        invoice_id="in_1",
        subscription_item="si_1",
        price_id="price_api",
        period_start=NOV_1,
        period_end=DEC_1,
        quantity=Decimal("12.5"),
        amount=313,
        proration=False,
    )


def test_lines_beyond_the_inline_ones_are_paged_in_with_the_sdks_request_lines(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_1", lines=125)
    got = list(stripe_client.invoice_lines(only_invoice(stripe_client)))
    assert [line.id for line in got] == [f"il_in_1_{n:03}" for n in range(125)]
    assert list(simulator.stats.targets)[1:] == [
        LINE_ITEM_LINES[1].replace("il_1", "il_in_1_009"),
        LINE_ITEM_LINES[1].replace("il_1", "il_in_1_109"),
    ]


def test_lines_are_paged_in_only_as_they_are_used(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_1", lines=30)
    lines = stripe_client.invoice_lines(only_invoice(stripe_client))
    inline = [next(lines) for _ in range(INLINE_LINES)]
    assert len(inline) == INLINE_LINES and stripe_client.requests_made == 1
    assert next(lines).id == "il_in_1_010" and stripe_client.requests_made == 2


def test_every_invoice_and_line_of_the_simulators_data_file_is_read(
    invoicing: StripeSimulator, stripe_client: StripeClient
) -> None:
    everything = listed(stripe_client, created_gte=0)
    invoices = [invoice for invoice in everything if isinstance(invoice, Invoice)]
    assert len(invoices) == len(everything) == 5
    assert {invoice.status for invoice in invoices} == {
        "draft",
        "open",
        "paid",
        "uncollectible",
        "void",
    }
    lines = [line for invoice in invoices for line in stripe_client.invoice_lines(invoice)]
    assert lines and all(isinstance(line, InvoiceLine) for line in lines)


@pytest.mark.parametrize("endpoint", ["invoices_list", "invoice_lines_list"])
def test_a_failed_page_is_retried_and_every_attempt_counted_and_rate_limited(
    simulator: StripeSimulator, stripe_client_factory: ClientFactory, endpoint: str
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_1", lines=12)
    simulator.faults.script(Fault("503", should_retry=True), endpoint=endpoint)
    limiter = CountingLimiter()
    client = stripe_client_factory(rate_limiter=limiter)
    assert len(list(client.invoice_lines(only_invoice(client)))) == 12
    assert client.requests_made == 3 == limiter.slots == len(simulator.stats.targets)


# -- lines and invoices Stripe could send malformed, read by the parsers ---------------------------


def test_an_expanded_price_is_read_by_its_id() -> None:
    expanded = {"id": "price_api", "object": "price", "recurring": {"meter": "mtr_api"}}
    raw = wire_line(pricing={"type": "price_details", "price_details": {"price": expanded}})
    got = parse_invoice_line("in_1", raw)
    assert isinstance(got, InvoiceLine) and got.price_id == "price_api"


@pytest.mark.parametrize(
    ("quantity_decimal", "quantity", "expected"),
    [("0.000001", 0, Decimal("0.000001")), (None, 7, Decimal(7)), (None, None, Decimal(0))],
)
def test_quantity_is_quantity_decimal_else_quantity_else_zero(
    quantity_decimal: str | None, quantity: int | None, expected: Decimal
) -> None:
    got = parse_invoice_line(
        "in_1", wire_line(quantity_decimal=quantity_decimal, quantity=quantity)
    )
    assert isinstance(got, InvoiceLine) and got.quantity == expected


def test_a_line_without_pricing_has_no_price() -> None:
    got = parse_invoice_line("in_1", wire_line(pricing=None))
    assert isinstance(got, InvoiceLine) and got.price_id is None


def test_stripes_fixture_line_has_an_unreadable_price_and_is_malformed() -> None:
    raw = FIXTURES["line_item"]  # pricing says price_details, and has none
    got = parse_invoice_line("in_1", raw)
    assert isinstance(got, Malformed)
    assert (got.object, got.id, got.invoice) == ("line_item", raw["id"], "in_1")
    assert "price_details" in got.reason


def test_a_line_without_a_period_is_malformed() -> None:
    raw = wire_line()
    del raw["period"]
    got = parse_invoice_line("in_1", raw)
    assert isinstance(got, Malformed) and "period" in got.reason


def test_stripes_fixture_invoice_is_read_with_its_malformed_line_inline() -> None:
    got = parse_listed_invoice(FIXTURES["invoice"])
    assert isinstance(got, Invoice)
    # The fixture's placeholder parent.subscription_details.subscription is "subscription".
    assert (got.status, got.finalized_at, got.subscription) == ("draft", None, "subscription")
    [line] = got.inline_lines
    assert isinstance(line, Malformed) and line.invoice == got.id


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"currency": "us dollars"}, "currency"),
        ({"status": None}, "status"),
        ({"period_start": None}, "period_start"),
        ({"lines": None}, "list"),
    ],
)
def test_an_unreadable_invoice_is_malformed(change: dict[str, Any], reason: str) -> None:
    got = parse_listed_invoice(wire_invoice("in_bad", **change))
    assert isinstance(got, Malformed)
    assert (got.object, got.id, got.invoice) == ("invoice", "in_bad", "in_bad")
    assert reason in got.reason


@pytest.fixture
def canned_listing() -> Iterator[CannedStripe]:
    good = wire_invoice("in_good", status="paid")
    good["lines"]["data"] = [wire_line()]
    page = {
        "object": "list",
        "data": [wire_invoice("in_bad", currency=None), good],
        "has_more": False,
        "url": "/v1/invoices",
    }
    server = CannedStripe({f"/v1/invoices?created%5Bgte%5D={OCT_1}&limit=100": (200, page)})
    yield server
    server.close()


def test_a_malformed_invoice_does_not_sink_the_listing(
    canned_listing: CannedStripe, stripe_client_factory: ClientFactory
) -> None:
    client = stripe_client_factory(api_base=canned_listing.url)
    bad, good = listed(client)
    assert isinstance(bad, Malformed) and bad.id == "in_bad"
    assert isinstance(good, Invoice) and good.id == "in_good"
    [line] = client.invoice_lines(good)
    assert isinstance(line, InvoiceLine) and line.price_id == "price_api"


# -- usage over one range -------------------------------------------------------------------------


def test_usage_total_asks_one_summary_without_a_grouping_window_rounded_to_the_minute(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_1", event_name="api_call")
    for at, value in [
        (590, "100"),
        (610, "40"),
        (NOV_1 - OCT_1 + 30, "1.75"),
        (NOV_1 - OCT_1 + 60, "1000"),
    ]:
        simulator.add_event("api_call", "cus_1", OCT_1 + at, value)
    total = stripe_client.usage_total(
        meter="mtr_1", customer="cus_1", start_time=OCT_1 + 659, end_time=NOV_1 + 61
    )
    assert (total.value, total.start_time, total.end_time, total.requests) == (
        Decimal("41.75"),
        OCT_1 + 600,
        NOV_1 + 60,
        1,
    )
    assert list(simulator.stats.targets) == [
        f"GET /v1/billing/meters/mtr_1/event_summaries?customer=cus_1&start_time={OCT_1 + 600}"
        f"&end_time={NOV_1 + 60}&limit=100"
    ]


def test_usage_total_without_a_summary_is_zero(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    simulator.add_meter("mtr_1", event_name="api_call")
    total = stripe_client.usage_total(
        meter="mtr_1", customer="cus_1", start_time=OCT_1, end_time=NOV_1
    )
    assert total.value == Decimal(0) and total.requests == 1


def test_usage_total_of_a_range_inside_one_minute_makes_no_request(
    simulator: StripeSimulator, stripe_client: StripeClient
) -> None:
    total = stripe_client.usage_total(
        meter="mtr_1", customer="cus_1", start_time=OCT_1 + 5, end_time=OCT_1 + 50
    )
    assert (total.value, total.requests, stripe_client.requests_made) == (Decimal(0), 0, 0)


def test_usage_total_refuses_two_summaries_for_one_range() -> None:

    two = ", ".join(
        f'{{"id": "mtrusg_{n}", "object": "billing.meter_event_summary", "aggregated_value": 1, '
        f'"start_time": {OCT_1}, "end_time": {NOV_1}, "livemode": false, "meter": "mtr_1"}}'
        for n in range(2)
    )
    body = f'{{"object": "list", "data": [{two}], "has_more": false, "url": "/v1/x"}}'
    client = StripeClient(
        api_key=TEST_KEY,
        api_base="http://stripe.test",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, text=body)),
        rate_limiter=SlidingWindowRateLimiter(1000.0),
    )
    with client, pytest.raises(StripeConnectionError, match="2 summaries"):
        client.usage_total(meter="mtr_1", customer="cus_1", start_time=OCT_1, end_time=NOV_1)
