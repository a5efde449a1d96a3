"""Discovery in the run: customers the ledger never heard of are reconciled because Stripe
bills them; a discovery that fails leaves the run going on what is cached."""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

import flows.reconcile as reconcile_module
from flows.reconcile import RunOutcome, reconcile_meters
from flows.windows import utc_today
from integrations.settings import get_settings
from meter_recon.cli import main
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    PairResult,
    PairSource,
    PairStatus,
    ReconciliationRun,
    RunStatus,
    TrackedPair,
    Trigger,
)
from simulator import StripeSimulator
from tasks.discover import discover_pairs
from tasks.reconcile_pairs import reconcile_pairs
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import noon

CREATED = 1_759_276_800  # 2025-10-01
STRANGER = "cus_Stranger"


@pytest.fixture(autouse=True)
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's retries stay real; only their delays shrink."""
    monkeypatch.setattr(
        reconcile_module,
        "reconcile_pairs",
        reconcile_pairs.with_options(retry_delay_seconds=0.05, retry_jitter_factor=None),
    )
    monkeypatch.setattr(
        reconcile_module,
        "discover_pairs",
        discover_pairs.with_options(retry_delay_seconds=0.05, retry_jitter_factor=None),
    )


def days() -> tuple[date, date, date, date]:
    """The last three complete UTC days, and today (the window's exclusive end)."""
    today = utc_today()
    return today - timedelta(days=3), today - timedelta(days=2), today - timedelta(days=1), today


def bill_a_stranger(simulator: StripeSimulator) -> None:
    """A price, a subscription and usage for a customer the ledger never heard of."""
    d1, _d2, d3, _today = days()
    simulator.add_meter("mtr_api", event_name="api_call", formula="sum")
    simulator.add_price(
        id="price_api",
        currency="usd",
        meter="mtr_api",
        billing_scheme="per_unit",
        unit_amount_decimal="25",
    )
    simulator.add_subscription(
        id="sub_S",
        customer=STRANGER,
        status="active",
        created=CREATED,
        items=[{"id": "si_S1", "price": "price_api"}],
    )
    simulator.add_event("api_call", STRANGER, noon(d1), "4")
    simulator.add_event("api_call", STRANGER, noon(d1, 5), "0.5")
    simulator.add_event("api_call", STRANGER, noon(d3), "2")


def run_window() -> RunOutcome:
    start, _d2, _d3, end = days()
    return reconcile_meters(start=start, end=end, trigger=Trigger.MANUAL)


def unbilled(engine: Engine) -> dict[date, Decimal]:
    with Session(engine) as session:
        rows = session.exec(
            select(Discrepancy).where(
                Discrepancy.stripe_customer_id == STRANGER,
                Discrepancy.kind == DiscrepancyKind.UNBILLED_USAGE,
            )
        ).all()
    return {row.period_start: row.stripe_quantity for row in rows}


def latest_run(engine: Engine) -> ReconciliationRun:
    with Session(engine) as session:
        runs = session.exec(select(ReconciliationRun)).all()
    return max(runs, key=lambda run: run.id or 0)


def test_a_plain_run_finds_the_unbilled_days_of_a_customer_only_stripe_knows(
    flow_env: StripeSimulator, database_url: str, engine: Engine
) -> None:
    bill_a_stranger(flow_env)
    start, _d2, d3, end = days()
    code = main(["run", "--start", str(start), "--end", str(end), "--database-url", database_url])
    assert code == 0
    assert unbilled(engine) == {start: Decimal("4.5"), d3: Decimal("2")}
    with Session(engine) as session:
        pair = session.exec(select(TrackedPair)).one()
    assert (pair.stripe_customer_id, pair.meter_id, pair.source) == (
        STRANGER,
        "mtr_api",
        PairSource.STRIPE,
    )


