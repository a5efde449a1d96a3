"""sync-invoices: what Stripe invoiced becomes the `stripe` ledger's line items.

Against the project's simulator over real sockets, on SQLite (and PostgreSQL when set); what
the simulator will not serve (an invoice or line Stripe could send malformed, a price that is
gone) comes from `CannedStripe`, a tiny server of canned answers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, delete, select

from meter_recon.cli import main
from models.enums import Ledger, LineItemSource
from models.tables import InvoiceLineItem, PairSource, StripePrice, TrackedPair
from simulator import Fault, SimulatorData, StripeSimulator
from tasks.discover import discover
from tasks.fetch import close_clients, configure_clients
from tasks.run_config import RunConfig
from tasks.sync_invoices import InvoiceSync, default_since, sync_invoices
from tests.fixtures.canned import CannedStripe
from tests.fixtures.stripe import (
    BILLING_SDK_REQUESTS_FILE,
    INVOICES_FIXTURES_FILE,
    INVOICES_SDK_REQUESTS_FILE,
    TEST_KEY,
)

OCT_1 = 1_759_276_800  # 2025-10-01T00:00:00Z
NOV_1 = 1_761_955_200  # 2025-11-01T00:00:00Z
DEC_1 = 1_764_547_200  # 2025-12-01T00:00:00Z
HOUR = 3_600
DAY = 86_400
SINCE = date(2025, 11, 1)
FIXTURES = json.loads(INVOICES_FIXTURES_FILE.read_text(encoding="utf-8"))["resources"]


def recorded(path: Any, capture: int) -> list[str]:
    """The request lines stripe-python sent for one recorded call."""
    captures = json.loads(path.read_text(encoding="utf-8"))["captures"]
    return [r["requestline"].removesuffix(" HTTP/1.1") for r in captures[capture]["requests"]]


# -- builders -------------------------------------------------------------------------------------


@pytest.fixture
def config(simulator: StripeSimulator, database_url: str) -> Iterator[RunConfig]:
    """The run's configuration pointed at the simulator and the test database."""
    configure_clients(backoff_base=0.005, backoff_cap=0.05, timeout=5.0, max_retry_seconds=20.0)
    yield RunConfig(
        database_url=SecretStr(database_url),
        stripe_api_key=SecretStr(TEST_KEY),
        stripe_api_base=simulator.url,
        max_requests_per_second=1000.0,
    )
    configure_clients()
    close_clients()


def seed_billing(simulator: StripeSimulator) -> None:
    """cus_1 subscribes to API calls (25 cents a unit), tiered storage and a licensed seat;
    cus_2 to API calls."""
    simulator.add_meter("mtr_api", event_name="api_call")
    simulator.add_meter("mtr_storage", event_name="storage")
    simulator.add_price(id="price_api", currency="usd", meter="mtr_api", unit_amount_decimal="25")
    simulator.add_price(
        id="price_storage",
        currency="usd",
        meter="mtr_storage",
        billing_scheme="tiered",
        tiers_mode="graduated",
        tiers=[
            {"up_to": 100, "unit_amount_decimal": "50", "flat_amount_decimal": "0"},
            {"up_to": None, "unit_amount_decimal": "30", "flat_amount_decimal": "1000"},
        ],
    )
    simulator.add_price(
        id="price_seat", currency="usd", usage_type="licensed", unit_amount_decimal="1000"
    )
    simulator.add_subscription(
        id="sub_1",
        customer="cus_1",
        created=OCT_1,
        items=[
            {"id": "si_api", "price": "price_api"},
            {"id": "si_storage", "price": "price_storage"},
            {"id": "si_seat", "price": "price_seat"},
        ],
    )
    simulator.add_subscription(
        id="sub_2", customer="cus_2", created=OCT_1, items=[{"id": "si_2", "price": "price_api"}]
    )


def line(line_id: str, **changes: Any) -> dict[str, Any]:
    """A data-file line: 12.5 API calls over November, 313 cents."""
    return {
        "id": line_id,
        "subscription_item": "si_api",
        "price": "price_api",
        "period": {"start": NOV_1, "end": DEC_1},
        "quantity_decimal": "12.5",
        "amount": 313,
        **changes,
    }


