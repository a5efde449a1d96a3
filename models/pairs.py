"""Which (customer, meter) pairs are reconciled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from models.engine import read_only
from models.tables import PairSource, TrackedPair
from models.upsert import insert_for

S = TypeVar("S", bound=SelectOfScalar[Any])


def track_from_ledger(*, session: Session, pairs: Iterable[tuple[str, str]]) -> int:
    """Track pairs seen in imported line items; pairs already tracked keep their bounds."""
    rows = [
        {"stripe_customer_id": customer, "meter_id": meter, "source": PairSource.LEDGER}
        for customer, meter in sorted(set(pairs))
    ]
    if not rows:
        return 0
    table = TrackedPair.__table__  # type: ignore[attr-defined]
    before = _count(session)
    statement = insert_for(session, table).on_conflict_do_nothing(
        index_elements=["stripe_customer_id", "meter_id"]
    )
    for start in range(0, len(rows), 5000):
        session.execute(statement, rows[start : start + 5000])
    return _count(session) - before


#: Rows of one `track_from_stripe` statement: 4 parameters each, within SQLite's 32,766.
STRIPE_PAIRS_PER_STATEMENT = 5000


def track_from_stripe(
    *, session: Session, pairs: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Track pairs Stripe bills; the newly tracked ones are returned, tracked ones keep theirs.

    One statement per 5,000 pairs: the database, not a set in memory, tells which are new
    (`INSERT ... ON CONFLICT DO NOTHING RETURNING`), so a caller passing one batch at a time
    holds one batch, and two callers at once track each pair once. Rows go in sorted, so
    concurrent batches lock the unique index in one order.
    """
    rows = [
        {"stripe_customer_id": customer, "meter_id": meter, "source": PairSource.STRIPE}
        for customer, meter in sorted(set(pairs))
    ]
    if not rows:
        return []
    table = TrackedPair.__table__  # type: ignore[attr-defined]
    added: list[tuple[str, str]] = []
    for start in range(0, len(rows), STRIPE_PAIRS_PER_STATEMENT):
        statement = (
            insert_for(session, table)
            .values(rows[start : start + STRIPE_PAIRS_PER_STATEMENT])
            .on_conflict_do_nothing(index_elements=["stripe_customer_id", "meter_id"])
            .returning(table.c.stripe_customer_id, table.c.meter_id)
        )
        added += ((str(customer), str(meter)) for customer, meter in session.execute(statement))
    return sorted(added)


def _count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(TrackedPair)).one()


def track_by_hand(
    *,
    session: Session,
    customer: str,
    meter: str,
    active_from: date | None = None,
    active_to: date | None = None,
) -> TrackedPair:
    """Track a pair by hand (a customer never billed); its bounds stay when line items arrive."""
    if active_from and active_to and active_to <= active_from:
        raise ValueError(f"--to {active_to} must be after --from {active_from}")
    pair = session.exec(
        select(TrackedPair).where(
            TrackedPair.stripe_customer_id == customer, TrackedPair.meter_id == meter
        )
    ).first()
    if pair is None:
        pair = TrackedPair(stripe_customer_id=customer, meter_id=meter, source=PairSource.MANUAL)
    pair.active_from = active_from
    pair.active_to = active_to
    pair.source = PairSource.MANUAL
    session.add(pair)
    session.flush()
    return pair


def list_pairs(
    *,
    session: Session,
    customers: Iterable[str] = (),
    meters: Iterable[str] = (),
) -> list[TrackedPair]:
    """Tracked pairs, optionally filtered, in a stable order."""
    statement = _filtered(select(TrackedPair), customers=customers, meters=meters)
    statement = statement.order_by(col(TrackedPair.stripe_customer_id), col(TrackedPair.meter_id))
    return list(session.exec(statement).all())


def count_pairs(
    *, session: Session, customers: Iterable[str] = (), meters: Iterable[str] = ()
) -> int:
    """How many tracked pairs `list_pairs` would return, without loading them."""
    statement = _filtered(
        select(func.count()).select_from(TrackedPair), customers=customers, meters=meters
    )
    return session.exec(statement).one()


def pairs_after(
    *,
    session: Session,
    after: tuple[str, str] | None,
    limit: int,
    customers: Iterable[str] = (),
    meters: Iterable[str] = (),
) -> list[TrackedPair]:
    """The next page of `list_pairs`: up to `limit` pairs after (customer, meter) `after`.

    Keyset pagination on the unique (customer, meter) index: a page costs the same however
    deep it is, and pairs tracked while a run pages through them cannot shift a page.
    """
    statement = _filtered(select(TrackedPair), customers=customers, meters=meters)
    customer, meter = col(TrackedPair.stripe_customer_id), col(TrackedPair.meter_id)
    if after is not None:
        statement = statement.where(
            sa.or_(customer > after[0], sa.and_(customer == after[0], meter > after[1]))
        )
    statement = statement.order_by(customer, meter).limit(limit)
    return list(session.exec(statement).all())


def pair_pages(
    *,
    engine: Engine,
    page_size: int,
    customers: Iterable[str] = (),
    meters: Iterable[str] = (),
) -> Iterator[list[TrackedPair]]:
    """Every tracked pair `list_pairs` returns, a page at a time, each page its own short read
    (a run holds one page in memory, and no transaction open while it reconciles)."""
    customers, meters = list(customers), list(meters)
    after: tuple[str, str] | None = None
    while True:
        with Session(read_only(engine)) as session:
            page = pairs_after(
                session=session, after=after, limit=page_size, customers=customers, meters=meters
            )
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = (page[-1].stripe_customer_id, page[-1].meter_id)


def _filtered(statement: S, *, customers: Iterable[str], meters: Iterable[str]) -> S:
    customers, meters = list(customers), list(meters)
    if customers:
        statement = statement.where(col(TrackedPair.stripe_customer_id).in_(customers))
    if meters:
        statement = statement.where(col(TrackedPair.meter_id).in_(meters))
    return statement
