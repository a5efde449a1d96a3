"""Ledger line items: the internal ledger's CSV import (validated whole, written in one
transaction, streamed), and the `stripe` ledger's upsert of what Stripe invoiced."""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from models.enums import Ledger, LineItemSource
from models.pairs import track_from_ledger
from models.tables import InvoiceLineItem
from models.types import utcnow
from models.upsert import insert_for

REQUIRED_COLUMNS = (
    "id",
    "invoice_id",
    "stripe_customer_id",
    "meter_id",
    "period_start",
    "period_end",
    "quantity",
)
OPTIONAL_COLUMNS = ("currency", "amount")
BATCH_SIZE = 5000
_KEY = ["ledger", "id"]


@dataclass(frozen=True, slots=True)
class RowError:
    """What is wrong with one row: its number (a CSV's line, a query's row from 1), its id,
    the column, and what."""

    line: int
    column: str | None
    message: str
    id: str | None = None
    unit: str = "line"

    def __str__(self) -> str:
        where = f"{self.unit} {self.line}" + (f" (id {self.id})" if self.id else "")
        where += f", column {self.column}" if self.column else ""
        return f"{where}: {self.message}"


class FloatColumn(ValueError):
    """A column holds binary floats: no amount or quantity read from it can be exact."""

    def __init__(self, column: str) -> None:
        self.column = column
        super().__init__(
            f"column {column} holds binary floating-point numbers, which cannot be exact; "
            "return it as NUMERIC (DECIMAL), an integer, or decimal text"
        )


@dataclass(slots=True)
class ImportReport:
    rows: int = 0
    upserted: int = 0
    pairs_added: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class CsvRejected(Exception):
    """The file has bad rows; nothing was written."""

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        super().__init__(f"{len(report.errors)} bad row(s); nothing was imported")


def import_line_items(*, engine: Engine, path: Path) -> ImportReport:
    """Upsert every row of `path` by id, or nothing at all if any row is bad."""
    report = ImportReport()
    with path.open(newline="", encoding="utf-8-sig") as handle, Session(engine) as session:
        try:
            _import(session=session, rows=csv.reader(handle), report=report)
        except BaseException:
            session.rollback()
            raise
        if report.errors:
            session.rollback()
            raise CsvRejected(report)
        session.commit()
    return report


def _import(*, session: Session, rows: Any, report: ImportReport) -> None:
    header = next(rows, None)
    if header is None:
        report.errors.append(RowError(1, None, "the file is empty; expected a header row"))
        return
    columns = _check_header([name.strip() for name in header], report)
    if columns is None:
        return
    pairs: set[tuple[str, str]] = set()
    batch: dict[str, dict[str, Any]] = {}
    for record in _records(rows, columns, report):
        report.rows += 1
        if record is None or report.errors:
            continue
        batch[record["id"]] = record
        pairs.add((record["stripe_customer_id"], record["meter_id"]))
        if len(batch) >= BATCH_SIZE:
            report.upserted += _upsert(session, batch)
            batch = {}
    if report.rows == 0:
        report.errors.append(RowError(2, None, "no line items after the header"))
    if report.errors:
        return
    report.upserted += _upsert(session, batch)
    report.pairs_added = track_from_ledger(session=session, pairs=pairs)


def _check_header(header: list[str], report: ImportReport) -> dict[str, int] | None:
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    problems = [f"unknown column {name!r}" for name in header if name not in known]
    problems += [f"column {n!r} appears twice" for n in sorted(set(header)) if header.count(n) > 1]
    problems += [f"missing column {name!r}" for name in REQUIRED_COLUMNS if name not in header]
    for problem in problems:
        report.errors.append(RowError(1, None, f"header: {problem}"))
    if problems:
        return None
    return {name: index for index, name in enumerate(header)}


def _records(
    rows: Any, columns: dict[str, int], report: ImportReport
) -> Iterator[dict[str, Any] | None]:
    width = len(columns)
    for values in rows:
        line = rows.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != width:
            report.errors.append(
                RowError(line, None, f"expected {width} fields, found {len(values)}")
            )
            yield None
            continue
        yield _parse_row(line, {name: values[i].strip() for name, i in columns.items()}, report)


def _parse_row(line: int, raw: dict[str, str], report: ImportReport) -> dict[str, Any] | None:
    return parse_line_item(line, raw, report.errors)


_MIDNIGHT = time(0)


