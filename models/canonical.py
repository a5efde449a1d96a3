"""The one written form of a number and of a UTC day, shared by every layer.

Pure (no SQLAlchemy): the comparison, the demo data, the Stripe client and the column
types all write numbers and days through these, so a quantity reads the same in a
finding's detail, the simulator's data file, the database and an alert.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

#: Significant digits every intermediate result may use. A sum that would need more
#: (say 1E+60 + 1E-60) raises rather than rounds.
EXACT_DIGITS = 100

#: The arithmetic of quantities and money: wide enough to be exact, and a computation that
#: would have to round raises instead of returning an approximate answer.
EXACT = Context(
    prec=EXACT_DIGITS,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)


def canonical_decimal(value: Decimal) -> str:
    """The one text form of a number: no exponent, no trailing zeros, no negative zero.

    Exact whatever the number's size: formatting involves no context, so nothing rounds.
    """
    if not value.is_finite():
        raise ValueError(f"quantity must be finite, got {value}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").removesuffix(".")
    return "0" if text == "-0" else text


def utc_midnight(day: date) -> int:
    """Unix seconds of `day` 00:00 UTC (where Stripe's daily buckets start)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


__all__ = ["canonical_decimal", "utc_midnight"]
