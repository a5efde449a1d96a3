"""Which (customer, meter) pairs are reconciled."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlmodel import Session, col, func, select

from models.tables import PairSource, TrackedPair
from models.upsert import insert_for


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


def track_from_stripe(
    *, session: Session, pairs: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Track pairs Stripe bills; the newly tracked ones are returned, tracked ones keep theirs."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    known = set(session.exec(select(TrackedPair.stripe_customer_id, TrackedPair.meter_id)))
    new = [pair for pair in wanted if pair not in known]
    table = TrackedPair.__table__  # type: ignore[attr-defined]
    statement = insert_for(session, table).on_conflict_do_nothing(
        index_elements=["stripe_customer_id", "meter_id"]
    )
    rows = [
        {"stripe_customer_id": customer, "meter_id": meter, "source": PairSource.STRIPE}
        for customer, meter in new
    ]
    for start in range(0, len(rows), 5000):
        session.execute(statement, rows[start : start + 5000])
    return new


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
    statement = select(TrackedPair)
    customers, meters = list(customers), list(meters)
    if customers:
        statement = statement.where(col(TrackedPair.stripe_customer_id).in_(customers))
    if meters:
        statement = statement.where(col(TrackedPair.meter_id).in_(meters))
    statement = statement.order_by(col(TrackedPair.stripe_customer_id), col(TrackedPair.meter_id))
    return list(session.exec(statement).all())
