"""Discovery: which (customer, meter) pairs Stripe bills, and at what price.

Stripe knows the customers our ledger never heard of: every metered subscription item
names a customer, a price and the price's meter. The selection below is pure; the task
pages Stripe, fetches each tiered price once with its tiers, and caches what it found.
Memory holds one batch of items, never the account's pairs: each batch's pairs are tracked
by the database as the batch is written (it says which are new), and counted there at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from integrations.stripe.models import Subscription
from models.billing import (
    IGNORED_STATUS,
    count_billed_pairs,
    forget_subscription_items,
    price_row,
    upsert_prices,
    upsert_subscription_items,
)
from models.engine import get_engine, session_scope
from models.pairs import track_from_stripe
from models.types import utcnow
from tasks.fetch import retry_unless_key_refused, stripe_client
from tasks.run_config import RunConfig


@dataclass(frozen=True, slots=True)
class MeteredItem:
    """A subscription item that bills a meter: one (customer, meter) pair at one price."""

    id: str
    subscription_id: str
    subscription_status: str
    subscription_created: int
    customer: str
    meter: str
    price: Mapping[str, Any]
    current_period_start: int | None
    current_period_end: int | None

    @property
    def pair(self) -> tuple[str, str]:
        return (self.customer, self.meter)


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one discovery found, as counts (the pairs themselves stay in the database):
    `added` how many pairs it started tracking, `pairs` the distinct pairs Stripe bills."""

    added: int
    pairs: int
    items: int
    prices: int
    requests: int


def _bills_a_meter(price: Mapping[str, Any]) -> str | None:
    recurring = price.get("recurring") or {}
    if recurring.get("usage_type") != "metered":
        return None
    meter = recurring.get("meter")
    return str(meter) if meter else None


def metered_items(subscriptions: Iterable[Subscription]) -> list[MeteredItem]:
    """Every item that bills a meter, of every subscription Stripe may have billed."""
    found: list[MeteredItem] = []
    for subscription in subscriptions:
        if subscription.status == IGNORED_STATUS:
            continue
        for item in subscription.items:
            meter = _bills_a_meter(item.price)
            if meter is None:
                continue
            found.append(
                MeteredItem(
                    id=item.id,
                    subscription_id=subscription.id,
                    subscription_status=subscription.status,
                    subscription_created=subscription.created,
                    customer=subscription.customer,
                    meter=meter,
                    price=item.price,
                    current_period_start=item.current_period_start,
                    current_period_end=item.current_period_end,
                )
            )
    return found


def tiered_price_ids(prices: Iterable[Mapping[str, Any]]) -> list[str]:
    """Tiered prices met, once each: their tiers come only when asked for."""
    return sorted({str(p["id"]) for p in prices if p.get("billing_scheme") == "tiered"})


def _when(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _item_row(item: MeteredItem, now: datetime) -> dict[str, Any]:
    return {
        "id": item.id,
        "subscription_id": item.subscription_id,
        "subscription_status": item.subscription_status,
        "subscription_created": _when(item.subscription_created),
        "stripe_customer_id": item.customer,
        "meter_id": item.meter,
        "price_id": str(item.price["id"]),
        "current_period_start": _when(item.current_period_start),
        "current_period_end": _when(item.current_period_end),
        "refreshed_at": now,
    }


#: Items written per transaction while Stripe is paged: memory holds one batch, not the account.
ITEM_BATCH = 1000

#: Told each batch of pairs a discovery started tracking, once the batch is committed.
OnTracked = Callable[[list[tuple[str, str]]], None]


def discover(config: RunConfig, *, on_tracked: OnTracked | None = None) -> Discovery:
    """Page Stripe's subscriptions, fetch tiered prices, and cache items, prices and pairs.

    Items are written a batch at a time as the pages come, each batch with its pairs (those
    not tracked yet are tracked, source stripe, and passed to `on_tracked`), so an account of
    100,000s of items is never in memory at once; those no longer listed are dropped at the
    end. A Stripe failure raises; what was written before it stays.
    """
    engine = get_engine(config.database)
    client = stripe_client(config)
    before = client.requests_made
    now = utcnow()
    prices: dict[str, Mapping[str, Any]] = {}  # the account's price catalogue, not its pairs
    items = added = 0
    batch: list[MeteredItem] = []
    for subscription in client.iter_subscriptions():
        for item in metered_items([subscription]):
            prices.setdefault(str(item.price["id"]), item.price)
            batch.append(item)
        if len(batch) >= ITEM_BATCH:
            added += _write_batch(engine, batch, now, on_tracked)
            items += len(batch)
            batch = []
    added += _write_batch(engine, batch, now, on_tracked)
    items += len(batch)
    for price_id in tiered_price_ids(prices.values()):
        prices[price_id] = client.get_price(price_id, expand_tiers=True)
    requests = client.requests_made - before
    with session_scope(engine) as session:
        rows = [price_row(prices[price_id], now=now) for price_id in sorted(prices)]
        upsert_prices(session=session, rows=rows)
        forget_subscription_items(session=session, seen_before=now)
        pairs = count_billed_pairs(session=session, refreshed_since=now)
    return Discovery(added=added, pairs=pairs, items=items, prices=len(prices), requests=requests)


def _write_batch(
    engine: Any, batch: list[MeteredItem], now: datetime, on_tracked: OnTracked | None
) -> int:
    """One transaction: the batch's items upserted and its new pairs tracked (two statements,
    rows sorted so that concurrent discoveries take their locks in one order)."""
    if not batch:
        return 0
    with session_scope(engine) as session:
        rows = [_item_row(item, now) for item in sorted(batch, key=lambda item: item.id)]
        upsert_subscription_items(session=session, rows=rows)
        tracked = track_from_stripe(session=session, pairs=[item.pair for item in batch])
    if tracked and on_tracked is not None:
        on_tracked(tracked)
    return len(tracked)


@task(
    name="discover-pairs",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_key_refused,
    cache_policy=NO_CACHE,
)
def discover_pairs(config: RunConfig) -> Discovery:
    """Learn from Stripe which pairs it bills and at what price, before the fan-out."""
    found = discover(config)
    get_run_logger().info(
        "discovered %d billed pair(s) in %d metered item(s), %d price(s); %d newly tracked",
        found.pairs,
        found.items,
        found.prices,
        found.added,
    )
    return found
