"""The Stripe client's invoices, invoice lines and usage totals, over real HTTP.

Usage totals run against the project's simulator. Until it serves invoices, `InvoiceServer`
below plays Stripe's invoice endpoints on 127.0.0.1: Stripe's own fixture invoice and line,
changed per test, paged the way Stripe pages them (newest first, `limit`, `starting_after`,
ten lines inline).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from integrations.stripe import (
    Invoice,
    InvoiceLine,
    Malformed,
    SlidingWindowRateLimiter,
    StripeClient,
    StripeConnectionError,
)
from integrations.stripe.client import invoice_lines_path, invoices_params
from simulator import StripeSimulator
from tests.fixtures.stripe import TEST_KEY

DATA = Path(__file__).resolve().parent / "data"
RECORDED = json.loads((DATA / "stripe_python_invoices_requests.json").read_text("utf-8"))
FIXTURES = json.loads((DATA / "stripe_invoice_fixtures.json").read_text("utf-8"))["resources"]
OCT_1 = 1_759_276_800  # 2025-10-01T00:00:00Z
NOV_1 = 1_761_955_200
INLINE_LINES = 10


def recorded_lines(capture: int) -> list[str]:
    return [
        request["requestline"].removesuffix(" HTTP/1.1")
        for request in RECORDED["captures"][capture]["requests"]
    ]


LIST_LINES = recorded_lines(0)  # customer, status, created[gte], limit; then the cursor
LINE_ITEM_LINES = recorded_lines(3)  # /v1/invoices/in_1/lines?limit=100; then the cursor


# -- builders -------------------------------------------------------------------------------------


def line(
    id: str,
    *,
    price: object = "price_api",
    subscription_item: str | None = "si_1",
    start: int = OCT_1,
    end: int = NOV_1,
    quantity_decimal: str | None = "12.5",
    quantity: int | None = 12,
    amount: int = 313,
) -> dict[str, Any]:
    """Stripe's fixture line item, as a metered subscription line."""
    body = copy.deepcopy(FIXTURES["line_item"])
    body.update(
        id=id,
        period={"start": start, "end": end},
        quantity=quantity,
        quantity_decimal=quantity_decimal,
        amount=amount,
        pricing={
            "type": "price_details",
            "price_details": {"price": price, "product": "prod_1"},
            "unit_amount_decimal": "25",
        },
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": "sub_1",
                "subscription_item": subscription_item,
            },
        },
    )
    return body


