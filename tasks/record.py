"""Record one pair's comparison: snapshots, discrepancy upserts with their lifecycle, resolutions.

Everything for one pair happens in one transaction, so a crash leaves the pair either
recorded or untouched. Concurrent recorders of the same pair are serialised (SQLite's
write lock, a PostgreSQL advisory lock); the unique identity plus `ON CONFLICT` keeps one
row per identity even without that.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, select

from models.engine import session_scope
from models.tables import (
    DISCREPANCY_IDENTITY,
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    UsageSnapshot,
)
from models.types import utcnow
from models.upsert import insert_for
from tasks.compare import Finding, PairComparison, Scope

ROWS_PER_STATEMENT = 500

_LINE_ITEM_KINDS = (DiscrepancyKind.QUANTITY_MISMATCH, DiscrepancyKind.MISSING_IN_STRIPE)
_OPEN_STATES = (DiscrepancyStatus.OPEN, DiscrepancyStatus.ACKNOWLEDGED)

Identity = tuple[str, date, date, str, str]


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What recording one pair changed, for the run's counts."""

    new: int = 0
    reopened: int = 0
    updated: int = 0
    unchanged: int = 0
    resolved: int = 0


@dataclass(frozen=True, slots=True)
class PairStats:
    requests: int
    duration_ms: int


def record_pair(
    *,
    engine: Engine,
    run_id: int,
    customer: str,
    meter: str,
    comparison: PairComparison,
    daily: Mapping[date, Decimal],
    fetched: tuple[date, date] | None,
    stats: PairStats,
) -> RecordOutcome:
    """Record a successfully fetched pair in one transaction."""
    with session_scope(engine) as session:
        lock_pair(session=session, customer=customer, meter=meter)
        if fetched is not None:
            record_snapshots(
                session=session,
                run_id=run_id,
                customer=customer,
                meter=meter,
                daily=daily,
                fetched=fetched,
            )
        outcome = record_findings(
            session=session,
            run_id=run_id,
            customer=customer,
            meter=meter,
            findings=comparison.findings,
            scope=comparison.scope,
        )
        record_pair_result(
            session=session,
            run_id=run_id,
            customer=customer,
            meter=meter,
            status=PairStatus.OK,
            stats=stats,
            comparison=comparison,
            outcome=outcome,
        )
    return outcome


def record_pair_failure(
    *, engine: Engine, run_id: int, customer: str, meter: str, error: str, stats: PairStats
) -> None:
    """A pair that could not be fetched: its discrepancies are left exactly as they were."""
    with session_scope(engine) as session:
        record_pair_result(
            session=session,
            run_id=run_id,
            customer=customer,
            meter=meter,
            status=PairStatus.FETCH_FAILED,
            stats=stats,
            error=error,
        )


