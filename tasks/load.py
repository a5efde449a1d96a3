"""Loading one pair's ledger from SQL."""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, col, select

from models.tables import InvoiceLineItem
from tasks.compare import LineItem


def load_line_items(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> list[LineItem]:
    """The pair's line items whose period overlaps `[start, end)`."""
    rows = session.exec(
        select(InvoiceLineItem).where(
            InvoiceLineItem.stripe_customer_id == customer,
            InvoiceLineItem.meter_id == meter,
            col(InvoiceLineItem.period_start) < end,
            col(InvoiceLineItem.period_end) > start,
        )
    ).all()
    return [
        LineItem(
            id=row.id,
            period_start=row.period_start,
            period_end=row.period_end,
            quantity=row.quantity,
        )
        for row in rows
    ]
