"""Reading and acknowledging discrepancies (what finance does with them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from models.errors import UserError
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus
from models.types import canonical_decimal, utcnow

COLUMNS = (
    "id",
    "customer",
    "meter",
    "period_start",
    "period_end",
    "kind",
    "line_item_id",
    "other_line_item_id",
    "stripe_quantity",
    "internal_quantity",
    "difference",
    "status",
    "first_seen_run",
    "last_seen_run",
)


class UnknownDiscrepancy(UserError, LookupError):
    """No discrepancy has the id asked for."""


class AlreadyResolved(UserError, ValueError):
    """A resolved discrepancy cannot be acknowledged."""


def list_discrepancies(
    *,
    session: Session,
    statuses: Iterable[DiscrepancyStatus] = (
        DiscrepancyStatus.OPEN,
        DiscrepancyStatus.ACKNOWLEDGED,
    ),
    kinds: Iterable[DiscrepancyKind] = (),
    customers: Iterable[str] = (),
    meters: Iterable[str] = (),
) -> Sequence[Discrepancy]:
    """Discrepancies matching every filter given, in a stable order (pair, period, kind)."""
    statement = select(Discrepancy)
    for column, values in (
        (Discrepancy.status, list(statuses)),
        (Discrepancy.kind, list(kinds)),
        (Discrepancy.stripe_customer_id, list(customers)),
        (Discrepancy.meter_id, list(meters)),
    ):
        if values:
            statement = statement.where(col(column).in_(values))
    return session.exec(
        statement.order_by(
            col(Discrepancy.stripe_customer_id),
            col(Discrepancy.meter_id),
            col(Discrepancy.period_start),
            col(Discrepancy.kind),
            col(Discrepancy.id),
        )
    ).all()


def acknowledge(*, session: Session, discrepancy_id: int, note: str) -> Discrepancy:
    """Mark a discrepancy as seen by a person; it stays so until its numbers change."""
    row = session.get(Discrepancy, discrepancy_id)
    if row is None:
        raise UnknownDiscrepancy(f"There is no discrepancy with id {discrepancy_id}.")
    if row.status is DiscrepancyStatus.RESOLVED:
        raise AlreadyResolved(
            f"Discrepancy {discrepancy_id} was resolved by run {row.resolved_run}; "
            "there is nothing to acknowledge."
        )
    row.status = DiscrepancyStatus.ACKNOWLEDGED
    row.note = note
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def _quantity(value: Decimal | None) -> str | None:
    return None if value is None else canonical_decimal(value)


def as_record(row: Discrepancy) -> dict[str, Any]:
    """The documented JSON/CSV shape: ISO dates, decimal strings, null where not applicable."""
    return {
        "id": row.id,
        "customer": row.stripe_customer_id,
        "meter": row.meter_id,
        "period_start": row.period_start.isoformat(),
        "period_end": row.period_end.isoformat(),
        "kind": row.kind.value,
        "line_item_id": row.line_item_id or None,
        "other_line_item_id": row.other_line_item_id or None,
        "stripe_quantity": _quantity(row.stripe_quantity),
        "internal_quantity": _quantity(row.internal_quantity),
        "difference": _quantity(row.difference),
        "status": row.status.value,
        "first_seen_run": row.first_seen_run,
        "last_seen_run": row.last_seen_run,
    }
