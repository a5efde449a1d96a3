"""Settling: a discrepancy whose period ended only just is recorded, counted apart, and
alerted by the first run after its `settles_at` that still finds it, once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, select

import flows.reconcile as reconcile_module
from flows.reconcile import RunOutcome, reconcile_meters
from flows.windows import utc_today
from integrations.settings import get_settings
from models.engine import session_scope
from models.ledger import import_line_items
from models.runs import settling_count
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus, Trigger
from models.types import utcnow
from simulator import StripeSimulator
from tasks.alert import mark_alerted, pending_alert
from tasks.reconcile_pairs import reconcile_pairs
from tests.builders import csv_file, new_run
from tests.fixtures.alerts import AlertInbox
from tests.world import noon

HOUR = timedelta(hours=1)


def discrepancy(
    run_id: int,
    *,
    customer: str = "cus_A",
    settles_at: datetime | None,
    start: date = date(2026, 11, 1),
    end: date = date(2026, 12, 1),
    stripe: str = "15",
    ledger: str = "10",
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN,
    alerted_at: datetime | None = None,
    first_seen_run: int | None = None,
) -> Discrepancy:
    return Discrepancy(
        stripe_customer_id=customer,
        meter_id="mtr_api",
        kind=DiscrepancyKind.QUANTITY_MISMATCH,
        period_start=start,
        period_end=end,
        line_item_id=f"li_{customer}",
        stripe_quantity=Decimal(stripe),
        internal_quantity=Decimal(ledger),
        difference=Decimal(stripe) - Decimal(ledger),
        status=status,
        first_seen_run=first_seen_run or run_id,
        last_seen_run=run_id,
        alerted_at=alerted_at,
        settles_at=settles_at,
    )


def seed(engine: Engine, *rows: Discrepancy) -> list[int]:
    with session_scope(engine) as session:
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows if r.id is not None]


def alerted_ids(engine: Engine, run_id: int) -> tuple[int, ...]:
    with Session(engine) as session:
        alert = pending_alert(session=session, run_id=run_id)
    return () if alert is None else alert.discrepancy_ids


def test_a_run_counts_its_discrepancies_still_settling(engine: Engine) -> None:
    run_id, other = new_run(engine), new_run(engine)
    later, earlier = utcnow() + 48 * HOUR, utcnow() - HOUR
    seed(
        engine,
        discrepancy(run_id, customer="cus_settling", settles_at=later),
        discrepancy(run_id, customer="cus_settled", settles_at=earlier),
        discrepancy(run_id, customer="cus_never", settles_at=None),
        discrepancy(run_id, customer="cus_alerted", settles_at=later, alerted_at=utcnow()),
        discrepancy(
            run_id, customer="cus_resolved", settles_at=later, status=DiscrepancyStatus.RESOLVED
        ),
        discrepancy(other, customer="cus_other_run", settles_at=later),
    )
    with Session(engine) as session:
        assert settling_count(session=session, run_id=run_id) == 1


def test_the_alert_waits_for_settles_at_and_the_first_run_after_it_alerts_once(
    engine: Engine,
) -> None:
    first = new_run(engine)
    (settling,) = seed(engine, discrepancy(first, settles_at=utcnow() + 72 * HOUR))
    (plain,) = seed(engine, discrepancy(first, customer="cus_B", settles_at=None))
    assert alerted_ids(engine, first) == (plain,)
    with session_scope(engine) as session:
        mark_alerted(session=session, ids=(plain,), at=utcnow())
        # Time passes: the period has settled before the next run starts.
        session.execute(
            sa.update(Discrepancy)
            .where(Discrepancy.id == settling)  # type: ignore[arg-type]
            .values(settles_at=utcnow() - HOUR)
        )
    second = new_run(engine)
    assert alerted_ids(engine, second) == (settling,)
    with session_scope(engine) as session:
        mark_alerted(session=session, ids=(settling,), at=utcnow())
    assert alerted_ids(engine, new_run(engine)) == ()


def test_a_run_that_started_before_settles_at_does_not_alert_it(engine: Engine) -> None:
    run_id = new_run(engine)
    seed(engine, discrepancy(run_id, settles_at=utcnow() + HOUR))
    assert alerted_ids(engine, run_id) == ()


# ------------------------------------------------------------------------- end to end


@pytest.fixture
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        reconcile_module,
        "reconcile_pairs",
        reconcile_pairs.with_options(retry_delay_seconds=0.05, retry_jitter_factor=None),
    )


@pytest.fixture
def settle_72_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_RECON_SETTLE_HOURS", "72")
    get_settings.cache_clear()


def a_period_that_ended_yesterday(simulator: StripeSimulator, engine: Engine, tmp: Path) -> date:
    """cus_A billed 10 on mtr_api for [three days ago, yesterday); Stripe has 15."""
    today = utc_today()
    start, yesterday = today - timedelta(days=3), today - timedelta(days=1)
    simulator.add_meter("mtr_api", event_name="api_call", formula="sum")
    simulator.add_event("api_call", "cus_A", noon(start), "9")
    simulator.add_event("api_call", "cus_A", noon(start + timedelta(days=1)), "6")
    ledger = csv_file(tmp / "ledger.csv", f"li_cus_A,in_1,cus_A,mtr_api,{start},{yesterday},10,,")
    import_line_items(engine=engine, path=ledger)
    return yesterday


def run_window() -> RunOutcome:
    today = utc_today()
    return reconcile_meters(start=today - timedelta(days=3), end=today, trigger=Trigger.MANUAL)


def the_row(engine: Engine) -> Discrepancy:
    with Session(engine) as session:
        return session.exec(select(Discrepancy)).one()


def settle_now(engine: Engine) -> None:
    """Time passes: the row's settles_at is before the next run starts."""
    with session_scope(engine) as session:
        session.execute(sa.update(Discrepancy).values(settles_at=utcnow() - HOUR))


