"""The internal ledger read by a query on your database: streamed, validated like the CSV
import, and applied in one transaction (upserts, withdrawals, returns), or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from models.engine import get_engine, read_only, redact_url, session_scope
from models.enums import Ledger, LineItemSource
from models.errors import UserError
from models.ledger import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, FloatColumn, RowError, parse_line_item
from models.pairs import track_from_ledger
from models.tables import InvoiceLineItem
from models.types import utcnow
from models.upsert import insert_for

#: Rows fetched from the source at a time (and applied at a time): the memory a sync holds.
BATCH_SIZE = 5000

_items = InvoiceLineItem.__table__  # type: ignore[attr-defined]
# The columns a row of the query sets; a line item whose values all equal is unchanged.
_VALUES = (*REQUIRED_COLUMNS[1:], *OPTIONAL_COLUMNS)
# Which ids the query returned, kept by the database (never in memory) until the withdrawal.
_seen = sa.Table(
    "meter_recon_ledger_seen",
    sa.MetaData(),
    sa.Column("id", sa.String(255), primary_key=True),
    prefixes=["TEMPORARY"],
)


@dataclass(slots=True)
class LedgerSync:
    """What one sync did: rows read; line items added, changed, withdrawn, brought back."""

    rows: int = 0
    added: int = 0
    changed: int = 0
    withdrawn: int = 0
    restored: int = 0
    pairs_added: int = 0

    def as_counts(self) -> dict[str, int]:
        return asdict(self)


class LedgerSyncFailed(UserError):
    """The ledger query could not be applied; nothing was changed. One sentence, no password."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient  # worth retrying: the database could not be reached
        super().__init__(message)


def sync_ledger_query(
    *, engine: Engine, source_url: str, query: str, batch_size: int = BATCH_SIZE
) -> LedgerSync:
    """Run `query` on `source_url` and make the internal ledger's query line items what it
    returns, in one transaction of `engine`: every row upserted (source `query`), the query's
    line items it no longer returns withdrawn, a withdrawn one it returns again brought back.
    CSV line items are never withdrawn. Any failure raises `LedgerSyncFailed`, all undone."""
    try:
        source = read_only(get_engine(source_url))
        with session_scope(engine) as session, source.connect() as connection:
            return _sync(session=session, connection=connection, query=query, size=batch_size)
    except LedgerSyncFailed:
        raise
    except FloatColumn as error:
        raise LedgerSyncFailed(f"The ledger query's {error}.") from None
    except Exception as error:
        raise _failure(error, source_url) from None


def _failure(error: Exception, url: str) -> LedgerSyncFailed:
    """One sentence for an error of the source database; its password never in it."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    detail = lines[0].strip().rstrip(".") if lines else type(cause).__name__
    try:
        password = make_url(url).password
        where = redact_url(url)
    except Exception:  # not even a URL: say so, without echoing it
        password, where = None, "its database (the URL could not be parsed)"
    if password:
        detail = detail.replace(str(password), "***")
    transient = isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError)
    return LedgerSyncFailed(
        f"The ledger query on {where} failed: {type(cause).__name__}: {detail}.",
        transient=transient,
    )


def _sync(*, session: Session, connection: Connection, query: str, size: int) -> LedgerSync:
    result = connection.execution_options(stream_results=True, yield_per=size).execute(
        sa.text(query)
    )
    columns = _columns(list(result.keys()))
    report = LedgerSync()
    now = utcnow()
    pairs: set[tuple[str, str]] = set()
    _seen.create(session.connection())
    for batches, partition in enumerate(result.partitions(size), start=1):
        batch: dict[str, dict[str, Any]] = {}
        errors: list[RowError] = []
        for row in partition:
            report.rows += 1
            raw = {name: row[index] for name, index in columns.items()}
            record = parse_line_item(report.rows, raw, errors, unit="row")
            if record is None:
                raise LedgerSyncFailed(f"The ledger query's {errors[0]}; nothing was changed.")
            batch[record["id"]] = record
        written = _apply(session, batch, report, now)
        if batches & (batches - 1) == 0:  # after batch 1, 2, 4, 8, ...
            _refresh_statistics(session)
        pairs.update((r["stripe_customer_id"], r["meter_id"]) for r in written)
    if report.rows == 0:
        raise LedgerSyncFailed(
            "The ledger query returned no rows; nothing was changed (an empty result never "
            "withdraws the whole ledger)."
        )
    report.withdrawn = _withdraw(session, now)
    _seen.drop(session.connection())
    report.pairs_added = track_from_ledger(session=session, pairs=pairs)
    return report


def _columns(names: Sequence[str]) -> dict[str, int]:
    """Where each of our columns is in the query's result; a missing one is one sentence."""
    index = {str(name).lower(): i for i, name in enumerate(names)}
    missing = [name for name in REQUIRED_COLUMNS if name not in index]
    if missing:
        raise LedgerSyncFailed(
            f"The ledger query returns no column {', '.join(missing)}: it must return "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally {', '.join(OPTIONAL_COLUMNS)}), "
            "by name."
        )
    return {name: index[name] for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in index}