def test_the_run_record_and_summary_say_what_discovery_found(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    bill_a_stranger(flow_env)
    summary = run_window()
    assert (summary.discovered, summary.discovered_added, summary.discovery_error) == (1, 1, None)
    run = latest_run(engine)
    assert run.discovery_error is None
    assert run.counts["discovery"]["pairs"] == 1
    assert run.counts["discovery"]["added"] == 1
    again = run_window()
    assert (again.discovered, again.discovered_added) == (1, 0)


def test_discovery_s_requests_count_in_the_run_s(flow_env: StripeSimulator, engine: Engine) -> None:
    bill_a_stranger(flow_env)
    summary = run_window()
    with Session(engine) as session:
        pairs = session.exec(select(PairResult).where(PairResult.run_id == summary.run_id)).all()
    listed = flow_env.stats.requests_to("subscriptions_list")
    assert listed == 1
    assert summary.requests == sum(p.requests for p in pairs) + listed
    assert latest_run(engine).counts["requests"] == summary.requests


def test_without_discovery_a_customer_only_stripe_knows_is_not_tracked(
    flow_env: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_RECON_DISCOVER_PAIRS", "false")
    get_settings.cache_clear()
    bill_a_stranger(flow_env)
    summary = run_window()
    assert flow_env.stats.requests_to("subscriptions_list") == 0
    assert summary.discovered is None
    assert summary.pairs_total == 0
    assert unbilled(engine) == {}


def test_a_failed_discovery_goes_on_with_the_cached_pairs_and_is_not_a_failed_pair(
    flow_env: StripeSimulator, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    bill_a_stranger(flow_env)
    run_window()  # discovers the stranger
    flow_env.faults.script(*["500"] * 200, endpoint="subscriptions_list")
    with caplog.at_level(logging.WARNING):
        summary = run_window()
    flow_env.faults.clear()
    assert summary.status == RunStatus.COMPLETED.value
    assert (summary.pairs_total, summary.pairs_ok, summary.pairs_failed) == (1, 1, 0)
    run = latest_run(engine)
    assert run.discovery_error is not None
    assert run.discovery_error.startswith("StripeAPIError: ")
    assert "\n" not in run.discovery_error
    assert LEAK_CANARY_KEY not in run.discovery_error
    assert summary.discovery_error == run.discovery_error
    assert summary.discovered is None
    with Session(engine) as session:
        result = session.exec(select(PairResult).where(PairResult.run_id == run.id)).one()
    assert (result.stripe_customer_id, result.status) == (STRANGER, PairStatus.OK)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("discovery failed; going on with the cached pairs" in w for w in warnings)


def test_a_failed_discovery_s_attempts_count_in_the_run_s_requests(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    flow_env.faults.script(*["500"] * 200, endpoint="subscriptions_list")
    summary = run_window()
    flow_env.faults.clear()
    attempts = flow_env.stats.requests_to("subscriptions_list")
    assert attempts > 3  # the client's retries, in each of Prefect's attempts
    assert summary.requests == attempts
    assert latest_run(engine).counts["discovery"]["requests"] == attempts


def test_the_cli_says_discovery_failed(
    flow_env: StripeSimulator, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    flow_env.faults.script(*["500"] * 200, endpoint="subscriptions_list")
    start, _d2, _d3, end = days()
    code = main(["run", "--start", str(start), "--end", str(end), "--database-url", database_url])
    flow_env.faults.clear()
    assert code == 0
    assert "  discovery failed: StripeAPIError: " in capsys.readouterr().out


def test_the_unbilled_days_of_a_discovered_customer_are_valued_at_its_stripe_price(
    flow_env: StripeSimulator,
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """25 cents a unit: 4.5 units are 1.125 usd, 2 units 0.50 usd (largest first)."""
    bill_a_stranger(flow_env)
    run_window()
    assert main(["discrepancies", "--sort", "amount", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["amount_at_stake"], r["currency"], r["valuation"]) for r in records] == [
        ("1.125", "usd", "stripe_price"),
        ("0.5", "usd", "stripe_price"),
    ]