@pytest.mark.usefixtures("fast_task_retries", "settle_72_hours")
def test_a_discrepancy_recorded_settling_by_a_run_is_alerted_by_a_run_after_it_settles(
    flow_env: StripeSimulator, engine: Engine, tmp_path: Path, alert_inbox: AlertInbox
) -> None:
    """The row as b1's pipeline records it: settles_at = period_end + 72 h."""
    period_end = a_period_that_ended_yesterday(flow_env, engine, tmp_path)
    first = run_window()
    row = the_row(engine)
    assert row.settles_at == datetime.combine(period_end, datetime.min.time(), UTC) + 72 * HOUR
    assert (first.new, first.alerted, first.settling) == (1, 0, 1)
    assert alert_inbox.messages == []
    settle_now(engine)
    second = run_window()
    assert (second.alerted, second.settling) == (1, 0)
    assert len(alert_inbox.messages) == 1
    assert "cus_A / mtr_api" in alert_inbox.messages[0]["message"]
    assert run_window().alerted == 0
    assert len(alert_inbox.messages) == 1


@pytest.mark.usefixtures("fast_task_retries", "settle_72_hours")
def test_a_run_neither_alerts_nor_forgets_a_row_still_settling(
    flow_env: StripeSimulator, engine: Engine, tmp_path: Path, alert_inbox: AlertInbox
) -> None:
    """The gate and the count in the flow, on a row recorded settling before (as a run with
    the pipeline's settling records it): found again unchanged, it keeps its settles_at."""
    period_end = a_period_that_ended_yesterday(flow_env, engine, tmp_path)
    earlier = new_run(engine)
    start = period_end - timedelta(days=2)
    settles = datetime.combine(period_end, datetime.min.time(), UTC) + 72 * HOUR
    seed(engine, discrepancy(earlier, start=start, end=period_end, settles_at=settles))
    first = run_window()
    assert (first.new, first.alerted, first.settling) == (0, 0, 1)
    assert the_row(engine).last_seen_run == first.run_id
    assert alert_inbox.messages == []
    settle_now(engine)
    second = run_window()
    assert (second.alerted, second.settling) == (1, 0)
    assert len(alert_inbox.messages) == 1
    third = run_window()
    assert (third.alerted, third.settling) == (0, 0)
    assert len(alert_inbox.messages) == 1
