"""Data builders for what finance sees: discrepancies with money and causes, as runs record them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus, PairResult, PairStatus


def discrepancy(
    *,
    run_id: int,
    customer: str = "cus_A",
    meter: str = "mtr_api",
    kind: DiscrepancyKind = DiscrepancyKind.QUANTITY_MISMATCH,
    start: str = "2026-10-01",
    end: str = "2026-11-01",
    line_item: str = "li_1",
    stripe: str = "120",
    ledger: str | None = "100",
    amount: str | None = None,
    currency: str | None = None,
    cause: str | None = None,
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN,
) -> Discrepancy:
    difference = None if ledger is None else Decimal(stripe) - Decimal(ledger)
    return Discrepancy(
        stripe_customer_id=customer,
        meter_id=meter,
        kind=kind,
        period_start=date.fromisoformat(start),
        period_end=date.fromisoformat(end),
        line_item_id=line_item,
        stripe_quantity=Decimal(stripe),
        internal_quantity=None if ledger is None else Decimal(ledger),
        difference=difference,
        status=status,
        first_seen_run=run_id,
        last_seen_run=run_id,
        amount_at_stake=None if amount is None else Decimal(amount),
        currency=currency,
        valuation=None if amount is None else "stripe_price",
        likely_cause=cause,
    )


def add(engine: Engine, *rows: Discrepancy) -> list[int]:
    """Store the rows; their ids in the order given."""
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows if row.id is not None]


def seed_discrepancies(engine: Engine, run_id: int) -> list[int]:
    """Three open discrepancies of one run, ids in creation order."""
    return add(
        engine,
        *(discrepancy(run_id=run_id, customer=f"cus_{n}", line_item=f"li_{n}") for n in range(3)),
    )


def failed_pair(engine: Engine, *, run_id: int, customer: str, meter: str, error: str) -> None:
    with Session(engine) as session:
        session.add(
            PairResult(
                run_id=run_id,
                stripe_customer_id=customer,
                meter_id=meter,
                status=PairStatus.FETCH_FAILED,
                error=error,
            )
        )
        session.commit()


def statuses(session: Session, ids: list[int]) -> list[tuple[DiscrepancyStatus, str | None]]:
    rows = session.exec(select(Discrepancy).where(col(Discrepancy.id).in_(ids))).all()
    by_id = {row.id: (row.status, row.note) for row in rows}
    return [by_id[i] for i in ids]
