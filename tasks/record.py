"""Record one pair's comparison: usage history, discrepancy upserts with their lifecycle,
money, cause and settling, and resolutions.

Everything for one pair happens in one transaction, so a crash leaves the pair either
recorded or untouched. Concurrent recorders of the same pair are serialised (SQLite's
write lock, a PostgreSQL advisory lock); the unique identity plus `ON CONFLICT` keeps one
row per identity even without that.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from models.engine import session_scope
from models.enums import Ledger, LikelyCause, Valuation
from models.keys import DISCREPANCY_IDENTITY, DiscrepancyKey
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    UsageSnapshot,
)
from models.types import utcnow
from models.upsert import insert_for_dialect
from models.usage import record_usage_changes, usage_changes
from tasks.compare import Finding, PairComparison, Scope

_LINE_ITEM_KINDS = (DiscrepancyKind.QUANTITY_MISMATCH, DiscrepancyKind.MISSING_IN_STRIPE)
_OPEN_STATES = (DiscrepancyStatus.OPEN, DiscrepancyStatus.ACKNOWLEDGED)
# Re-evaluated each time a discrepancy is recorded, whatever its status.
_ASSESSED = ("amount_at_stake", "currency", "valuation", "likely_cause", "cause_detail")


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What recording one pair changed, for the run's counts."""

    new: int = 0
    reopened: int = 0
    updated: int = 0
    unchanged: int = 0
    resolved: int = 0


def _merged(first: RecordOutcome, second: RecordOutcome) -> RecordOutcome:
    return RecordOutcome(
        new=first.new + second.new,
        reopened=first.reopened + second.reopened,
        updated=first.updated + second.updated,
        unchanged=first.unchanged + second.unchanged,
        resolved=first.resolved + second.resolved,
    )


@dataclass(frozen=True, slots=True)
class PairStats:
    requests: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Assessment:
    """What a finding is worth, why it likely happened, and until when it settles.

    Stored on its discrepancy each time it is recorded; `settles_at` only when the row is
    new or opens again (a row found again keeps the one it has).
    """

    amount_at_stake: Decimal | None = None
    currency: str | None = None
    valuation: Valuation | None = None
    likely_cause: LikelyCause | None = None
    cause_detail: str | None = None
    settles_at: datetime | None = None


#: Not valued, no cause, not settling.
NOT_ASSESSED = Assessment()


@dataclass(frozen=True, slots=True)
class LedgerFindings:
    """One more ledger's comparison of the pair (its scope names the ledger), with one
    assessment per finding, in order (none: nothing valued, diagnosed or settling)."""

    comparison: PairComparison
    assessments: Sequence[Assessment] = ()


def settles_at(period_end: date, *, run_started: datetime, settle_hours: int) -> datetime | None:
    """When a discrepancy of a period ending `period_end` (00:00 UTC) may be alerted: that
    instant plus `settle_hours`, if the run started before it; else None (settled)."""
    if settle_hours <= 0:
        return None
    settled = datetime.combine(period_end, time(), UTC) + timedelta(hours=settle_hours)
    return settled if run_started < settled else None


def record_pair(
    *,
    engine: Engine,
    run_id: int,
    customer: str,
    meter: str,
    comparison: PairComparison | None,
    daily: Mapping[date, Decimal],
    fetched: tuple[date, date] | None,
    stats: PairStats,
    assessments: Sequence[Assessment] = (),
    stripe: LedgerFindings | None = None,
) -> RecordOutcome:
    """Record a successfully fetched pair in one transaction.

    `comparison` is the internal ledger's (None: not compared), `stripe` the `stripe`
    ledger's (None: not compared); each ledger's findings are upserted and what it
    re-evaluated resolved on its own. `assessments` go with `comparison.findings`, one each
    in the same order (none: nothing valued, diagnosed or settling). A day whose value moved
    since the pair's last fetch leaves a `usage_change`, written before its snapshot is.
    """
    ledgers = [
        LedgerFindings(comparison, assessments) if comparison is not None else None,
        stripe,
    ]
    for part in ledgers:
        if part is not None and part.assessments:
            _check_assessments(part)
    with session_scope(engine) as session:
        lock_pair(session=session, customer=customer, meter=meter)
        if fetched is not None:
            record_history(
                session=session,
                run_id=run_id,
                customer=customer,
                meter=meter,
                daily=daily,
                fetched=fetched,
            )
            record_snapshots(
                session=session,
                run_id=run_id,
                customer=customer,
                meter=meter,
                daily=daily,
                fetched=fetched,
            )
        outcome = RecordOutcome()
        for part in ledgers:
            if part is None:
                continue
            recorded = record_findings(
                session=session,
                run_id=run_id,
                customer=customer,
                meter=meter,
                findings=part.comparison.findings,
                scope=part.comparison.scope,
                assessments=part.assessments,
            )
            outcome = _merged(outcome, recorded)
        record_pair_result(
            session=session,
            run_id=run_id,
            customer=customer,
            meter=meter,
            status=PairStatus.OK,
            stats=stats,
            comparison=comparison,
            outcome=outcome,
            fetched=fetched,
            stripe=None if stripe is None else stripe.comparison,
        )
    return outcome


