"""Usage history: what Stripe said per day, and every time a day's value moved.

A late meter event shows only as a day whose value changed between two fetches; these
functions keep that evidence (`usage_change`) and read back what each day first was.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Session

from models.tables import PairResult, PairStatus, UsageChange, UsageSnapshot

_ZERO = Decimal(0)

# Built once: run for every pair a run records, cached Core statements cost least CPU.
_results = PairResult.__table__  # type: ignore[attr-defined]
_snapshot_table = UsageSnapshot.__table__  # type: ignore[attr-defined]
_COVERED = sa.select(_results.c.fetched_start, _results.c.fetched_end).where(
    _results.c.stripe_customer_id == sa.bindparam("customer"),
    _results.c.meter_id == sa.bindparam("meter"),
    _results.c.status == PairStatus.OK,
    _results.c.fetched_start.is_not(None),
    _results.c.fetched_start < sa.bindparam("end"),
    _results.c.fetched_end > sa.bindparam("start"),
)
_SNAPSHOTS = sa.select(_snapshot_table.c.day, _snapshot_table.c.aggregated_value).where(
    _snapshot_table.c.stripe_customer_id == sa.bindparam("customer"),
    _snapshot_table.c.meter_id == sa.bindparam("meter"),
    _snapshot_table.c.day >= sa.bindparam("start"),
    _snapshot_table.c.day < sa.bindparam("end"),
)
_change_table = UsageChange.__table__  # type: ignore[attr-defined]
_FIRST_CHANGES = (
    sa.select(_change_table.c.day, _change_table.c.previous_value, _change_table.c.id)
    .where(
        _change_table.c.stripe_customer_id == sa.bindparam("customer"),
        _change_table.c.meter_id == sa.bindparam("meter"),
        _change_table.c.day >= sa.bindparam("start"),
        _change_table.c.day < sa.bindparam("end"),
    )
    .order_by(_change_table.c.day, _change_table.c.id)
)


def _covered_days(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> list[tuple[date, date]]:
    """Ranges of [start, end) that earlier successful fetches of the pair asked Stripe for."""
    rows = session.execute(
        _COVERED, {"customer": customer, "meter": meter, "start": start, "end": end}
    )
    return [(max(a, start), min(b, end)) for a, b in rows]


def _was_covered(day: date, ranges: list[tuple[date, date]]) -> bool:
    return any(a <= day < b for a, b in ranges)


def _snapshots(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> dict[date, Decimal]:
    rows = session.execute(
        _SNAPSHOTS, {"customer": customer, "meter": meter, "start": start, "end": end}
    )
    return {day: value for day, value in rows}  # noqa: C416 (rows are Row objects)


def usage_changes(
    *,
    session: Session,
    customer: str,
    meter: str,
    daily: Mapping[date, Decimal],
    fetched: tuple[date, date],
) -> list[tuple[date, Decimal, Decimal]]:
    """(day, previous, now) for each fetched day whose value differs from the last fetch.

    Read before the snapshots are updated. A day's first fetch is no change; a day an earlier
    fetch covered without a bucket was 0 then.
    """
    start, end = fetched
    before = _snapshots(session=session, customer=customer, meter=meter, start=start, end=end)
    # Earlier fetches matter only for a day with usage now and no snapshot (a change from 0):
    # a pair seen before has a snapshot of every day with usage, and skips the query.
    appeared = any(
        value and start <= day < end and day not in before for day, value in daily.items()
    )
    covered = (
        _covered_days(session=session, customer=customer, meter=meter, start=start, end=end)
        if appeared
        else []
    )
    changes: list[tuple[date, Decimal, Decimal]] = []
    day_count = (end - start).days
    for offset in range(day_count):
        day = date.fromordinal(start.toordinal() + offset)
        now = daily.get(day, _ZERO)
        if day in before:
            previous = before[day]
        elif _was_covered(day, covered):
            previous = _ZERO
        else:
            continue
        if previous != now:
            changes.append((day, previous, now))
    return changes


def record_usage_changes(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    changes: list[tuple[date, Decimal, Decimal]],
    fetched_at: datetime,
) -> None:
    """Append the changes found by `usage_changes`, in the snapshot's transaction."""
    if not changes:
        return
    table = UsageChange.__table__  # type: ignore[attr-defined]
    session.execute(
        sa.insert(table),
        [
            {
                "stripe_customer_id": customer,
                "meter_id": meter,
                "day": day,
                "previous_value": previous,
                "value": value,
                "run_id": run_id,
                "fetched_at": fetched_at,
            }
            for day, previous, value in changes
        ],
    )


def first_known_values(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> dict[date, Decimal | None]:
    """Each day of [start, end) as first fetched: the earliest value known before this run.

    A day's first change holds what it was before; else its snapshot. A day an earlier fetch
    covered without a bucket maps to None (no value then); a day never fetched is absent.
    """
    first: dict[date, Decimal | None] = {}
    rows = session.execute(
        _FIRST_CHANGES, {"customer": customer, "meter": meter, "start": start, "end": end}
    )
    snapshots = _snapshots(session=session, customer=customer, meter=meter, start=start, end=end)
    covered = _covered_days(session=session, customer=customer, meter=meter, start=start, end=end)
    for day, previous, _id in rows:
        if day not in first:
            # A change from 0 on a day that had no snapshot before: it had no bucket then.
            first[day] = previous
    for day, value in snapshots.items():
        first.setdefault(day, value)
    for offset in range((end - start).days):
        day = date.fromordinal(start.toordinal() + offset)
        if day not in first and _was_covered(day, covered):
            first[day] = None
    return first
