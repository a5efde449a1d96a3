from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from models.tables import (
    Discrepancy,
    PairResult,
    PairStatus,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from tasks import alert as alert_module
from tasks.alert import MAX_LINES, build_alert, pending_alert
from tests.builders import customers_by_meters, discrepancy, new_run
from tests.finance import add, whole_and_paged

RUN = ReconciliationRun(
    id=7,
    window_start=date(2026, 11, 1),
    window_end=date(2026, 11, 4),
    trigger=Trigger.SCHEDULED,
    status=RunStatus.COMPLETED,
)


def row(
    id: int,
    *,
    first_seen: int = 7,
    reopened: bool = False,
    customer: str | None = None,
    **rest: str,
) -> Discrepancy:
    """Discrepancy `id` of run 7, as the alert lists it (Stripe 120.50 against 100)."""
    return discrepancy(
        run_id=7,
        id=id,
        customer=customer or f"cus_{id}",
        line_item=f"li_{id}",
        stripe="120.50",
        first_seen_run=first_seen,
        reopened_at=datetime(2026, 11, 4, 2, 30, tzinfo=UTC) if reopened else None,
        **rest,
    )


def failed_pair(error: str) -> PairResult:
    return PairResult(
        run_id=7,
        stripe_customer_id="cus_x",
        meter_id="mtr_api",
        status=PairStatus.FETCH_FAILED,
        error=error,
    )


def test_nothing_new_and_nothing_failed_sends_nothing() -> None:
    assert build_alert(run=RUN, pending=[], failed=[]) is None


def test_a_failed_discovery_is_told_even_when_nothing_else_is_new() -> None:
    run = RUN.model_copy(update={"discovery_error": "StripeConnectionError: reset by peer"})
    alert = build_alert(run=run, pending=[], failed=[])
    assert alert is not None
    assert alert.title.endswith("0 new, 0 re-opened discrepancies, discovery failed")
    assert "already cached: StripeConnectionError: reset by peer" in alert.body


def test_the_title_counts_new_reopened_and_failed() -> None:
    alert = build_alert(
        run=RUN,
        pending=[row(1), row(2, first_seen=3, reopened=True)],
        failed=[failed_pair("503")],
    )
    assert alert is not None
    assert alert.title == (
        "meter-recon run 7 (2026-11-01..2026-11-04): 1 new, 1 re-opened discrepancies, "
        "1 pair(s) failed"
    )
    assert alert.discrepancy_ids == (1, 2)


def test_each_line_names_customer_meter_period_and_exact_numbers() -> None:
    alert = build_alert(run=RUN, pending=[row(1)], failed=[])
    assert alert is not None
    assert alert.body == (
        "cus_1:\n"
        "- NEW quantity_mismatch #1: cus_1 / mtr_api, 2026-10-01 → 11-01 (end exclusive) "
        "[li_1]: Stripe 120.5, ledger 100, difference 20.5; not valued; cause unknown"
    )


def test_a_long_list_is_cut_but_every_discrepancy_is_marked_alerted() -> None:
    pending = [row(i) for i in range(1, MAX_LINES + 11)]
    alert = build_alert(run=RUN, pending=pending, failed=[])
    assert alert is not None
    lines = alert.body.splitlines()
    assert len([line for line in lines if line.startswith("- ")]) == MAX_LINES
    assert lines[-1].startswith("... and 10 more")
    assert len(alert.discrepancy_ids) == MAX_LINES + 10


def test_a_key_in_an_error_text_is_redacted() -> None:
    alert = build_alert(
        run=RUN,
        pending=[],
        failed=[failed_pair("Authorization was 'Bearer rk_test_abcdef0123456789'")],
    )
    assert alert is not None
    assert "rk_test_abcdef0123456789" not in alert.body


def test_a_row_seen_again_after_a_failed_delivery_is_still_new() -> None:
    alert = build_alert(run=RUN, pending=[row(1, first_seen=3)], failed=[])
    assert alert is not None
    assert "1 new, 0 re-opened" in alert.title
    assert "- NEW quantity_mismatch #1" in alert.body


def test_a_row_that_opened_again_is_re_opened() -> None:
    alert = build_alert(run=RUN, pending=[row(1, reopened=True)], failed=[])
    assert alert is not None
    assert "0 new, 1 re-opened" in alert.title
    assert "- RE-OPENED quantity_mismatch #1" in alert.body


def test_the_title_gives_per_currency_amounts_never_added_across_currencies() -> None:
    pending = [
        row(1, amount="20.5", currency="usd"),
        row(2, amount="-3.254", currency="usd"),
        row(3, amount="1500", currency="jpy"),
        row(4),
    ]
    alert = build_alert(run=RUN, pending=pending, failed=[])
    assert alert is not None
    assert alert.title.endswith(
        "4 new, 0 re-opened discrepancies; 1,500 jpy not billed; "
        "20.50 usd not billed / -3.25 usd over-billed"
    )


def test_the_body_groups_by_customer_largest_amount_first() -> None:
    pending = [
        row(1, customer="cus_small", amount="5", currency="usd"),
        row(2, customer="cus_big", amount="-90", currency="usd", cause="unit_scale"),
        row(3, customer="cus_big", amount="10", currency="usd"),
        row(4, customer="cus_unvalued"),
    ]
    alert = build_alert(run=RUN, pending=pending, failed=[])
    assert alert is not None
    assert alert.body.splitlines() == [
        "cus_big (10.00 usd not billed / -90.00 usd over-billed):",
        "- NEW quantity_mismatch #2: cus_big / mtr_api, 2026-10-01 → 11-01 (end exclusive) [li_2]: "
        "Stripe 120.5, ledger 100, difference 20.5; -90.00 usd over-billed; likely unit_scale",
        "- NEW quantity_mismatch #3: cus_big / mtr_api, 2026-10-01 → 11-01 (end exclusive) [li_3]: "
        "Stripe 120.5, ledger 100, difference 20.5; 10.00 usd not billed; cause unknown",
        "cus_small (5.00 usd not billed):",
        "- NEW quantity_mismatch #1: cus_small / mtr_api, 2026-10-01 → 11-01 (end exclusive) "
        "[li_1]: Stripe 120.5, ledger 100, difference 20.5; 5.00 usd not billed; cause unknown",
        "cus_unvalued:",
        "- NEW quantity_mismatch #4: cus_unvalued / mtr_api, 2026-10-01 → 11-01 (end exclusive) "
        "[li_4]: Stripe 120.5, ledger 100, difference 20.5; not valued; cause unknown",
    ]


def test_the_body_links_to_the_flow_run_when_the_ui_url_is_known() -> None:
    run = RUN.model_copy(update={"flow_run_id": "5f0c1e2a-0000-4000-8000-000000000001"})
    alert = build_alert(run=run, pending=[row(1)], failed=[], ui_url="http://prefect.example:4200/")
    assert alert is not None
    assert alert.body.splitlines()[-1] == (
        "Flow run: http://prefect.example:4200/runs/flow-run/5f0c1e2a-0000-4000-8000-000000000001"
    )
    no_link = build_alert(run=run, pending=[row(1)], failed=[], ui_url=None)
    assert no_link is not None
    assert "Flow run:" not in no_link.body


def test_a_settling_discrepancy_waits_until_it_settles(engine: Engine) -> None:
    run_id = new_run(engine)
    with Session(engine) as session:
        run = session.get(ReconciliationRun, run_id)
        assert run is not None
        started = run.started_at
    add(
        engine,
        discrepancy(run_id=run_id, line_item="settled"),
        discrepancy(run_id=run_id, line_item="late"),
    )
    with Session(engine) as session:
        rows = {r.line_item_id: r for r in session.exec(select(Discrepancy)).all()}
        rows["settled"].settles_at = started - timedelta(hours=1)
        rows["late"].settles_at = started + timedelta(hours=1)
        session.add_all(rows.values())
        session.commit()
        alert = pending_alert(session=session, run_id=run_id)
    assert alert is not None
    assert alert.discrepancy_ids == (rows["settled"].id,)


def test_an_alert_read_a_page_at_a_time_is_the_alert_of_one_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Customers whose rows straddle pages of 2 rows: each is one group, ranked by its largest.
    run_id = new_run(engine)
    rows = customers_by_meters(
        run_id=run_id,
        customers=["cus_A", "cus_B", "cus_C"],
        meters=["mtr_api", "mtr_seats", "mtr_storage"],
        amount=lambda number, meter: f"{number}{len(meter)}",
    )
    add(engine, *rows)
    whole, paged = whole_and_paged(
        engine,
        lambda session: pending_alert(session=session, run_id=run_id),
        pages_of=(alert_module, "PENDING_PAGE"),
        monkeypatch=monkeypatch,
    )
    assert paged == whole
    assert paged is not None
    headers = [line for line in paged.body.splitlines() if not line.startswith("- ")]
    assert headers == [
        "cus_C (387.00 usd not billed):",
        "cus_B (267.00 usd not billed):",
        "cus_A (147.00 usd not billed):",
    ]
    assert sorted(paged.discrepancy_ids) == list(range(1, 10))