def parse_line_item(
    number: int, raw: Mapping[str, object], errors: list[RowError], *, unit: str = "line"
) -> dict[str, Any] | None:
    """One ledger row, validated: the CSV import's and the ledger query's one validator.

    Values are CSV text or what a database returns: dates as DATE, a TIMESTAMP at 00:00 UTC,
    or ISO text; numbers as Decimal, int, or decimal text. A float raises `FloatColumn`.
    Each problem is appended to `errors`; None when there is any.
    """
    found: list[RowError] = []
    raw_id = raw.get("id")
    row_id = str(raw_id).strip() if isinstance(raw_id, str | int) and str(raw_id).strip() else None

    def bad(column: str, message: str) -> None:
        found.append(RowError(number, column, message, row_id, unit))

    def text(column: str) -> str:
        value = raw.get(column)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            bad(column, "is empty" if value is None or isinstance(value, str) else "is not text")
            return ""
        if len(value.strip()) > 255:
            bad(column, "is longer than 255 characters")
        return value.strip()

    def day(column: str) -> date | None:
        value = raw.get(column)
        try:
            return _day(value)
        except _NotMidnight:
            bad(column, f"{value} is not 00:00 UTC: a period is whole UTC days")
        except ValueError:
            bad(column, f"{value!r} is not an ISO date (YYYY-MM-DD)")
        return None

    def exact(column: str, *, optional: bool = False) -> Decimal | None:
        value = raw.get(column)
        if optional and (value is None or value == ""):
            return None
        if isinstance(value, float):
            raise FloatColumn(column)
        try:
            return _decimal(value)
        except (InvalidOperation, ValueError):
            shown = value.strip() if isinstance(value, str) else value
            bad(column, f"{shown!r} is not a decimal number")
            return None

    currency_value = raw.get("currency")
    record: dict[str, Any] = {
        "id": text("id"),
        "invoice_id": text("invoice_id"),
        "stripe_customer_id": text("stripe_customer_id"),
        "meter_id": text("meter_id"),
        "period_start": day("period_start"),
        "period_end": day("period_end"),
        "quantity": exact("quantity"),
        "amount": exact("amount", optional=True),
        "currency": currency_value.strip().upper() or None
        if isinstance(currency_value, str)
        else currency_value,
    }
    start, end = record["period_start"], record["period_end"]
    if start and end and end <= start:
        bad("period_end", f"{end} must be after period_start {start} (exclusive)")
    currency = record["currency"]
    if currency is not None and not (
        isinstance(currency, str) and len(currency) == 3 and currency.isalpha()
    ):
        bad("currency", f"{currency!r} is not a 3-letter ISO code")
    errors.extend(found)
    return None if found else record


class _NotMidnight(ValueError):
    pass


def _day(value: object) -> date:
    if isinstance(value, str):
        text = value.strip()
        value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    if isinstance(value, datetime):
        instant = value.astimezone(UTC) if value.tzinfo else value
        if instant.time() != _MIDNIGHT:
            raise _NotMidnight
        return instant.date()
    if isinstance(value, date):
        return value
    raise ValueError


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        value = Decimal(value.strip())
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidOperation
    return value


def _upsert(session: Session, batch: dict[str, dict[str, Any]]) -> int:
    if not batch:
        return 0
    now = utcnow()
    rows = [
        {
            **row,
            "ledger": Ledger.INTERNAL,
            "source": LineItemSource.CSV,
            "withdrawn_at": None,
            "imported_at": now,
        }
        for row in batch.values()
    ]
    table = InvoiceLineItem.__table__  # type: ignore[attr-defined]
    statement = insert_for(session, table)
    updated = {c: statement.excluded[c] for c in rows[0] if c not in _KEY}
    session.execute(statement.on_conflict_do_update(index_elements=_KEY, set_=updated), rows)
    return len(rows)


# --- the `stripe` ledger: what Stripe invoiced ------------------------------------------------

#: An invoice in this status was voided: its line items are withdrawn.
VOID = "void"
_STRIPE_COLUMNS = (
    "invoice_id",
    "stripe_customer_id",
    "meter_id",
    "period_start",
    "period_end",
    "quantity",
    "currency",
    "amount",
    "period_start_at",
    "period_end_at",
    "price_id",
    "invoice_status",
    "finalized_at",
    "withdrawn_at",
)
_ID_CHUNK = 500  # ids per `IN (...)`: well under every backend's bound-parameter limit