def invoice(
    id: str,
    *,
    customer: str = "cus_1",
    created: int = NOV_1 + 3600,
    status: str = "paid",
    lines: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Stripe's fixture invoice of a subscription; `lines` are served as Stripe serves them."""
    body = copy.deepcopy(FIXTURES["invoice"])
    body.update(
        id=id,
        customer=customer,
        created=created,
        status=status,
        period_start=OCT_1,
        period_end=NOV_1,
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": "sub_1"},
        },
        status_transitions={
            "finalized_at": created + 60 if status != "draft" else None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
    )
    body["lines"] = [line(f"il_{id}_{n:03}") for n in range(1)] if lines is None else lines
    body.update(fields)
    return body


class InvoiceServer:
    """Stripe's invoice endpoints on 127.0.0.1, from canned objects."""

    def __init__(self) -> None:
        self.invoices: list[dict[str, Any]] = []
        self.targets: list[str] = []
        self.fail_next = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.targets.append(f"{self.command} {self.path}")  # a request line
                status, body = server.answer(self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def answer(self, target: str) -> tuple[int, Any]:
        if self.fail_next:
            self.fail_next -= 1
            return 500, {"error": {"type": "api_error", "message": "try again"}}
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        path = unquote(parts.path)
        if path == "/v1/invoices":
            chosen = [
                inv
                for inv in self.invoices
                if inv["created"] >= int(query["created[gte]"])
                and query.get("customer", inv["customer"]) == inv["customer"]
            ]
            chosen.sort(key=lambda inv: (-inv["created"], inv["id"]))
            return 200, self.page(chosen, query, path, inline=True)
        if path.startswith("/v1/invoices/") and path.endswith("/lines"):
            invoice_id = path.split("/")[3]
            [found] = [inv for inv in self.invoices if inv["id"] == invoice_id]
            return 200, self.page(found["lines"], query, path, inline=False)
        return 404, {"error": {"type": "invalid_request_error", "message": "no such path"}}

    def page(
        self, items: list[dict[str, Any]], query: dict[str, str], path: str, *, inline: bool
    ) -> dict[str, Any]:
        ids = [item.get("id") for item in items]
        start = ids.index(query["starting_after"]) + 1 if "starting_after" in query else 0
        limit = int(query.get("limit", "10"))
        chosen = items[start : start + limit]
        if inline:
            chosen = [self.with_inline_lines(item) for item in chosen]
        return {
            "object": "list",
            "data": chosen,
            "has_more": start + limit < len(items),
            "url": path,
        }

    @staticmethod
    def with_inline_lines(body: dict[str, Any]) -> dict[str, Any]:
        lines = body["lines"]
        shown = dict(body)
        shown["lines"] = {
            "object": "list",
            "data": lines[:INLINE_LINES],
            "has_more": len(lines) > INLINE_LINES,
            "url": f"/v1/invoices/{body['id']}/lines",
        }
        return shown


@pytest.fixture
def server() -> Iterator[InvoiceServer]:
    running = InvoiceServer()
    yield running
    running.close()


class CountingLimiter:
    """A rate limiter that lets everything through and counts the slots taken."""

    def __init__(self) -> None:
        self.slots = 0

    def acquire(self) -> None:
        self.slots += 1


@pytest.fixture
def client_for(server: InvoiceServer) -> Iterator[Callable[..., StripeClient]]:
    made: list[StripeClient] = []

    def build(**overrides: Any) -> StripeClient:
        options: dict[str, Any] = {
            "api_key": TEST_KEY,
            "api_base": server.url,
            "rate_limiter": SlidingWindowRateLimiter(1000.0),
            "backoff_base": 0.001,
            "backoff_cap": 0.002,
        }
        options.update(overrides)
        made.append(StripeClient(**options))
        return made[-1]

    yield build
    for client in made:
        client.close()


def everything(client: StripeClient, **params: Any) -> list[Invoice | Malformed]:
    return list(client.invoices(created_gte=params.pop("created_gte", OCT_1), **params))


def only_invoice(client: StripeClient) -> Invoice:
    [listed] = everything(client)
    assert isinstance(listed, Invoice)
    return listed


# -- wire format ----------------------------------------------------------------------------------


def test_query_encoding_equals_the_sdks_recorded_request_lines() -> None:
    from urllib.parse import urlencode

    params = invoices_params(created_gte=OCT_1, customer="cus_1")
    cursor = [*params, ("starting_after", "in_1")]
    without_status = [recorded.replace("status=paid&", "") for recorded in LIST_LINES]
    assert [
        f"GET /v1/invoices?{urlencode(params)}",
        f"GET /v1/invoices?{urlencode(cursor)}",
    ] == without_status
    lines = [("limit", "100")]
    assert [
        f"GET {invoice_lines_path('in_1')}?{urlencode(lines)}",
        f"GET {invoice_lines_path('in_1')}?{urlencode([*lines, ('starting_after', 'il_1')])}",
    ] == LINE_ITEM_LINES


def test_listing_pages_with_the_sdks_request_lines(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice(f"in_{n:03}", created=NOV_1 + n) for n in range(101)]
    listed = everything(client_for(), customer="cus_1")
    assert [inv.id for inv in listed] == [f"in_{n:03}" for n in reversed(range(101))]
    expected = [recorded.replace("status=paid&", "") for recorded in LIST_LINES]
    assert server.targets == [expected[0], expected[1].replace("in_1", "in_001")]


def test_without_a_customer_the_listing_asks_only_created_and_limit(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice("in_a", customer="cus_1"), invoice("in_b", customer="cus_2")]
    listed = everything(client_for())
    assert {inv.id for inv in listed} == {"in_a", "in_b"}
    assert server.targets == [f"GET /v1/invoices?created%5Bgte%5D={OCT_1}&limit=100"]


def test_the_listing_is_lazy_one_page_at_a_time(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice(f"in_{n:03}", created=NOV_1 + n) for n in range(150)]
    client = client_for()
    first = next(client.invoices(created_gte=OCT_1))
    assert isinstance(first, Invoice) and first.id == "in_149"
    assert client.requests_made == 1


def test_an_invoice_reads_its_head_fields(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice("in_1", customer="cus_9", created=NOV_1 + 7, status="open")]
    got = only_invoice(client_for())
    assert (got.id, got.customer, got.subscription, got.status, got.currency) == (
        "in_1",
        "cus_9",
        "sub_1",
        "open",
        "usd",
    )
    assert (got.created, got.finalized_at, got.period_start, got.period_end) == (
        NOV_1 + 7,
        NOV_1 + 67,
        OCT_1,
        NOV_1,
    )


def test_an_invoice_line_reads_price_period_quantity_amount_and_item(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice("in_1", lines=[line("il_1", amount=313)])]
    client = client_for()
    [got] = list(client.invoice_lines(only_invoice(client)))
    assert got == InvoiceLine(
        id="il_1",
        invoice_id="in_1",
        subscription_item="si_1",
        price_id="price_api",
        period_start=OCT_1,
        period_end=NOV_1,
        quantity=Decimal("12.5"),
        amount=313,
        proration=False,
    )


def test_an_expanded_price_is_read_by_its_id(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    expanded = {"id": "price_api", "object": "price", "recurring": {"meter": "mtr_1"}}
    server.invoices = [invoice("in_1", lines=[line("il_1", price=expanded)])]
    client = client_for()
    [got] = list(client.invoice_lines(only_invoice(client)))
    assert isinstance(got, InvoiceLine) and got.price_id == "price_api"


@pytest.mark.parametrize(
    ("quantity_decimal", "quantity", "expected"),
    [("0.000001", 0, Decimal("0.000001")), (None, 7, Decimal(7)), (None, None, Decimal(0))],
)
def test_quantity_is_quantity_decimal_else_quantity_else_zero(
    server: InvoiceServer,
    client_for: Callable[..., StripeClient],
    quantity_decimal: str | None,
    quantity: int | None,
    expected: Decimal,
) -> None:
    server.invoices = [
        invoice("in_1", lines=[line("il_1", quantity_decimal=quantity_decimal, quantity=quantity)])
    ]
    client = client_for()
    [got] = list(client.invoice_lines(only_invoice(client)))
    assert isinstance(got, InvoiceLine) and got.quantity == expected


def test_a_line_without_pricing_has_no_price(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    no_price = line("il_1")
    no_price["pricing"] = None
    server.invoices = [invoice("in_1", lines=[no_price])]
    client = client_for()
    [got] = list(client.invoice_lines(only_invoice(client)))
    assert isinstance(got, InvoiceLine) and got.price_id is None


def test_lines_beyond_the_inline_ones_are_paged_in_with_the_sdks_request_lines(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    lines = [line(f"il_{n:03}") for n in range(125)]
    server.invoices = [invoice("in_1", lines=lines)]
    client = client_for()
    got = list(client.invoice_lines(only_invoice(client)))
    assert [item.id for item in got] == [f"il_{n:03}" for n in range(125)]
    assert server.targets[1:] == [
        LINE_ITEM_LINES[1].replace("il_1", "il_009"),
        LINE_ITEM_LINES[1].replace("il_1", "il_109"),
    ]


def test_lines_are_paged_in_only_as_they_are_used(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice("in_1", lines=[line(f"il_{n:03}") for n in range(30)])]
    client = client_for()
    lines = client.invoice_lines(only_invoice(client))
    inline = [next(lines) for _ in range(INLINE_LINES)]
    assert len(inline) == INLINE_LINES and client.requests_made == 1
    assert next(lines).id == "il_010" and client.requests_made == 2


def test_stripes_fixture_line_with_an_unreadable_price_is_malformed_not_fatal(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    fixture_line = copy.deepcopy(FIXTURES["line_item"])  # pricing without price_details
    server.invoices = [invoice("in_1", lines=[fixture_line, line("il_ok")])]
    client = client_for()
    got = list(client.invoice_lines(only_invoice(client)))
    assert isinstance(got[0], Malformed)
    assert (got[0].object, got[0].id, got[0].invoice) == ("line_item", fixture_line["id"], "in_1")
    assert "price_details" in got[0].reason
    assert isinstance(got[1], InvoiceLine) and got[1].id == "il_ok"


def test_a_line_without_a_period_is_malformed(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    broken = line("il_1")
    del broken["period"]
    server.invoices = [invoice("in_1", lines=[broken])]
    client = client_for()
    [got] = list(client.invoice_lines(only_invoice(client)))
    assert isinstance(got, Malformed) and "period" in got.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"currency": "us dollars"}, "currency"),
        ({"status": None}, "status"),
        ({"period_start": None}, "period_start"),
    ],
)
def test_a_malformed_invoice_is_yielded_as_such_and_the_listing_goes_on(
    server: InvoiceServer,
    client_for: Callable[..., StripeClient],
    change: dict[str, Any],
    reason: str,
) -> None:
    server.invoices = [
        invoice("in_bad", created=NOV_1 + 2, **change),
        invoice("in_good", created=NOV_1 + 1),
    ]
    bad, good = everything(client_for())
    assert isinstance(bad, Malformed) and (bad.object, bad.id, bad.invoice) == (
        "invoice",
        "in_bad",
        "in_bad",
    )
    assert reason in bad.reason
    assert isinstance(good, Invoice) and good.id == "in_good"


def test_a_failed_page_is_retried_and_every_attempt_counted_and_rate_limited(
    server: InvoiceServer, client_for: Callable[..., StripeClient]
) -> None:
    server.invoices = [invoice("in_1", lines=[line(f"il_{n:03}") for n in range(12)])]
    server.fail_next = 1
    limiter = CountingLimiter()
    client = client_for(rate_limiter=limiter)
    got = list(client.invoice_lines(only_invoice(client)))
    assert len(got) == 12
    assert client.requests_made == 3 == limiter.slots == len(server.targets)


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
    import httpx

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
