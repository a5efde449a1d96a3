"""Import ledger line items from CSV: validated whole, written in one transaction, streamed."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

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
    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


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
    errors: list[RowError] = []

    def text(column: str) -> str:
        value = raw[column]
        if not value:
            errors.append(RowError(line, column, "is empty"))
        elif len(value) > 255:
            errors.append(RowError(line, column, "is longer than 255 characters"))
        return value

    def day(column: str) -> date | None:
        value = raw[column]
        try:
            if len(value) != 10:
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            errors.append(RowError(line, column, f"{value!r} is not an ISO date (YYYY-MM-DD)"))
            return None

    def number(column: str, *, optional: bool = False) -> Decimal | None:
        value = raw.get(column, "")
        if optional and not value:
            return None
        try:
            parsed = Decimal(value)
            if not parsed.is_finite():
                raise InvalidOperation
            return parsed
        except InvalidOperation:
            errors.append(RowError(line, column, f"{value!r} is not a decimal number"))
            return None

    record: dict[str, Any] = {
        "id": text("id"),
        "invoice_id": text("invoice_id"),
        "stripe_customer_id": text("stripe_customer_id"),
        "meter_id": text("meter_id"),
        "period_start": day("period_start"),
        "period_end": day("period_end"),
        "quantity": number("quantity"),
        "amount": number("amount", optional=True),
        "currency": raw.get("currency", "").upper() or None,
    }
    start, end = record["period_start"], record["period_end"]
    if start and end and end <= start:
        errors.append(
            RowError(line, "period_end", f"{end} must be after period_start {start} (exclusive)")
        )
    currency = record["currency"]
    if currency is not None and not (len(currency) == 3 and currency.isalpha()):
        errors.append(RowError(line, "currency", f"{currency!r} is not a 3-letter ISO code"))
    report.errors.extend(errors)
    return None if errors else record


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