def _check_assessments(part: LedgerFindings) -> None:
    findings = part.comparison.findings
    if len(part.assessments) != len(findings):
        raise ValueError(
            f"{len(part.assessments)} assessments for {len(findings)} findings: "
            "one each, in the findings' order."
        )


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
    if _dialect(session) != "postgresql":
        return
    key = zlib.crc32(f"{customer}\x1f{meter}".encode()) - 2**31
    session.execute(_ADVISORY_LOCK, {"key": key})


def record_history(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    daily: Mapping[date, Decimal],
    fetched: tuple[date, date],
) -> None:
    """Each fetched day whose value moved since the pair's last fetch, as a `usage_change`;
    called before `record_snapshots` overwrites what the day was."""
    changes = usage_changes(
        session=session, customer=customer, meter=meter, daily=daily, fetched=fetched
    )
    record_usage_changes(
        session=session,
        run_id=run_id,
        customer=customer,
        meter=meter,
        changes=changes,
        fetched_at=utcnow(),
    )


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
    statements = _statements(_dialect(session))
    if days:
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
        session.execute(statements.upsert_snapshots, rows)
    session.execute(
        statements.zero_unreported_days,
        {
            "p_customer": customer,
            "p_meter": meter,
            "p_start": start,
            "p_end": end,
            "p_days": days,
            "p_zero": Decimal(0),
            "p_now": now,
            "p_run": run_id,
        },
    )


def record_findings(
    *,
    session: Session,
    run_id: int,
    customer: str,
    meter: str,
    findings: Sequence[Finding],
    scope: Scope,
    assessments: Sequence[Assessment] = (),
) -> RecordOutcome:
    """Upsert what holds now; resolve what was re-evaluated and no longer holds."""
    statements = _statements(_dialect(session))
    existing = _existing(session=session, customer=customer, meter=meter)
    now = utcnow()
    rows = [
        _row(
            finding,
            assessment,
            run_id=run_id,
            customer=customer,
            meter=meter,
            ledger=scope.ledger,
            now=now,
        )
        for finding, assessment in zip(
            findings, assessments or [NOT_ASSESSED] * len(findings), strict=True
        )
    ]
    counts = _classify(rows, existing)
    if rows:
        session.execute(statements.upsert_discrepancies, rows)
    found = {DiscrepancyKey.from_mapping(row) for row in rows}
    to_resolve = [
        row_id
        for key, (row_id, status, _numbers) in existing.items()
        if status in _OPEN_STATES and key not in found and _in_scope(key, scope)
    ]
    if to_resolve:
        session.execute(
            statements.resolve,
            {
                "p_ids": to_resolve,
                "p_status": DiscrepancyStatus.RESOLVED,
                "p_run": run_id,
                "p_now": now,
            },
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
    fetched: tuple[date, date] | None = None,
    stripe: PairComparison | None = None,
) -> None:
    """One row per (run, pair); recording the pair again in the same run replaces it.

    `comparison` gives the internal ledger's counts, `stripe` the `stripe` ledger's; the
    findings count both. `fetched` is the days asked of Stripe: a later fetch knows a day
    covered then without a bucket had no usage.
    """
    findings = sum(len(c.findings) for c in (comparison, stripe) if c is not None)
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
        "findings": findings,
        "stripe_compared": stripe.compared if stripe else 0,
        "stripe_matched": stripe.matched if stripe else 0,
        "stripe_pending": stripe.pending if stripe else 0,
        "discrepancies_new": outcome.new if outcome else 0,
        "discrepancies_reopened": outcome.reopened if outcome else 0,
        "discrepancies_resolved": outcome.resolved if outcome else 0,
        "recorded_at": utcnow(),
        "fetched_start": fetched[0] if fetched else None,
        "fetched_end": fetched[1] if fetched else None,
    }
    session.execute(_statements(_dialect(session)).upsert_pair_result, values)


