"""Rule 6 after the fan-out: a customer's usage reported to one meter and billed on another."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from flows.reconcile import reconcile_meters
from flows.windows import utc_today
from flows.wrong_meter import diagnose_run
from models.engine import session_scope
from models.enums import LikelyCause
from models.ledger import import_line_items
from models.pairs import track_by_hand
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus, Trigger
from simulator import StripeSimulator
from tasks.compare import Tolerance
from tests.builders import csv_file, new_run
from tests.world import noon

Kind = DiscrepancyKind
NOV_1 = date(2026, 11, 1)
DEC_1 = date(2026, 12, 1)
EXACT = Tolerance()


def row(
    run_id: int,
    *,
    meter: str,
    difference: str,
    customer: str = "cus_A",
    kind: DiscrepancyKind = Kind.QUANTITY_MISMATCH,
    start: date = NOV_1,
    end: date = DEC_1,
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN,
    cause: LikelyCause | None = None,
) -> Discrepancy:
    return Discrepancy(
        stripe_customer_id=customer,
        meter_id=meter,
        kind=kind,
        period_start=start,
        period_end=end,
        line_item_id="" if kind is Kind.UNBILLED_USAGE else f"li_{meter}_{customer}",
        stripe_quantity=Decimal(100) + Decimal(difference),
        internal_quantity=Decimal(100),
        difference=Decimal(difference),
        status=status,
        first_seen_run=run_id,
        last_seen_run=run_id,
        likely_cause=cause,
        cause_detail=None if cause is None else "evidence",
    )


def seed(engine: Engine, *rows: Discrepancy) -> list[int]:
    with session_scope(engine) as session:
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows if r.id is not None]


def causes(engine: Engine) -> dict[int, tuple[LikelyCause | None, str | None]]:
    with Session(engine) as session:
        rows = session.exec(select(Discrepancy).order_by(col(Discrepancy.id))).all()
    return {r.id: (r.likely_cause, r.cause_detail) for r in rows if r.id is not None}


def test_opposite_differences_on_two_meters_both_get_the_cause_naming_the_other(
    engine: Engine,
) -> None:
    run_id = new_run(engine)
    a, b = seed(
        engine,
        row(run_id, meter="mtr_a", difference="-40"),
        row(run_id, meter="mtr_b", difference="40"),
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 2
    found = causes(engine)
    assert found[a][0] is found[b][0] is LikelyCause.WRONG_METER
    assert "Meter mtr_b has the opposite difference" in str(found[a][1])
    assert "Meter mtr_a has the opposite difference" in str(found[b][1])


def test_a_row_that_already_has_a_cause_keeps_it_and_explains_nothing(engine: Engine) -> None:
    run_id = new_run(engine)
    a, b = seed(
        engine,
        row(run_id, meter="mtr_a", difference="-40", cause=LikelyCause.LATE_USAGE),
        row(run_id, meter="mtr_b", difference="40"),
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 0
    assert causes(engine) == {a: (LikelyCause.LATE_USAGE, "evidence"), b: (None, None)}


@pytest.mark.parametrize(
    "other",
    [
        {"customer": "cus_B"},
        {"start": NOV_1 + timedelta(days=1)},
        {"status": DiscrepancyStatus.RESOLVED},
        {"kind": Kind.OVERLAPPING_LINE_ITEMS},
        {"difference": "39"},
    ],
    ids=["other-customer", "other-period", "resolved", "overlap", "not-opposite"],
)
def test_rows_that_do_not_fit_rule_6_get_no_cause(engine: Engine, other: dict[str, object]) -> None:
    run_id = new_run(engine)
    fields: dict[str, object] = {"meter": "mtr_b", "difference": "40", **other}
    seed(
        engine,
        row(run_id, meter="mtr_a", difference="-40"),
        row(run_id, **fields),  # type: ignore[arg-type]
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 0
    assert {cause for cause, _ in causes(engine).values()} == {None}


def test_only_rows_this_run_saw_are_considered(engine: Engine) -> None:
    earlier, run_id = new_run(engine), new_run(engine)
    seed(
        engine,
        row(earlier, meter="mtr_a", difference="-40"),
        row(run_id, meter="mtr_b", difference="40"),
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 0


def test_the_run_s_tolerance_decides_what_is_opposite(engine: Engine) -> None:
    run_id = new_run(engine)
    seed(
        engine,
        row(run_id, meter="mtr_a", difference="-40"),
        row(run_id, meter="mtr_b", difference="40.5"),
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 0
    loose = Tolerance(abs_tol=Decimal("0.5"))
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=loose) == 2


def test_acknowledged_rows_are_diagnosed_too(engine: Engine) -> None:
    run_id = new_run(engine)
    seed(
        engine,
        row(run_id, meter="mtr_a", difference="-40", status=DiscrepancyStatus.ACKNOWLEDGED),
        row(run_id, meter="mtr_b", difference="40", kind=Kind.UNBILLED_USAGE),
    )
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT) == 2


def test_rows_read_a_page_at_a_time_find_what_one_read_finds(engine: Engine) -> None:
    # Customers whose rows straddle pages of 3: a customer is diagnosed with all its rows.
    run_id = new_run(engine)
    rows = []
    for customer in ("cus_A", "cus_B", "cus_C"):
        rows += [
            row(run_id, customer=customer, meter="mtr_a", difference="-40"),
            row(run_id, customer=customer, meter="mtr_b", difference="7"),
            row(run_id, customer=customer, meter="mtr_c", difference="40"),
            row(run_id, customer=customer, meter="mtr_d", difference="-7"),
        ]
    seed(engine, *rows)
    assert diagnose_run(engine=engine, run_id=run_id, tolerance=EXACT, page_size=3) == 12
    paged = causes(engine)
    assert {cause for cause, _ in paged.values()} == {LikelyCause.WRONG_METER}
    assert all("Meter mtr_" in str(detail) for _, detail in paged.values())


# ------------------------------------------------------------------------- end to end


@pytest.mark.usefixtures("fast_task_retries")
def test_a_run_names_the_other_meter_when_usage_went_to_b_and_the_ledger_billed_a(
    flow_env: StripeSimulator, engine: Engine, tmp_path: Path
) -> None:
    today = utc_today()
    day, next_day = today - timedelta(days=2), today - timedelta(days=1)
    flow_env.add_meter("mtr_a", event_name="calls_a", formula="sum")
    flow_env.add_meter("mtr_b", event_name="calls_b", formula="sum")
    flow_env.add_event("calls_b", "cus_A", noon(day), "100")
    ledger = csv_file(
        tmp_path / "ledger.csv",
        f"li_a,in_1,cus_A,mtr_a,{day},{next_day},100,,",
    )
    import_line_items(engine=engine, path=ledger)
    with session_scope(engine) as session:
        track_by_hand(session=session, customer="cus_A", meter="mtr_b")
    summary = reconcile_meters(start=today - timedelta(days=3), end=today, trigger=Trigger.MANUAL)
    assert summary.pairs_ok == 2
    with Session(engine) as session:
        rows = {
            r.meter_id: r
            for r in session.exec(
                select(Discrepancy).where(Discrepancy.last_seen_run == summary.run_id)
            )
        }
    a, b = rows["mtr_a"], rows["mtr_b"]
    assert (a.kind, a.difference) == (Kind.MISSING_IN_STRIPE, Decimal(-100))
    assert (b.kind, b.difference, b.period_start) == (Kind.UNBILLED_USAGE, Decimal(100), day)
    assert a.likely_cause is b.likely_cause is LikelyCause.WRONG_METER
    assert a.cause_detail is not None and "Meter mtr_b" in a.cause_detail
    assert b.cause_detail is not None and "Meter mtr_a" in b.cause_detail