class StripeLineFacts(Protocol):
    """A line item of Stripe's invoices as the sync groups it (`tasks.compare_stripe`'s
    `StripeLineItem` has it): exact instants, the UTC days they touch, the major-unit amount."""

    @property
    def id(self) -> str: ...
    @property
    def invoice_id(self) -> str: ...
    @property
    def customer(self) -> str: ...
    @property
    def meter(self) -> str: ...
    @property
    def price_id(self) -> str: ...
    @property
    def period_start_at(self) -> datetime: ...
    @property
    def period_end_at(self) -> datetime: ...
    @property
    def period_start(self) -> date: ...
    @property
    def period_end(self) -> date: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def invoice_status(self) -> str: ...
    @property
    def finalized_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class LineItemChanges:
    """What an upsert changed: rows new, rows whose values changed, rows newly withdrawn."""

    added: int = 0
    changed: int = 0
    withdrawn: int = 0

    def __add__(self, other: LineItemChanges) -> LineItemChanges:
        return LineItemChanges(
            added=self.added + other.added,
            changed=self.changed + other.changed,
            withdrawn=self.withdrawn + other.withdrawn,
        )


def _stripe_values(item: StripeLineFacts, withdrawn_at: datetime | None) -> dict[str, Any]:
    return {
        "id": item.id,
        "invoice_id": item.invoice_id,
        "stripe_customer_id": item.customer,
        "meter_id": item.meter,
        "period_start": item.period_start,
        "period_end": item.period_end,
        "quantity": item.quantity,
        "currency": item.currency,
        "amount": item.amount,
        "period_start_at": item.period_start_at,
        "period_end_at": item.period_end_at,
        "price_id": item.price_id,
        "invoice_status": item.invoice_status,
        "finalized_at": item.finalized_at,
        "withdrawn_at": withdrawn_at,
    }


def _stored_stripe_items(session: Session, ids: list[str]) -> dict[str, InvoiceLineItem]:
    stored: dict[str, InvoiceLineItem] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        statement = select(InvoiceLineItem).where(
            InvoiceLineItem.ledger == Ledger.STRIPE,
            col(InvoiceLineItem.id).in_(ids[start : start + _ID_CHUNK]),
        )
        stored.update((row.id, row) for row in session.exec(statement))
    return stored


def upsert_stripe_line_items(
    *, session: Session, items: Sequence[StripeLineFacts], now: datetime
) -> LineItemChanges:
    """Upsert Stripe's line items by id (ledger `stripe`, source `stripe_invoice`); only new or
    changed rows are written. A void invoice's items are withdrawn (since the first sync that
    saw them void); any other status brings a withdrawn item back."""
    latest = {item.id: item for item in items}  # one row per id, whatever the batch holds
    stored = _stored_stripe_items(session, sorted(latest))
    rows: list[dict[str, Any]] = []
    added = changed = withdrawn = 0
    for item_id in sorted(latest):
        item, old = latest[item_id], stored.get(item_id)
        was_withdrawn = None if old is None else old.withdrawn_at
        withdrawn_at = (was_withdrawn or now) if item.invoice_status == VOID else None
        values = _stripe_values(item, withdrawn_at)
        if old is not None and all(getattr(old, c) == values[c] for c in _STRIPE_COLUMNS):
            continue
        added += old is None
        changed += old is not None
        withdrawn += withdrawn_at is not None and was_withdrawn is None
        rows.append(
            {
                **values,
                "ledger": Ledger.STRIPE,
                "source": LineItemSource.STRIPE_INVOICE,
                "imported_at": now,
            }
        )
    if rows:
        table = InvoiceLineItem.__table__  # type: ignore[attr-defined]
        statement = insert_for(session, table)
        updated = {c: statement.excluded[c] for c in rows[0] if c not in _KEY}
        session.execute(statement.on_conflict_do_update(index_elements=_KEY, set_=updated), rows)
    return LineItemChanges(added=added, changed=changed, withdrawn=withdrawn)


def withdraw_stripe_invoice(
    *, session: Session, invoice_id: str, now: datetime, keep: Collection[str] = ()
) -> int:
    """Withdraw the invoice's Stripe line items not in `keep` (a void invoice: all of them; a
    re-read invoice: those its lines no longer make); returns how many were withdrawn."""
    table = InvoiceLineItem.__table__  # type: ignore[attr-defined]
    statement = (
        sa.update(table)
        .where(
            table.c.ledger == Ledger.STRIPE,
            table.c.invoice_id == invoice_id,
            table.c.withdrawn_at.is_(None),
        )
        .values(withdrawn_at=now)
    )
    if keep:
        statement = statement.where(table.c.id.not_in(sorted(keep)))
    return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]


def ledger_has_line_items(*, session: Session, ledger: Ledger | str) -> bool:
    """Whether `ledger` holds any line item at all, withdrawn ones included (a ledger once
    used is compared, so its withdrawn items' discrepancies resolve): one EXISTS query."""
    items = InvoiceLineItem.__table__  # type: ignore[attr-defined]
    held = sa.exists().where(items.c.ledger == Ledger(ledger).value)
    return bool(session.execute(sa.select(held)).scalar())