def _row(
    finding: Finding,
    assessment: Assessment,
    *,
    run_id: int,
    customer: str,
    meter: str,
    ledger: Ledger,
    now: datetime,
) -> dict[str, Any]:
    return {
        **finding.key(customer=customer, meter=meter, ledger=ledger)._asdict(),
        "stripe_quantity": finding.stripe_quantity,
        "internal_quantity": finding.internal_quantity,
        "difference": finding.difference,
        "detail": finding.detail,
        "status": DiscrepancyStatus.OPEN,
        "first_seen_run": run_id,
        "last_seen_run": run_id,
        "created_at": now,
        "updated_at": now,
        "amount_at_stake": assessment.amount_at_stake,
        "currency": assessment.currency,
        "valuation": assessment.valuation,
        "likely_cause": assessment.likely_cause,
        "cause_detail": assessment.cause_detail,
        "settles_at": assessment.settles_at,
    }


# -- statements ---------------------------------------------------------------------------------
#
# Built once per dialect and executed with bound parameters: a statement constructed per call
# costs SQLAlchemy more CPU than the database spends running it (the multi-row VALUES form
# cannot even be cached). Rows go as one executemany per statement; on PostgreSQL, SQLAlchemy's
# "insertmanyvalues" sends them as multi-row INSERTs, 1,000 rows a page.

_ADVISORY_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_PAIR_RESULT_KEY = ("run_id", "stripe_customer_id", "meter_id")


@dataclass(frozen=True, slots=True)
class _Statements:
    upsert_snapshots: Any
    zero_unreported_days: Any
    upsert_discrepancies: Any
    resolve: Any
    upsert_pair_result: Any
    existing: Any


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


@cache
def _statements(dialect: str) -> _Statements:
    snapshots = UsageSnapshot.__table__  # type: ignore[attr-defined]
    discrepancies = Discrepancy.__table__  # type: ignore[attr-defined]
    pair_results = PairResult.__table__  # type: ignore[attr-defined]

    insert_snapshot = insert_for_dialect(dialect, snapshots)
    insert_result = insert_for_dialect(dialect, pair_results)
    return _Statements(
        upsert_snapshots=insert_snapshot.on_conflict_do_update(
            index_elements=["stripe_customer_id", "meter_id", "day"],
            set_={
                "aggregated_value": insert_snapshot.excluded.aggregated_value,
                "fetched_at": insert_snapshot.excluded.fetched_at,
                "run_id": insert_snapshot.excluded.run_id,
            },
        ),
        zero_unreported_days=sa.update(snapshots)
        .where(
            snapshots.c.stripe_customer_id == sa.bindparam("p_customer"),
            snapshots.c.meter_id == sa.bindparam("p_meter"),
            snapshots.c.day >= sa.bindparam("p_start"),
            snapshots.c.day < sa.bindparam("p_end"),
            snapshots.c.day.not_in(sa.bindparam("p_days", expanding=True)),
        )
        .values(
            aggregated_value=sa.bindparam("p_zero", type_=snapshots.c.aggregated_value.type),
            fetched_at=sa.bindparam("p_now", type_=snapshots.c.fetched_at.type),
            run_id=sa.bindparam("p_run"),
        ),
        upsert_discrepancies=_upsert_discrepancies(dialect),
        resolve=sa.update(discrepancies)
        .where(discrepancies.c.id.in_(sa.bindparam("p_ids", expanding=True)))
        .values(
            status=sa.bindparam("p_status", type_=discrepancies.c.status.type),
            resolved_run=sa.bindparam("p_run"),
            updated_at=sa.bindparam("p_now", type_=discrepancies.c.updated_at.type),
        ),
        upsert_pair_result=insert_result.on_conflict_do_update(
            index_elements=list(_PAIR_RESULT_KEY),
            set_={  # every column but the key: recording the pair again replaces its result
                column.name: insert_result.excluded[column.name]
                for column in pair_results.c
                if not column.primary_key and column.name not in _PAIR_RESULT_KEY
            },
        ),
        existing=sa.select(
            discrepancies.c.id,
            discrepancies.c.status,
            *(discrepancies.c[name] for name in DISCREPANCY_IDENTITY),
            discrepancies.c.stripe_quantity,
            discrepancies.c.internal_quantity,
            discrepancies.c.difference,
        ).where(
            discrepancies.c.stripe_customer_id == sa.bindparam("p_customer"),
            discrepancies.c.meter_id == sa.bindparam("p_meter"),
        ),
    )