def _apply(
    session: Session, batch: Mapping[str, dict[str, Any]], report: LedgerSync, now: datetime
) -> list[dict[str, Any]]:
    """Upsert the batch's new, changed and returning line items; mark every id seen."""
    if not batch:
        return []
    existing = {
        row.id: row
        for row in session.execute(
            sa.select(_items.c.id, _items.c.source, _items.c.withdrawn_at, *_value_columns()).where(
                _items.c.ledger == Ledger.INTERNAL.value, _items.c.id.in_(list(batch))
            )
        )
    }
    written = []
    for row_id, record in batch.items():
        before = existing.get(row_id)
        if before is None:
            report.added += 1
        elif before.withdrawn_at is not None:
            report.restored += 1
        elif before.source != LineItemSource.QUERY or any(
            getattr(before, name) != record[name] for name in _VALUES
        ):
            report.changed += 1
        else:
            continue
        written.append(record)
    if written:
        rows = [
            {
                **record,
                "ledger": Ledger.INTERNAL,
                "source": LineItemSource.QUERY,
                "withdrawn_at": None,
                "imported_at": now,
            }
            for record in written
        ]
        statement = insert_for(session, _items)
        updated = {c: statement.excluded[c] for c in rows[0] if c not in ("ledger", "id")}
        session.execute(
            statement.on_conflict_do_update(index_elements=["ledger", "id"], set_=updated), rows
        )
    seen = insert_for(session, _seen).on_conflict_do_nothing(index_elements=["id"])
    session.execute(seen, [{"id": row_id} for row_id in batch])
    return written


def _refresh_statistics(session: Session) -> None:
    """PostgreSQL: let the planner see what this transaction wrote (ANALYZE counts its own
    uncommitted rows). An id is unique only with its ledger, so without statistics (a first
    load) it takes a batch's 5,000 ids to match the whole table and filters every row of the
    ledger against the list, per batch: quadratic. Refreshed as the ledger doubles."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("ANALYZE invoice_line_item"))


def _value_columns() -> list[Any]:
    return [_items.c[name] for name in _VALUES]


def _withdraw(session: Session, now: datetime) -> int:
    """The query's line items it did not return are withdrawn (CSV ones are never)."""
    returned = sa.exists().where(_seen.c.id == _items.c.id)
    result = session.execute(
        sa.update(_items)
        .where(
            _items.c.ledger == Ledger.INTERNAL.value,
            _items.c.source == LineItemSource.QUERY.value,
            _items.c.withdrawn_at.is_(None),
            ~returned,
        )
        .values(withdrawn_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["BATCH_SIZE", "LedgerSync", "LedgerSyncFailed", "sync_ledger_query"]
