"""Loading one pair's `stripe` ledger from SQL: the line items of Stripe's invoices, their
prices, the pair's own price and its subscription items (what `compare_stripe_pair` reads)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from models.billing import price_for_pair, price_object
from models.enums import Ledger
from models.tables import InvoiceLineItem, StripePrice, SubscriptionItem
from tasks.compare_stripe import StripeLineItem, SubscribedItem
from tasks.value import Price, UnsupportedPrice, price_from_stripe

_items = InvoiceLineItem.__table__  # type: ignore[attr-defined]
_subscribed = SubscriptionItem.__table__  # type: ignore[attr-defined]
_prices = StripePrice.__table__  # type: ignore[attr-defined]

_PAIR = (
    _items.c.stripe_customer_id == sa.bindparam("customer"),
    _items.c.meter_id == sa.bindparam("meter"),
    _items.c.ledger == Ledger.STRIPE.value,
)
# A void invoice's line items are withdrawn, whether or not the sync has set `withdrawn_at`.
_VOID = sa.func.coalesce(_items.c.invoice_status, "") == "void"
_HELD = (*_PAIR, _items.c.withdrawn_at.is_(None), sa.not_(_VOID))
# Drafts included: their days are covered (pending), they are not compared.
_OVERLAPPING = sa.select(
    _items.c.id,
    _items.c.invoice_id,
    _items.c.stripe_customer_id,
    _items.c.meter_id,
    _items.c.price_id,
    _items.c.period_start_at,
    _items.c.period_end_at,
    _items.c.period_start,
    _items.c.period_end,
    _items.c.quantity,
    _items.c.currency,
    _items.c.amount,
    _items.c.invoice_status,
    _items.c.finalized_at,
).where(
    *_HELD,
    _items.c.period_start < sa.bindparam("end"),
    _items.c.period_end > sa.bindparam("start"),
)
_WITHDRAWN = sa.select(_items.c.id).where(*_PAIR, sa.or_(_items.c.withdrawn_at.is_not(None), _VOID))
_SUBSCRIBED = sa.select(
    _subscribed.c.subscription_status,
    _subscribed.c.current_period_start,
    _subscribed.c.current_period_end,
).where(
    _subscribed.c.stripe_customer_id == sa.bindparam("customer"),
    _subscribed.c.meter_id == sa.bindparam("meter"),
)


@dataclass(frozen=True, slots=True)
class StripeLedger:
    """The pair's `stripe` ledger around the window, and what values and judges it.

    `withdrawn`: ids of the pair's line items of void invoices (their discrepancies no longer
    hold); `prices`: each line's price id -> its price (None: not cached or not understood);
    `pair_price`: the pair's Stripe price (unbilled days); `notes`: what the run's log says.
    """

    items: tuple[StripeLineItem, ...]
    withdrawn: frozenset[str]
    prices: dict[str, Price | None]
    pair_price: Price | None
    subscription_items: tuple[SubscribedItem, ...]
    notes: tuple[str, ...] = ()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _line_item(row: Any) -> StripeLineItem:
    """A stored line of Stripe's as the comparison reads it (a row written without its
    exact instants is taken at its days' midnights)."""
    status = row.invoice_status or ("open" if row.finalized_at is not None else "draft")
    return StripeLineItem(
        id=row.id,
        invoice_id=row.invoice_id,
        customer=row.stripe_customer_id,
        meter=row.meter_id,
        subscription_item=None,
        price_id=row.price_id or "",
        period_start_at=row.period_start_at or _midnight(row.period_start),
        period_end_at=row.period_end_at or _midnight(row.period_end),
        period_start=row.period_start,
        period_end=row.period_end,
        quantity=row.quantity,
        currency=row.currency or "",
        amount=row.amount if row.amount is not None else Decimal(0),
        invoice_status=status,
        finalized_at=row.finalized_at,
    )


def _understood(obj: dict[str, Any] | None) -> tuple[Price | None, str | None]:
    """The price, or None and why it is not valued."""
    if obj is None:
        return None, None
    try:
        return price_from_stripe(obj), None
    except UnsupportedPrice as error:
        return None, f"Stripe price {obj.get('id')} is not understood: {error}"


def _line_prices(session: Session, ids: Iterable[str]) -> tuple[dict[str, Price | None], list[str]]:
    wanted = sorted({price_id for price_id in ids if price_id})
    prices: dict[str, Price | None] = dict.fromkeys(wanted)
    notes: list[str] = []
    if not wanted:
        return prices, notes
    for row in session.execute(sa.select(StripePrice).where(_prices.c.id.in_(wanted))).scalars():
        prices[row.id], note = _understood(price_object(row))
        if note:
            notes.append(note)
    return prices, notes


def load_stripe_ledger(
    *, session: Session, customer: str, meter: str, start: date, end: date
) -> StripeLedger:
    """The pair's held `stripe` line items (finalized or draft) whose days overlap
    `[start, end)`, the ids of its withdrawn ones, their prices, the pair's price and its
    subscription items."""
    pair = {"customer": customer, "meter": meter}
    rows = session.execute(_OVERLAPPING, {**pair, "start": start, "end": end})
    items = tuple(_line_item(row) for row in rows)
    withdrawn = frozenset(session.scalars(_WITHDRAWN, pair))
    subscribed = tuple(
        SubscribedItem(
            subscription_status=status,
            current_period_start=_seconds(period_start),
            current_period_end=_seconds(period_end),
        )
        for status, period_start, period_end in session.execute(_SUBSCRIBED, pair)
    )
    prices, notes = _line_prices(session, (item.price_id for item in items))
    pair_price, note = _understood(price_for_pair(session=session, customer=customer, meter=meter))
    if note:
        notes.append(note)
    return StripeLedger(
        items=items,
        withdrawn=withdrawn,
        prices=prices,
        pair_price=pair_price,
        subscription_items=subscribed,
        notes=tuple(f"pair {customer} / {meter}: {note}, not valued" for note in notes),
    )


def stripe_fetch_range(
    *, fetched: tuple[date, date] | None, items: Iterable[StripeLineItem], today: date
) -> tuple[date, date] | None:
    """The internal ledger's range (`fetched`; None: none) widened to every day the stripe
    line items touch, never past today: one daily fetch serves both ledgers."""
    bounds = [fetched] if fetched is not None else []
    bounds += [(item.period_start, item.period_end) for item in items]
    if not bounds:
        return None
    start = min(first for first, _ in bounds)
    end = min(max(last for _, last in bounds), today)
    return (start, end) if start < end else None


__all__ = ["StripeLedger", "load_stripe_ledger", "stripe_fetch_range"]
