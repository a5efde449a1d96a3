"""What Stripe bills: the cached metered subscription items and their prices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from models.tables import StripePrice, SubscriptionItem
from models.upsert import insert_for

# A subscription in this status never billed anything: its items price nothing.
IGNORED_STATUS = "incomplete_expired"


def json_safe(value: Any) -> Any:
    """Stripe's JSON with its numbers as exact decimal strings (JSON columns take no Decimal)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def price_row(price: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """A Stripe price object as a `stripe_price` row."""
    recurring = price.get("recurring") or {}
    return {
        "id": str(price["id"]),
        "currency": str(price.get("currency") or "").lower(),
        "meter_id": recurring.get("meter"),
        "billing_scheme": str(price.get("billing_scheme") or ""),
        "unit_amount_decimal": _decimal(price.get("unit_amount_decimal")),
        "tiers_mode": price.get("tiers_mode"),
        "tiers": json_safe(price["tiers"]) if price.get("tiers") is not None else None,
        "transform_quantity": json_safe(price["transform_quantity"])
        if price.get("transform_quantity") is not None
        else None,
        "refreshed_at": now,
    }


def price_object(row: StripePrice) -> dict[str, Any]:
    """The cached row back in Stripe's shape, for the valuation to read as Stripe sent it."""
    return {
        "id": row.id,
        "object": "price",
        "currency": row.currency,
        "billing_scheme": row.billing_scheme,
        "unit_amount_decimal": None
        if row.unit_amount_decimal is None
        else format(row.unit_amount_decimal, "f"),
        "tiers_mode": row.tiers_mode,
        "tiers": row.tiers,
        "transform_quantity": row.transform_quantity,
        "recurring": {"meter": row.meter_id, "usage_type": "metered"},
    }


def upsert_prices(*, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or refresh cached prices."""
    if not rows:
        return
    table = StripePrice.__table__  # type: ignore[attr-defined]
    statement = insert_for(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name != "id"},
    )
    session.execute(statement, list(rows))


def upsert_subscription_items(*, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or refresh cached items (a discovery writes them a page at a time).

    A row is never set back to an older `refreshed_at`: of two discoveries at once, the one
    that started earlier must not make the later one forget the items both listed.
    """
    if not rows:
        return
    table = SubscriptionItem.__table__  # type: ignore[attr-defined]
    statement = insert_for(session, table)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name != "id"},
        where=table.c.refreshed_at <= statement.excluded.refreshed_at,
    )
    session.execute(statement, list(rows))


def forget_subscription_items(*, session: Session, seen_before: datetime) -> int:
    """Drop the items no discovery listed since `seen_before`: Stripe no longer bills them."""
    table = SubscriptionItem.__table__  # type: ignore[attr-defined]
    stale = table.c.refreshed_at < seen_before
    count = session.execute(sa.select(sa.func.count()).select_from(table).where(stale)).scalar()
    session.execute(sa.delete(table).where(stale))
    return int(count or 0)


def count_billed_pairs(*, session: Session, refreshed_since: datetime) -> int:
    """Distinct (customer, meter) pairs of the items listed since `refreshed_since`, counted by
    the database: a discovery of a million pairs holds none of them to count them."""
    table = SubscriptionItem.__table__  # type: ignore[attr-defined]
    pairs = (
        sa.select(table.c.stripe_customer_id, table.c.meter_id)
        .where(table.c.refreshed_at >= refreshed_since)
        .distinct()
        .subquery()
    )
    count = session.execute(sa.select(sa.func.count()).select_from(pairs)).scalar()
    return int(count or 0)


def _billing_items() -> Any:
    """Items that price a pair, the most recently created subscription first."""
    return (
        select(SubscriptionItem)
        .where(SubscriptionItem.subscription_status != IGNORED_STATUS)
        .order_by(
            col(SubscriptionItem.stripe_customer_id),
            col(SubscriptionItem.meter_id),
            col(SubscriptionItem.subscription_created).desc(),
            col(SubscriptionItem.subscription_id).desc(),
        )
    )


def price_ids_by_pair(
    *, session: Session, pairs: Iterable[tuple[str, str]] | None = None
) -> dict[tuple[str, str], str]:
    """The price of each pair: its item's in the pair's most recently created subscription."""
    statement = _billing_items()
    wanted = None if pairs is None else set(pairs)
    if wanted is not None:
        if not wanted:
            return {}
        statement = statement.where(
            col(SubscriptionItem.stripe_customer_id).in_({c for c, _ in wanted})
        )
    chosen: dict[tuple[str, str], str] = {}
    for item in session.exec(statement):
        key = (item.stripe_customer_id, item.meter_id)
        if (wanted is None or key in wanted) and key not in chosen:
            chosen[key] = item.price_id
    return chosen


def price_for_pair(*, session: Session, customer: str, meter: str) -> dict[str, Any] | None:
    """The pair's Stripe price in Stripe's shape, or None when Stripe bills it with none."""
    price_id = price_ids_by_pair(session=session, pairs=[(customer, meter)]).get((customer, meter))
    row = session.get(StripePrice, price_id) if price_id else None
    return None if row is None else price_object(row)


__all__ = [
    "IGNORED_STATUS",
    "count_billed_pairs",
    "forget_subscription_items",
    "json_safe",
    "price_for_pair",
    "price_ids_by_pair",
    "price_object",
    "price_row",
    "upsert_prices",
    "upsert_subscription_items",
]
