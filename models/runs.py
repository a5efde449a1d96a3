"""Reconciliation run records: started, kept alive, finished, or found stale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
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
        "stripe_compared": sa.func.sum(table.c.stripe_compared),
        "stripe_matched": sa.func.sum(table.c.stripe_matched),
        "stripe_pending": sa.func.sum(table.c.stripe_pending),
    }
    statement = sa.select(*(c.label(name) for name, c in columns.items())).where(
        table.c.run_id == run_id
    )
    row = session.execute(statement).mappings().one()
    return {name: int(row[name] or 0) for name in columns}


def discrepancy_counts(*, session: Session, run_id: int) -> dict[str, dict[str, int]]:
    """Discrepancies the run saw, per kind (those still not resolved) and per status."""
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    groups = session.execute(  # counted by the database: a run of any size reads a few rows
        sa.select(table.c.kind, table.c.status, sa.func.count())
        .where(table.c.last_seen_run == run_id)
        .group_by(table.c.kind, table.c.status)
    ).all()
    by_kind: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    for kind, status, count in groups:
        if status != DiscrepancyStatus.RESOLVED:
            by_kind[str(kind)] += count
        by_status[str(status)] += count
    return {"by_kind": dict(sorted(by_kind.items())), "by_status": dict(sorted(by_status.items()))}


def get_run(*, session: Session, run_id: int) -> ReconciliationRun:
    """The run, or LookupError: a task handed a run id expects its record to exist."""
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist")
    return run


def last_completed_run(*, session: Session, before: datetime) -> ReconciliationRun | None:
    """The run that finished last before `before` with its pairs reconciled (with or without
    failed pairs): how long ago it was tells whether nightly runs went missing."""
    return session.exec(
        select(ReconciliationRun)
        .where(
            col(ReconciliationRun.status).in_(
                [RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS]
            ),
            col(ReconciliationRun.finished_at) < before,
        )
        .order_by(col(ReconciliationRun.finished_at).desc(), col(ReconciliationRun.id).desc())
        .limit(1)
    ).first()


def run_of_flow_run(*, session: Session, flow_run_id: str) -> ReconciliationRun | None:
    """The run a Prefect flow run started, if it got that far (a hook knows only the flow run)."""
    return session.exec(
        select(ReconciliationRun)
        .where(ReconciliationRun.flow_run_id == flow_run_id)
        .order_by(col(ReconciliationRun.id).desc())
        .limit(1)
    ).first()


def ok_pairs(
    *, session: Session, run_id: int, customers: Iterable[str] | None = None
) -> set[tuple[str, str]]:
    """(customer, meter) pairs this run recorded OK; a retry or a late failure skips them.

    `customers` narrows the query to the pairs a task holds (None: every pair of the run).
    """
    statement = select(PairResult.stripe_customer_id, PairResult.meter_id).where(
        PairResult.run_id == run_id, PairResult.status == PairStatus.OK
    )
    if customers is not None:
        statement = statement.where(col(PairResult.stripe_customer_id).in_(set(customers)))
    return {(customer, meter) for customer, meter in session.exec(statement).all()}


def failed_pairs(*, session: Session, run_id: int) -> list[PairResult]:
    """The run's pairs that could not be reconciled, in the order they were recorded."""
    return list(
        session.exec(
            select(PairResult)
            .where(PairResult.run_id == run_id, PairResult.status == PairStatus.FETCH_FAILED)
            .order_by(col(PairResult.id))
        ).all()
    )


def record_discovery(
    *,
    session: Session,
    run_id: int,
    requests: int,
    found: dict[str, int] | None,
    error: str | None,
) -> None:
    """What the run's discovery did, kept at once: its requests count in the run's, and a
    failure (`error`, one line) leaves the run going on the cached pairs and prices."""
    run = get_run(session=session, run_id=run_id)
    run.counts = {
        **run.counts,
        "discovery": {**(found or {}), "requests": requests, "failed": error is not None},
    }
    run.discovery_error = error
    session.add(run)
    session.flush()


def record_ledgers(
    *, session: Session, run_id: int, ledgers: Iterable[str], internal_empty: bool
) -> None:
    """The ledgers the run compares, decided once as it starts: `internal_empty` says the
    internal ledger was left out because it holds no line item (said in the summary)."""
    run = get_run(session=session, run_id=run_id)
    run.counts = {
        **run.counts,
        "ledgers": list(ledgers),
        "internal_ledger_empty": internal_empty,
    }
    session.add(run)
    session.flush()


