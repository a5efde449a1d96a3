"""Loading a pair's ledger: the line items whose period overlaps the window, exactly."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session

from models.engine import read_only, session_scope
from models.tables import InvoiceLineItem
from tasks.load import load_ledger, load_line_items, load_unbilled_price
from tasks.value import LedgerPrice
from tests.builders import line_item

START, END = date(2026, 11, 1), date(2026, 11, 8)


def loaded_ids(engine: Engine, *, customer: str = "cus_A", meter: str = "mtr_api") -> list[str]:
    with Session(read_only(engine)) as session:
        items = load_line_items(
            session=session, customer=customer, meter=meter, start=START, end=END
        )
    return sorted(item.id for item in items)


def test_items_overlapping_the_window_are_loaded_and_touching_ones_are_not(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                line_item("li_before", start="2026-10-25", end="2026-11-01"),
                line_item("li_straddles_start", start="2026-10-31", end="2026-11-02"),
                line_item("li_inside", start="2026-11-03", end="2026-11-04"),
                line_item("li_straddles_end", start="2026-11-07", end="2026-11-09"),
                line_item("li_covers", start="2026-10-01", end="2026-12-01"),
                line_item("li_after", start="2026-11-08", end="2026-11-15"),
            ]
        )
    assert loaded_ids(engine) == [
        "li_covers",
        "li_inside",
        "li_straddles_end",
        "li_straddles_start",
    ]


def test_only_the_pairs_own_items_are_loaded(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                line_item("li_mine", start="2026-11-01", end="2026-11-02"),
                line_item(
                    "li_other_customer", customer="cus_B", start="2026-11-01", end="2026-11-02"
                ),
                line_item("li_other_meter", meter="mtr_x", start="2026-11-01", end="2026-11-02"),
            ]
        )
    assert loaded_ids(engine) == ["li_mine"]
    assert loaded_ids(engine, customer="cus_B") == ["li_other_customer"]


def test_quantities_and_dates_come_back_exactly(engine: Engine) -> None:
    quantity = "12345678901234567890.123456789012345678901"
    with session_scope(engine) as session:
        session.add(line_item("li_1", start="2026-11-02", end="2026-11-05", quantity=quantity))
    with Session(read_only(engine)) as session:
        [item] = load_line_items(
            session=session, customer="cus_A", meter="mtr_api", start=START, end=END
        )
    assert item.quantity == Decimal(quantity)
    assert isinstance(item.quantity, Decimal)
    assert (item.period_start, item.period_end) == (date(2026, 11, 2), date(2026, 11, 5))


def priced(
    id: str,
    *,
    start: str,
    end: str,
    quantity: str,
    amount: str | None,
    currency: str | None,
    meter: str = "mtr_api",
) -> InvoiceLineItem:
    """A line item the ledger billed `amount` in `currency` for."""
    row = line_item(id, meter=meter, start=start, end=end, quantity=quantity)
    row.amount = None if amount is None else Decimal(amount)
    row.currency = currency
    return row


def test_each_items_amount_and_currency_price_it(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                priced(
                    "li_priced",
                    start="2026-11-01",
                    end="2026-11-04",
                    quantity="4",
                    amount="10.50",
                    currency="EUR",
                ),
                priced(
                    "li_no_amount",
                    start="2026-11-04",
                    end="2026-11-06",
                    quantity="4",
                    amount=None,
                    currency="eur",
                ),
            ]
        )
    with Session(read_only(engine)) as session:
        ledger = load_ledger(
            session=session, customer="cus_A", meter="mtr_api", start=START, end=END
        )
    by_id = {item.id: item for item in ledger.items}

    assert ledger.price_of(by_id["li_priced"]) == LedgerPrice(
        amount=Decimal("10.50"), quantity=Decimal(4), currency="eur"
    )
    assert ledger.price_of(by_id["li_no_amount"]) is None


def test_unbilled_days_are_priced_by_the_pairs_latest_priced_item_wherever_it_lies(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                priced(
                    "li_old",
                    start="2026-08-01",
                    end="2026-09-01",
                    quantity="10",
                    amount="5",
                    currency="usd",
                ),
                priced(
                    "li_last_priced",
                    start="2026-09-01",
                    end="2026-10-01",
                    quantity="10",
                    amount="7",
                    currency="usd",
                ),
                priced(
                    "li_later_zero",
                    start="2026-10-01",
                    end="2026-10-15",
                    quantity="0",
                    amount="0",
                    currency="usd",
                ),
                priced(
                    "li_later_no_currency",
                    start="2026-10-15",
                    end="2026-11-01",
                    quantity="10",
                    amount="9",
                    currency=None,
                ),
                priced(
                    "li_other_meter",
                    start="2026-10-01",
                    end="2026-11-01",
                    quantity="10",
                    amount="99",
                    currency="usd",
                    meter="mtr_other",
                ),
            ]
        )
    with Session(read_only(engine)) as session:
        price = load_unbilled_price(session=session, customer="cus_A", meter="mtr_api")
        nothing = load_unbilled_price(session=session, customer="cus_B", meter="mtr_api")

    assert price == LedgerPrice(amount=Decimal(7), quantity=Decimal(10), currency="usd")
    assert nothing is None
