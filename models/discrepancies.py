"""Reading and acknowledging discrepancies (what finance does with them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.enums import Ledger, LikelyCause
from models.errors import UserError
from models.keys import DiscrepancyKey
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus
from models.types import canonical_decimal, utcnow

# What finance adds: the money and the likely cause (the open-discrepancies artifact shows them).
MONEY_COLUMNS = (
    "amount_at_stake",
    "currency",
    "valuation",
    "likely_cause",
    "cause_detail",
    "settles_at",
)
# The listing's columns, in JSON and CSV alike: today's, then the money and the cause, then
# the ledger the discrepancy is against (appended, so tools reading columns by place still work).
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
    *MONEY_COLUMNS,
    "ledger",
)

#: The kinds a likely cause is looked for (overlapping line items never get one).
DIAGNOSED_KINDS = (
    DiscrepancyKind.QUANTITY_MISMATCH,
    DiscrepancyKind.MISSING_IN_STRIPE,
    DiscrepancyKind.UNBILLED_USAGE,
)

NOT_RESOLVED = (DiscrepancyStatus.OPEN, DiscrepancyStatus.ACKNOWLEDGED)


class SortBy(StrEnum):
    """How a listing is ordered; amount and difference by absolute value, largest first."""

    ID = "id"
    AMOUNT = "amount"
    DIFFERENCE = "difference"


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
    causes: Iterable[LikelyCause | str] = (),
    ledgers: Iterable[Ledger | str] = (),
    sort: SortBy | None = None,
) -> Sequence[Discrepancy]:
    """Discrepancies matching every filter given, in a stable order (pair, period, kind),
    or as `sort` says (ties by the discrepancy's identity)."""
    statement = select(Discrepancy)
    for column, values in (
        (Discrepancy.status, list(statuses)),
        (Discrepancy.kind, list(kinds)),
        (Discrepancy.stripe_customer_id, list(customers)),
        (Discrepancy.meter_id, list(meters)),
        (Discrepancy.likely_cause, list(causes)),
        (Discrepancy.ledger, list(ledgers)),
    ):
        if values:
            statement = statement.where(col(column).in_(values))
    rows = session.exec(
        statement.order_by(
            col(Discrepancy.stripe_customer_id),
            col(Discrepancy.meter_id),
            col(Discrepancy.period_start),
            col(Discrepancy.kind),
            col(Discrepancy.id),
        )
    ).all()
    return rows if sort is None else sorted(rows, key=_SORT_KEYS[sort])


def _identity(row: Discrepancy) -> tuple[str, str, str, str, str, str, str]:
    key = DiscrepancyKey.from_mapping(row.model_dump())
    return (
        key.stripe_customer_id,
        key.meter_id,
        key.period_start.isoformat(),
        key.period_end.isoformat(),
        key.kind.value,
        key.line_item_id,
        key.other_line_item_id,
    )


def _largest_first(value: Callable[[Discrepancy], Decimal | None]) -> Callable[[Discrepancy], Any]:
    """Absolute value, largest first; rows without one last; ties by identity."""

    def key(row: Discrepancy) -> tuple[bool, Decimal, tuple[str, ...]]:
        number = value(row)
        return (number is None, -abs(number) if number is not None else Decimal(0), _identity(row))

    return key


_SORT_KEYS: Mapping[SortBy, Callable[[Discrepancy], Any]] = {
    SortBy.ID: lambda row: row.id,
    SortBy.AMOUNT: _largest_first(lambda row: row.amount_at_stake),
    SortBy.DIFFERENCE: _largest_first(lambda row: row.difference),
}


def rows_in_customer_order(
    *, session: Session, where: Sequence[sa.ColumnElement[bool]], page_size: int
) -> Iterator[Discrepancy]:
    """The discrepancies matching every condition of `where`, a customer's rows together
    (ordered by customer, then id), read `page_size` at a time: a caller that keeps what it
    needs of each row holds one page, however many rows match (keyset pages on the same
    order, so each costs the same however deep it is)."""
    customer, key = col(Discrepancy.stripe_customer_id), col(Discrepancy.id)
    after: tuple[str, int] | None = None
    while True:
        statement = select(Discrepancy).where(*where)
        if after is not None:
            statement = statement.where(
                sa.or_(customer > after[0], sa.and_(customer == after[0], key > after[1]))
            )
        page = list(session.exec(statement.order_by(customer, key).limit(page_size)).all())
        yield from page
        if len(page) < page_size:
            return
        last = page[-1]
        assert last.id is not None
        after = (last.stripe_customer_id, last.id)


UNCAUSED_PAGE = 2000  # rows read at a time by `uncaused_by_customer`


def uncaused_by_customer(
    *, session: Session, run_id: int, page_size: int = UNCAUSED_PAGE
) -> Iterator[list[Discrepancy]]:
    """The run's internal-ledger rows a likely cause is looked for and none was found (rule
    6's input), one customer's at a time: rule 6 only matches rows of one customer, so a run
    holds a page of rows, not every row it found."""
    rows = rows_in_customer_order(
        session=session,
        where=[
            Discrepancy.last_seen_run == run_id,  # type: ignore[list-item]
            # Rule 6 is the internal ledger's: Stripe's invoices have their own causes.
            Discrepancy.ledger == Ledger.INTERNAL,  # type: ignore[list-item]
            col(Discrepancy.kind).in_(DIAGNOSED_KINDS),
            col(Discrepancy.status).in_(NOT_RESOLVED),
            col(Discrepancy.likely_cause).is_(None),
            col(Discrepancy.difference).is_not(None),
        ],
        page_size=page_size,
    )
    for _customer, group in groupby(rows, key=lambda row: row.stripe_customer_id):
        yield list(group)


def set_causes(*, session: Session, causes: Mapping[int, tuple[LikelyCause, str]]) -> None:
    """Give each row its likely cause and detail (a caller's transaction holds them all)."""
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    now = utcnow()
    for discrepancy_id, (cause, detail) in sorted(causes.items()):
        session.execute(
            sa.update(table)
            .where(table.c.id == discrepancy_id)
            .values(likely_cause=cause, cause_detail=detail, updated_at=now)
        )


def acknowledge(*, session: Session, discrepancy_id: int, note: str) -> Discrepancy:
    """Mark a discrepancy as seen by a person; it stays so until its numbers change."""
    [row] = acknowledge_many(session=session, ids=[discrepancy_id], note=note)
    return row


def _triageable(*, session: Session, ids: Sequence[int], verb: str) -> list[Discrepancy]:
    """Every row of `ids`, or an error before anything changes (unknown or resolved id)."""
    rows = {
        row.id: row
        for row in session.exec(select(Discrepancy).where(col(Discrepancy.id).in_(list(ids))))
    }
    unknown = [i for i in dict.fromkeys(ids) if i not in rows]
    if unknown:
        listed = ", ".join(map(str, unknown))
        plural = "ies" if len(unknown) > 1 else "y"
        raise UnknownDiscrepancy(f"There is no discrepanc{plural} with id {listed}.")
    for discrepancy_id in dict.fromkeys(ids):
        row = rows[discrepancy_id]
        if row.status is DiscrepancyStatus.RESOLVED:
            raise AlreadyResolved(
                f"Discrepancy {discrepancy_id} was resolved by run {row.resolved_run}; "
                f"there is nothing to {verb}."
            )
    return [rows[i] for i in dict.fromkeys(ids)]


def _set_status(
    *, session: Session, rows: Iterable[Discrepancy], status: DiscrepancyStatus, note: str
) -> list[Discrepancy]:
    now = utcnow()
    changed = []
    for row in rows:
        row.status = status
        row.note = note
        row.updated_at = now
        session.add(row)
        changed.append(row)
    session.flush()
    return changed


def acknowledge_many(*, session: Session, ids: Sequence[int], note: str) -> list[Discrepancy]:
    """Acknowledge every id given, or none: an unknown or resolved id changes nothing."""
    rows = _triageable(session=session, ids=ids, verb="acknowledge")
    return _set_status(session=session, rows=rows, status=DiscrepancyStatus.ACKNOWLEDGED, note=note)


def reopen_many(*, session: Session, ids: Sequence[int], note: str) -> list[Discrepancy]:
    """Take an acknowledgement back (it shows as open again; it was alerted already)."""
    rows = _triageable(session=session, ids=ids, verb="re-open")
    return _set_status(session=session, rows=rows, status=DiscrepancyStatus.OPEN, note=note)


def acknowledge_matching(
    *,
    session: Session,
    note: str,
    kinds: Iterable[DiscrepancyKind] = (),
    customers: Iterable[str] = (),
    meters: Iterable[str] = (),
    causes: Iterable[str] = (),
    ledgers: Iterable[Ledger | str] = (),
) -> list[Discrepancy]:
    """Acknowledge every open discrepancy matching all the filters given."""
    rows = list_discrepancies(
        session=session,
        statuses=[DiscrepancyStatus.OPEN],
        kinds=kinds,
        customers=customers,
        meters=meters,
        causes=causes,
        ledgers=ledgers,
    )
    return _set_status(session=session, rows=rows, status=DiscrepancyStatus.ACKNOWLEDGED, note=note)


def _quantity(value: Decimal | None) -> str | None:
    return None if value is None else canonical_decimal(value)


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


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
        **money_record(row),
        "ledger": row.ledger.value,
    }


def money_record(row: Discrepancy) -> dict[str, Any]:
    """`MONEY_COLUMNS` of a row: amount as a decimal string, `settles_at` ISO UTC, null if unset."""
    return {
        "amount_at_stake": _quantity(row.amount_at_stake),
        "currency": row.currency,
        "valuation": None if row.valuation is None else row.valuation.value,
        "likely_cause": None if row.likely_cause is None else row.likely_cause.value,
        "cause_detail": row.cause_detail,
        "settles_at": _timestamp(row.settles_at),
    }
