"""Loading one pair's ledger from SQL."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlmodel import Session

from models.tables import InvoiceLineItem
from tasks.compare import LineItem

_items = InvoiceLineItem.__table__  # type: ignore[attr-defined]
# Built once: run for every pair, it is cheaper as a cached Core statement than as ORM objects.
_OVERLAPPING = sa.select(
    _items.c.id, _items.c.period_start, _items.c.period_end, _items.c.quantity
).where(
    _items.c.stripe_customer_id == sa.bindparam("customer"),
    _items.c.meter_id == sa.bindparam("meter"),
    _items.c.period_start < sa.bindparam("end"),
    _items.c.period_end > sa.bindparam("start"),
)


def load_line_items(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> list[LineItem]:
    """The pair's line items whose period overlaps `[start, end)`."""
    rows = session.execute(
        _OVERLAPPING, {"customer": customer, "meter": meter, "start": start, "end": end}
    )
    return [
        LineItem(id=id_, period_start=period_start, period_end=period_end, quantity=quantity)
        for id_, period_start, period_end, quantity in rows
    ]
