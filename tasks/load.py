"""Loading one pair's ledger from SQL: its line items, and what they were billed for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Session

from models.enums import Ledger
from models.tables import InvoiceLineItem
from tasks.compare import LineItem
from tasks.value import LedgerPrice, ledger_price_for_unbilled, ledger_price_of

_items = InvoiceLineItem.__table__  # type: ignore[attr-defined]
_PAIR = (
    _items.c.stripe_customer_id == sa.bindparam("customer"),
    _items.c.meter_id == sa.bindparam("meter"),
    _items.c.ledger == Ledger.INTERNAL.value,
)
# Withdrawn line items are no longer in the ledger: not compared, covering no day.
_HELD = (*_PAIR, _items.c.withdrawn_at.is_(None))
# Built once: run for every pair, it is cheaper as a cached Core statement than as ORM objects.
_OVERLAPPING = sa.select(
    _items.c.id,
    _items.c.period_start,
    _items.c.period_end,
    _items.c.quantity,
    _items.c.amount,
    _items.c.currency,
).where(
    *_HELD,
    _items.c.period_start < sa.bindparam("end"),
    _items.c.period_end > sa.bindparam("start"),
)
# The pair's withdrawn line items, whatever their period: their discrepancies no longer hold.
_WITHDRAWN = sa.select(_items.c.id).where(*_PAIR, _items.c.withdrawn_at.is_not(None))
# Every line item of the pair that could price it: read only for a pair with unbilled days.
_PRICED = sa.select(
    _items.c.id, _items.c.period_end, _items.c.quantity, _items.c.amount, _items.c.currency
).where(
    *_HELD,
    _items.c.amount.is_not(None),
    _items.c.currency.is_not(None),
)  # a zero quantity is refused by `ledger_price_of` (quantities are exact text on SQLite)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What valuation reads of a line item (a `tasks.value.LedgerLine`)."""

    id: str
    period_end: date
    quantity: Decimal
    amount: Decimal | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class PairLedger:
    """The pair's line items overlapping the window, and each one's amount and currency;
    `withdrawn`: the ids of the pair's line items its source no longer holds."""

    items: list[LineItem]
    billed: dict[str, tuple[Decimal | None, str | None]] = field(default_factory=dict)
    withdrawn: frozenset[str] = frozenset()

    def price_of(self, item: LineItem) -> LedgerPrice | None:
        """The line item's own price (`ledger_price_of`), or None when it has none."""
        amount, currency = self.billed.get(item.id, (None, None))
        return ledger_price_of(
            LedgerEntry(item.id, item.period_end, item.quantity, amount, currency)
        )


def load_ledger(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> PairLedger:
    """The pair's internal line items whose period overlaps `[start, end)`, with their
    amounts, and which of the pair's line items are withdrawn."""
    rows = session.execute(
        _OVERLAPPING, {"customer": customer, "meter": meter, "start": start, "end": end}
    )
    items: list[LineItem] = []
    billed: dict[str, tuple[Decimal | None, str | None]] = {}
    for id_, period_start, period_end, quantity, amount, currency in rows:
        items.append(
            LineItem(id=id_, period_start=period_start, period_end=period_end, quantity=quantity)
        )
        if amount is not None or currency is not None:
            billed[id_] = (amount, currency)
    withdrawn = session.scalars(_WITHDRAWN, {"customer": customer, "meter": meter})
    return PairLedger(items=items, billed=billed, withdrawn=frozenset(withdrawn))


def load_line_items(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> list[LineItem]:
    """The pair's line items whose period overlaps `[start, end)`."""
    return load_ledger(session=session, customer=customer, meter=meter, start=start, end=end).items


def load_unbilled_price(*, session: Session, customer: str, meter: str) -> LedgerPrice | None:
    """The ledger's price of the pair's unbilled days: `ledger_price_for_unbilled` over all the
    pair's line items (not only those near the window: unbilled days are often those after
    the pair's last invoice)."""
    rows = session.execute(_PRICED, {"customer": customer, "meter": meter})
    return ledger_price_for_unbilled(LedgerEntry(*row) for row in rows)


__all__ = [
    "LedgerEntry",
    "PairLedger",
    "load_ledger",
    "load_line_items",
    "load_unbilled_price",
]
