"""`meter-recon discrepancies`: money, likely cause and settling, and the orders finance asks."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from meter_recon import terminal
from meter_recon.cli import main
from models.engine import session_scope
from models.enums import LikelyCause, Valuation
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus
from tests.builders import new_run

Kind = DiscrepancyKind
NOV_1 = date(2026, 11, 1)
DEC_1 = date(2026, 12, 1)


def discrepancy(
    run_id: int,
    *,
    customer: str,
    meter: str = "mtr_api",
    kind: DiscrepancyKind = Kind.QUANTITY_MISMATCH,
    line_item: str = "",
    start: date = NOV_1,
    end: date = DEC_1,
    stripe: str = "10",
    ledger: str | None = "4",
    amount: str | None = None,
    currency: str | None = None,
    cause: LikelyCause | None = None,
    detail: str | None = None,
    settles_at: datetime | None = None,
) -> Discrepancy:
    internal = None if ledger is None else Decimal(ledger)
    return Discrepancy(
        stripe_customer_id=customer,
        meter_id=meter,
        kind=kind,
        period_start=start,
        period_end=end,
        line_item_id=line_item,
        stripe_quantity=Decimal(stripe),
        internal_quantity=internal,
        difference=None if internal is None else Decimal(stripe) - internal,
        status=DiscrepancyStatus.OPEN,
        first_seen_run=run_id,
        last_seen_run=run_id,
        amount_at_stake=None if amount is None else Decimal(amount),
        currency=currency,
        valuation=None if amount is None else Valuation.STRIPE_PRICE,
        likely_cause=cause,
        cause_detail=detail,
        settles_at=settles_at,
    )


def seed(engine: Engine, *rows: dict[str, Any]) -> list[int]:
    run_id = new_run(engine)
    with session_scope(engine) as session:
        made = [discrepancy(run_id, **row) for row in rows]
        session.add_all(made)
        session.flush()
        return [row.id for row in made if row.id is not None]


def listed(database_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["discrepancies", *args, "--format", "json", "--database-url", database_url]) == 0
    return json.loads(capsys.readouterr().out)


SETTLES = datetime(2026, 12, 4, 0, 0, tzinfo=UTC)


def test_json_carries_amount_currency_valuation_cause_and_settles_at(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(
        engine,
        {
            "customer": "cus_A",
            "line_item": "li_A",
            "amount": "12.5",
            "currency": "usd",
            "cause": LikelyCause.UNIT_SCALE,
            "detail": "Stripe is 10 times the ledger.",
            "settles_at": SETTLES,
        },
    )
    (record,) = listed(database_url, capsys)
    assert list(record)[14:20] == [
        "amount_at_stake",
        "currency",
        "valuation",
        "likely_cause",
        "cause_detail",
        "settles_at",
    ]
    assert record["amount_at_stake"] == "12.5"
    assert record["currency"] == "usd"
    assert record["valuation"] == "stripe_price"
    assert record["likely_cause"] == "unit_scale"
    assert record["cause_detail"] == "Stripe is 10 times the ledger."
    assert record["settles_at"] == "2026-12-04T00:00:00+00:00"


def test_a_row_not_valued_nor_diagnosed_has_nulls(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(engine, {"customer": "cus_A", "line_item": "li_A"})
    (record,) = listed(database_url, capsys)
    assert [record[c] for c in ("amount_at_stake", "currency", "valuation")] == [None] * 3
    assert [record[c] for c in ("likely_cause", "cause_detail", "settles_at")] == [None] * 3


def test_csv_has_the_new_columns_with_empty_cells_for_nulls(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(engine, {"customer": "cus_A", "line_item": "li_A", "amount": "-3", "currency": "eur"})
    assert main(["discrepancies", "--format", "csv", "--database-url", database_url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["amount_at_stake"], r["currency"], r["likely_cause"]) for r in rows] == [
        ("-3", "eur", "")
    ]


def _money_rows(engine: Engine) -> list[int]:
    return seed(
        engine,
        {"customer": "cus_A", "line_item": "li_1", "amount": "5", "currency": "usd"},
        {"customer": "cus_B", "line_item": "li_2", "amount": "-40", "currency": "usd"},
        {"customer": "cus_C", "line_item": "li_3"},
        {"customer": "cus_D", "line_item": "li_4", "amount": "40", "currency": "eur"},
        {"customer": "cus_E", "line_item": "li_5", "stripe": "1", "ledger": "100"},
    )


def test_sort_amount_is_largest_absolute_first_ties_by_identity_unvalued_last(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _money_rows(engine)
    records = listed(database_url, capsys, "--sort", "amount")
    assert [r["customer"] for r in records] == ["cus_B", "cus_D", "cus_A", "cus_C", "cus_E"]


def test_sort_difference_is_largest_absolute_first(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _money_rows(engine)
    records = listed(database_url, capsys, "--sort", "difference")
    assert [r["difference"] for r in records] == ["-99", "6", "6", "6", "6"]
    assert [r["customer"] for r in records][1:] == ["cus_A", "cus_B", "cus_C", "cus_D"]


def test_sort_id_is_the_order_rows_were_first_recorded(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed(
        engine,
        {"customer": "cus_Z", "line_item": "li_1"},
        {"customer": "cus_A", "line_item": "li_2"},
    )
    assert [r["id"] for r in listed(database_url, capsys, "--sort", "id")] == ids
    assert [r["id"] for r in listed(database_url, capsys)] == ids[::-1]  # by customer


def test_cause_filters_on_the_likely_cause(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(
        engine,
        {"customer": "cus_A", "line_item": "li_1", "cause": LikelyCause.LATE_USAGE, "detail": "x"},
        {"customer": "cus_B", "line_item": "li_2", "cause": LikelyCause.WRONG_METER, "detail": "y"},
        {"customer": "cus_C", "line_item": "li_3"},
    )
    assert [r["customer"] for r in listed(database_url, capsys, "--cause", "wrong_meter")] == [
        "cus_B"
    ]
    both = listed(database_url, capsys, "--cause", "wrong_meter", "--cause", "late_usage")
    assert [r["customer"] for r in both] == ["cus_A", "cus_B"]


@pytest.fixture
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough for every column (tests have no terminal: 80 columns)."""
    monkeypatch.setattr(terminal.console, "_width", 300)


@pytest.mark.usefixtures("wide_terminal")
def test_the_table_shows_amounts_with_their_currency_and_the_cause(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(
        engine,
        {
            "customer": "cus_A",
            "line_item": "li_1",
            "amount": "12.5",
            "currency": "usd",
            "cause": LikelyCause.DUPLICATED_USAGE,
            "detail": "twice",
        },
        {"customer": "cus_B", "line_item": "li_2", "amount": "1500", "currency": "jpy"},
        {"customer": "cus_C", "line_item": "li_3", "amount": "-2.35278", "currency": "usd"},
    )
    assert main(["discrepancies", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "12.50 usd" in out
    assert "1,500 jpy" in out
    assert "-2.35 usd" in out and "2.35278" not in out
    assert "duplicated_usage" in out


@pytest.mark.usefixtures("wide_terminal")
def test_the_table_says_until_when_a_row_is_settling(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    later = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    seed(engine, {"customer": "cus_A", "line_item": "li_1", "settles_at": later})
    assert main(["discrepancies", "--database-url", database_url]) == 0
    assert f"settling until {later:%Y-%m-%d %H:%M} UTC" in capsys.readouterr().out
