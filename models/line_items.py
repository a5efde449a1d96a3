"""What the ledgers hold, asked once per run before anything is compared."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from models.enums import Ledger
from models.tables import InvoiceLineItem

_items = InvoiceLineItem.__table__  # type: ignore[attr-defined]


def ledger_has_line_items(*, session: Session, ledger: Ledger | str) -> bool:
    """Whether `ledger` holds any line item at all, withdrawn ones included (a ledger once
    used is compared, so its withdrawn items' discrepancies resolve): one EXISTS query."""
    held = sa.exists().where(_items.c.ledger == Ledger(ledger).value)
    return bool(session.execute(sa.select(held)).scalar())


__all__ = ["ledger_has_line_items"]
