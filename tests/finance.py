"""Data builders for what finance sees: discrepancies with money and causes, as runs record them."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from models.tables import Discrepancy, DiscrepancyStatus, PairResult, PairStatus
from tests.builders import discrepancy


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


T = TypeVar("T")


def whole_and_paged(
    engine: Engine,
    read: Callable[[Session], T],
    *,
    pages_of: tuple[ModuleType, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[T, T]:
    """What `read` makes of the rows read at once, then read 2 rows a page (the module's page
    size `pages_of` names, set to 2): a reader that streams must make the same of both."""
    with Session(engine) as session:
        whole = read(session)
    monkeypatch.setattr(*pages_of, 2)
    with Session(engine) as session:
        paged = read(session)
    return whole, paged
