"""sync-invoices: what Stripe invoiced becomes the `stripe` ledger's line items.

Pages Stripe's invoices created since the window's start, invoice by invoice (one listing
page and one invoice's lines in memory at a time), keeps the metered lines (their price has a
meter: from the price cache, else fetched once and cached), groups them per subscription item
and period (`tasks.compare_stripe.group_line_items`) and upserts them a batch at a time.
What cannot be read (a malformed invoice or line, a price or an invoice that disappeared) is
logged with its id, counted and skipped: it never sinks the sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sqlalchemy import Engine
from sqlmodel import Session

from integrations.stripe import Invoice, InvoiceLine, Malformed, NotFoundError, StripeClient
from models.billing import price_object, price_row, upsert_prices
from models.canonical import utc_midnight
from models.engine import get_engine, read_only, session_scope
from models.ledger import VOID, LineItemChanges, upsert_stripe_line_items, withdraw_stripe_invoice
from models.pairs import track_from_stripe
from models.tables import StripePrice
from models.types import utcnow
from tasks.compare_stripe import MeteredPrice, StripeLineItem, group_line_items, metered_price
from tasks.fetch import stripe_client
from tasks.run_config import RunConfig

Logger = logging.Logger | logging.LoggerAdapter[Any]

#: Line items written per transaction: memory holds one batch, not the account.
ITEM_BATCH = 1000
#: Invoices per transaction (those without metered lines hold nothing, but are re-checked).
INVOICE_BATCH = 200

_log = logging.getLogger("meter_recon.invoices")

#: Told each batch of pairs a sync started tracking, once the batch is committed.
OnTracked = Callable[[list[tuple[str, str]]], None]


@dataclass(frozen=True, slots=True)
class InvoiceSync:
    """What one sync read and changed. `line_items` are the metered line items read (upserted
    by id: `added` new, `changed` updated, the rest as stored); `withdrawn` those newly
    withdrawn (a void invoice, or lines an invoice no longer has); `malformed` what could not be
    read; `pairs_added` how many pairs it started tracking; `requests` the HTTP attempts it
    made. Counts only: what a sync of a whole account read stays in the database."""

    invoices: int
    line_items: int
    added: int
    changed: int
    withdrawn: int
    malformed: int
    prices_fetched: int
    pairs_added: int
    requests: int

    def counts(self) -> dict[str, int]:
        """The run record's `invoice_sync` counts (its requests are counted by the flow)."""
        return {
            "invoices": self.invoices,
            "line_items": self.line_items,
            "added": self.added,
            "changed": self.changed,
            "withdrawn": self.withdrawn,
            "malformed": self.malformed,
            "prices_fetched": self.prices_fetched,
            "pairs_added": self.pairs_added,
        }


def default_since(today: date) -> date:
    """The first day of the month before `today`'s: last month's invoices and this month's."""
    first = today.replace(day=1)
    return (
        first.replace(year=first.year - 1, month=12)
        if first.month == 1
        else first.replace(month=first.month - 1)
    )


@dataclass(frozen=True, slots=True)
class _ReadInvoice:
    """One invoice's metered line items; `complete` when every line was read."""

    invoice_id: str
    void: bool
    items: list[StripeLineItem]
    complete: bool


class _Prices:
    """Which prices bill a meter: the cache first, else Stripe once (then cached)."""

    def __init__(self, engine: Engine, client: StripeClient, now: datetime) -> None:
        self._engine = engine
        self._client = client
        self._now = now
        self._seen: dict[str, MeteredPrice | None] = {}
        self.metered: dict[str, MeteredPrice] = {}
        self.fetched = 0

    def meter_of(self, price_id: str) -> MeteredPrice | None:
        """The price's meter and `Price`; None when it bills no meter (a 404 raises)."""
        if price_id not in self._seen:
            found = self._cached(price_id)
            self._seen[price_id] = found
            if found is not None:
                self.metered[price_id] = found
        return self._seen[price_id]

    def _cached(self, price_id: str) -> MeteredPrice | None:
        with Session(read_only(self._engine)) as session:
            row = session.get(StripePrice, price_id)
            cached = None if row is None else price_object(row) if row.meter_id else {}
        if cached is not None:
            return metered_price(cached) if cached else None
        # `tiers` come only when expanded; Stripe sends none for a price that is not tiered.
        price = self._client.get_price(price_id, expand_tiers=True)
        self.fetched += 1
        with session_scope(self._engine) as session:
            upsert_prices(session=session, rows=[price_row(price, now=self._now)])
        return metered_price(price)


@dataclass(slots=True)
class _Tally:
    invoices: int = 0
    line_items: int = 0
    malformed: int = 0
    changes: LineItemChanges = field(default_factory=LineItemChanges)
    pairs_added: int = 0


def _listing(
    client: StripeClient, created_gte: int, customers: Sequence[str]
) -> Iterator[Invoice | Malformed]:
    if not customers:
        yield from client.invoices(created_gte=created_gte)
        return
    for customer in customers:
        yield from client.invoices(created_gte=created_gte, customer=customer)