def add_invoice(
    simulator: StripeSimulator, invoice_id: str, *lines: dict[str, Any], **changes: Any
) -> None:
    """A paid invoice of cus_1's sub_1, created an hour after November, finalized after."""
    status = changes.get("status", "paid")
    entry: dict[str, Any] = {
        "id": invoice_id,
        "customer": "cus_1",
        "subscription": "sub_1",
        "status": status,
        "created": DEC_1 + HOUR,
        "currency": "usd",
        "period_start": NOV_1,
        "period_end": DEC_1,
        "lines": list(lines) or [line(f"il_{invoice_id}")],
    }
    if status != "draft":
        entry["finalized_at"] = DEC_1 + 2 * HOUR
    simulator.add_invoice(**{**entry, **changes})


def sync(config: RunConfig, **options: Any) -> InvoiceSync:
    return sync_invoices(config, since=options.pop("since", SINCE), **options)


def stripe_rows(engine: Engine) -> dict[str, InvoiceLineItem]:
    with Session(engine) as session:
        rows = session.exec(select(InvoiceLineItem).where(InvoiceLineItem.ledger == Ledger.STRIPE))
        return {row.id: row for row in rows}


def snapshot(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every stripe line item's columns but when it was written."""
    return {
        row_id: row.model_dump(exclude={"imported_at", "withdrawn_at"})
        | {"withdrawn": row.withdrawn_at is not None}
        for row_id, row in stripe_rows(engine).items()
    }


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- what a line item holds -----------------------------------------------------------------------


def test_a_metered_line_becomes_a_stripe_line_item_with_every_column(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1")
    found = sync(config)
    assert (found.invoices, found.line_items, found.added, found.malformed) == (1, 1, 1, 0)
    row = stripe_rows(engine)["il_in_1"]
    assert (row.ledger, row.source, row.invoice_id) == (
        Ledger.STRIPE,
        LineItemSource.STRIPE_INVOICE,
        "in_1",
    )
    assert (row.stripe_customer_id, row.meter_id, row.price_id) == ("cus_1", "mtr_api", "price_api")
    assert (row.period_start, row.period_end) == (date(2025, 11, 1), date(2025, 12, 1))
    assert (row.period_start_at, row.period_end_at) == (at(NOV_1), at(DEC_1))
    assert (row.quantity, row.amount, row.currency) == (Decimal("12.5"), Decimal("3.13"), "usd")
    assert (row.invoice_status, row.finalized_at, row.withdrawn_at) == (
        "paid",
        at(DEC_1 + 2 * HOUR),
        None,
    )


def test_per_tier_lines_of_one_item_and_period_are_one_line_item(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    tier = {"subscription_item": "si_storage", "price": "price_storage"}
    add_invoice(
        simulator,
        "in_1",
        line("il_b", **tier, quantity_decimal="20", amount=1600),
        line("il_a", **tier, quantity_decimal="100", amount=5000),
    )
    assert sync(config).line_items == 1
    [row] = stripe_rows(engine).values()
    assert (row.id, row.meter_id, row.quantity, row.amount) == (
        "il_a",
        "mtr_storage",
        Decimal(120),
        Decimal(66),
    )


def test_a_period_off_midnight_keeps_its_instants_and_covers_the_days_it_touches(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    start, end = NOV_1 + 9 * DAY + 14 * HOUR + 1_800, DEC_1 + 9 * DAY + 14 * HOUR + 1_800
    add_invoice(
        simulator, "in_1", line("il_1", period={"start": start, "end": end}), created=end + HOUR
    )
    sync(config)
    row = stripe_rows(engine)["il_1"]
    assert (row.period_start_at, row.period_end_at) == (at(start), at(end))
    assert (row.period_start, row.period_end) == (date(2025, 11, 10), date(2025, 12, 11))


def test_a_draft_s_lines_are_stored_pending(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1", status="draft")
    sync(config)
    row = stripe_rows(engine)["il_in_1"]
    assert (row.invoice_status, row.finalized_at, row.withdrawn_at) == ("draft", None, None)


def test_a_licensed_line_is_skipped_and_its_price_cached_as_billing_no_meter(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    seat = line("il_seat", subscription_item="si_seat", price="price_seat", quantity_decimal="1")
    add_invoice(simulator, "in_1", line("il_api"), seat)
    assert sync(config).line_items == 1
    assert list(stripe_rows(engine)) == ["il_api"]
    with Session(engine) as session:
        seat_price = session.get(StripePrice, "price_seat")
    assert seat_price is not None and seat_price.meter_id is None


# -- void invoices --------------------------------------------------------------------------------


def reseed(simulator: StripeSimulator, status: str) -> None:
    """The simulator again, with in_1 now in `status` (Stripe's listing as a later sync sees it)."""
    simulator.data = SimulatorData()
    seed_billing(simulator)
    add_invoice(simulator, "in_1", status=status)


def test_a_voided_invoice_s_line_items_are_withdrawn_once(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    reseed(simulator, "open")
    sync(config)
    reseed(simulator, "void")
    found = sync(config)
    assert (found.changed, found.withdrawn) == (1, 1)
    row = stripe_rows(engine)["il_in_1"]
    assert row.invoice_status == "void" and row.withdrawn_at is not None
    again = sync(config)
    assert (again.changed, again.withdrawn) == (0, 0)
    assert stripe_rows(engine)["il_in_1"].withdrawn_at == row.withdrawn_at


def test_an_invoice_seen_void_first_is_stored_withdrawn_and_comes_back_when_not_void(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    reseed(simulator, "void")
    assert sync(config).withdrawn == 1
    reseed(simulator, "paid")
    sync(config)
    row = stripe_rows(engine)["il_in_1"]
    assert (row.invoice_status, row.withdrawn_at) == ("paid", None)


def test_a_void_invoice_bills_no_pair(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    reseed(simulator, "void")
    assert sync(config).pairs_added == 0


# -- prices ---------------------------------------------------------------------------------------


def test_an_uncached_price_is_fetched_once_with_its_tiers_and_cached(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    tier = {"subscription_item": "si_storage", "price": "price_storage"}
    add_invoice(simulator, "in_1", line("il_1", **tier))
    add_invoice(simulator, "in_2", line("il_2", **tier), created=DEC_1 + 2 * HOUR)
    found = sync(config)
    assert (found.prices_fetched, simulator.stats.requests_to("price_get")) == (1, 1)
    with Session(engine) as session:
        cached = session.get(StripePrice, "price_storage")
    assert cached is not None and cached.tiers is not None
    assert [tier["up_to"] for tier in cached.tiers] == [100, None]
    sync(config)
    assert simulator.stats.requests_to("price_get") == 1


def test_a_price_discovery_cached_is_not_fetched(
    simulator: StripeSimulator, config: RunConfig
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1")
    discover(config)
    simulator.reset_stats()
    found = sync(config)
    assert (found.line_items, found.prices_fetched) == (1, 0)
    assert simulator.stats.requests_to("price_get") == 0


# -- paging, customers, pairs ---------------------------------------------------------------------


def test_lines_beyond_the_ten_inlined_are_paged_in(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    days = [
        line(f"il_{n:02}", period={"start": NOV_1 + n * DAY, "end": NOV_1 + (n + 1) * DAY})
        for n in range(12)
    ]
    add_invoice(simulator, "in_1", *days)
    assert sync(config).line_items == 12
    assert sorted(stripe_rows(engine)) == [f"il_{n:02}" for n in range(12)]
    assert simulator.stats.requests_to("invoice_lines_list") == 1


def test_a_run_limited_to_customers_asks_for_each_one_s_invoices(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1")
    add_invoice(
        simulator,
        "in_2",
        line("il_2", subscription_item="si_2"),
        customer="cus_2",
        subscription="sub_2",
    )
    add_invoice(
        simulator,
        "in_3",
        line("il_3", subscription_item="si_2"),
        customer="cus_2",
        subscription="sub_2",
    )
    found = sync(config, customers=["cus_2"])
    assert found.invoices == 2
    assert sorted(stripe_rows(engine)) == ["il_2", "il_3"]
    assert list(simulator.stats.targets) == [
        f"GET /v1/invoices?customer=cus_2&created%5Bgte%5D={NOV_1}&limit=100",
        "GET /v1/prices/price_api?expand%5B0%5D=tiers",
    ]


def test_a_pair_only_an_invoice_bills_is_tracked_with_source_stripe(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1")
    tracked: list[tuple[str, str]] = []
    assert sync(config, on_tracked=tracked.extend).pairs_added == 1
    assert tracked == [("cus_1", "mtr_api")]
    with Session(engine) as session:
        pair = session.exec(select(TrackedPair)).one()
    assert (pair.stripe_customer_id, pair.meter_id, pair.source) == (
        "cus_1",
        "mtr_api",
        PairSource.STRIPE,
    )
    assert sync(config).pairs_added == 0


def test_invoices_created_before_the_day_asked_are_not_read(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_old", created=NOV_1 - HOUR)
    add_invoice(simulator, "in_new", created=NOV_1)
    assert sync(config, since=date(2025, 11, 1)).invoices == 1
    assert list(stripe_rows(engine)) == ["il_in_new"]


# -- idempotence, memory --------------------------------------------------------------------------


def test_syncing_again_changes_nothing(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1", line("il_1"), line("il_2", subscription_item="si_storage"))
    add_invoice(simulator, "in_2", status="draft")
    sync(config)
    before = snapshot(engine)
    again = sync(config)
    assert (again.line_items, again.added, again.changed, again.withdrawn) == (3, 0, 0, 0)
    assert snapshot(engine) == before


def test_written_one_invoice_at_a_time_the_rows_are_the_same(
    simulator: StripeSimulator,
    config: RunConfig,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_billing(simulator)
    for n in range(5):
        add_invoice(simulator, f"in_{n}", created=DEC_1 + n)
    sync(config)
    whole = snapshot(engine)
    with Session(engine) as session:
        session.exec(delete(InvoiceLineItem))  # type: ignore[call-overload]
        session.commit()
    monkeypatch.setattr("tasks.sync_invoices.INVOICE_BATCH", 1)
    assert sync(config).added == 5
    assert snapshot(engine) == whole


def test_a_draft_s_line_item_its_lines_no_longer_make_is_withdrawn(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_billing(simulator)
    add_invoice(simulator, "in_1", line("il_1"), line("il_2", subscription_item="si_storage"))
    sync(config)
    simulator.data = SimulatorData()
    seed_billing(simulator)
    add_invoice(simulator, "in_1", line("il_1"))
    assert sync(config).withdrawn == 1
    rows = stripe_rows(engine)
    assert (rows["il_1"].withdrawn_at, rows["il_2"].withdrawn_at is not None) == (None, True)


# -- faults ---------------------------------------------------------------------------------------


def seed_several(simulator: StripeSimulator) -> None:
    seed_billing(simulator)
    tier = {"subscription_item": "si_storage", "price": "price_storage"}
    add_invoice(simulator, "in_1", *[line(f"il_1_{n:02}", **tier) for n in range(12)])
    add_invoice(simulator, "in_2", status="draft", created=DEC_1 + 2 * HOUR)
    add_invoice(
        simulator,
        "in_3",
        line("il_3", subscription_item="si_2"),
        customer="cus_2",
        subscription="sub_2",
    )


def test_faults_injected_into_the_invoice_endpoints_give_the_rows_of_a_clean_sync(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed_several(simulator)
    for endpoint in ("invoices_list", "invoice_lines_list", "price_get"):
        simulator.faults.script(
            Fault("500"),
            Fault("503"),
            Fault("429", retry_after=0.01),
            Fault("reset"),
            Fault("malformed"),
            endpoint=endpoint,
        )
    faulted = sync(config)
    assert simulator.stats.counts["faults"] == 15
    rows = snapshot(engine)
    with Session(engine) as session:
        session.exec(delete(InvoiceLineItem))  # type: ignore[call-overload]
        session.exec(delete(StripePrice))  # type: ignore[call-overload]
        session.commit()
    clean = sync(config)
    assert snapshot(engine) == rows
    assert (faulted.invoices, faulted.line_items, faulted.malformed) == (
        clean.invoices,
        clean.line_items,
        0,
    )
    assert faulted.requests == clean.requests + 15


def test_the_requests_are_the_official_sdk_s(simulator: StripeSimulator, config: RunConfig) -> None:
    seed_billing(simulator)
    for n in range(101):
        add_invoice(
            simulator, f"in_{n:03}", line(f"il_{n:03}"), created=DEC_1 + n, finalized_at=DEC_1 + n
        )
    tenth = "il_1"
    lines = [line(f"il_0{n}") for n in range(9)] + [line(tenth), line("il_z")]
    add_invoice(simulator, "in_1", *lines, created=OCT_1)
    sync(config, since=date(2025, 10, 1), customers=["cus_1"])
    listing = [r.replace("status=paid&", "") for r in recorded(INVOICES_SDK_REQUESTS_FILE, 0)]
    listing[1] = listing[1].replace("starting_after=in_1", "starting_after=in_001")
    paged_lines = recorded(INVOICES_SDK_REQUESTS_FILE, 3)[1]  # after the inlined ones
    price = recorded(BILLING_SDK_REQUESTS_FILE, 2)[0].replace("price_1", "price_api")
    assert list(simulator.stats.targets) == [listing[0], price, listing[1], paged_lines]


# -- what cannot be read --------------------------------------------------------------------------


def wire_line(line_id: str, price: str) -> dict[str, Any]:
    """Stripe's fixture line item, made a metered line of item si_1 (as on the wire)."""
    body = copy.deepcopy(FIXTURES["line_item"])
    body.update(
        id=line_id,
        period={"start": NOV_1, "end": DEC_1},
        quantity=12,
        quantity_decimal="12.5",
        pricing={"type": "price_details", "price_details": {"price": price, "product": "p"}},
    )
    body["parent"]["subscription_item_details"]["subscription_item"] = "si_1"
    return body


def wire_invoice(invoice_id: str, lines: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(FIXTURES["invoice"])
    body.update(id=invoice_id, status="paid", **changes)
    body["lines"] = {"object": "list", "data": lines, "has_more": False, "url": "/v1/x"}
    return body


@pytest.fixture
def canned(config: RunConfig) -> Iterator[RunConfig]:
    """A listing with a malformed invoice, and one whose lines are good, malformed (Stripe's
    fixture line: its price cannot be read) and of a price that is gone (404)."""
    price = {
        "id": "price_api",
        "object": "price",
        "currency": "usd",
        "billing_scheme": "per_unit",
        "unit_amount_decimal": "25",
        "recurring": {"meter": "mtr_api", "usage_type": "metered"},
    }
    gone = {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
    lines = [wire_line("il_ok", "price_api"), FIXTURES["line_item"], wire_line("il_x", "price_x")]
    listing = {
        "object": "list",
        "data": [wire_invoice("in_bad", [], currency=None), wire_invoice("in_good", lines)],
        "has_more": False,
        "url": "/v1/invoices",
    }
    server = CannedStripe(
        {
            f"/v1/invoices?created%5Bgte%5D={NOV_1}&limit=100": (200, listing),
            "/v1/prices/price_api?expand%5B0%5D=tiers": (200, price),
            "/v1/prices/price_x?expand%5B0%5D=tiers": (404, gone),
        }
    )
    yield RunConfig(
        database_url=config.database_url,
        stripe_api_key=SecretStr(TEST_KEY),
        stripe_api_base=server.url,
    )
    server.close()


def test_a_malformed_invoice_or_line_and_a_gone_price_are_skipped_counted_and_logged(
    canned: RunConfig, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    found = sync(canned)
    assert (found.invoices, found.line_items, found.malformed) == (1, 1, 3)
    assert list(stripe_rows(engine)) == ["il_ok"]
    logged = caplog.text
    assert "skipped invoice in_bad" in logged
    assert f"skipped line {FIXTURES['line_item']['id']} of invoice in_good" in logged
    assert "skipped line il_x of invoice in_good: its price price_x is gone" in logged


# -- the command ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    config: RunConfig, simulator: StripeSimulator, monkeypatch: pytest.MonkeyPatch
) -> StripeSimulator:
    from integrations.settings import get_settings

    monkeypatch.setenv("STRIPE_API_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", simulator.url)
    get_settings.cache_clear()
    return simulator


def test_the_command_reads_the_invoices_and_says_what_it_read(
    cli_env: StripeSimulator, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_billing(cli_env)
    storage = line("il_2", subscription_item="si_storage", price="price_storage")
    add_invoice(cli_env, "in_1", line("il_1"), storage)
    args = ["invoices", "sync", "--since", "2025-11-01", "--database-url", database_url]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tracking cus_1 / mtr_api (source stripe)" in out
    assert (
        "1 invoice(s) created since 2025-11-01: 2 metered line item(s), 2 added, 0 changed, "
        "0 withdrawn; 0 malformed skipped; 2 newly tracked pair(s); 3 Stripe request(s)"
    ) in out


def test_the_command_reads_since_the_first_day_of_last_month_by_default() -> None:
    assert default_since(date(2026, 3, 31)) == date(2026, 2, 1)
    assert default_since(date(2026, 1, 1)) == date(2025, 12, 1)


def test_the_command_with_a_bad_date_exits_2_with_one_sentence(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invoices", "sync", "--since", "2025-13-01", "--database-url", database_url]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --since '2025-13-01' is not a date; use YYYY-MM-DD."


def test_the_command_that_cannot_read_stripe_exits_1_with_one_sentence(
    cli_env: StripeSimulator, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_billing(cli_env)
    add_invoice(cli_env, "in_1")
    cli_env.faults.script(*["500"] * 50, endpoint="invoices_list")
    assert main(["invoices", "sync", "--since", "2025-11-01", "--database-url", database_url]) == 1
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("invoice sync failed: StripeAPIError: ")
    assert TEST_KEY not in err


# -- in a run -------------------------------------------------------------------------------------


@pytest.fixture
def fast_sync_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's retries of the sync stay real; only their delays shrink. The run compares
    Stripe's invoices (`flow_env` leaves them out for the internal ledger's tests)."""
    monkeypatch.setenv("METER_RECON_LEDGERS", "internal,stripe")
    import flows.reconcile as reconcile_module
    from tasks.sync_invoices import sync_stripe_invoices

    monkeypatch.setattr(
        reconcile_module,
        "sync_stripe_invoices",
        sync_stripe_invoices.with_options(retry_delay_seconds=0.05, retry_jitter_factor=None),
    )


def run_last_three_days() -> int:
    from datetime import timedelta

    from flows.reconcile import reconcile_meters
    from flows.windows import utc_today
    from models.tables import Trigger

    today = utc_today()
    outcome = reconcile_meters(start=today - timedelta(days=3), end=today, trigger=Trigger.MANUAL)
    assert outcome.status == "completed"
    return outcome.run_id


def invoice_in_the_window(simulator: StripeSimulator) -> None:
    """cus_1's invoice for the day before the window, created on the window's first day."""
    from flows.windows import utc_today
    from models.canonical import utc_midnight

    start = utc_midnight(utc_today()) - 3 * DAY
    seed_billing(simulator)
    period = {"start": start - DAY, "end": start}
    add_invoice(simulator, "in_1", line("il_1", period=period), created=start + HOUR)


def test_a_run_reads_the_invoices_and_its_summary_says_what_it_read(
    flow_env: StripeSimulator, engine: Engine, fast_sync_retries: None
) -> None:
    from tasks.report import render_json, render_markdown
    from tasks.summary import build_summary

    invoice_in_the_window(flow_env)
    run_id = run_last_three_days()
    assert list(stripe_rows(engine)) == ["il_1"]
    with Session(engine) as session:
        summary = build_summary(session=session, run_id=run_id)
    assert summary.invoice_sync is not None and summary.invoice_sync_error is None
    assert (summary.invoice_sync.invoices, summary.invoice_sync.added) == (1, 1)
    assert summary.invoice_sync.requests == 1  # the listing (discovery cached the price)
    assert "| Stripe invoices read | 1 |" in render_markdown(summary)
    assert render_json(summary)["counts"]["invoice_sync"]["line_items"] == 1


def test_a_failed_sync_is_said_in_the_summary_and_alert_and_the_run_goes_on(
    flow_env: StripeSimulator,
    engine: Engine,
    fast_sync_retries: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from tasks.alert import pending_alert
    from tasks.report import render_markdown
    from tasks.summary import build_summary
    from tests.fixtures.prefect import LEAK_CANARY_KEY

    invoice_in_the_window(flow_env)
    flow_env.faults.script(*["500"] * 200, endpoint="invoices_list")
    with caplog.at_level(logging.WARNING):
        run_id = run_last_three_days()
    attempts = flow_env.stats.requests_to("invoices_list")
    flow_env.faults.clear()
    with Session(engine) as session:
        summary = build_summary(session=session, run_id=run_id)
        alert = pending_alert(session=session, run_id=run_id)
    error = summary.invoice_sync_error
    assert error is not None and error.startswith("StripeAPIError: ")
    assert LEAK_CANARY_KEY not in error and "\n" not in error
    assert summary.invoice_sync is None
    assert attempts > 3 and summary.requests >= attempts  # every attempt counts in the run's
    assert "**Reading Stripe's invoices failed**" in render_markdown(summary)
    assert alert is not None and "invoice sync failed" in alert.title
    assert "Reading Stripe's invoices failed; the stripe ledger was compared" in alert.body
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("invoice sync failed; going on with the Stripe line items" in w for w in warnings)