def lock_pair(*, session: Session, customer: str, meter: str) -> None:
    """Serialise recorders of one pair on PostgreSQL (SQLite already has one writer)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = zlib.crc32(f"{customer}\x1f{meter}".encode()) - 2**31
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def record_snapshots(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    daily: Mapping[date, Decimal],
    fetched: tuple[date, date],
) -> None:
    """Keep what Stripe said per day; days it no longer reports are set to zero, not deleted."""
    now = utcnow()
    start, end = fetched
    days = sorted(day for day in daily if start <= day < end)
    rows = [
        {
            "stripe_customer_id": customer,
            "meter_id": meter,
            "day": day,
            "aggregated_value": daily[day],
            "fetched_at": now,
            "run_id": run_id,
        }
        for day in days
    ]
    table = UsageSnapshot.__table__  # type: ignore[attr-defined]
    for chunk in _chunks(rows):
        statement = insert_for(session, table).values(chunk)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["stripe_customer_id", "meter_id", "day"],
                set_={
                    "aggregated_value": statement.excluded.aggregated_value,
                    "fetched_at": statement.excluded.fetched_at,
                    "run_id": statement.excluded.run_id,
                },
            )
        )
    session.execute(
        sa.update(table)
        .where(
            table.c.stripe_customer_id == customer,
            table.c.meter_id == meter,
            table.c.day >= start,
            table.c.day < end,
            table.c.day.not_in(days),
        )
        .values(aggregated_value=Decimal(0), fetched_at=now, run_id=run_id)
    )


def record_findings(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    findings: Sequence[Finding],
    scope: Scope,
) -> RecordOutcome:
    """Upsert what holds now; resolve what was re-evaluated and no longer holds."""
    existing = _existing(session=session, customer=customer, meter=meter)
    rows = [_row(finding, run_id=run_id, customer=customer, meter=meter) for finding in findings]
    counts = _classify(rows, existing)
    for chunk in _chunks(rows):
        session.execute(_upsert_statement(session, chunk))
    found = {_identity_of_row(row) for row in rows}
    to_resolve = [
        row_id
        for identity, (row_id, status, _numbers) in existing.items()
        if status in _OPEN_STATES and identity not in found and _in_scope(identity, scope)
    ]
    if to_resolve:
        table = Discrepancy.__table__  # type: ignore[attr-defined]
        session.execute(
            sa.update(table)
            .where(table.c.id.in_(to_resolve))
            .values(status=DiscrepancyStatus.RESOLVED, resolved_run=run_id, updated_at=utcnow())
        )
    return RecordOutcome(resolved=len(to_resolve), **counts)


def record_pair_result(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    status: PairStatus,
    stats: PairStats,
    comparison: PairComparison | None = None,
    outcome: RecordOutcome | None = None,
    error: str | None = None,
) -> None:
    """One row per (run, pair); recording the pair again in the same run replaces it."""
    values: dict[str, Any] = {
        "run_id": run_id,
        "stripe_customer_id": customer,
        "meter_id": meter,
        "status": status,
        "error": error,
        "requests": stats.requests,
        "duration_ms": stats.duration_ms,
        "compared": comparison.compared if comparison else 0,
        "matched": comparison.matched if comparison else 0,
        "pending": comparison.pending if comparison else 0,
        "findings": len(comparison.findings) if comparison else 0,
        "discrepancies_new": outcome.new if outcome else 0,
        "discrepancies_reopened": outcome.reopened if outcome else 0,
        "discrepancies_resolved": outcome.resolved if outcome else 0,
        "recorded_at": utcnow(),
    }
    table = PairResult.__table__  # type: ignore[attr-defined]
    statement = insert_for(session, table).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "stripe_customer_id", "meter_id"],
            set_={key: statement.excluded[key] for key in values if key != "run_id"},
        )
    )


def _row(finding: Finding, *, run_id: int, customer: str, meter: str) -> dict[str, Any]:
    return {
        "stripe_customer_id": customer,
        "meter_id": meter,
        "kind": finding.kind,
        "period_start": finding.period_start,
        "period_end": finding.period_end,
        "line_item_id": finding.line_item_id,
        "other_line_item_id": finding.other_line_item_id,
        "stripe_quantity": finding.stripe_quantity,
        "internal_quantity": finding.internal_quantity,
        "difference": finding.difference,
        "detail": finding.detail,
        "status": DiscrepancyStatus.OPEN,
        "first_seen_run": run_id,
        "last_seen_run": run_id,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }


def _upsert_statement(session: Session, rows: list[dict[str, Any]]) -> Any:
    """The lifecycle, decided by the database row by row, so racing writers agree."""
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    insert = insert_for(session, table).values(rows)
    new = insert.excluded
    numbers_changed = sa.or_(
        table.c.stripe_quantity.is_distinct_from(new.stripe_quantity),
        table.c.internal_quantity.is_distinct_from(new.internal_quantity),
        table.c.difference.is_distinct_from(new.difference),
    )
    reopen = sa.or_(
        table.c.status == DiscrepancyStatus.RESOLVED,
        sa.and_(table.c.status == DiscrepancyStatus.ACKNOWLEDGED, numbers_changed),
    )
    changed = sa.or_(
        reopen,
        numbers_changed,
        table.c.detail.is_distinct_from(new.detail),
        table.c.last_seen_run.is_distinct_from(new.last_seen_run),
    )
    return insert.on_conflict_do_update(
        index_elements=list(DISCREPANCY_IDENTITY),
        set_={
            "stripe_quantity": new.stripe_quantity,
            "internal_quantity": new.internal_quantity,
            "difference": new.difference,
            "detail": new.detail,
            "last_seen_run": new.last_seen_run,
            "status": sa.case((reopen, DiscrepancyStatus.OPEN.value), else_=table.c.status),
            "resolved_run": sa.case((reopen, sa.null()), else_=table.c.resolved_run),
            "alerted_at": sa.case((reopen, sa.null()), else_=table.c.alerted_at),
            "updated_at": sa.case((changed, new.updated_at), else_=table.c.updated_at),
        },
    )


def _existing(
    *, session: Session, customer: str, meter: str
) -> dict[Identity, tuple[int, DiscrepancyStatus, tuple[Any, ...]]]:
    rows = session.exec(
        select(Discrepancy).where(
            Discrepancy.stripe_customer_id == customer, Discrepancy.meter_id == meter
        )
    ).all()
    return {
        (
            row.kind.value,
            row.period_start,
            row.period_end,
            row.line_item_id,
            row.other_line_item_id,
        ): (
            row.id or 0,
            row.status,
            (row.stripe_quantity, row.internal_quantity, row.difference),
        )
        for row in rows
    }


def _identity_of_row(row: Mapping[str, Any]) -> Identity:
    return (
        row["kind"].value,
        row["period_start"],
        row["period_end"],
        row["line_item_id"],
        row["other_line_item_id"],
    )


def _classify(
    rows: Iterable[Mapping[str, Any]],
    existing: Mapping[Identity, tuple[int, DiscrepancyStatus, tuple[Any, ...]]],
) -> dict[str, int]:
    counts = {"new": 0, "reopened": 0, "updated": 0, "unchanged": 0}
    for row in rows:
        before = existing.get(_identity_of_row(row))
        numbers = (row["stripe_quantity"], row["internal_quantity"], row["difference"])
        if before is None:
            counts["new"] += 1
        elif before[1] is DiscrepancyStatus.RESOLVED or (
            before[1] is DiscrepancyStatus.ACKNOWLEDGED and before[2] != numbers
        ):
            counts["reopened"] += 1
        elif before[2] != numbers:
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    return counts


def _in_scope(identity: Identity, scope: Scope) -> bool:
    """Whether this run re-evaluated the discrepancy, so its absence means it is resolved."""
    kind, period_start, _end, line_item_id, other_line_item_id = identity
    if kind in {k.value for k in _LINE_ITEM_KINDS}:
        return line_item_id in scope.compared_line_item_ids
    if kind == DiscrepancyKind.OVERLAPPING_LINE_ITEMS.value:
        considered = scope.considered_line_item_ids
        return line_item_id in considered and other_line_item_id in considered
    first, last = scope.unbilled_days
    return first <= period_start < last


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]


__all__ = [
    "PairStats",
    "RecordOutcome",
    "record_findings",
    "record_pair",
    "record_pair_failure",
    "record_pair_result",
    "record_snapshots",
]
