"""The one written form of a number and of a UTC day (models/canonical.py), and its users."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session

from meter_recon.seed import MIN_CUSTOMERS, generate
from models.canonical import canonical_decimal, utc_midnight
from models.engine import dispose_engines, get_engine
from models.migrate import upgrade
from tests.builders import line_item

PROPERTY = settings(max_examples=300, deadline=None, database=None)
EPOCH = date(1970, 1, 1)


@PROPERTY
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_the_text_is_the_same_number_without_exponent_or_trailing_zeros(value: Decimal) -> None:
    written = canonical_decimal(value)
    assert Decimal(written) == value
    assert "E" not in written.upper()
    assert written != "-0"
    if "." in written:
        assert not written.endswith(("0", "."))


@PROPERTY
@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(0, 30))
def test_every_spelling_of_a_number_has_the_one_text(value: Decimal, zeros: int) -> None:
    written = canonical_decimal(value)
    padded = Decimal(f"{written}{'' if '.' in written else '.'}{'0' * zeros}")
    assert canonical_decimal(padded) == written
    assert canonical_decimal(-value if value == 0 else value) == written


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_a_number_that_is_not_finite_has_no_text(value: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        canonical_decimal(Decimal(value))


@PROPERTY
@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)))
def test_utc_midnight_is_the_days_start_in_unix_seconds(day: date) -> None:
    seconds = utc_midnight(day)
    assert seconds == (day - EPOCH).days * 86_400
    assert datetime.fromtimestamp(seconds, UTC) == datetime(
        day.year, day.month, day.day, tzinfo=UTC
    )
    assert utc_midnight(day + timedelta(days=1)) - seconds == 86_400


def test_sqlite_stores_a_quantity_as_its_one_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'canonical.db'}"
    upgrade(url)
    engine = get_engine(url)
    try:
        with Session(engine) as session:
            session.add(line_item("li_1", quantity="12.3000"))
            session.commit()
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT quantity FROM invoice_line_item WHERE id = 'li_1'")
            ).scalar_one()
    finally:
        dispose_engines()
    assert stored == canonical_decimal(Decimal("12.3000")) == "12.3"


def test_the_demo_data_file_writes_event_values_in_the_one_text() -> None:
    data = generate(anchor=date(2026, 11, 25), customers=MIN_CUSTOMERS, seed=2)
    written = [event["value"] for event in data.simulator_document()["events"]]
    assert written == [canonical_decimal(event.value) for event in data.events]
    assert any("." in value for value in written)
