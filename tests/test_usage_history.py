"""Usage history: a day whose value moves between fetches leaves a change behind."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session, select

from models.tables import PairResult, PairStatus, UsageChange, UsageSnapshot
from models.usage import first_known_values, record_usage_changes, usage_changes
from tests.builders import days, new_run

NOW = datetime(2026, 11, 20, tzinfo=UTC)
NOV_1, NOV_4 = date(2026, 11, 1), date(2026, 11, 4)


def fetched_before(
    engine: Engine, *, values: dict[str, str], start: date = NOV_1, end: date = NOV_4
) -> int:
    """An earlier run that fetched [start, end) and saw `values` (days without one: no bucket)."""
    run_id = new_run(engine)
    with Session(engine) as session:
        session.add(
            PairResult(
                run_id=run_id,
                stripe_customer_id="cus_A",
                meter_id="mtr_api",
                status=PairStatus.OK,
                fetched_start=start,
                fetched_end=end,
            )
        )
        for day, value in days(values).items():
            session.add(
                UsageSnapshot(
                    stripe_customer_id="cus_A",
                    meter_id="mtr_api",
                    day=day,
                    aggregated_value=value,
                    run_id=run_id,
                )
            )
        session.commit()
    return run_id


def changes_now(engine: Engine, values: dict[str, str]) -> list[tuple[date, Decimal, Decimal]]:
    with Session(engine) as session:
        return usage_changes(
            session=session,
            customer="cus_A",
            meter="mtr_api",
            daily=days(values),
            fetched=(NOV_1, NOV_4),
        )


def test_a_days_first_fetch_is_no_change(engine: Engine) -> None:
    assert changes_now(engine, {"2026-11-01": "5"}) == []


def test_a_day_whose_value_moved_is_a_change_from_what_was_seen(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-01": "5", "2026-11-02": "7"})
    assert changes_now(engine, {"2026-11-01": "5", "2026-11-02": "7.5"}) == [
        (date(2026, 11, 2), Decimal(7), Decimal("7.5"))
    ]


def test_usage_on_a_day_fetched_empty_before_is_a_change_from_zero(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-01": "5"})
    assert changes_now(engine, {"2026-11-01": "5", "2026-11-03": "2"}) == [
        (date(2026, 11, 3), Decimal(0), Decimal(2))
    ]


def test_a_day_outside_every_earlier_fetch_is_a_first_fetch(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-01": "5"}, end=date(2026, 11, 2))
    assert changes_now(engine, {"2026-11-01": "5", "2026-11-03": "2"}) == []


def test_a_bucket_that_disappeared_is_a_change_to_zero(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-01": "5"})
    assert changes_now(engine, {}) == [(NOV_1, Decimal(5), Decimal(0))]


def test_recorded_changes_keep_exact_values(engine: Engine) -> None:
    run_id = new_run(engine)
    change = (NOV_1, Decimal("0.000000000000000001"), Decimal("12345678901234567890.5"))
    with Session(engine) as session:
        record_usage_changes(
            session=session,
            run_id=run_id,
            customer="cus_A",
            meter="mtr_api",
            changes=[change],
            fetched_at=NOW,
        )
        session.commit()
        (row,) = session.exec(select(UsageChange)).all()
    assert (row.day, row.previous_value, row.value, row.run_id) == (*change, run_id)


def first_known(engine: Engine) -> dict[date, Decimal | None]:
    with Session(engine) as session:
        return first_known_values(
            session=session, customer="cus_A", meter="mtr_api", start=NOV_1, end=NOV_4
        )


def test_as_first_fetched_a_day_is_what_its_first_change_moved_away_from(engine: Engine) -> None:
    run_id = fetched_before(engine, values={"2026-11-01": "9"})
    with Session(engine) as session:
        for previous, value in (("5", "7"), ("7", "9")):
            record_usage_changes(
                session=session,
                run_id=run_id,
                customer="cus_A",
                meter="mtr_api",
                changes=[(NOV_1, Decimal(previous), Decimal(value))],
                fetched_at=NOW,
            )
        session.commit()
    assert first_known(engine)[NOV_1] == Decimal(5)


def test_as_first_fetched_an_unchanged_day_is_its_snapshot(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-02": "4"})
    assert first_known(engine)[date(2026, 11, 2)] == Decimal(4)


def test_as_first_fetched_a_day_fetched_without_a_bucket_had_no_value(engine: Engine) -> None:
    fetched_before(engine, values={"2026-11-02": "4"})
    assert first_known(engine)[date(2026, 11, 3)] is None


def test_a_day_never_fetched_has_no_first_value(engine: Engine) -> None:
    fetched_before(engine, values={}, end=date(2026, 11, 2))
    assert date(2026, 11, 3) not in first_known(engine)
