"""The discrepancy lifecycle, one row of the issue's table per test, on every database."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, col, select

from models.enums import LikelyCause, Valuation
from models.keys import DiscrepancyKey
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    UsageChange,
    UsageSnapshot,
)
from models.types import utcnow
from tasks import record as record_module
from tasks.compare import LineItem, PairComparison
from tasks.record import (
    NOT_ASSESSED,
    Assessment,
    PairStats,
    RecordOutcome,
    record_pair,
    record_pair_failure,
    settles_at,
)
from tests.builders import comparison, days, item, new_run
from tests.builders import discrepancy_rows as rows
from tests.builders import record_comparison as record

CUSTOMER, METER = "cus_A", "mtr_api"
STATS = PairStats(requests=1, duration_ms=5)
MISMATCH = comparison(days({"2026-11-01": "7"}), item("li_1", "2026-11-01", "2026-11-02", "5"))
MISMATCH_CHANGED = comparison(
    days({"2026-11-01": "8"}), item("li_1", "2026-11-01", "2026-11-02", "5")
)
MATCHED = comparison(days({"2026-11-01": "5"}), item("li_1", "2026-11-01", "2026-11-02", "5"))


def only(engine: Engine) -> Discrepancy:
    [row] = rows(engine)
    return row


def set_status(engine: Engine, status: DiscrepancyStatus, *, alerted: bool = False) -> None:
    with Session(engine) as session:
        row = session.exec(select(Discrepancy)).one()
        row.status = status
        row.alerted_at = utcnow() if alerted else None
        session.add(row)
        session.commit()


def test_a_new_discrepancy_is_open(engine: Engine) -> None:
    run = new_run(engine)
    outcome = record(engine, run, MISMATCH)
    row = only(engine)
    assert outcome.new == 1
    assert row.kind is DiscrepancyKind.QUANTITY_MISMATCH
    assert row.status is DiscrepancyStatus.OPEN
    assert (row.first_seen_run, row.last_seen_run, row.resolved_run) == (run, run, None)
    assert (row.stripe_quantity, row.internal_quantity, row.difference) == (
        Decimal(7),
        Decimal(5),
        Decimal(2),
    )
    assert row.alerted_at is None


def test_the_stored_row_has_the_findings_key(engine: Engine) -> None:
    record(engine, new_run(engine), MISMATCH)
    [finding] = MISMATCH.findings
    stored = DiscrepancyKey.from_mapping(only(engine).model_dump())
    assert stored == finding.key(customer=CUSTOMER, meter=METER)


def test_seen_again_updates_last_seen_run_and_numbers(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    outcome = record(engine, second, MISMATCH_CHANGED)
    row = only(engine)
    assert outcome.updated == 1
    assert row.status is DiscrepancyStatus.OPEN
    assert (row.first_seen_run, row.last_seen_run) == (first, second)
    assert row.stripe_quantity == Decimal(8)
    assert row.difference == Decimal(3)


def test_no_longer_holding_within_scope_is_resolved_by_that_run(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    outcome = record(engine, second, MATCHED)
    row = only(engine)
    assert outcome.resolved == 1
    assert row.status is DiscrepancyStatus.RESOLVED
    assert row.resolved_run == second


def test_outside_what_the_run_re_evaluated_is_left_alone(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    unbilled = comparison(days({"2026-11-01": "3"}))
    record(engine, first, unbilled)
    later_window = comparison({}, window=("2026-11-02", "2026-11-04"))
    outcome = record(engine, second, later_window)
    assert outcome.resolved == 0
    assert only(engine).status is DiscrepancyStatus.OPEN


def test_resolved_then_holding_again_is_reopened_and_alerted_again(engine: Engine) -> None:
    runs = [new_run(engine) for _ in range(3)]
    record(engine, runs[0], MISMATCH)
    set_status(engine, DiscrepancyStatus.OPEN, alerted=True)
    record(engine, runs[1], MATCHED)
    outcome = record(engine, runs[2], MISMATCH)
    row = only(engine)
    assert outcome.reopened == 1
    assert row.status is DiscrepancyStatus.OPEN
    assert row.resolved_run is None
    assert row.alerted_at is None
    assert (row.first_seen_run, row.last_seen_run) == (runs[0], runs[2])


def test_acknowledged_with_changed_numbers_is_reopened(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    set_status(engine, DiscrepancyStatus.ACKNOWLEDGED, alerted=True)
    outcome = record(engine, second, MISMATCH_CHANGED)
    row = only(engine)
    assert outcome.reopened == 1
    assert row.status is DiscrepancyStatus.OPEN
    assert row.alerted_at is None


def test_acknowledged_with_the_same_numbers_stays_acknowledged(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    set_status(engine, DiscrepancyStatus.ACKNOWLEDGED, alerted=True)
    outcome = record(engine, second, MISMATCH)
    row = only(engine)
    assert outcome.unchanged == 1
    assert row.status is DiscrepancyStatus.ACKNOWLEDGED
    assert row.alerted_at is not None
    assert row.last_seen_run == second


def test_acknowledged_and_no_longer_holding_is_resolved(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    set_status(engine, DiscrepancyStatus.ACKNOWLEDGED)
    record(engine, second, MATCHED)
    assert only(engine).status is DiscrepancyStatus.RESOLVED


def _snapshot(engine: Engine) -> list[dict[str, Any]]:
    return [row.model_dump() for row in rows(engine)]


def test_recording_the_same_result_twice_changes_nothing(engine: Engine) -> None:
    run = new_run(engine)
    record(engine, run, MISMATCH)
    before = _snapshot(engine)
    outcome = record(engine, run, MISMATCH)
    assert outcome == RecordOutcome(unchanged=1)
    assert _snapshot(engine) == before


def test_nothing_is_ever_deleted(engine: Engine) -> None:
    runs = [new_run(engine) for _ in range(4)]
    for run, result in zip(runs, [MISMATCH, MATCHED, MISMATCH_CHANGED, MATCHED], strict=True):
        record(engine, run, result)
    row = only(engine)
    assert row.status is DiscrepancyStatus.RESOLVED
    assert row.resolved_run == runs[3]


def test_a_failed_pair_leaves_its_discrepancies_as_they_were(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    before = _snapshot(engine)
    record_pair_failure(
        engine=engine,
        run_id=second,
        customer=CUSTOMER,
        meter=METER,
        error="Stripe answered 503 after 8 attempts",
        stats=STATS,
    )
    assert _snapshot(engine) == before
    with Session(engine) as session:
        result = session.exec(select(PairResult).where(PairResult.run_id == second)).one()
    assert result.status is PairStatus.FETCH_FAILED
    assert result.error == "Stripe answered 503 after 8 attempts"


def test_a_crash_midway_leaves_the_pair_untouched(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = new_run(engine)

    def crash(**_: object) -> None:
        raise RuntimeError("process killed")

    monkeypatch.setattr(record_module, "record_pair_result", crash)
    with pytest.raises(RuntimeError):
        record(engine, run, MISMATCH)
    assert rows(engine) == []


def test_snapshots_keep_what_stripe_said_per_day(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    fetched = (date(2026, 11, 1), date(2026, 11, 4))
    for run, daily in [
        (first, days({"2026-11-01": "1.5", "2026-11-02": "2"})),
        (second, days({"2026-11-02": "4"})),
    ]:
        record_pair(
            engine=engine,
            run_id=run,
            customer=CUSTOMER,
            meter=METER,
            comparison=MATCHED,
            daily=daily,
            fetched=fetched,
            stats=STATS,
        )
    with Session(engine) as session:
        snapshots = session.exec(select(UsageSnapshot).order_by(col(UsageSnapshot.day))).all()
    assert [(s.day.day, s.aggregated_value, s.run_id) for s in snapshots] == [
        (1, Decimal(0), second),
        (2, Decimal(4), second),
    ]


def test_two_recorders_of_the_same_pair_at_once_leave_one_row_per_identity(
    engine: Engine,
) -> None:
    results = [
        comparison(
            days({f"2026-11-0{d}": str(d + n) for d in (1, 2, 3)}),
            item("li_1", "2026-11-01", "2026-11-02", "1"),
            item("li_2", "2026-11-01", "2026-11-03", "9"),
        )
        for n in range(2)
    ]
    runs = [new_run(engine) for _ in range(8)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for round_, run in enumerate(runs[index::2]):
                barrier.wait()
                record(engine, run, results[(index + round_) % 2])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    identities = [DiscrepancyKey.from_mapping(r.model_dump()) for r in rows(engine)]
    expected = {
        f.key(customer=CUSTOMER, meter=METER) for result in results for f in result.findings
    }
    assert len(identities) == len(set(identities)) == len(expected) == 4
    statuses = {r.line_item_id: r.status for r in rows(engine)}
    assert statuses["li_2"] is DiscrepancyStatus.OPEN
    assert statuses["li_1"] in {DiscrepancyStatus.OPEN, DiscrepancyStatus.RESOLVED}


def _many_mismatches(count: int, *, billed: str) -> PairComparison:
    """`count` one-day line items over consecutive days; Stripe says 7 each day."""
    first = date(2020, 1, 1)
    daily = {first + timedelta(days=n): Decimal(7) for n in range(count)}
    items = [
        LineItem(
            id=f"li_{n:05d}",
            period_start=day,
            period_end=day + timedelta(days=1),
            quantity=Decimal(billed if n % 2 else "7"),
        )
        for n, day in enumerate(daily)
    ]
    end = (first + timedelta(days=count)).isoformat()
    return comparison(daily, *items, window=(first.isoformat(), end), today=end)


def test_a_pair_with_thousands_of_discrepancies_is_recorded_whole(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    # 2,501 items, every other one off: 1,250 mismatches, more than a page of rows.
    assert record(engine, first, _many_mismatches(2_501, billed="5")).new == 1_250
    outcome = record(engine, second, _many_mismatches(2_501, billed="6"))
    assert outcome == RecordOutcome(updated=1_250)
    recorded = rows(engine)
    assert len(recorded) == 1_250
    assert {(r.internal_quantity, r.last_seen_run, r.status) for r in recorded} == {
        (Decimal(6), second, DiscrepancyStatus.OPEN)
    }


def test_recording_issues_statements_per_batch_not_per_row(engine: Engine) -> None:
    executions: list[str] = []

    def count(*args: Any) -> None:
        executions.append(args[2])

    run = new_run(engine)
    event.listen(engine, "before_cursor_execute", count)
    try:
        record(engine, run, _many_mismatches(2_501, billed="5"))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Lock, read existing, upsert (1,000 rows a page at most), pair result: never one per row.
    assert len(executions) <= 8, executions


def test_a_pair_recorded_again_in_the_same_run_has_its_result_replaced(engine: Engine) -> None:
    run = new_run(engine)
    record_pair_failure(
        engine=engine, run_id=run, customer=CUSTOMER, meter=METER, error="timed out", stats=STATS
    )
    record(engine, run, MISMATCH)  # the retry succeeded
    with Session(engine) as session:
        [result] = session.exec(select(PairResult).where(PairResult.run_id == run)).all()
    assert result.status is PairStatus.OK
    assert result.error is None
    assert (result.compared, result.findings, result.discrepancies_new) == (1, 1, 1)


# -------------------------------------------------------------- usage history and fetch range


def record_fetch(engine: Engine, run_id: int, daily: dict[date, Decimal]) -> None:
    record_pair(
        engine=engine,
        run_id=run_id,
        customer=CUSTOMER,
        meter=METER,
        comparison=MATCHED,
        daily=daily,
        fetched=FETCHED,
        stats=STATS,
    )


def changes(engine: Engine) -> list[tuple[int, Decimal, Decimal, int]]:
    with Session(engine) as session:
        found = session.exec(select(UsageChange).order_by(col(UsageChange.id))).all()
    return [(c.day.day, c.previous_value, c.value, c.run_id) for c in found]


FETCHED = (date(2026, 10, 31), date(2026, 11, 3))


def test_a_first_fetch_leaves_no_usage_change(engine: Engine) -> None:
    record_fetch(engine, new_run(engine), days({"2026-11-01": "5"}))
    assert changes(engine) == []


def test_a_day_that_moved_between_two_fetches_leaves_one_usage_change(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record_fetch(engine, first, days({"2026-11-01": "5", "2026-11-02": "1"}))
    record_fetch(engine, second, days({"2026-11-01": "5", "2026-11-02": "3"}))
    assert changes(engine) == [(2, Decimal(1), Decimal(3), second)]


def test_usage_on_a_day_fetched_empty_before_is_a_change_from_zero(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record_fetch(engine, first, days({"2026-11-01": "5"}))
    record_fetch(engine, second, days({"2026-11-01": "5", "2026-10-31": "2"}))
    assert changes(engine) == [(31, Decimal(0), Decimal(2), second)]


def test_the_pair_result_keeps_the_days_asked_of_stripe(engine: Engine) -> None:
    run = new_run(engine)
    record_fetch(engine, run, days({"2026-11-01": "5"}))
    with Session(engine) as session:
        result = session.exec(select(PairResult)).one()
    assert (result.fetched_start, result.fetched_end) == FETCHED


# ------------------------------------------------------------------ money, cause, re-opening

PRICED = Assessment(
    amount_at_stake=Decimal("0.2"),
    currency="usd",
    valuation=Valuation.STRIPE_PRICE,
    likely_cause=LikelyCause.DUPLICATED_USAGE,
    cause_detail="Stripe's 10 is twice the 5 billed.",
)
REPRICED = Assessment(
    amount_at_stake=Decimal("0.4"), currency="usd", valuation=Valuation.STRIPE_PRICE
)


def assessed(
    engine: Engine, run_id: int, result: PairComparison, assessment: Assessment
) -> RecordOutcome:
    return record_pair(
        engine=engine,
        run_id=run_id,
        customer=CUSTOMER,
        meter=METER,
        comparison=result,
        daily={},
        fetched=None,
        stats=STATS,
        assessments=[assessment] * len(result.findings),
    )


def money_and_cause(row: Discrepancy) -> tuple[Any, ...]:
    return (row.amount_at_stake, row.currency, row.valuation, row.likely_cause, row.cause_detail)


def test_money_and_cause_are_stored_with_the_discrepancy(engine: Engine) -> None:
    assessed(engine, new_run(engine), MISMATCH, PRICED)
    assert money_and_cause(only(engine)) == (
        Decimal("0.2"),
        "usd",
        Valuation.STRIPE_PRICE,
        LikelyCause.DUPLICATED_USAGE,
        "Stripe's 10 is twice the 5 billed.",
    )


def test_a_new_price_revalues_an_acknowledged_row_without_reopening_it(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    assessed(engine, first, MISMATCH, PRICED)
    set_status(engine, DiscrepancyStatus.ACKNOWLEDGED, alerted=True)
    before = only(engine)

    outcome = assessed(engine, second, MISMATCH, REPRICED)

    after = only(engine)
    assert outcome == RecordOutcome(unchanged=1)
    assert after.status is DiscrepancyStatus.ACKNOWLEDGED
    assert after.alerted_at == before.alerted_at
    assert after.reopened_at is None
    assert money_and_cause(after) == (Decimal("0.4"), "usd", Valuation.STRIPE_PRICE, None, None)
    assert after.updated_at > before.updated_at


def test_an_open_row_found_again_is_revalued(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    assessed(engine, first, MISMATCH, PRICED)
    assessed(engine, second, MISMATCH, NOT_ASSESSED)
    assert money_and_cause(only(engine)) == (None, None, None, None, None)


def test_a_resolved_row_holding_again_is_stamped_reopened_and_keeps_the_stamp(
    engine: Engine,
) -> None:
    runs = [new_run(engine) for _ in range(4)]
    record(engine, runs[0], MISMATCH)
    record(engine, runs[1], MATCHED)
    started = utcnow()
    record(engine, runs[2], MISMATCH)
    reopened = only(engine).reopened_at
    record(engine, runs[3], MISMATCH)

    assert reopened is not None and reopened >= started
    assert only(engine).reopened_at == reopened


def test_acknowledged_with_changed_numbers_is_stamped_reopened(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)
    set_status(engine, DiscrepancyStatus.ACKNOWLEDGED, alerted=True)
    record(engine, second, MISMATCH_CHANGED)
    row = only(engine)
    assert row.status is DiscrepancyStatus.OPEN
    assert row.reopened_at is not None


def test_a_new_row_whose_alert_failed_stays_new(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, MISMATCH)  # never alerted: the delivery failed
    record(engine, second, MISMATCH_CHANGED)
    row = only(engine)
    assert (row.status, row.alerted_at, row.reopened_at) == (DiscrepancyStatus.OPEN, None, None)


def test_assessments_must_go_one_to_a_finding(engine: Engine) -> None:
    with pytest.raises(ValueError, match="one each"):
        record_pair(
            engine=engine,
            run_id=new_run(engine),
            customer=CUSTOMER,
            meter=METER,
            comparison=MISMATCH,
            daily={},
            fetched=None,
            stats=STATS,
            assessments=[PRICED, PRICED],
        )


# ---------------------------------------------------------------------------------- settling

RUN_STARTED = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period_end", "hours", "expected"),
    [
        ("2026-11-02", 0, None),
        ("2026-11-02", 72, datetime(2026, 11, 5, tzinfo=UTC)),
        ("2026-11-02", 6, None),  # ended exactly 6 hours before the run: settled
        ("2026-11-02", 7, datetime(2026, 11, 2, 7, tzinfo=UTC)),
        ("2026-10-20", 72, None),
    ],
    ids=["off", "within-the-grace", "exactly-settled", "an-hour-to-go", "long-ago"],
)
def test_a_discrepancy_settles_its_hours_after_its_period_ends(
    period_end: str, hours: int, expected: datetime | None
) -> None:
    assert (
        settles_at(date.fromisoformat(period_end), run_started=RUN_STARTED, settle_hours=hours)
        == expected
    )


def test_a_row_found_again_keeps_its_settles_at_until_it_opens_again(engine: Engine) -> None:
    runs = [new_run(engine) for _ in range(4)]
    first_settle = datetime(2026, 11, 5, tzinfo=UTC)
    later_settle = datetime(2026, 11, 6, tzinfo=UTC)
    assessed(engine, runs[0], MISMATCH, Assessment(settles_at=first_settle))
    assessed(engine, runs[1], MISMATCH, Assessment(settles_at=later_settle))
    kept = only(engine).settles_at
    record(engine, runs[2], MATCHED)
    assessed(engine, runs[3], MISMATCH, Assessment(settles_at=later_settle))

    assert kept == first_settle
    assert only(engine).settles_at == later_settle


def test_a_pair_fetched_again_reads_no_earlier_fetch_ranges(engine: Engine) -> None:
    """Its days with usage all have snapshots: only a day that appears needs the ranges."""
    first, second = new_run(engine), new_run(engine)
    daily = days({"2026-11-01": "5", "2026-11-02": "1"})
    record_fetch(engine, first, daily)
    selects: list[str] = []

    def keep(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            selects.append(args[2])

    event.listen(engine, "before_cursor_execute", keep)
    try:
        record_fetch(engine, second, daily)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert not [s for s in selects if "pair_result" in s], selects
    assert changes(engine) == []
