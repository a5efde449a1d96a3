"""Reconciliation run records: started, kept alive, finished, or found stale."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.tables import (
    Discrepancy,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from models.types import utcnow


def start_run(
    *,
    session: Session,
    window_start: date,
    window_end: date,
    trigger: Trigger,
    parameters: dict[str, Any],
    flow_run_id: str | None,
) -> ReconciliationRun:
    run = ReconciliationRun(
        window_start=window_start,
        window_end=window_end,
        trigger=trigger,
        status=RunStatus.RUNNING,
        parameters=parameters,
        flow_run_id=flow_run_id,
    )
    session.add(run)
    session.flush()
    return run


def heartbeat(*, session: Session, run_id: int) -> None:
    session.execute(
        sa.update(ReconciliationRun)
        .where(col(ReconciliationRun.id) == run_id)
        .values(heartbeat_at=utcnow())
    )


def fail_stale_runs(*, session: Session, stale_after: timedelta) -> list[int]:
    """Runs still `running` whose process stopped beating (killed, crashed) become `failed`."""
    cutoff = utcnow() - stale_after
    stale = session.exec(
        select(ReconciliationRun.id).where(
            ReconciliationRun.status == RunStatus.RUNNING,
            col(ReconciliationRun.heartbeat_at) < cutoff,
        )
    ).all()
    ids = [run_id for run_id in stale if run_id is not None]
    if ids:
        session.execute(
            sa.update(ReconciliationRun)
            .where(col(ReconciliationRun.id).in_(ids))
            .values(
                status=RunStatus.FAILED,
                finished_at=utcnow(),
                error="stopped without finishing (no heartbeat); marked failed by a later run",
            )
        )
    return ids


def pair_counts(*, session: Session, run_id: int) -> dict[str, int]:
    """Totals of the run's pair results, as recorded (the durable truth, not memory)."""
    table = PairResult.__table__  # type: ignore[attr-defined]
    failed = sa.case((table.c.status == PairStatus.FETCH_FAILED.value, 1), else_=0)
    columns = {
        "pairs_recorded": sa.func.count(),
        "pairs_failed": sa.func.sum(failed),
        "compared": sa.func.sum(table.c.compared),
        "matched": sa.func.sum(table.c.matched),
        "pending": sa.func.sum(table.c.pending),
        "requests": sa.func.sum(table.c.requests),
        "new": sa.func.sum(table.c.discrepancies_new),
        "reopened": sa.func.sum(table.c.discrepancies_reopened),
        "resolved": sa.func.sum(table.c.discrepancies_resolved),
    }
    statement = sa.select(*(c.label(name) for name, c in columns.items())).where(
        table.c.run_id == run_id
    )
    row = session.execute(statement).mappings().one()
    return {name: int(row[name] or 0) for name in columns}


def discrepancy_counts(*, session: Session, run_id: int) -> dict[str, dict[str, int]]:
    """Discrepancies the run saw, per kind (those still not resolved) and per status."""
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        sa.select(table.c.kind, table.c.status).where(table.c.last_seen_run == run_id)
    ).all()
    by_kind = Counter(str(kind) for kind, status in rows if status != DiscrepancyStatus.RESOLVED)
    by_status = Counter(str(status) for _kind, status in rows)
    return {"by_kind": dict(sorted(by_kind.items())), "by_status": dict(sorted(by_status.items()))}


def finish_run(
    *,
    session: Session,
    run_id: int,
    status: RunStatus,
    values: dict[str, Any],
    error: str | None = None,
) -> ReconciliationRun:
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist")
    for name, value in values.items():
        setattr(run, name, value)
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    run.heartbeat_at = run.finished_at
    session.add(run)
    session.flush()
    return run
