"""The flow end to end with Stripe's invoices in the database (written by a builder, as the
invoice sync stores them): simulator over a real socket, a real database, Prefect."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from flows.reconcile import reconcile_meters
from flows.windows import utc_today
from integrations.settings import get_settings
from models.engine import session_scope
from models.enums import Ledger, LikelyCause
from models.pairs import track_by_hand
from models.runs import get_run
from models.tables import Discrepancy, DiscrepancyKind, Trigger
from simulator import StripeSimulator
from tasks.report import render_markdown
from tasks.summary import build_summary
from tests.builders import stripe_line

TODAY = utc_today()


def day(offset: int) -> date:
    return TODAY - timedelta(days=offset)


def _at(on: date, hour: int = 0) -> int:
    return int(datetime.combine(on, time(hour), UTC).timestamp())


@pytest.fixture
def stripe_only(
    flow_env: StripeSimulator, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> StripeSimulator:
    """A Stripe-only user: no line item of its own. cus_A is subscribed (its current period
    began yesterday) and invoiced TODAY-8..TODAY-4 for 15 of its 20 units; cus_B is tracked by
    hand, metered, and billed by no subscription."""
    monkeypatch.setenv("METER_RECON_LEDGERS", "internal,stripe")
    get_settings.cache_clear()
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    flow_env.add_price(
        id="price_api",
        meter="mtr_api",
        currency="usd",
        billing_scheme="per_unit",
        unit_amount_decimal="50",
    )
    flow_env.add_subscription(
        id="sub_1",
        customer="cus_A",
        status="active",
        created=_at(day(90)),
        items=[
            {
                "id": "si_1",
                "price": "price_api",
                "current_period_start": _at(day(1)),
                "current_period_end": _at(day(1) + timedelta(days=30)),
            }
        ],
    )
    for offset in range(1, 10):
        for customer in ("cus_A", "cus_B"):
            flow_env.add_event("api_call", customer, _at(day(offset), 12), "4")
    with session_scope(engine) as session:
        session.add(stripe_line(start=day(8), end=day(3), quantity="15", invoice="in_7"))
        track_by_hand(session=session, customer="cus_B", meter="mtr_api")
    return flow_env


def test_a_stripe_only_user_sees_what_stripe_did_not_invoice_and_the_run_says_why(
    stripe_only: StripeSimulator, engine: Engine
) -> None:
    outcome = reconcile_meters(start=day(5), end=day(2), trigger=Trigger.MANUAL)

    with Session(engine) as session:
        rows = session.exec(select(Discrepancy).order_by(col(Discrepancy.id))).all()
        found = {
            (r.ledger, r.stripe_customer_id, r.kind, r.period_start, r.likely_cause) for r in rows
        }
        run = get_run(session=session, run_id=outcome.run_id)
        summary = render_markdown(build_summary(session=session, run_id=outcome.run_id))
    stripe = Ledger.STRIPE
    assert found == {
        (stripe, "cus_A", DiscrepancyKind.QUANTITY_MISMATCH, day(8), LikelyCause.LATE_USAGE),
        (stripe, "cus_B", DiscrepancyKind.UNBILLED_USAGE, day(5), LikelyCause.NOT_SUBSCRIBED),
        (stripe, "cus_B", DiscrepancyKind.UNBILLED_USAGE, day(4), LikelyCause.NOT_SUBSCRIBED),
    }
    [late] = [r for r in rows if r.stripe_customer_id == "cus_A"]
    assert (late.amount_at_stake, late.currency) == (Decimal("2.5"), "usd")
    assert outcome.status == "completed"
    assert (outcome.compared, outcome.new) == (0, 3)  # the internal ledger compared nothing
    assert run.counts["stripe"] == {"compared": 1, "matched": 0, "pending": 0}
    assert (run.counts["ledgers"], run.counts["internal_ledger_empty"]) == (["stripe"], True)
    assert "the internal ledger holds no line item: compared against Stripe's invoices only" in (
        summary
    )
    assert "- cus_B / mtr_api: Stripe will never invoice this usage" in summary