def record_ledger_sync(
    *, session: Session, run_id: int, synced: dict[str, int] | None, error: str | None
) -> None:
    """What the run's ledger sync did (`ledger_sync` counts), or why it failed
    (`ledger_sync_error`, one sentence): the run goes on with the ledger as it was."""
    run = get_run(session=session, run_id=run_id)
    run.counts = {
        **run.counts,
        "ledger_sync": {**(synced or {}), "failed": error is not None},
        "ledger_sync_error": error,
    }
    session.add(run)
    session.flush()


def ledger_sync_error(run: ReconciliationRun) -> str | None:
    """Why the run's ledger sync failed; None when it did not run or succeeded."""
    error = run.counts.get("ledger_sync_error")
    return str(error) if error else None


def discovery_requests(run: ReconciliationRun) -> int:
    """Stripe requests the run's discovery made (0 when it did not run)."""
    return int((run.counts.get("discovery") or {}).get("requests", 0))


def record_invoice_sync(
    *,
    session: Session,
    run_id: int,
    requests: int,
    found: dict[str, int] | None,
    error: str | None,
) -> None:
    """What the run's invoice sync did, kept at once in its counts (`invoice_sync`; a failure,
    one line, in `invoice_sync_error`): the run goes on with the line items already stored."""
    run = get_run(session=session, run_id=run_id)
    run.counts = {
        **run.counts,
        "invoice_sync": {**(found or {}), "requests": requests, "failed": error is not None},
        "invoice_sync_error": error,
    }
    session.add(run)
    session.flush()


def invoice_sync_error(run: ReconciliationRun) -> str | None:
    """Why the run's invoice sync failed (None: it did not fail, or did not run)."""
    error = run.counts.get("invoice_sync_error")
    return str(error) if error else None


def invoice_sync_requests(run: ReconciliationRun) -> int:
    """Stripe requests the run's invoice sync made (0 when it did not run)."""
    return int((run.counts.get("invoice_sync") or {}).get("requests", 0))


def settling_count(*, session: Session, run_id: int) -> int:
    """The run's discrepancies still settling: seen by it, not resolved, not alerted, and
    due to settle only after the run started (so not alerted by it)."""
    run = get_run(session=session, run_id=run_id)
    statement = (
        select(sa.func.count())
        .select_from(Discrepancy)
        .where(
            Discrepancy.last_seen_run == run_id,
            Discrepancy.status != DiscrepancyStatus.RESOLVED,
            col(Discrepancy.alerted_at).is_(None),
            col(Discrepancy.settles_at) > run.started_at,
        )
    )
    return int(session.exec(statement).one())


def complete_run(
    *, session: Session, run_id: int, pairs_total: int, parameters: dict[str, Any]
) -> ReconciliationRun:
    """Finish a run with the totals its pair results hold; failed pairs make it with-errors.

    A failed discovery does not: it is not a failed pair (the run keeps `discovery_error`).
    """
    totals = pair_counts(session=session, run_id=run_id)
    kinds = discrepancy_counts(session=session, run_id=run_id)
    failed = totals["pairs_failed"]
    run = get_run(session=session, run_id=run_id)
    return finish_run(
        session=session,
        run_id=run_id,
        status=RunStatus.COMPLETED_WITH_ERRORS if failed else RunStatus.COMPLETED,
        values={
            "pairs_total": pairs_total,
            "pairs_ok": totals["pairs_recorded"] - failed,
            "pairs_failed": failed,
            "line_items_compared": totals["compared"],
            "line_items_matched": totals["matched"],
            "line_items_pending": totals["pending"],
            "discrepancies_new": totals["new"],
            "discrepancies_reopened": totals["reopened"],
            "discrepancies_resolved": totals["resolved"],
            "discrepancies_settling": settling_count(session=session, run_id=run_id),
            "counts": {
                **run.counts,
                **kinds,
                "requests": totals["requests"]
                + discovery_requests(run)
                + invoice_sync_requests(run),
                # The internal ledger's counts are the run's columns; Stripe's invoices' here.
                "stripe": {
                    "compared": totals["stripe_compared"],
                    "matched": totals["stripe_matched"],
                    "pending": totals["stripe_pending"],
                },
            },
            "parameters": parameters,
        },
    )


def finish_run(
    *,
    session: Session,
    run_id: int,
    status: RunStatus,
    values: dict[str, Any],
    error: str | None = None,
) -> ReconciliationRun:
    run = get_run(session=session, run_id=run_id)
    for name, value in values.items():
        setattr(run, name, value)
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    run.heartbeat_at = run.finished_at
    session.add(run)
    session.flush()
    return run