def _skip(log: Logger, tally: _Tally, what: str, reason: str) -> None:
    tally.malformed += 1
    log.warning("skipped %s: %s", what, reason)


def _read_invoice(
    client: StripeClient, invoice: Invoice, prices: _Prices, log: Logger, tally: _Tally
) -> _ReadInvoice | None:
    """The invoice's metered line items; None when the invoice disappeared while read."""
    lines: list[InvoiceLine] = []
    complete = True
    try:
        for line in client.invoice_lines(invoice):
            if isinstance(line, Malformed):
                _skip(log, tally, f"line {line.id} of invoice {line.invoice}", line.reason)
                complete = False
                continue
            if line.price_id is None:
                continue
            try:
                price = prices.meter_of(line.price_id)
            except NotFoundError as missing:
                what = f"line {line.id} of invoice {invoice.id}"
                _skip(log, tally, what, f"its price {line.price_id} is gone: {missing}")
                complete = False
                continue
            if price is not None:
                lines.append(line)
    except NotFoundError as missing:
        _skip(log, tally, f"invoice {invoice.id}", f"it is gone: {missing}")
        return None
    return _ReadInvoice(
        invoice_id=invoice.id,
        void=invoice.status == VOID,
        items=group_line_items(invoice, lines, prices.metered),
        complete=complete,
    )


def _write(
    engine: Engine,
    batch: list[_ReadInvoice],
    now: datetime,
    tally: _Tally,
    on_tracked: OnTracked | None,
) -> None:
    """One transaction: the batch's line items upserted, what its invoices no longer hold
    withdrawn, and the pairs they bill tracked (source stripe; the new ones, once committed,
    passed to `on_tracked`)."""
    if not batch:
        return
    items = [item for read in batch for item in read.items]
    with session_scope(engine) as session:
        changes = upsert_stripe_line_items(session=session, items=items, now=now)
        withdrawn = 0
        for read in batch:
            if read.void or read.complete:
                keep = () if read.void else {item.id for item in read.items}
                withdrawn += withdraw_stripe_invoice(
                    session=session, invoice_id=read.invoice_id, now=now, keep=keep
                )
        billed = {(i.customer, i.meter) for i in items if i.invoice_status != VOID}
        tracked = track_from_stripe(session=session, pairs=billed)
    tally.pairs_added += len(tracked)
    if tracked and on_tracked is not None:
        on_tracked(tracked)
    tally.line_items += len(items)
    tally.changes = tally.changes + changes + LineItemChanges(withdrawn=withdrawn)


def sync_invoices(
    config: RunConfig,
    *,
    since: date,
    customers: Iterable[str] = (),
    logger: Logger | None = None,
    on_tracked: OnTracked | None = None,
) -> InvoiceSync:
    """Read Stripe's invoices created since `since` 00:00 UTC (of `customers` only, when
    given) into the `stripe` ledger; a Stripe failure after the client's retries raises, and
    what was written before it stays."""
    log = logger or _log
    engine = get_engine(config.database)
    client = stripe_client(config)
    before = client.requests_made
    now = utcnow()
    prices = _Prices(engine, client, now)
    tally = _Tally()
    batch: list[_ReadInvoice] = []
    for invoice in _listing(client, utc_midnight(since), sorted(set(customers))):
        if isinstance(invoice, Malformed):
            _skip(log, tally, f"invoice {invoice.id}", invoice.reason)
            continue
        tally.invoices += 1
        read = _read_invoice(client, invoice, prices, log, tally)
        if read is not None:
            batch.append(read)
        if len(batch) >= INVOICE_BATCH or sum(len(r.items) for r in batch) >= ITEM_BATCH:
            _write(engine, batch, now, tally, on_tracked)
            batch = []
    _write(engine, batch, now, tally, on_tracked)
    return InvoiceSync(
        invoices=tally.invoices,
        line_items=tally.line_items,
        added=tally.changes.added,
        changed=tally.changes.changed,
        withdrawn=tally.changes.withdrawn,
        malformed=tally.malformed,
        prices_fetched=prices.fetched,
        pairs_added=tally.pairs_added,
        requests=client.requests_made - before,
    )


@task(name="sync-invoices", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def sync_stripe_invoices(
    config: RunConfig, since: date, customers: tuple[str, ...] = ()
) -> InvoiceSync:
    """Bring what Stripe invoiced since the window's start into the `stripe` ledger, before
    the fan-out compares it."""
    logger = get_run_logger()
    found = sync_invoices(config, since=since, customers=customers, logger=logger)
    logger.info(
        "read %d Stripe invoice(s): %d metered line item(s), %d added, %d changed, "
        "%d withdrawn, %d malformed skipped; %d newly tracked pair(s)",
        found.invoices,
        found.line_items,
        found.added,
        found.changed,
        found.withdrawn,
        found.malformed,
        found.pairs_added,
    )
    return found