def _upsert_discrepancies(dialect: str) -> Any:
    """The lifecycle, decided by the database row by row, so racing writers agree.

    `reopen` here and `_reopens` (what the run counts) are one rule written twice, in SQL
    and in Python; tests/test_lifecycle_rule.py holds both to docs/comparison.md's lifecycle table.
    """
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    insert = insert_for_dialect(dialect, table)
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
        *(table.c[name].is_distinct_from(new[name]) for name in _ASSESSED),
    )
    return insert.on_conflict_do_update(
        index_elements=list(DISCREPANCY_IDENTITY),
        set_={
            "stripe_quantity": new.stripe_quantity,
            "internal_quantity": new.internal_quantity,
            "difference": new.difference,
            "detail": new.detail,
            "last_seen_run": new.last_seen_run,
            # Money and cause follow the latest evaluation; a new price alone re-opens nothing.
            **{name: new[name] for name in _ASSESSED},
            "status": sa.case((reopen, DiscrepancyStatus.OPEN.value), else_=table.c.status),
            "resolved_run": sa.case((reopen, sa.null()), else_=table.c.resolved_run),
            "alerted_at": sa.case((reopen, sa.null()), else_=table.c.alerted_at),
            "reopened_at": sa.case((reopen, new.updated_at), else_=table.c.reopened_at),
            "settles_at": sa.case((reopen, new.settles_at), else_=table.c.settles_at),
            "updated_at": sa.case((changed, new.updated_at), else_=table.c.updated_at),
        },
    )


Existing = dict[DiscrepancyKey, tuple[int, DiscrepancyStatus, tuple[Any, ...]]]


def _existing(*, session: Session, customer: str, meter: str) -> Existing:
    rows = session.execute(
        _statements(_dialect(session)).existing, {"p_customer": customer, "p_meter": meter}
    )
    return {
        DiscrepancyKey.from_mapping(row._mapping): (
            row.id,
            row.status,
            (row.stripe_quantity, row.internal_quantity, row.difference),
        )
        for row in rows
    }


def _reopens(status: DiscrepancyStatus, *, numbers_changed: bool) -> bool:
    """The re-open rule in Python (for the counts); `_upsert_discrepancies` has it in SQL."""
    return status is DiscrepancyStatus.RESOLVED or (
        status is DiscrepancyStatus.ACKNOWLEDGED and numbers_changed
    )


def _classify(rows: Iterable[Mapping[str, Any]], existing: Existing) -> dict[str, int]:
    counts = {"new": 0, "reopened": 0, "updated": 0, "unchanged": 0}
    for row in rows:
        before = existing.get(DiscrepancyKey.from_mapping(row))
        numbers = (row["stripe_quantity"], row["internal_quantity"], row["difference"])
        if before is None:
            counts["new"] += 1
        elif _reopens(before[1], numbers_changed=before[2] != numbers):
            counts["reopened"] += 1
        elif before[2] != numbers:
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    return counts


def _in_scope(key: DiscrepancyKey, scope: Scope) -> bool:
    """Whether this run re-evaluated the discrepancy, so its absence means it is resolved."""
    if key.ledger is not scope.ledger:
        return False
    withdrawn = scope.withdrawn_line_item_ids
    if withdrawn and (key.line_item_id in withdrawn or key.other_line_item_id in withdrawn):
        return key.kind is not DiscrepancyKind.UNBILLED_USAGE
    if key.kind in _LINE_ITEM_KINDS:
        return key.line_item_id in scope.compared_line_item_ids
    if key.kind is DiscrepancyKind.OVERLAPPING_LINE_ITEMS:
        considered = scope.considered_line_item_ids
        return key.line_item_id in considered and key.other_line_item_id in considered
    first, last = scope.unbilled_days
    return first <= key.period_start < last


__all__ = [
    "NOT_ASSESSED",
    "Assessment",
    "LedgerFindings",
    "PairStats",
    "RecordOutcome",
    "record_findings",
    "record_history",
    "record_pair",
    "record_pair_failure",
    "record_pair_result",
    "record_snapshots",
    "settles_at",
]
