from __future__ import annotations

from datetime import date
from decimal import Decimal

from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from tasks.alert import MAX_LINES, build_alert

RUN = ReconciliationRun(
    id=7,
    window_start=date(2026, 11, 1),
    window_end=date(2026, 11, 4),
    trigger=Trigger.SCHEDULED,
    status=RunStatus.COMPLETED,
)


def discrepancy(id: int, *, first_seen: int = 7) -> Discrepancy:
    return Discrepancy(
        id=id,
        stripe_customer_id=f"cus_{id}",
        meter_id="mtr_api",
        kind=DiscrepancyKind.QUANTITY_MISMATCH,
        period_start=date(2026, 10, 1),
        period_end=date(2026, 11, 1),
        line_item_id=f"li_{id}",
        stripe_quantity=Decimal("120.50"),
        internal_quantity=Decimal(100),
        difference=Decimal("20.5"),
        status=DiscrepancyStatus.OPEN,
        first_seen_run=first_seen,
        last_seen_run=7,
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


def test_the_title_counts_new_reopened_and_failed() -> None:
    alert = build_alert(
        run=RUN, pending=[discrepancy(1), discrepancy(2, first_seen=3)], failed=[failed_pair("503")]
    )
    assert alert is not None
    assert alert.title == (
        "meter-recon run 7 (2026-11-01..2026-11-04): 1 new, 1 re-opened discrepancies, "
        "1 pair(s) failed"
    )
    assert alert.discrepancy_ids == (1, 2)


def test_each_line_names_customer_meter_period_and_exact_numbers() -> None:
    alert = build_alert(run=RUN, pending=[discrepancy(1)], failed=[])
    assert alert is not None
    assert alert.body == (
        "- NEW quantity_mismatch #1: cus_1 / mtr_api, 2026-10-01..2026-11-01 (end exclusive) "
        "[li_1]: Stripe 120.5, ledger 100, difference 20.5"
    )


def test_a_long_list_is_cut_but_every_discrepancy_is_marked_alerted() -> None:
    pending = [discrepancy(i) for i in range(1, MAX_LINES + 11)]
    alert = build_alert(run=RUN, pending=pending, failed=[])
    assert alert is not None
    lines = alert.body.splitlines()
    assert len(lines) == MAX_LINES + 1
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
