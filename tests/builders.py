"""Plain factory functions for test data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from models.enums import Ledger, LineItemSource, Valuation
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    InvoiceLineItem,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from tasks.compare import (
    DEFAULT_TOLERANCE,
    Formula,
    LineItem,
    PairComparison,
    Tolerance,
    Window,
    compare_pair,
)
from tasks.record import PairStats, RecordOutcome, record_pair

HEADER = (
    "id,invoice_id,stripe_customer_id,meter_id,period_start,period_end,quantity,currency,amount"
)


def line_item(
    id: str = "li_1",
    *,
    customer: str = "cus_A",
    meter: str = "mtr_api",
    start: str = "2026-10-01",
    end: str = "2026-11-01",
    quantity: str = "100",
    invoice: str = "in_1",
) -> InvoiceLineItem:
    return InvoiceLineItem(
        id=id,
        invoice_id=invoice,
        stripe_customer_id=customer,
        meter_id=meter,
        period_start=date.fromisoformat(start),
        period_end=date.fromisoformat(end),
        quantity=Decimal(quantity),
    )


def _day(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def discrepancy(
    *,
    run_id: int,
    id: int | None = None,
    customer: str = "cus_A",
    meter: str = "mtr_api",
    kind: DiscrepancyKind = DiscrepancyKind.QUANTITY_MISMATCH,
    start: date | str = "2026-10-01",
    end: date | str = "2026-11-01",
    line_item: str = "li_1",
    stripe: str = "120",
    ledger: str | None = "100",
    amount: str | None = None,
    currency: str | None = None,
    cause: str | None = None,
    detail: str | None = None,
    status: DiscrepancyStatus = DiscrepancyStatus.OPEN,
    first_seen_run: int | None = None,
    reopened_at: datetime | None = None,
    alerted_at: datetime | None = None,
    settles_at: datetime | None = None,
) -> Discrepancy:
    """A discrepancy as a run records it; quantities and money as exact decimal text."""
    internal = None if ledger is None else Decimal(ledger)
    return Discrepancy(
        id=id,
        stripe_customer_id=customer,
        meter_id=meter,
        kind=kind,
        period_start=_day(start),
        period_end=_day(end),
        line_item_id=line_item,
        stripe_quantity=Decimal(stripe),
        internal_quantity=internal,
        difference=None if internal is None else Decimal(stripe) - internal,
        status=status,
        first_seen_run=first_seen_run or run_id,
        last_seen_run=run_id,
        reopened_at=reopened_at,
        alerted_at=alerted_at,
        settles_at=settles_at,
        amount_at_stake=None if amount is None else Decimal(amount),
        currency=currency,
        valuation=None if amount is None else Valuation.STRIPE_PRICE,
        likely_cause=cause,
        cause_detail=detail,
    )


def customers_by_meters(
    *, run_id: int, customers: list[str], meters: list[str], amount: Callable[[int, str], str]
) -> list[Discrepancy]:
    """A usd discrepancy for every customer and meter, `amount(n, meter)` for the n-th customer
    (from 1): rows of one customer that a page of a few rows cuts apart."""
    return [
        discrepancy(
            run_id=run_id,
            customer=customer,
            meter=meter,
            line_item=f"li_{customer}_{meter}",
            amount=amount(number, meter),
            currency="usd",
        )
        for number, customer in enumerate(customers, start=1)
        for meter in meters
    ]


def _instant(at: date | datetime) -> datetime:
    return at if isinstance(at, datetime) else datetime.combine(at, time(), UTC)


def stripe_line(
    id: str = "il_1",
    *,
    start: date | datetime,
    end: date | datetime,
    quantity: str,
    customer: str = "cus_A",
    meter: str = "mtr_api",
    invoice: str = "in_1",
    status: str = "paid",
    price: str = "price_api",
    currency: str = "usd",
    amount: str = "0",
    withdrawn: bool = False,
) -> InvoiceLineItem:
    """A line item of the `stripe` ledger as the invoice sync stores it: `start`/`end` a day
    (00:00 UTC) or an exact instant, its days the UTC days the period touches."""
    start_at, end_at = _instant(start), _instant(end)
    last = end_at.date() + (timedelta(0) if end_at.time() == time() else timedelta(days=1))
    finalized = None if status == "draft" else end_at + timedelta(hours=1)
    return InvoiceLineItem(
        ledger=Ledger.STRIPE,
        source=LineItemSource.STRIPE_INVOICE,
        id=id,
        invoice_id=invoice,
        stripe_customer_id=customer,
        meter_id=meter,
        period_start=start_at.date(),
        period_end=max(last, start_at.date() + timedelta(days=1)),
        period_start_at=start_at,
        period_end_at=end_at,
        quantity=Decimal(quantity),
        currency=currency,
        amount=Decimal(amount),
        price_id=price,
        invoice_status=status,
        finalized_at=finalized,
        withdrawn_at=finalized if withdrawn else None,
    )


def csv_file(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def new_run(engine: Engine, *, start: str = "2026-11-01", end: str = "2026-11-04") -> int:
    """A `running` reconciliation run to hang recorded rows on."""
    with Session(engine) as session:
        run = ReconciliationRun(
            window_start=date.fromisoformat(start),
            window_end=date.fromisoformat(end),
            trigger=Trigger.MANUAL,
            status=RunStatus.RUNNING,
        )
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def days(values: dict[str, str]) -> dict[date, Decimal]:
    return {date.fromisoformat(day): Decimal(value) for day, value in values.items()}


def item(id: str, start: str, end: str, quantity: str) -> LineItem:
    return LineItem(
        id=id,
        period_start=date.fromisoformat(start),
        period_end=date.fromisoformat(end),
        quantity=Decimal(quantity),
    )


def window(start: str, end: str) -> Window:
    return Window(date.fromisoformat(start), date.fromisoformat(end))


def comparison(
    daily: dict[date, Decimal],
    *items: LineItem,
    window: tuple[str, str] = ("2026-11-01", "2026-11-04"),
    today: str = "2026-11-04",
    formula: Formula = Formula.SUM,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    active_from: str | None = None,
    active_to: str | None = None,
) -> PairComparison:
    """One pair compared; days and the window as ISO text, the window end exclusive."""
    return compare_pair(
        daily=daily,
        line_items=items,
        window=Window(date.fromisoformat(window[0]), date.fromisoformat(window[1])),
        today=date.fromisoformat(today),
        formula=formula,
        tolerance=tolerance,
        active_from=date.fromisoformat(active_from) if active_from else None,
        active_to=date.fromisoformat(active_to) if active_to else None,
    )


def record_comparison(
    engine: Engine,
    run_id: int,
    result: PairComparison,
    *,
    customer: str = "cus_A",
    meter: str = "mtr_api",
) -> RecordOutcome:
    """A pair's comparison recorded as its task records it (no usage stored, one request)."""
    return record_pair(
        engine=engine,
        run_id=run_id,
        customer=customer,
        meter=meter,
        comparison=result,
        daily={},
        fetched=None,
        stats=PairStats(requests=1, duration_ms=5),
    )


def discrepancy_rows(engine: Engine, ledger: Ledger | None = None) -> list[Discrepancy]:
    """Every stored discrepancy (of one ledger, when given), in the order they were recorded."""
    with Session(engine) as session:
        statement = select(Discrepancy).order_by(col(Discrepancy.id))
        if ledger is not None:
            statement = statement.where(Discrepancy.ledger == ledger)
        return list(session.exec(statement).all())
