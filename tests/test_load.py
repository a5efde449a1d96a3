"""Loading a pair's ledger: the line items whose period overlaps the window, exactly."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session

from models.engine import read_only, session_scope
from tasks.load import load_line_items
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
