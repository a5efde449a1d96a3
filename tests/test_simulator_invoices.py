"""The Stripe simulator's invoices, over a real socket: `GET /v1/invoices`, `/v1/invoices/{id}`
and `/v1/invoices/{id}/lines`, their filters, pages, errors and knobs, the data file's
`invoices` key, and the official SDK reading them.

Every answer is checked against Stripe's schemas by `invoice_http` (tests/fixtures/stripe.py).
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
    INVOICES_DATA,
    INVOICES_FIXTURES_FILE,
    INVOICES_SDK_REQUESTS_FILE,
    TEST_KEY,
    StripeHttp,
    StripeSchemas,
    body,
    invoices_openapi,
)

FIXTURES = json.loads(INVOICES_FIXTURES_FILE.read_text(encoding="utf-8"))["resources"]
RECORDED = json.loads(INVOICES_SDK_REQUESTS_FILE.read_text(encoding="utf-8"))["captures"]
# Newest created first; in_0005 and in_0001 share a `created`, the greater id first.
NEWEST_FIRST = ["in_0005", "in_0001", "in_0003", "in_0002", "in_0004"]
OCT_1 = 1_759_276_800  # 2025-10-01T00:00:00Z
NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z
DEC_1 = 1_764_547_200  # 2025-12-01T00:00:00Z
PRICE_EXPANSION = "data.lines.data.pricing.price_details.price"


def recorded_lines(capture: int) -> list[str]:
    return [
        request["requestline"].removesuffix(" HTTP/1.1")
        for request in RECORDED[capture]["requests"]
    ]


def ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in body(response)["data"]]


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = body(response)["error"]
    return error


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = invoices_openapi()["components"]["schemas"][name]
    return found


def line(line_id: str, *, item: str = "si_1", amount: int = 25, **changes: Any) -> dict[str, Any]:
    """A data-file invoice line of `price_1` over November."""
    return {
        "id": line_id,
        "subscription_item": item,
        "price": "price_1",
        "period": {"start": NOV_1, "end": DEC_1},
        "quantity_decimal": "100",
        "amount": amount,
        **changes,
    }


def seed_customer(simulator: StripeSimulator) -> None:
    """cus_1 subscribes to one metered price (si_1) and one licensed price (si_2)."""
    simulator.add_meter("mtr_1", event_name="api_call")
    simulator.add_price(id="price_1", currency="usd", meter="mtr_1", unit_amount_decimal="0.25")
    simulator.add_price(
        id="price_seat", currency="usd", usage_type="licensed", unit_amount_decimal="500"
    )
    simulator.add_subscription(
        id="sub_1",
        customer="cus_1",
        created=OCT_1,
        items=[{"id": "si_1", "price": "price_1"}, {"id": "si_2", "price": "price_seat"}],
    )


def add_invoice(
    simulator: StripeSimulator, invoice_id: str, lines: list[dict[str, Any]], **changes: Any
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
            "lines": lines,
            **changes,
        }
    )


# -- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "fetch"),
    [
        ("invoice", lambda http: body(http.invoice("in_0001"))),
        ("line_item", lambda http: body(http.invoice_lines("in_0001"))["data"][0]),
    ],
)
def test_objects_carry_every_fixture_field_and_every_required_field_the_schema_defines(
    invoicing: StripeSimulator, invoice_http: StripeHttp, resource: str, fetch: Any
) -> None:
    ours = fetch(invoice_http)
    properties = set(schema(resource)["properties"])
    assert (set(FIXTURES[resource]) & properties) - set(ours) == set()
    assert set(schema(resource)["required"]) - set(ours) == set()
    assert set(ours) <= properties


def test_the_schemas_refuse_an_invoice_subscription_and_a_text_quantity(
    invoicing: StripeSimulator, invoice_http: StripeHttp, invoice_schemas: StripeSchemas
) -> None:
    invoice = body(invoice_http.invoice("in_0001"))
    assert invoice_schemas.errors("invoice", invoice) == []
    assert invoice_schemas.errors("invoice", {**invoice, "subscription": "sub_0001"}) != []
    first = invoice["lines"]["data"][0]
    assert invoice_schemas.errors("line_item", {**first, "quantity": "1200"}) != []
    assert invoice_schemas.errors("line_item", {**first, "amount": "50"}) != []


def test_an_invoice_is_served_as_the_data_file_gives_it(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    invoice = body(invoice_http.invoice("in_0001"))
    assert (invoice["id"], invoice["object"], invoice["customer"], invoice["status"]) == (
        "in_0001",
        "invoice",
        "cus_A",
        "paid",
    )
    assert (invoice["created"], invoice["currency"]) == (1_764_550_800, "usd")
    assert (invoice["period_start"], invoice["period_end"]) == (NOV_1, DEC_1)
    assert invoice["status_transitions"] == {
        "finalized_at": 1_764_554_400,
        "marked_uncollectible_at": None,
        "paid_at": 1_764_554_400,
        "voided_at": None,
    }
    assert invoice["parent"] == {
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": "sub_0001"},
        "type": "subscription_details",
    }
    assert (invoice["total"], invoice["amount_paid"], invoice["amount_remaining"]) == (
        6050,
        6050,
        0,
    )
    assert invoice["lines"]["url"] == "/v1/invoices/in_0001/lines"
    assert (ids_of(invoice["lines"]), invoice["lines"]["has_more"]) == (
        ["il_0001", "il_0002"],
        False,
    )


def ids_of(listed: dict[str, Any]) -> list[str]:
    return [item["id"] for item in listed["data"]]


def test_a_metered_line_has_stripes_shape(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    first = body(invoice_http.invoice("in_0001"))["lines"]["data"][0]
    assert {key: first[key] for key in ("id", "object", "amount", "currency", "invoice")} == {
        "id": "il_0001",
        "object": "line_item",
        "amount": 50,
        "currency": "usd",
        "invoice": "in_0001",
    }
    assert first["period"] == {"end": DEC_1, "start": NOV_1}
    assert (first["quantity"], first["quantity_decimal"]) == (1200, "1200")
    assert first["pricing"] == {
        "price_details": {"price": "price_api_calls", "product": "prod_api_calls"},
        "type": "price_details",
        "unit_amount_decimal": "0.25",
    }
    assert first["parent"] == {
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": "sub_0001",
            "subscription_item": "si_0001",
        },
        "type": "subscription_item_details",
    }
    assert (first["subscription"], first["subtotal"]) == ("sub_0001", 50)


def test_quantity_is_the_integer_part_of_quantity_decimal(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    response = invoice_http.invoice_lines("in_0002")
    assert '"quantity":20,"quantity_decimal":"20.5"' in response.text
    assert '"unit_amount_decimal":null' in response.text  # a tiered price has no unit amount


def test_a_licensed_price_is_a_line_too(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    seats = body(invoice_http.invoice("in_0001"))["lines"]["data"][1]
    assert (seats["pricing"]["price_details"]["price"], seats["quantity"], seats["amount"]) == (
        "price_seats",
        3,
        6000,
    )
    price = body(invoice_http.request("GET", "/v1/prices/price_seats", kind="price_get"))
    assert (price["recurring"]["usage_type"], price["recurring"]["meter"]) == ("licensed", None)


def test_a_draft_is_not_finalized_and_finalizes_within_the_hour(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    draft = body(invoice_http.invoice("in_0003"))
    assert draft["status"] == "draft"
    assert draft["status_transitions"]["finalized_at"] is None
    assert draft["automatically_finalizes_at"] == draft["created"] + 3_600
    assert (draft["amount_due"], draft["amount_paid"], draft["amount_remaining"]) == (413, 0, 413)


@pytest.mark.parametrize(
    ("invoice_id", "transition", "at"),
    [
        ("in_0004", "voided_at", 1_757_000_000),
        ("in_0005", "marked_uncollectible_at", 1_765_159_200),
    ],
)
def test_void_and_uncollectible_invoices_say_when(
    invoicing: StripeSimulator, invoice_http: StripeHttp, invoice_id: str, transition: str, at: int
) -> None:
    transitions = body(invoice_http.invoice(invoice_id))["status_transitions"]
    assert transitions[transition] == at
    assert transitions["paid_at"] is None
    assert transitions["finalized_at"] is not None


def test_a_proration_line_says_so(invoicing: StripeSimulator, invoice_http: StripeHttp) -> None:
    [proration] = body(invoice_http.invoice("in_0005"))["lines"]["data"]
    assert proration["parent"]["subscription_item_details"]["proration"] is True


# -- listing: order, filters, pages ----------------------------------------------------------------


def test_invoices_are_newest_created_first_ties_by_id(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    response = invoice_http.invoices()
    assert ids(response) == NEWEST_FIRST
    assert (body(response)["url"], body(response)["has_more"]) == ("/v1/invoices", False)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("draft", ["in_0003"]),
        ("open", ["in_0002"]),
        ("paid", ["in_0001"]),
        ("uncollectible", ["in_0005"]),
        ("void", ["in_0004"]),
    ],
)
def test_status_filter_keeps_that_status(
    invoicing: StripeSimulator, invoice_http: StripeHttp, status: str, expected: list[str]
) -> None:
    assert ids(invoice_http.invoices(f"status={status}")) == expected


def test_customer_and_subscription_filters(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    assert ids(invoice_http.invoices("customer=cus_A")) == ["in_0001", "in_0003"]
    assert ids(invoice_http.invoices("subscription=sub_0005")) == ["in_0003"]
    assert ids(invoice_http.invoices("customer=cus_A&subscription=sub_0002")) == []
    assert ids(invoice_http.invoices("customer=cus_A&status=paid")) == ["in_0001"]


def test_created_filter_takes_an_integer_and_stripes_range_operators(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    assert ids(invoice_http.invoices("created=1762045200")) == ["in_0002"]
    assert ids(invoice_http.invoices("created%5Bgte%5D=1762045200")) == NEWEST_FIRST[:4]
    assert ids(invoice_http.invoices("created%5Bgt%5D=1762045200")) == NEWEST_FIRST[:3]
    assert ids(invoice_http.invoices("created%5Blt%5D=1762128000")) == ["in_0002", "in_0004"]
    query = "created%5Bgte%5D=1762045200&created%5Blte%5D=1762128000"
    assert ids(invoice_http.invoices(query)) == ["in_0003", "in_0002"]


def test_invoices_page_with_starting_after_and_ending_before(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    first = invoice_http.invoices("limit=2")
    assert (ids(first), body(first)["has_more"]) == (["in_0005", "in_0001"], True)
    second = invoice_http.invoices("limit=2&starting_after=in_0001")
    assert (ids(second), body(second)["has_more"]) == (["in_0003", "in_0002"], True)
    last = invoice_http.invoices("limit=2&starting_after=in_0002")
    assert (ids(last), body(last)["has_more"]) == (["in_0004"], False)
    before = invoice_http.invoices("limit=2&ending_before=in_0002")
    assert (ids(before), body(before)["has_more"]) == (["in_0001", "in_0003"], True)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("status=sleeping", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("colour=red", "colour"),
        ("created%5Bafter%5D=1", "created[after]"),
        ("created=soon", "created"),
        ("starting_after=in_nope", "starting_after"),
        ("due_date=1764547200", "due_date"),
        ("collection_method=by_hand", "collection_method"),
    ],
)
def test_bad_invoice_list_parameters_are_a_400(
    invoicing: StripeSimulator, invoice_http: StripeHttp, query: str, param: str
) -> None:
    response = invoice_http.invoices(query)
    assert response.status_code == 400
    assert (error_of(response)["type"], error_of(response)["param"]) == (
        "invalid_request_error",
        param,
    )


def test_lines_show_price_ids_unless_the_price_is_expanded(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    def prices(listed: list[dict[str, Any]]) -> list[Any]:
        return [entry["pricing"]["price_details"]["price"] for entry in listed]

    plain = body(invoice_http.invoices("customer=cus_A&status=paid"))["data"][0]["lines"]["data"]
    assert prices(plain) == ["price_api_calls", "price_seats"]
    query = f"customer=cus_A&status=paid&expand%5B0%5D={PRICE_EXPANSION}"
    listed = body(invoice_http.invoices(query))["data"][0]["lines"]["data"]
    expanded = prices(listed)
    assert [price["id"] for price in expanded] == ["price_api_calls", "price_seats"]
    assert expanded[0]["recurring"]["meter"] == "mtr_api_calls"
    assert expanded[0] == body(invoice_http.request("GET", "/v1/prices/price_api_calls"))
    retrieved = body(
        invoice_http.invoice("in_0001", "expand%5B%5D=lines.data.pricing.price_details.price")
    )
    assert prices(retrieved["lines"]["data"]) == expanded
    paged = body(
        invoice_http.invoice_lines("in_0001", "expand%5B%5D=data.pricing.price_details.price")
    )
    assert prices(paged["data"]) == expanded


# -- lines -----------------------------------------------------------------------------------------


def test_an_invoice_inlines_ten_lines_and_pages_the_rest(
    simulator: StripeSimulator, invoice_http: StripeHttp
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_many", [line(f"il_{index:03}") for index in range(12)])
    inline = body(invoice_http.invoice("in_many"))["lines"]
    assert (ids_of(inline), inline["has_more"]) == ([f"il_{i:03}" for i in range(10)], True)
    assert inline["url"] == "/v1/invoices/in_many/lines"
    first = invoice_http.invoice_lines("in_many", "limit=5")
    assert (ids(first), body(first)["has_more"]) == ([f"il_{i:03}" for i in range(5)], True)
    assert body(first)["url"] == "/v1/invoices/in_many/lines"
    rest = invoice_http.invoice_lines("in_many", "limit=100&starting_after=il_004")
    assert (ids(rest), body(rest)["has_more"]) == ([f"il_{i:03}" for i in range(5, 12)], False)
    before = invoice_http.invoice_lines("in_many", "limit=2&ending_before=il_004")
    assert (ids(before), body(before)["has_more"]) == (["il_002", "il_003"], True)
    assert len(ids(invoice_http.invoice_lines("in_many"))) == 10


def test_an_invoice_total_counts_every_line_not_only_the_inline_ones(
    simulator: StripeSimulator, invoice_http: StripeHttp
) -> None:
    seed_customer(simulator)
    add_invoice(simulator, "in_many", [line(f"il_{index:03}", amount=100) for index in range(12)])
    assert body(invoice_http.invoice("in_many"))["total"] == 1200


def test_a_licensed_line_added_in_python_is_served(
    simulator: StripeSimulator, invoice_http: StripeHttp
) -> None:
    seed_customer(simulator)
    add_invoice(
        simulator,
        "in_seats",
        [line("il_seat", item="si_2", price="price_seat", quantity_decimal="2", amount=1000)],
    )
    [seat] = body(invoice_http.invoice_lines("in_seats"))["data"]
    assert (seat["pricing"]["price_details"]["price"], seat["quantity"]) == ("price_seat", 2)


def test_unknown_invoice_is_a_404_with_stripes_error(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    response = invoice_http.invoice("in_nope")
    assert response.status_code == 404
    assert body(response) == {
        "error": {
            "code": "resource_missing",
            "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
            "message": "No such invoice: 'in_nope'",
            "param": "id",
            "type": "invalid_request_error",
        }
    }
    lines = invoice_http.invoice_lines("in_nope")
    assert (lines.status_code, error_of(lines)["param"]) == (404, "invoice")


@pytest.mark.parametrize(
    ("query", "param"),
    [("starting_after=il_nope", "starting_after"), ("limit=0", "limit"), ("status=paid", "status")],
)
def test_bad_line_list_parameters_are_a_400(
    invoicing: StripeSimulator, invoice_http: StripeHttp, query: str, param: str
) -> None:
    response = invoice_http.invoice_lines("in_0001", query)
    assert (response.status_code, error_of(response)["param"]) == (400, param)


def test_the_invoice_endpoints_need_a_key(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    for target in ("/v1/invoices", "/v1/invoices/in_0001", "/v1/invoices/in_0001/lines"):
        response = invoice_http.request("GET", target, headers={})
        assert response.status_code == 401
        wrong = invoice_http.request("GET", target, headers={"Authorization": "Bearer pk_x"})
        assert wrong.status_code == 401
    assert invoicing.stats.unauthorized == 6


def test_unknown_invoice_routes_are_a_404(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    for method, target in (
        ("GET", "/v1/invoices/in_0001/lines/il_0001"),
        ("GET", "/v1/invoices/in_0001/payments"),
        ("POST", "/v1/invoices"),
        ("GET", "/v1/invoices//lines"),
    ):
        response = invoice_http.request(method, target)
        assert response.status_code == 404
        assert error_of(response)["message"].startswith("Unrecognized request URL")


# -- knobs and statistics --------------------------------------------------------------------------


INVOICE_CALLS = [
    ("invoices_list", lambda http: http.invoices()),
    ("invoice_get", lambda http: http.invoice("in_0001")),
    ("invoice_lines_list", lambda http: http.invoice_lines("in_0001")),
]


@pytest.mark.parametrize(("endpoint", "call"), INVOICE_CALLS)
def test_a_scripted_fault_hits_the_invoice_endpoint_it_names(
    invoicing: StripeSimulator, invoice_http: StripeHttp, endpoint: str, call: Any
) -> None:
    invoicing.faults.script(Fault("503", should_retry=True), endpoint=endpoint)
    assert invoice_http.subscriptions().status_code == 200
    failed = call(invoice_http)
    assert (failed.status_code, failed.headers["stripe-should-retry"]) == (503, "true")
    assert call(invoice_http).status_code == 200
    assert invoicing.stats.faults == 1


def test_a_scripted_fault_for_a_customer_hits_only_that_customers_listing(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    invoicing.faults.script(Fault("500", customer="cus_B", endpoint="invoices_list"))
    assert invoice_http.invoices("customer=cus_A").status_code == 200
    assert invoice_http.invoices("customer=cus_B").status_code == 500


def test_random_faults_hit_invoices_unless_left_out(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    invoicing.faults.set_random(1.0, ["502"])
    assert invoice_http.invoice_lines("in_0001").status_code == 502
    invoicing.faults.set_random(1.0, ["502"], endpoints=["subscriptions_list"])
    assert invoice_http.invoice_lines("in_0001").status_code == 200


def test_a_malformed_fault_on_invoices_is_broken_json(invoicing: StripeSimulator) -> None:
    invoicing.faults.script("malformed", endpoint="invoices_list")
    response = httpx.get(
        f"{invoicing.url}/v1/invoices", headers={"Authorization": f"Bearer {TEST_KEY}"}
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_a_reset_fault_on_an_invoice_drops_the_connection(invoicing: StripeSimulator) -> None:
    invoicing.faults.script("reset", endpoint="invoice_get")
    with pytest.raises(httpx.TransportError):
        httpx.get(
            f"{invoicing.url}/v1/invoices/in_0001",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        )


def test_rate_limit_applies_to_invoices(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    invoicing.rate_limit = 2
    answers = [
        invoice_http.invoices().status_code,
        invoice_http.invoice("in_0001").status_code,
        invoice_http.invoice_lines("in_0001").status_code,
    ]
    assert answers == [200, 200, 429]
    assert invoicing.stats.rate_limited == 1


def test_latency_applies_to_invoices(invoicing: StripeSimulator, invoice_http: StripeHttp) -> None:
    invoicing.latency = 0.2
    started = time.monotonic()
    invoice_http.invoice_lines("in_0002")
    assert time.monotonic() - started >= 0.2


def test_stats_count_each_invoice_endpoint_by_its_own_name(
    invoicing: StripeSimulator, invoice_http: StripeHttp
) -> None:
    invoice_http.invoices()
    invoice_http.invoices("status=paid")
    invoice_http.invoice("in_0001")
    invoice_http.invoice_lines("in_0001")
    invoice_http.invoice_lines("in_0002")
    invoice_http.invoice_lines("in_0003")
    snapshot = invoicing.stats.snapshot()
    assert (
        snapshot["invoices_list"],
        snapshot["invoice_get"],
        snapshot["invoice_lines_list"],
    ) == (2, 1, 3)
    assert invoicing.stats.requests_to("invoice_lines_list") == 3
    assert snapshot["total"] == 6


# -- the data file ---------------------------------------------------------------------------------


def invoices_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(INVOICES_DATA.read_text(encoding="utf-8"))
    return document


def rejected(document: object) -> str:
    with pytest.raises(SimulatorDataError) as caught:
        SimulatorData.from_json(json.dumps(document))
    return str(caught.value)


def with_invoice(index: int, **changes: Any) -> dict[str, Any]:
    document = invoices_document()
    document["invoices"][index] = {**document["invoices"][index], **changes}
    return document


def with_line(index: int, line_index: int, **changes: Any) -> dict[str, Any]:
    document = invoices_document()
    lines = document["invoices"][index]["lines"]
    lines[line_index] = {**lines[line_index], **changes}
    return document


def without(document: dict[str, Any], index: int, key: str, line_index: int | None = None) -> Any:
    entry = document["invoices"][index]
    del (entry if line_index is None else entry["lines"][line_index])[key]
    return document


def test_the_invoices_data_file_loads(invoicing: StripeSimulator) -> None:
    assert [invoice.id for invoice in invoicing.data.invoices()] == NEWEST_FIRST
    assert sum(len(invoice.lines) for invoice in invoicing.data.invoices()) == 7


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            with_line(0, 1, price="price_nope"),
            "invoices[0] (in_0001): lines[1] (il_0002) names an unknown price 'price_nope'",
        ),
        (
            with_line(0, 0, subscription_item="si_nope"),
            "invoices[0] (in_0001): lines[0] (il_0001) names an unknown subscription item "
            "'si_nope'",
        ),
        (
            with_line(0, 0, period={"start": DEC_1, "end": NOV_1}),
            "invoices[0] (in_0001): lines[0] (il_0001): its period ends before it starts",
        ),
        (
            with_invoice(0, period_start=DEC_1, period_end=NOV_1),
            "invoices[0] (in_0001): its period ends before it starts",
        ),
        (
            with_invoice(0, status="overdue"),
            "invoices[0] (in_0001): 'status' must be one of draft, open, paid, uncollectible, "
            "void, got 'overdue'",
        ),
        (
            without(invoices_document(), 1, "currency"),
            "invoices[1] (in_0002) is missing the required key 'currency'",
        ),
        (
            without(invoices_document(), 1, "quantity_decimal", line_index=0),
            "invoices[1] (in_0002): lines[0] (il_0003) is missing the required key "
            "'quantity_decimal'",
        ),
        (
            with_invoice(1, id="in_0001"),
            "invoices[1] (in_0001): an invoice with this id already exists",
        ),
        (
            with_line(1, 1, id="il_0001"),
            "invoices[1] (in_0002): invoice line 'il_0001' already exists",
        ),
        (
            with_line(1, 1, id="il_0003"),
            "invoices[1] (in_0002): invoice line 'il_0003' already exists",
        ),
        (
            with_invoice(2, finalized_at=1_762_131_600),
            "invoices[2] (in_0003) is a draft and cannot have a 'finalized_at'",
        ),
        (
            without(invoices_document(), 0, "finalized_at"),
            "invoices[0] (in_0001) is paid and needs a 'finalized_at'",
        ),
        (
            with_invoice(0, paid_at=None, voided_at=1_764_600_000),
            "invoices[0] (in_0001) is paid and cannot have a 'voided_at'",
        ),
        (
            with_invoice(0, subscription="sub_nope"),
            "invoices[0] (in_0001) names an unknown subscription 'sub_nope'",
        ),
        (
            with_invoice(0, customer="cus_B"),
            "invoices[0] (in_0001): subscription 'sub_0001' is cus_A's, not cus_B's",
        ),
        (
            with_line(0, 0, subscription_item="si_0003"),
            "invoices[0] (in_0001): lines[0] (il_0001): subscription item 'si_0003' belongs "
            "to 'sub_0002', not to the invoice's subscription 'sub_0001'",
        ),
        (
            with_line(0, 0, price="price_storage"),
            "invoices[0] (in_0001): lines[0] (il_0001): its price 'price_storage' is in eur, "
            "the invoice in usd",
        ),
        (
            with_line(0, 0, quantity_decimal="lots"),
            "invoices[0] (in_0001): lines[0] (il_0001): 'quantity_decimal' must be a "
            "non-negative decimal string, got 'lots'",
        ),
        (
            with_line(0, 0, colour="red"),
            "invoices[0] (in_0001): lines[0] (il_0001) has unknown keys: colour",
        ),
        (with_invoice(0, lines={}), "invoices[0] (in_0001): 'lines' must be an array"),
    ],
)
def test_a_bad_invoice_is_rejected_in_one_sentence_naming_the_entry(
    document: dict[str, Any], message: str
) -> None:
    assert rejected(document) == message


@pytest.mark.parametrize("amount", [1.5, "30", True, None])
def test_a_line_amount_must_be_an_integer(amount: object) -> None:
    message = rejected(with_line(0, 0, amount=amount))
    assert message == (
        "invoices[0] (in_0001): lines[0] (il_0001): 'amount' must be an integer "
        "(in the currency's minor unit)"
    )


def test_a_credit_line_may_have_a_negative_amount() -> None:
    data = SimulatorData.from_json(json.dumps(with_line(0, 0, amount=-50)))
    invoice = data.invoice("in_0001")
    assert invoice is not None and invoice.total == 5950


def test_invoices_must_be_an_array() -> None:
    document = invoices_document()
    document["invoices"] = {}
    assert rejected(document) == "'invoices' must be an array"


@pytest.mark.parametrize(
    "document",
    [
        with_line(0, 1, price="price_nope"),
        with_invoice(2, finalized_at=1_762_131_600),
        with_line(1, 1, id="il_0001"),
        {"invoices": [{"id": "in_1"}]},
        {"invoices": [7]},
    ],
)
def test_a_bad_invoice_in_the_data_file_exits_2_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: object
) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        load_data_file(path)
    assert caught.value.code == 2
    [sentence] = capsys.readouterr().err.splitlines()
    assert sentence.startswith(f"error: the data file {path} cannot be used: invoices[")
    assert sentence.endswith(".")
    assert ". " not in sentence


def test_a_line_with_equal_period_ends_is_accepted() -> None:
    data = SimulatorData.from_json(
        json.dumps(with_line(0, 0, period={"start": NOV_1, "end": NOV_1}))
    )
    invoice = data.invoice("in_0001")
    assert invoice is not None and invoice.lines[0].period_end == NOV_1


# -- the official SDK, unchanged, against the simulator --------------------------------------------


def sdk_client(simulator: StripeSimulator) -> Any:
    stripe = pytest.importorskip("stripe")
    return stripe.StripeClient(
        TEST_KEY, base_addresses={"api": simulator.url}, max_network_retries=0
    )


def seed_for_sdk(simulator: StripeSimulator) -> None:
    """101 paid invoices of cus_1 in October (in_000 .. in_100, newest last), and in_1 with
    101 lines (il_000 .. il_100), created before them."""
    seed_customer(simulator)
    for index in range(101):
        add_invoice(
            simulator,
            f"in_{index:03}",
            [line(f"il_{index:03}_a")],
            created=OCT_1 + 60 * index,
            finalized_at=OCT_1 + 60 * index + 30,
        )
    add_invoice(
        simulator,
        "in_1",
        [line(f"il_{index:03}") for index in range(101)],
        created=OCT_1 - 86_400,
        finalized_at=OCT_1 - 86_000,
    )


def test_the_sdk_lists_invoices_created_since_and_auto_pages_them(
    simulator: StripeSimulator,
) -> None:
    seed_for_sdk(simulator)
    sdk = sdk_client(simulator)
    listed = sdk.v1.invoices.list(
        params={"customer": "cus_1", "status": "paid", "created": {"gte": OCT_1}, "limit": 100}
    )
    invoices = list(listed.auto_paging_iter())
    assert [invoice.id for invoice in invoices] == [f"in_{i:03}" for i in reversed(range(101))]
    first, second = recorded_lines(0)
    assert list(simulator.stats.targets) == [first, second.replace("in_1", "in_001")]
    assert invoices[0].lines.data[0].pricing.price_details.price == "price_1"


def test_the_sdk_expands_line_prices_with_its_recorded_request(
    simulator: StripeSimulator,
) -> None:
    seed_for_sdk(simulator)
    sdk = sdk_client(simulator)
    page = sdk.v1.invoices.list(
        params={
            "limit": 100,
            "created": {"gte": OCT_1, "lt": NOV_1},
            "expand": [PRICE_EXPANSION],
        }
    )
    assert list(simulator.stats.targets) == recorded_lines(1)
    assert (len(page.data), page.has_more) == (100, True)
    price = page.data[0].lines.data[0].pricing.price_details.price
    assert (price.id, price.recurring.meter) == ("price_1", "mtr_1")


def test_the_sdk_retrieves_an_invoice_and_pages_its_lines(simulator: StripeSimulator) -> None:
    seed_for_sdk(simulator)
    sdk = sdk_client(simulator)
    invoice = sdk.v1.invoices.retrieve("in_1")
    assert (invoice.status, invoice.customer, invoice.lines.has_more) == ("paid", "cus_1", True)
    assert invoice.status_transitions.finalized_at == OCT_1 - 86_000
    assert invoice.parent.subscription_details.subscription == "sub_1"
    lines = sdk.v1.invoices.line_items.list("in_1", params={"limit": 100})
    paged = list(lines.auto_paging_iter())
    assert [entry.id for entry in paged] == [f"il_{index:03}" for index in range(101)]
    assert (paged[0].quantity, paged[0].quantity_decimal) == (100, Decimal(100))
    first, second = recorded_lines(3)
    assert list(simulator.stats.targets) == [
        *recorded_lines(2),
        first,
        second.replace("il_1", "il_099"),
    ]


def test_the_sdk_gets_stripes_404_for_an_unknown_invoice(simulator: StripeSimulator) -> None:
    stripe = pytest.importorskip("stripe")
    sdk = sdk_client(simulator)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        sdk.v1.invoices.retrieve("in_nope")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")
