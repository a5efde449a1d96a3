"""Plain factory functions for test data."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from models.tables import InvoiceLineItem

HEADER = "id,invoice_id,stripe_customer_id,meter_id,period_start,period_end,quantity,currency,amount"


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


def csv_file(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path
